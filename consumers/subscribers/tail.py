"""Tail the risk outputs: alerts, decisions, breaches and trading-state changes.

The tail reads committed data only (read_committed: an aborted worker transaction never
shows) and never joins a consumer group or commits offsets: it assigns every partition of
its topics itself, starting `last` records back from the end of each partition (or from the
beginning), so any number of people can watch without disturbing each other or the workers.

Without `follow`, it stops once every partition has been read up to where it ended when the
tail started (librdkafka's partition-EOF event, which in read_committed mode means the last
stable offset); the records read up to then are yielded in event-time order. With `follow`
it then goes on yielding new records as they arrive until `stop` is set.

Records that do not decode (or are over the size cap) are skipped and counted in
`TailReader.skipped`; a viewer does not dead-letter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumers.subscribers.filters import KIND_BY_TOPIC, EventFilter, Row, summarize
from producers.kafka import make_consumer
from schemas.codec import DecodeError, decode, to_object
from schemas.common import Envelope
from schemas.settings import Settings

DEFAULT_TOPICS: tuple[str, ...] = tuple(KIND_BY_TOPIC)
# librdkafka needs a group id even for assign(); the tail never joins or commits with it.
VIEWER_GROUP = "streamrisk-viewer-tail"
# The catch-up phase is sorted by event time in chunks of this many records, so a
# --from-beginning dump of a large topic never holds more than this in memory.
SORT_CHUNK = 50_000


class TailError(RuntimeError):
    """The tail cannot start (missing topic, unreachable broker); one readable line."""


@dataclass(frozen=True)
class TailRecord:
    """One decoded output event and where it was read."""

    topic: str  # catalogue name, without the prefix
    partition: int
    offset: int
    event: Envelope
    row: Row

    def to_json(self) -> dict[str, Any]:
        """The event's JSON object (what `--json` prints, one per line)."""
        return to_object(self.event)


class TailReader:
    """Reads the subscriber topics from fixed start offsets, filtered.

    >>> reader = TailReader(settings, last=10)  # doctest: +SKIP
    >>> for record in reader.read(follow=False):  # doctest: +SKIP
    ...     print(record.row.time, record.row.kind, record.row.detail)
    """

    def __init__(self, settings: Settings, topics: Sequence[str] = DEFAULT_TOPICS, *,
                 last: int | None = 10, event_filter: EventFilter | None = None,
                 poll_timeout_s: float = 0.2) -> None:
        unknown = [t for t in topics if t not in KIND_BY_TOPIC]
        if unknown:
            raise TailError(f"cannot tail {', '.join(unknown)}: choose from "
                            f"{', '.join(KIND_BY_TOPIC)}")
        self.settings = settings
        self.topics = tuple(topics)
        self.last = last  # None: from the beginning
        self.filter = event_filter or EventFilter()
        self.poll_timeout_s = poll_timeout_s
        self.skipped = 0
        self.read_count = 0

    def _consumer(self) -> Consumer:
        overrides: dict[str, Any] = {"enable.partition.eof": True}
        return make_consumer(self.settings, VIEWER_GROUP,
                             read_committed=True, **overrides)

    def _start_offsets(self, consumer: Consumer) -> list[TopicPartition]:
        timeout = self.settings.connect_timeout_s
        assignment = []
        for short in self.topics:
            full = self.settings.topic(short)
            try:
                metadata = consumer.list_topics(full, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - KafkaException; report one line
                raise TailError(f"cannot reach Kafka at {self.settings.bootstrap_servers}: "
                                f"{exc}") from None
            topic = metadata.topics.get(full)
            if topic is None or topic.error is not None or not topic.partitions:
                raise TailError(f"topic {full} does not exist (create the topics with "
                                "`streamrisk topics create`)")
            for partition in sorted(topic.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(full, partition),
                                                           timeout=timeout)
                start = low if self.last is None else max(low, high - self.last)
                assignment.append(TopicPartition(full, partition, start))
        return assignment

    def _record(self, topic: str, partition: int, offset: int,
                value: bytes | None) -> TailRecord | None:
        short = topic[len(self.settings.topic_prefix):]
        self.read_count += 1
        if value is None:
            self.skipped += 1
            return None
        try:
            event = decode(value, self.settings.max_message_bytes)
            row = summarize(event)
        except (DecodeError, ValueError):
            self.skipped += 1
            return None
        if not self.filter.matches_row(row, event.type):
            return None
        return TailRecord(short, partition, offset, event, row)

    def read(self, *, follow: bool = False,
             stop: threading.Event | None = None) -> Iterator[TailRecord]:
        """Yield matching records: the catch-up part sorted by event time, then (with
        `follow`) new ones as they arrive, until `stop` is set."""
        stop = stop or threading.Event()
        consumer = self._consumer()
        try:
            assignment = self._start_offsets(consumer)
            consumer.assign(assignment)
            pending = {(tp.topic, tp.partition) for tp in assignment}
            buffer: list[TailRecord] = []
            while pending and not stop.is_set():
                msg = consumer.poll(self.poll_timeout_s)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((msg.topic() or "", msg.partition() or 0))
                    continue
                record = self._record(msg.topic() or "", msg.partition() or 0,
                                      msg.offset() or 0, msg.value())
                if record is not None:
                    buffer.append(record)
                    if len(buffer) >= SORT_CHUNK:
                        yield from _by_event_time(buffer)
                        buffer = []
            yield from _by_event_time(buffer)
            while follow and not stop.is_set():
                msg = consumer.poll(self.poll_timeout_s)
                if msg is None or msg.error() is not None:
                    continue
                record = self._record(msg.topic() or "", msg.partition() or 0,
                                      msg.offset() or 0, msg.value())
                if record is not None:
                    yield record
        finally:
            consumer.close()


def _by_event_time(records: list[TailRecord]) -> list[TailRecord]:
    return sorted(records, key=lambda r: (r.row.ts_event, r.topic, r.partition, r.offset))
