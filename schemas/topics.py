"""The topic catalogue: every topic's name, key, value types, partitions and configs.

Names take a prefix (default "streamrisk."). `streamrisk topics create` makes exactly this
catalogue; `describe` reports how a cluster drifts from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PREFIX = "streamrisk."
DAY_MS = 24 * 3600 * 1000
DATA_PARTITIONS = 8


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value_types: tuple[str, ...]
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def compacted(self) -> bool:
        return "compact" in self.config.get("cleanup.policy", "")

    def full_name(self, prefix: str = DEFAULT_PREFIX) -> str:
        return prefix + self.name


GIB = 1024**3


def _delete(gib_per_partition: float) -> dict[str, str]:
    """Delete policy bounded by size, never by age: the Kafka timestamp of every message is
    its event time, so a time limit would delete a replayed historical day as it lands."""
    return {"cleanup.policy": "delete", "retention.ms": "-1",
            "retention.bytes": str(int(gib_per_partition * GIB))}


_COMPACT = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": str(DAY_MS),
}

CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec("market", "instrument id",
              ("Trade", "Quote", "Bar", "BookTop", "InstrumentStatus", "NewsSentiment"),
              DATA_PARTITIONS, _delete(2), "market data; one topic keeps per-instrument order"),
    TopicSpec("orders", "account id",
              ("OrderNew", "OrderCancel", "OrderReplace", "ExecutionReport", "MassCancel"),
              DATA_PARTITIONS, _delete(2), "order flow and execution reports"),
    TopicSpec("risk.alerts", "instrument or account", ("RiskAlert",),
              DATA_PARTITIONS, _delete(1), "alerts with severity, reason code, explanation"),
    TopicSpec("risk.decisions", "account", ("RiskDecision",),
              DATA_PARTITIONS, _delete(1), "pre-trade accept/deny with reason codes"),
    TopicSpec("risk.breaches", "account", ("LimitBreach",),
              DATA_PARTITIONS, _delete(1), "soft and hard limit breaches"),
    TopicSpec("risk.instruments", "instrument", ("InstrumentRisk",),
              DATA_PARTITIONS, dict(_COMPACT), "latest risk per instrument"),
    TopicSpec("risk.accounts", "account", ("AccountRisk",),
              DATA_PARTITIONS, dict(_COMPACT), "latest risk per account"),
    TopicSpec("risk.scope-accounts", "scope id", ("ScopeContribution",),
              DATA_PARTITIONS, _delete(1), "account figures re-keyed by desk and firm"),
    TopicSpec("risk.scopes", "scope id", ("ScopeRisk",),
              DATA_PARTITIONS, dict(_COMPACT), "latest aggregated risk and state per desk/firm"),
    TopicSpec("risk.states", "scope id", ("TradingStateChanged",),
              DATA_PARTITIONS, _delete(0.25), "every trading-state transition"),
    TopicSpec("risk.limits", "scope id", ("LimitConfig",),
              1, dict(_COMPACT), "limit configuration, hot reloaded, audited"),
    TopicSpec("risk.control", "scope id", ("TradingStateCommand",),
              1, _delete(0.25), "kill switch and re-enable commands"),
    TopicSpec("risk.model-health", "model id", ("ModelHealth",),
              DATA_PARTITIONS, _delete(1), "VaR backtests, prequential metrics, drift"),
    TopicSpec("dlq", "original key", ("DeadLetter",),
              DATA_PARTITIONS, _delete(1), "inputs that could not be processed"),
)

# Workers keep their state in a compacted changelog with the partition count of their input.
WORKER_INPUTS: dict[str, str] = {"market-worker": "market", "order-worker": "orders",
                                 "scope-worker": "risk.scope-accounts"}


def changelog_spec(worker: str) -> TopicSpec:
    """The changelog topic of a worker, partitioned like its input."""
    source = by_name(WORKER_INPUTS[worker])
    return TopicSpec(f"{worker}.changelog", "entity key", ("snapshot",), source.partitions,
                     {**_COMPACT, "max.message.bytes": "1048588"},
                     f"state snapshots of {worker}")


def all_specs() -> tuple[TopicSpec, ...]:
    """The catalogue plus every worker changelog: what `topics create` makes."""
    return CATALOGUE + tuple(changelog_spec(w) for w in WORKER_INPUTS)


def by_name(name: str) -> TopicSpec:
    """The spec of a catalogue topic by its short name (without prefix)."""
    for spec in all_specs() if name.endswith(".changelog") else CATALOGUE:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic named {name!r} in the catalogue")


def topic_for_type(type_name: str) -> str:
    """Short name of the topic an event type is published to.

    >>> topic_for_type("Quote")
    'market'
    """
    for spec in CATALOGUE:
        if type_name in spec.value_types:
            return spec.name
    raise KeyError(f"no topic carries events of type {type_name!r}")
