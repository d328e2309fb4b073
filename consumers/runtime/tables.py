"""Side tables: topics every worker reads in full (e.g. `risk.limits`, `risk.instruments`).

A `TableReader` assigns every partition of its topics from the beginning, read-committed,
outside the consumer group. `bootstrap` reads them up to their last stable offset before the
worker takes any input, then the worker drains what arrived between input batches. Positions
are never committed: a restarted worker reads the tables again from the beginning.

`current` says whether the last drain reached the end of every partition (its last stable
offset): the event-time join only treats a quiet table as idle when it is, so a worker that
fell behind on reading a table (a long batch, a starved fetcher) is not mistaken for the end
of a replay.

On brokers that answer empty fetches at once (profile `idle_probe_ms`), a reader that has
reached the end of every partition pauses them, and each drain after `idle_probe_ms` resumes
them for one look (`producers.kafka.IdlePause`): an idle table then costs one fetch per probe
instead of a fetch loop. A probe clears the ends seen, so `current` is true again only once
every partition has reported its end anew: a table is never called current on the strength
of a look older than the probe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from producers.kafka import IdlePause, idle_probe_s, make_consumer
from schemas.settings import Settings

log = logging.getLogger("streamrisk.runtime")


class TableReader:
    def __init__(self, settings: Settings, topics: Iterable[str], partitions: dict[str, int],
                 *, batch: int = 1000) -> None:
        """`topics` are catalogue names; `partitions` maps each full name to its count."""
        self.settings = settings
        self.batch = batch
        self._short = {settings.topic(t): t for t in topics}
        eof: dict[str, Any] = {"enable.partition.eof": True}
        self._consumer: Consumer = make_consumer(settings, None, read_committed=True, **eof)
        self._assigned = [TopicPartition(full, p, OFFSET_BEGINNING)
                          for full in self._short for p in range(partitions[full])]
        if self._assigned:
            self._consumer.assign(self._assigned)
        # partitions whose end was reached and nothing read since (EOF is reported again
        # each time the end is reached after new messages, and after each resume)
        self._at_end: set[tuple[str, int]] = set()
        # per partition, the next offset to apply: a message before it is a repeat
        self._next: dict[tuple[str, int], int] = {}
        self.repeats_skipped = 0
        probe_s = idle_probe_s(settings)
        self._idle = IdlePause(self._consumer, probe_s) if probe_s else None

    @property
    def current(self) -> bool:
        """Every partition has been read to its end, as of the last drain."""
        return len(self._at_end) == len(self._assigned)

    @property
    def resting(self) -> bool:
        """Paused between probes (profile `idle_probe_ms`), having read everything."""
        return self._idle is not None and bool(self._idle.paused)

    def bootstrap(self, apply: Callable[[str, bytes | None], object],
                  timeout_s: float = 60.0) -> int:
        """Apply everything up to each partition's last stable offset; returns the count."""
        ends = {}
        for tp in self._assigned:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout_s, cached=False)
            if high > 0:
                ends[(tp.topic, tp.partition)] = high
        applied = 0
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for message in self._consumer.consume(self.batch, 0.2):
                reached = self._take(message, apply)
                if reached is None:
                    continue
                if message.error() is None:
                    applied += 1
                where = (message.topic() or "", message.partition() or 0)
                if reached >= ends.get(where, 0):
                    ends.pop(where, None)
        return applied

    def drain(self, apply: Callable[[str, bytes | None], object]) -> int:
        """Apply what has arrived, without waiting."""
        applied = 0
        idle = self._idle
        if idle is not None and idle.probe_due:
            idle.resume()
            self._at_end.clear()
        for message in self._consumer.consume(self.batch, 0):
            if self._take(message, apply) is not None and message.error() is None:
                applied += 1
        if idle is not None and not idle.paused and self.current:
            idle.pause(self._assigned)
        return applied

    def _take(self, message: Message, apply: Callable[[str, bytes | None], object]
              ) -> int | None:
        """Apply a message, or note that its partition's end was reached (what `current`
        rests on); the offset its partition is now read up to, None for a repeat (nothing
        applied, nothing reached) or any other error."""
        where = (message.topic() or "", message.partition() or 0)
        error = message.error()
        if error is None:
            self._at_end.discard(where)
            offset = message.offset() or 0
            if offset < self._next.get(where, 0):
                # The consumer went back (a fetch restarted from an older position): applying
                # the old versions again would take the table back in time.
                if not self.repeats_skipped:
                    log.warning("side table %s[%d] delivered offset %d again (next expected "
                                "%d): repeats are skipped", where[0], where[1], offset,
                                self._next[where])
                self.repeats_skipped += 1
                return None
            self._next[where] = offset + 1
            apply(self._short[where[0]], _bytes(message.value()))
            return offset + 1
        if error.code() == KafkaError._PARTITION_EOF:
            self._at_end.add(where)
            return message.offset() or 0
        return None

    def close(self) -> None:
        self._consumer.close()


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value
