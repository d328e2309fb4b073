"""The demo's output reader: a thread that reads every output topic into a `LiveState`.

Like the alert tail it reads committed data only and never joins a group or commits: it
assigns every partition itself, from the offsets the topics ended at before the run started
(`end_offsets`), so on a shared cluster it shows this run's outputs only. Snapshot and
health topics are counted, not decoded; a message that is not JSON is counted as
undecodable and skipped (a viewer never dead-letters).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import orjson
from confluent_kafka import Consumer, Message, TopicPartition

from consumers.demo.live import COUNTED_TOPICS, DECODED_TOPICS, LiveState
from producers.kafka import make_consumer
from schemas.settings import Settings

OUTPUT_TOPICS: tuple[str, ...] = DECODED_TOPICS + COUNTED_TOPICS


def end_offsets(settings: Settings, topics: Iterable[str],
                timeout_s: float | None = None) -> list[TopicPartition]:
    """Every partition of `topics` (catalogue names) at its current end."""
    timeout = timeout_s or settings.connect_timeout_s
    consumer = make_consumer(settings, None, read_committed=True)
    try:
        out = []
        for short in topics:
            full = settings.topic(short)
            metadata = consumer.list_topics(full, timeout=timeout)
            topic = metadata.topics.get(full)
            if topic is None or topic.error is not None:
                raise RuntimeError(f"topic {full} does not exist")
            for partition in sorted(topic.partitions):
                _low, high = consumer.get_watermark_offsets(TopicPartition(full, partition),
                                                            timeout=timeout)
                out.append(TopicPartition(full, partition, high))
        return out
    finally:
        consumer.close()


class OutputReader(threading.Thread):
    """Reads from `start` (from `end_offsets`) into `state` until `stop()`."""

    def __init__(self, settings: Settings, state: LiveState,
                 start: list[TopicPartition]) -> None:
        super().__init__(name="demo-output-reader", daemon=True)
        self.settings = settings
        self.state = state
        self.start_positions = start
        self.last_message = time.monotonic()
        self.error: str | None = None
        self._halt = threading.Event()
        self._prefix = settings.topic_prefix
        self._decoded = frozenset(DECODED_TOPICS)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout_s)

    def idle_for(self) -> float:
        """Seconds since the last message arrived."""
        return time.monotonic() - self.last_message

    def run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer = make_consumer(self.settings, None, read_committed=True)
            consumer.assign(self.start_positions)
            while not self._halt.is_set():
                batch = consumer.consume(num_messages=1000, timeout=0.1)
                if batch:
                    self._handle(batch)
        except Exception as exc:  # noqa: BLE001 - shown in the view, the demo goes on
            self.error = f"output reader stopped: {exc}"
        finally:
            if consumer is not None:
                consumer.close()

    def _handle(self, batch: list[Message]) -> None:
        now = time.monotonic()
        counted: dict[str, int] = {}
        for msg in batch:
            if msg.error() is not None:
                continue  # partition EOF and transient errors: the client carries on
            self.last_message = now
            topic = (msg.topic() or "")[len(self._prefix):]
            if topic not in self._decoded:
                counted[topic] = counted.get(topic, 0) + 1
                continue
            raw = msg.value()
            if raw is None or len(raw) > self.settings.max_message_bytes:
                self.state.bad()
                continue
            try:
                value = orjson.loads(raw)
                self.state.apply(topic, value, now)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self.state.bad()
        for topic, n in counted.items():
            self.state.count(topic, n, now)
