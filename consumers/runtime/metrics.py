"""Metric hooks of the worker runtime, with no Prometheus in sight.

The worker reports to a `RuntimeMetrics` (plain counters and timings anyone can read, for
tests, the CLI summary and the benchmark) which forwards every observation to the
`MetricsHooks` listeners attached to it. An exporter (Prometheus, logs...) subclasses
`MetricsHooks` and overrides what it needs; every hook is called at most once per consumed
batch, checkpoint or restore, never per event, so a listener cannot slow the hot path.

>>> class Printer(MetricsHooks):
...     def checkpoint(self, seconds, partitions, keys):
...         print(f"checkpoint of {partitions} partitions, {keys} keys")
>>> metrics = RuntimeMetrics()
>>> metrics.add_listener(Printer())
>>> metrics.checkpoint(0.01, 2, 5)
checkpoint of 2 partitions, 5 keys
>>> metrics.checkpoints
1
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


class MetricsHooks:
    """Observations a worker makes; every method is a no-op unless overridden."""

    def batch(self, events: int, seconds: float) -> None:
        """`events` input messages handled in `seconds` (processing latency per batch)."""

    def produced(self, topic: str, count: int) -> None:
        """`count` messages produced to catalogue `topic` since the previous call."""

    def dead_letter(self, kind: str, count: int) -> None:
        """`count` dead letters of `kind` (undecodable, duplicate, ...)."""

    def lag(self, partition: int, lag: int) -> None:
        """Messages behind the end of an input partition (sampled at each checkpoint)."""

    def checkpoint(self, seconds: float, partitions: int, keys: int) -> None:
        """A checkpoint committed `partitions` partitions and snapshotted `keys` keys."""

    def unsnapshotted(self, partitions: int) -> None:
        """Just before each `checkpoint`: how many active partitions then hold input their
        snapshots do not (a snapshot round of each is still to come)."""

    def restore(self, seconds: float, partition: int, keys: int) -> None:
        """A partition's state was rebuilt from the changelog."""

    def snapshot_rejected(self, kind: str) -> None:
        """A changelog entry was refused (`signature`, `version`, `incomplete`, `format`)."""

    def recovery(self, reason: str) -> None:
        """A partition went back to its last checkpoint (fatal producer error, abort...)."""

    def rebalance(self, assigned: int, revoked: int) -> None:
        """The group moved partitions."""

    def outputs(self, emitted: Sequence[tuple[str, str | None, bytes]]) -> None:
        """Messages handed to the sink, as (catalogue topic, key, encoded value), once per
        batch. Only called when a listener overrides it (decoding is the listener's cost)."""


@dataclass
class RuntimeMetrics(MetricsHooks):
    """Totals of everything the hooks report, plus the listeners to forward to."""

    events_in: int = 0
    events_out: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    processing_seconds: float = 0.0
    batches: int = 0
    lag_by_partition: dict[int, int] = field(default_factory=dict)
    checkpoints: int = 0
    checkpoint_seconds: float = 0.0
    checkpoint_max_seconds: float = 0.0
    snapshots_written: int = 0
    unsnapshotted_partitions: int = 0
    """Active partitions with input their snapshots do not hold, at the last checkpoint."""
    restores: int = 0
    restore_seconds: float = 0.0
    restored_keys: int = 0
    replayed_events: int = 0
    """Input processed again after a restore, from the partition's replay mark up to its
    committed offset, to bring the keys' state forward (outputs dropped: already published)."""
    snapshots_rejected: Counter[str] = field(default_factory=Counter)
    recoveries: Counter[str] = field(default_factory=Counter)
    rebalances: int = 0
    first_event_at: float = 0.0
    """perf_counter() when the first event was handled (0: none yet)."""
    last_event_at: float = 0.0
    last_checkpoint_at: float = 0.0
    restore_window: tuple[float, float] = (0.0, 0.0)
    """perf_counter() span from the start of the earliest restore to the end of the latest."""
    worker: str = ""
    """Processor name (`market-worker`...), for exporters' labels."""
    input_topic: str = ""
    """Catalogue name of the input topic."""
    wants_outputs: bool = False
    """Some listener overrides `outputs`: only then does the worker collect them."""
    listeners: list[MetricsHooks] = field(default_factory=list, repr=False)

    def add_listener(self, hooks: MetricsHooks) -> None:
        self.listeners.append(hooks)
        if type(hooks).outputs is not MetricsHooks.outputs:
            self.wants_outputs = True

    @property
    def total_lag(self) -> int:
        return sum(self.lag_by_partition.values())

    def batch(self, events: int, seconds: float) -> None:
        if events:
            now = time.perf_counter()
            if not self.events_in:
                self.first_event_at = now - seconds
            self.last_event_at = now
        self.events_in += events
        self.processing_seconds += seconds
        self.batches += 1
        for hook in self.listeners:
            hook.batch(events, seconds)

    def produced(self, topic: str, count: int) -> None:
        self.events_out[topic] += count
        for hook in self.listeners:
            hook.produced(topic, count)

    def dead_letter(self, kind: str, count: int) -> None:
        self.dead_letters[kind] += count
        for hook in self.listeners:
            hook.dead_letter(kind, count)

    def lag(self, partition: int, lag: int) -> None:
        self.lag_by_partition[partition] = lag
        for hook in self.listeners:
            hook.lag(partition, lag)

    def checkpoint(self, seconds: float, partitions: int, keys: int) -> None:
        self.checkpoints += 1
        self.last_checkpoint_at = time.perf_counter()
        self.checkpoint_seconds += seconds
        self.checkpoint_max_seconds = max(self.checkpoint_max_seconds, seconds)
        self.snapshots_written += keys
        for hook in self.listeners:
            hook.checkpoint(seconds, partitions, keys)

    def unsnapshotted(self, partitions: int) -> None:
        self.unsnapshotted_partitions = partitions
        for hook in self.listeners:
            hook.unsnapshotted(partitions)

    def restore(self, seconds: float, partition: int, keys: int) -> None:
        now = time.perf_counter()
        start = now - seconds
        first = self.restore_window[0] if self.restores else start
        self.restore_window = (min(first, start), now)
        self.restores += 1
        self.restore_seconds += seconds
        self.restored_keys += keys
        for hook in self.listeners:
            hook.restore(seconds, partition, keys)

    def snapshot_rejected(self, kind: str) -> None:
        self.snapshots_rejected[kind] += 1
        for hook in self.listeners:
            hook.snapshot_rejected(kind)

    def recovery(self, reason: str) -> None:
        self.recoveries[reason] += 1
        for hook in self.listeners:
            hook.recovery(reason)

    def rebalance(self, assigned: int, revoked: int) -> None:
        self.rebalances += 1
        for hook in self.listeners:
            hook.rebalance(assigned, revoked)

    def outputs(self, emitted: Sequence[tuple[str, str | None, bytes]]) -> None:
        for hook in self.listeners:
            hook.outputs(emitted)

    def forget_partition(self, partition: int) -> None:
        self.lag_by_partition.pop(partition, None)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        dead = sum(self.dead_letters.values())
        return (f"{self.events_in} events in, {sum(self.events_out.values())} out, "
                f"{dead} dead letters, {self.checkpoints} checkpoints, "
                f"{self.restores} restores ({self.restored_keys} keys), "
                f"{sum(self.recoveries.values())} recoveries")
