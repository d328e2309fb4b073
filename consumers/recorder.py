"""The recorder: reads topics (read-committed) into the recording format (plain, .gz, .zst).

Partitions are assigned directly, from the beginning (or the end with `from_end=True`): no
group join, nothing committed, so recording never disturbs a consumer group. Messages are
written as they arrive, which keeps each partition's order and therefore each key's order;
partitions interleave. Aborted transactional messages are never recorded (read_committed).
Topics are named without the prefix in the file, as the recording format wants.

The recorder stops after `max_events` messages, after `idle_timeout_s` seconds without a
message (wall clock: it is an I/O timeout, not event time), or when `stop()` is called; the
file is always closed complete (a recording is valid JSONL up to its last line).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from producers.kafka import make_consumer
from schemas.recording import RecordedMessage, RecordingWriter
from schemas.settings import Settings


class RecorderError(RuntimeError):
    """The recording cannot go on (missing topic, fatal client error): one readable line."""


@dataclass
class RecordStats:
    count: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    stopped_by: str = ""  # "max-events", "idle-timeout", "stop"

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


def _text(data: bytes | str | None) -> str | None:
    if data is None or isinstance(data, str):
        return data
    return data.decode("utf-8", "backslashreplace")


class Recorder:
    """Records `topics` (short or full names) into `out`; call `run()`."""

    def __init__(self, settings: Settings, topics: Sequence[str], out: str | Path, *,
                 max_events: int | None = None, idle_timeout_s: float | None = None,
                 from_end: bool = False, consumer: Consumer | None = None) -> None:
        if not topics:
            raise RecorderError("no topics to record")
        if max_events is not None and max_events < 1:
            raise RecorderError(f"--max-events must be positive, got {max_events}")
        if idle_timeout_s is not None and idle_timeout_s <= 0:
            raise RecorderError(f"--idle-timeout must be positive, got {idle_timeout_s:g}")
        self.settings = settings
        prefix = settings.topic_prefix
        self.topics = {(t if prefix and t.startswith(prefix) else settings.topic(t)): t
                       for t in topics}
        self.short = {full: full[len(prefix):] for full in self.topics}
        self.out = Path(out)
        self.max_events = max_events
        self.idle_timeout_s = idle_timeout_s
        self.from_end = from_end
        self._consumer = consumer
        self._stop = False

    def stop(self) -> None:
        """Ask `run` to return after the current batch (safe from a signal handler)."""
        self._stop = True

    def _assign(self, consumer: Consumer) -> None:
        metadata = consumer.list_topics(timeout=self.settings.connect_timeout_s)
        partitions = []
        for full in self.topics:
            topic = metadata.topics.get(full)
            if topic is None or topic.error is not None:
                raise RecorderError(f"topic {full} does not exist (create it with "
                                    "`streamrisk topics create` or check --topic-prefix)")
            start = OFFSET_END if self.from_end else OFFSET_BEGINNING
            partitions += [TopicPartition(full, p, start) for p in sorted(topic.partitions)]
        consumer.assign(partitions)

    def run(self, on_progress: Callable[[RecordStats], None] | None = None) -> RecordStats:
        consumer = self._consumer or make_consumer(
            self.settings, f"{self.settings.client_id}-recorder", read_committed=True)
        stats = RecordStats()
        try:
            self._assign(consumer)
            with RecordingWriter(self.out) as writer:
                self._loop(consumer, writer, stats, on_progress)
        finally:
            consumer.close()
        return stats

    def _loop(self, consumer: Consumer, writer: RecordingWriter, stats: RecordStats,
              on_progress: Callable[[RecordStats], None] | None) -> None:
        last_message = time.monotonic()
        while not self._stop:
            batch = consumer.consume(num_messages=500, timeout=0.2)
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    if error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise RecorderError(f"cannot read {msg.topic()}: {error.str()}")
                    continue  # transient: the client retries by itself
                message = self._message(msg)
                writer.write(message)
                topic = message.topic
                stats.count += 1
                stats.per_topic[topic] = stats.per_topic.get(topic, 0) + 1
                if self.max_events is not None and stats.count >= self.max_events:
                    stats.stopped_by = "max-events"
                    return
            now = time.monotonic()
            if batch:
                last_message = now
                if on_progress:
                    on_progress(stats)
            elif self.idle_timeout_s is not None and now - last_message >= self.idle_timeout_s:
                stats.stopped_by = "idle-timeout"
                return
        stats.stopped_by = "stop"

    def _message(self, msg: Message) -> RecordedMessage:
        topic, key, value = self.short[msg.topic() or ""], _text(msg.key()), msg.value()
        raw_headers = msg.headers() or []
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        headers = [(name, _text(v) or "") for name, v in pairs]
        partition, offset = msg.partition() or 0, msg.offset() or 0
        timestamp = msg.timestamp()[1]
        if value is None:  # a tombstone: the line gets neither value nor value_b64
            return RecordedMessage(topic=topic, key=key, timestamp=timestamp, headers=headers,
                                   partition=partition, offset=offset)
        return RecordedMessage.from_bytes(topic, key, value, timestamp=timestamp,
                                          headers=headers, partition=partition, offset=offset)
