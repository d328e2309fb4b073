"""`streamrisk topics create | list | describe`: the topic catalogue on a cluster.

`create` makes every missing catalogue topic (and the worker changelogs) with its partition
count and configs, and leaves existing topics alone: running it twice changes nothing. Drift
(a topic that exists with other partitions or configs) is reported, never altered, because
repartitioning a keyed topic breaks per-key order and is the operator's decision.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

# print_wide lives in base; re-exported here for callers that import it from topics.
from consumers.cli.base import CliError, Context, print_wide

if TYPE_CHECKING:
    from producers.provision import TopicDrift
    from schemas.topics import TopicSpec

NAME = "topics"
HELP = "create, list or describe the topic catalogue on a cluster"

DRIFT_EXIT_CODE = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("create", help="create every missing catalogue topic (idempotent); "
                                  "existing topics are left alone and their drift reported",
                   description="Create every missing catalogue topic and worker changelog "
                               "with its partition count and configs. Idempotent: a second "
                               "run creates nothing. Exit 0 even when existing topics drift "
                               "(use `describe` to gate on drift).")
    sub.add_parser("list", help="topics under the prefix with their partition counts",
                   description="List the topics under the topic prefix with their partition "
                               "counts.")
    sub.add_parser("describe",
                   help="the catalogue (key, value types, partitions, cleanup, retention) "
                        "and its drift from the cluster; exit code 1 when there is drift",
                   description="Show the topic catalogue (name, key, value types, partitions, "
                               "cleanup policy, retention) next to what the cluster has. Exit "
                               f"code {DRIFT_EXIT_CODE} when the cluster drifts from the "
                               "catalogue (a missing topic, another partition count or "
                               "config), 0 when it matches exactly.")


def run(ctx: Context) -> int:
    from producers.kafka import BrokerUnreachable
    from producers.provision import ProvisionError

    ctx.require_bootstrap()
    action = {"create": _create, "list": _list, "describe": _describe}[ctx.args.action]
    try:
        return action(ctx)
    except (BrokerUnreachable, ProvisionError) as exc:
        raise CliError(str(exc)) from None


def _create(ctx: Context) -> int:
    from rich.table import Table

    from producers.provision import ensure_topics
    from schemas.topics import all_specs

    settings = ctx.settings
    report = ensure_topics(settings)
    drift = {d.topic: d for d in report.drift}
    created = set(report.created)
    table = Table(title=f"topics under {settings.topic_prefix!r} on {settings.bootstrap_servers}")
    table.add_column("topic", no_wrap=True)
    table.add_column("partitions", justify="right")
    table.add_column("status")
    table.add_column("drift")
    for spec in all_specs():
        name = settings.topic(spec.name)
        table.add_row(spec.name, str(spec.partitions),
                      "[green]created[/]" if name in created else "exists",
                      _drift_status(name, drift))
    print_wide(ctx, table)
    _print_drift(ctx, drift)
    ctx.out.print(f"created {len(report.created)}, {len(report.existing)} already existed, "
                  f"{len(report.drift)} with drift", markup=False)
    return 0


def _list(ctx: Context) -> int:
    from rich.table import Table

    from producers.provision import list_topics

    settings = ctx.settings
    topics = list_topics(settings)
    if not topics:
        ctx.out.print(f"no topics under {settings.topic_prefix!r} on "
                      f"{settings.bootstrap_servers} (create them with: streamrisk topics "
                      "create)", markup=False, soft_wrap=True)
        return 0
    table = Table(title=f"topics under {settings.topic_prefix!r} on {settings.bootstrap_servers}")
    table.add_column("topic", no_wrap=True)
    table.add_column("partitions", justify="right")
    for name, partitions in topics.items():
        table.add_row(name, str(partitions))
    print_wide(ctx, table)
    return 0


def _describe(ctx: Context) -> int:
    from rich.table import Table

    from producers.kafka import check_reachable
    from producers.provision import describe_drift
    from schemas.topics import all_specs

    settings = ctx.settings
    check_reachable(settings)  # the one-line "unreachable" error within the connect timeout
    drift = {d.topic: d for d in describe_drift(settings)}
    table = Table(title=f"topic catalogue (prefix {settings.topic_prefix!r}) against "
                        f"{settings.bootstrap_servers}")
    # Short names (the prefix is in the title) and the status before the long text columns:
    # in a narrow terminal rich squeezes the right-most columns, never the drift status.
    table.add_column("topic", no_wrap=True)
    table.add_column("parts", justify="right", no_wrap=True)
    table.add_column("cleanup", no_wrap=True)
    table.add_column("retention")
    table.add_column("drift", no_wrap=True)
    table.add_column("key")
    table.add_column("value types")
    for spec in all_specs():
        table.add_row(spec.name, str(spec.partitions),
                      spec.config.get("cleanup.policy", "delete"), _retention(spec),
                      _drift_status(settings.topic(spec.name), drift), spec.key,
                      ", ".join(spec.value_types))
    print_wide(ctx, table)
    _print_drift(ctx, drift)
    if drift:
        ctx.out.print(f"{len(drift)} of {len(all_specs())} topics drift from the catalogue",
                      markup=False)
        return DRIFT_EXIT_CODE
    ctx.out.print(f"all {len(all_specs())} topics match the catalogue", markup=False)
    return 0


def _drift_status(name: str, drift: dict[str, TopicDrift]) -> str:
    found = drift.get(name)
    if found is None:
        return "[green]ok[/]"
    return "[red]missing[/]" if found.problems == ["missing"] else "[red]drift[/]"


def _print_drift(ctx: Context, drift: dict[str, TopicDrift]) -> None:
    for name, found in sorted(drift.items()):
        ctx.out.print(f"drift {name}: {'; '.join(found.problems)}", markup=False,
                      soft_wrap=True)


def _retention(spec: TopicSpec) -> str:
    """Human retention: compacted topics keep the latest value per key for ever."""
    if spec.compacted:
        return "latest per key"
    parts = []
    ms = int(spec.config.get("retention.ms", "0") or 0)
    if ms > 0:
        days = ms / 86_400_000
        parts.append(f"{days:g} d" if days >= 1 else f"{ms / 3_600_000:g} h")
    size = int(spec.config.get("retention.bytes", "-1"))
    if size > 0:
        parts.append(f"{size / 1024**3:g} GiB/partition")
    return ", ".join(parts) or "broker default"
