"""Topic provisioning: make the catalogue on a cluster, list it, and report drift.

Topics are always created explicitly with their partition counts and configs, never by
broker auto-create. `ensure_topics` is idempotent: topics that exist are left alone and
their drift is reported, never "fixed" behind the operator's back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from producers.kafka import check_reachable, make_admin
from schemas.settings import Settings
from schemas.topics import TopicSpec, all_specs


class ProvisionError(RuntimeError):
    """A topic could not be created or inspected; one readable line."""


@dataclass
class TopicDrift:
    topic: str
    problems: list[str]


@dataclass
class ProvisionReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    drift: list[TopicDrift] = field(default_factory=list)


def _kafka_reason(exc: BaseException) -> tuple[int | None, str]:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return error.code(), error.str()
    return None, str(exc)


def ensure_topics(settings: Settings, specs: Sequence[TopicSpec] | None = None,
                  timeout_s: float = 30.0) -> ProvisionReport:
    """Create every missing topic of `specs` (default: the catalogue and changelogs)."""
    specs = list(specs or all_specs())
    metadata = check_reachable(settings)
    admin = make_admin(settings)
    report = ProvisionReport()
    wanted = [s for s in specs if settings.topic(s.name) not in metadata.topics]
    report.existing = [settings.topic(s.name) for s in specs
                       if settings.topic(s.name) in metadata.topics]
    if wanted:
        # Single-broker clusters (embedded) cannot hold 3 replicas: use what the cluster has.
        replication = min(3, max(1, len(metadata.brokers)))
        futures = admin.create_topics(
            [NewTopic(settings.topic(s.name), s.partitions, replication, config=dict(s.config))
             for s in wanted], request_timeout=timeout_s)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
                report.created.append(name)
            except KafkaException as exc:
                code, reason = _kafka_reason(exc)
                if code == KafkaError.TOPIC_ALREADY_EXISTS:  # raced with another creator
                    report.existing.append(name)
                else:
                    raise ProvisionError(f"cannot create topic {name}: {reason}") from None
    report.drift = describe_drift(settings, specs, admin=admin)
    return report


def list_topics(settings: Settings) -> dict[str, int]:
    """Topics under this prefix with their partition counts."""
    metadata = check_reachable(settings)
    return {name: len(t.partitions) for name, t in sorted(metadata.topics.items())
            if name.startswith(settings.topic_prefix)}


def describe_drift(settings: Settings, specs: Iterable[TopicSpec] | None = None, *,
                   admin: AdminClient | None = None, timeout_s: float = 30.0) -> list[TopicDrift]:
    """How the cluster differs from the catalogue: missing topics, partition counts, configs."""
    specs = list(specs or all_specs())
    admin = admin or make_admin(settings)
    metadata = admin.list_topics(timeout=timeout_s)
    drift: list[TopicDrift] = []
    present = []
    for spec in specs:
        name = settings.topic(spec.name)
        topic = metadata.topics.get(name)
        if topic is None:
            drift.append(TopicDrift(name, ["missing"]))
            continue
        present.append(spec)
        if len(topic.partitions) != spec.partitions:
            drift.append(TopicDrift(name, [
                f"partitions: {len(topic.partitions)} on the cluster, {spec.partitions} in the "
                "catalogue"]))
    if not present:
        return drift
    resources = [ConfigResource("topic", settings.topic(s.name)) for s in present]
    futures = admin.describe_configs(resources, request_timeout=timeout_s)
    by_name = {s.full_name(settings.topic_prefix): s for s in present}
    for resource, future in futures.items():
        try:
            actual = future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise ProvisionError(
                f"cannot describe {resource.name}: {_kafka_reason(exc)[1]}") from None
        spec = by_name[resource.name]
        problems = [f"{key}: {actual[key].value if key in actual else 'unset'} on the cluster, "
                    f"{value} in the catalogue"
                    for key, value in spec.config.items()
                    if key not in actual or actual[key].value != value]
        if problems:
            existing = next((d for d in drift if d.topic == resource.name), None)
            if existing:
                existing.problems.extend(problems)
            else:
                drift.append(TopicDrift(resource.name, problems))
    drift.sort(key=lambda d: d.topic)
    return drift
