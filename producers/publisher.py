"""Keyed publishing to catalogue topics through one idempotent, acks=all producer.

A thin wrapper over the producer built by `producers.kafka.make_producer`: it adds the topic
prefix, uses the event's time as the Kafka message timestamp, and accounts for every message.

Failure semantics (nothing is dropped silently):

- every produce call carries `DeliveryTracker.on_delivery`, so each message is either
  acknowledged by the broker (`delivered`) or reported as `failed` with the broker's reason;
- a message over the configured size cap, or one the client refuses outright, is counted as
  failed at once and never sent;
- when the local queue is full, `publish` serves delivery reports and retries (back-pressure)
  rather than dropping;
- `close()` flushes; whatever is still queued when the flush times out counts as failed.

Callers turn `PublishResult.ok` into their exit code.

>>> result = PublishResult(published=3, delivered=2, failed=1, errors=["market: timed out"])
>>> result.ok, result.summary()
(False, '3 published, 2 delivered, 1 failed (market: timed out)')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from confluent_kafka import KafkaException, Producer

from producers.kafka import DeliveryTracker, flush_all, make_producer
from schemas.codec import encode
from schemas.common import Envelope
from schemas.settings import Settings

Headers = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True)
class PublishResult:
    published: int
    delivered: int
    failed: int
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.delivered == self.published

    def summary(self) -> str:
        text = f"{self.published} published, {self.delivered} delivered, {self.failed} failed"
        if self.errors:
            text += f" ({'; '.join(self.errors[:3])})"
        return text


class Publisher:
    """Publishes events (or raw values) to `settings.topic(name)`; use as a context manager.

    >>> from schemas.settings import load_settings
    >>> pub = Publisher(load_settings(None, bootstrap_servers="127.0.0.1:9"))  # doctest: +SKIP
    >>> pub.publish("market", "AAPL", trade)  # doctest: +SKIP
    >>> pub.close().ok  # doctest: +SKIP
    True
    """

    def __init__(self, settings: Settings, *, producer: Producer | None = None,
                 flush_timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.producer = producer or make_producer(settings)
        self.tracker = DeliveryTracker()
        self.flush_timeout_s = flush_timeout_s
        self.published = 0
        self._refused = 0
        self._refusals: list[str] = []
        self._result: PublishResult | None = None

    def topic(self, name: str) -> str:
        """Full topic name of a catalogue (or any) short name."""
        return self.settings.topic(name)

    def publish(self, topic: str, key: str | None, event: Envelope, *,
                headers: Headers | None = None, timestamp_ms: int | None = None) -> None:
        """Publish one event; the message timestamp defaults to its `ts_event` in ms."""
        self.publish_bytes(topic, key, encode(event), headers=headers,
                           timestamp_ms=event.ts_event // 1_000_000 if timestamp_ms is None
                           else timestamp_ms)

    def publish_bytes(self, topic: str, key: str | None, value: bytes | None, *,
                      headers: Headers | None = None, timestamp_ms: int | None = None) -> None:
        """Publish a raw value (None is a tombstone) to the prefixed `topic`."""
        if self._result is not None:
            raise RuntimeError("publisher is closed")
        self.published += 1
        full = self.topic(topic)
        if value is not None and len(value) > self.settings.max_message_bytes:
            self._refuse(f"{full}: {len(value)} bytes is over the "
                         f"{self.settings.max_message_bytes}-byte cap")
            return
        header_list: list[tuple[str, str | bytes | None]] | None = (
            list(headers) if headers else None)
        while True:
            try:
                # timestamp 0 lets the client stamp the message itself.
                self.producer.produce(full, value=value,
                                      key=None if key is None else key.encode(),
                                      headers=header_list, timestamp=timestamp_ms or 0,
                                      on_delivery=self.tracker.on_delivery)
                break
            except BufferError:
                # Queue full: serve delivery reports until there is room (back-pressure).
                self.producer.poll(0.05)
            except KafkaException as exc:
                self._refuse(f"{full}: {exc.args[0].str() if exc.args else exc}")
                return
        self.producer.poll(0)

    def _refuse(self, reason: str) -> None:
        self._refused += 1
        if len(self._refusals) < self.tracker.max_errors_kept:
            self._refusals.append(reason)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports (call this while idle, e.g. when pacing)."""
        self.producer.poll(timeout_s)

    @property
    def failed(self) -> int:
        return self._refused + self.tracker.failed

    def close(self) -> PublishResult:
        """Flush and account for every message; safe to call more than once."""
        if self._result is None:
            left = flush_all(self.producer, self.flush_timeout_s)
            errors = self._refusals + self.tracker.errors
            if left:
                errors.append(f"{left} still queued after {self.flush_timeout_s:g} s flush")
            self._result = PublishResult(self.published, self.tracker.delivered,
                                         self.failed + left, errors)
        return self._result

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RatePacer:
    """Holds a caller to `rate` calls per second (None: no pacing); wall clock, never used
    for event times. While waiting it runs `idle` (e.g. serving delivery reports).

    >>> pacer = RatePacer(None)
    >>> pacer.wait()  # returns at once
    """

    def __init__(self, rate: float | None, *, idle: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.idle = idle or time.sleep
        self.clock = clock
        self.count = 0
        self.started: float | None = None

    def wait(self) -> None:
        if self.rate is None:
            return
        now = self.clock()
        if self.started is None:
            self.started = now
        due = self.started + self.count / self.rate
        self.count += 1
        ahead = due - now
        if ahead > 0.002:  # sleeping for less costs more than it saves
            self.idle(ahead)
