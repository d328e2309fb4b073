"""The in-process driver: a processor over a recording, no broker, the runtime's exact rules.

Two pieces:

- `EventRunner`: the per-message rules every runner of a processor applies, in this order:
  size cap (before any parsing), decode with `schemas.codec`, state key, duplicate check by
  `event_id` (per key, bounded: `engine.dedup`), `processor.process`, output size cap. Bad
  input becomes a `DeadLetter` for the `dlq` topic and processing goes on. The Kafka runtime
  (`consumers.runtime`) calls the same object for every consumed message, which is why the
  two give the same outputs.
- `Driver` / `run_recording`: feed a recording (`schemas.recording`) through an EventRunner in
  file order and write the outputs in the recording format. This is the reference of every
  determinism test and the engine behind `streamrisk evaluate`.

Dead letters (DESIGN.md section 5) have deterministic content: `original_topic` is the
catalogue name (no prefix), partition and offset are the message's (-1 when a recording has
none), `event_id` derives from the input's id (or, for bytes that are not an event, from a
digest of the bytes) and the error kind, `ts_event` is the input's event time (or the
message timestamp when the bytes are not an event). Duplicates go to the dead-letter topic
too (kind `duplicate`), so an operator can see them; they never reach the processor. A
processor that raises on an event gives a `processing_error` dead letter; an output over the
size cap is replaced by one. Bytes kept in a dead letter are truncated to fit the cap.

Side tables: a processor may declare `tables` (catalogue names read in full by every worker,
e.g. `risk.limits`) and `apply_table(topic, event) -> outputs` (see
`engine.processor.TableProcessor`). The driver feeds messages of those topics to it in file
order, messages of the input topic to `process`, and ignores (counts) the rest.

Example, with a processor from the tests:

>>> from tests.processors import CountingProcessor
>>> from schemas.market import Trade
>>> from schemas.recording import RecordedMessage
>>> trade = Trade(event_id="t1", ts_event=1, ts_init=1, source="doc", symbol="X", price=1.0,
...               qty=2.0)
>>> driver = Driver(CountingProcessor())
>>> messages = [RecordedMessage.from_event("market", "X", trade)] * 2
>>> result = driver.run(messages)
>>> result.events, result.outputs, dict(result.dead_letters)
(2, 1, {'duplicate': 1})
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from engine.dedup import KeyedDedup
from engine.envelope import comparable
from engine.processor import Output, Processor
from engine.snapshots import Snapshot
from schemas.codec import DecodeError, decode, encode
from schemas.common import Envelope
from schemas.ids import derive_event_id
from schemas.outputs import DeadLetter
from schemas.recording import RecordedMessage, RecordingWriter, read_recording
from schemas.topics import WORKER_INPUTS

DEFAULT_DEDUP_PER_KEY = 256
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
MAX_REASON = 2000


class Emitted(NamedTuple):
    """One message to publish: catalogue topic (no prefix), key, encoded event."""

    topic: str
    key: str | None
    value: bytes


@dataclass
class RunnerStats:
    events: int = 0
    """Input messages handled (good and bad)."""
    processed: int = 0
    """Events the processor handled."""
    outputs: int = 0
    """Processor outputs emitted (dead letters not included)."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Dead letters by error kind (duplicates included, as `duplicate`)."""
    replayed_skipped: int = 0
    """Events already contained in a restored snapshot (at-least-once recovery only)."""
    key_moves: int = 0
    """State keys seen on a partition other than the one that held them."""
    table_events: int = 0
    table_errors: int = 0


def input_topic_of(processor: Processor) -> str:
    """The catalogue topic a processor consumes: its `input_topic` attribute, or the input of
    its worker name in the catalogue (`market-worker` -> `market`)."""
    topic = getattr(processor, "input_topic", None) or WORKER_INPUTS.get(processor.name)
    if not topic:
        raise ValueError(f"processor {processor.name!r} names no input topic (give it an "
                         "`input_topic` attribute)")
    return str(topic)


def tables_of(processor: Processor) -> tuple[str, ...]:
    """Side tables a processor reads (empty unless it implements `apply_table`)."""
    tables = tuple(getattr(processor, "tables", ()) or ())
    if tables and not callable(getattr(processor, "apply_table", None)):
        raise TypeError(f"processor {processor.name!r} declares tables but no apply_table")
    return tables


class EventRunner:
    """The per-message rules shared by the in-process driver and the Kafka runtime.

    Besides the processor it owns what the runtime snapshots with each key: the key's
    duplicate window, the last input offset applied to it and the partition it came from.
    """

    def __init__(self, processor: Processor, *, input_topic: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 dedup_per_key: int = DEFAULT_DEDUP_PER_KEY) -> None:
        self.processor = processor
        self.worker = processor.name
        self.input_topic = input_topic or input_topic_of(processor)
        self.tables = tables_of(processor)
        self.max_message_bytes = max_message_bytes
        # base64 inflates by 4/3; leave room for the rest of the DeadLetter.
        self.max_dead_bytes = max(0, (max_message_bytes - MAX_REASON * 2 - 2048) * 3 // 4)
        self.dedup = KeyedDedup(dedup_per_key)
        self.stats = RunnerStats()
        self.key_partition: dict[str, int] = {}
        self.partition_keys: dict[int, set[str]] = {}
        self.last_offset: dict[str, int] = {}
        self.dirty: set[str] = set()
        self._skip_until: dict[int, int] = {}
        self._restored_offset: dict[str, int] = {}
        self._key_of = processor.key_of
        self._process = processor.process

    # --- the hot path -------------------------------------------------------------------------

    def handle(self, partition: int, offset: int, key: bytes | str | None,
               value: bytes | None, timestamp_ms: int = 0,
               event: Envelope | None = None) -> list[Emitted]:
        """Everything one input message gives: outputs and dead letters, in order.

        `event`: the message already decoded (by a caller that had to look inside it, e.g.
        to hold it in event time), so it is not decoded twice."""
        self.stats.events += 1
        if value is None:
            value = b""
        if len(value) > self.max_message_bytes:
            return [self._dead("too_large", f"{len(value)} bytes is over the "
                               f"{self.max_message_bytes}-byte cap", partition, offset, key,
                               value, timestamp_ms, None)]
        if event is None:
            try:
                event = decode(value, self.max_message_bytes)
            except DecodeError as exc:
                return [self._dead(exc.kind, exc.reason, partition, offset, key, value,
                                   timestamp_ms, None)]
        state_key = self._key_of(event)
        if state_key is not None:
            if (self._skip_until and offset <= self._skip_until.get(partition, -1)
                    and offset <= self._restored_offset.get(state_key, -1)):
                self.stats.replayed_skipped += 1
                return []
            if self.dedup.capacity and self.dedup.check(state_key, event.event_id):
                return [self._dead("duplicate", f"event_id {event.event_id!r} was already "
                                   f"processed for key {state_key!r}", partition, offset, key,
                                   value, timestamp_ms, event)]
            if self.key_partition.get(state_key) != partition:
                self._own(state_key, partition)
            self.last_offset[state_key] = offset
            self.dirty.add(state_key)
        try:
            outputs = self._process(event)
        except Exception as exc:  # noqa: BLE001 - bad input never stops a worker
            return [self._dead("processing_error", f"{type(exc).__name__}: {exc}", partition,
                               offset, key, value, timestamp_ms, event)]
        self.stats.processed += 1
        return self._emit(outputs, event, partition, offset, key, value, timestamp_ms)

    def _emit(self, outputs: Sequence[Output], cause: Envelope, partition: int, offset: int,
              key: bytes | str | None, value: bytes, timestamp_ms: int) -> list[Emitted]:
        emitted = []
        for out in outputs:
            data = encode(out.value)
            if len(data) > self.max_message_bytes:
                emitted.append(self._dead(
                    "processing_error", f"output {out.value.type} for {out.topic} is "
                    f"{len(data)} bytes, over the {self.max_message_bytes}-byte cap",
                    partition, offset, key, value, timestamp_ms, cause))
                continue
            emitted.append(Emitted(out.topic, out.key, data))
        self.stats.outputs += len(emitted)
        return emitted

    def _dead(self, kind: str, reason: str, partition: int, offset: int,
              key: bytes | str | None, value: bytes, timestamp_ms: int,
              cause: Envelope | None) -> Emitted:
        self.stats.dead_letters[kind] += 1
        text_key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        kept = value[:self.max_dead_bytes]
        if len(kept) < len(value):
            reason = f"{reason} (original truncated to {len(kept)} of {len(value)} bytes)"
        if cause is not None:
            base_id, ts, seq = cause.event_id, cause.ts_event, cause.seq
        else:
            digest = hashlib.blake2b(value, digest_size=16)
            digest.update(f"\x1f{self.input_topic}\x1f{text_key}".encode())
            base_id, ts, seq = digest.hexdigest(), max(0, timestamp_ms) * 1_000_000, 0
        letter = DeadLetter(
            event_id=derive_event_id(base_id, f"DEAD_LETTER_{kind.upper()}"), ts_event=ts,
            ts_init=time.time_ns(), source=self.worker, seq=seq,
            original_topic=self.input_topic, original_partition=max(partition, -1),
            original_offset=max(offset, -1), original_key=text_key,
            original_value_b64=base64.b64encode(kept).decode(),
            error_kind=kind,  # type: ignore[arg-type]
            reason=reason[:MAX_REASON], worker=self.worker)
        return Emitted(DeadLetter.TOPIC, text_key, encode(letter))

    # --- side tables --------------------------------------------------------------------------

    def apply_table(self, topic: str, value: bytes | None) -> list[Emitted]:
        """A message of a side table; undecodable ones are counted and skipped (every worker
        reads every table, so dead-lettering them would duplicate the letters)."""
        event = self.decode_table(value)
        return [] if event is None else self.apply_table_event(topic, event)

    def decode_table(self, value: bytes | None) -> Envelope | None:
        """A side-table message decoded (None, counted, when it is not an event)."""
        self.stats.table_events += 1
        try:
            return decode(value or b"", self.max_message_bytes)
        except DecodeError:
            self.stats.table_errors += 1
            return None

    def apply_table_event(self, topic: str, event: Envelope) -> list[Emitted]:
        """A decoded side-table event handed to the processor; its outputs encoded."""
        apply = getattr(self.processor, "apply_table")  # noqa: B009 - optional protocol
        outputs = apply(topic, event)
        if not outputs:
            return []
        emitted = []
        for out in outputs:
            data = encode(out.value)
            if len(data) <= self.max_message_bytes:
                emitted.append(Emitted(out.topic, out.key, data))
        self.stats.outputs += len(emitted)
        return emitted

    # --- state ownership (used by the Kafka runtime) ------------------------------------------

    def _own(self, key: str, partition: int) -> None:
        previous = self.key_partition.get(key)
        if previous is not None:
            self.stats.key_moves += 1
            self.partition_keys.get(previous, set()).discard(key)
        self.key_partition[key] = partition
        self.partition_keys.setdefault(partition, set()).add(key)

    def take_dirty(self) -> set[str]:
        """Keys whose state or duplicate window changed since the last call."""
        keys = self.dirty
        keys |= self.processor.dirty_keys()
        self.dirty = set()
        return keys

    def snapshot(self, key: str) -> Snapshot:
        partition = self.key_partition.get(key, -1)
        return Snapshot(key=key, state=self.processor.snapshot(key),
                        dedup=self.dedup.snapshot(key),
                        source_offset=self.last_offset.get(key, -1), partition=partition)

    def restore(self, snap: Snapshot) -> None:
        """Install a verified snapshot as the key's state (the processor unpickles it)."""
        self.processor.restore(snap.key, snap.state)
        self.dedup.restore(snap.key, snap.dedup)
        self.key_partition[snap.key] = snap.partition
        self.partition_keys.setdefault(snap.partition, set()).add(snap.key)
        self.last_offset[snap.key] = snap.source_offset
        self._restored_offset[snap.key] = snap.source_offset
        if snap.source_offset > self._skip_until.get(snap.partition, -1):
            self._skip_until[snap.partition] = snap.source_offset

    def resumed(self, partition: int, position: int) -> None:
        """The partition resumes at `position`: forget restored offsets it has passed."""
        until = self._skip_until.get(partition)
        if until is not None and position > until:
            del self._skip_until[partition]
            for key in self.partition_keys.get(partition, ()):
                self._restored_offset.pop(key, None)

    def evict_partition(self, partition: int) -> set[str]:
        """Forget every key of `partition` (revoked, or rewound to its last checkpoint)."""
        keys = self.partition_keys.pop(partition, set())
        if keys:
            self.processor.evict(keys)
            self.dedup.evict(keys)
            for key in keys:
                self.key_partition.pop(key, None)
                self.last_offset.pop(key, None)
                self._restored_offset.pop(key, None)
                self.dirty.discard(key)
        self._skip_until.pop(partition, None)
        return keys


@dataclass
class DriverResult:
    events: int
    outputs: int
    dead_letters: Counter[str]
    table_events: int
    ignored: int
    elapsed_s: float
    by_topic: Counter[str]

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else float("inf")


class Driver:
    """Runs one processor over recorded messages in order, without a broker."""

    def __init__(self, processor: Processor, *, input_topic: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 dedup_per_key: int = DEFAULT_DEDUP_PER_KEY) -> None:
        self.runner = EventRunner(processor, input_topic=input_topic,
                                  max_message_bytes=max_message_bytes,
                                  dedup_per_key=dedup_per_key)
        self.ignored = 0

    @classmethod
    def from_settings(cls, processor: Processor, settings: Any, *,
                      input_topic: str | None = None) -> Driver:
        """A driver with the size cap and duplicate window a worker would use."""
        return cls(processor, input_topic=input_topic,
                   max_message_bytes=settings.max_message_bytes,
                   dedup_per_key=settings.worker.dedup_per_key)

    def feed(self, message: RecordedMessage) -> list[Emitted]:
        runner = self.runner
        if message.topic == runner.input_topic:
            return runner.handle(message.partition, message.offset, message.key,
                                 message.value_bytes(), message.timestamp)
        if message.topic in runner.tables:
            return runner.apply_table(message.topic, message.value_bytes())
        self.ignored += 1
        return []

    def finish(self) -> list[Emitted]:
        """Outputs still due at the end of the input (none here; a driver that buffers, such
        as `engine.pipeline.Pipeline`, releases what it holds)."""
        return []

    def run(self, messages: Iterable[RecordedMessage] | str | Path, *,
            out: str | Path | RecordingWriter | None = None,
            on_output: Callable[[Emitted], None] | None = None,
            progress: bool = False, total: int | None = None) -> DriverResult:
        """Feed every message; write outputs to `out` (recording format) and/or hand them to
        `on_output`. `progress` shows a rich progress bar (on stderr)."""
        source: Iterable[RecordedMessage] = (
            read_recording(messages) if isinstance(messages, str | Path) else messages)
        if total is None and isinstance(source, Sequence):
            total = len(source)
        writer = RecordingWriter(out) if isinstance(out, str | Path) else out
        offsets: Counter[str] = Counter()
        start = time.perf_counter()
        runner = self.runner
        events_before = runner.stats.events + runner.stats.table_events
        try:
            for emitted in self._iterate(source, progress, total):
                offsets[emitted.topic] += 1
                if writer is not None:
                    obj = orjson.loads(emitted.value)
                    writer.write(RecordedMessage(
                        topic=emitted.topic, key=emitted.key, value=obj, partition=-1,
                        offset=offsets[emitted.topic] - 1,
                        timestamp=int(obj.get("ts_event", 0)) // 1_000_000))
                if on_output is not None:
                    on_output(emitted)
        finally:
            if writer is not None and writer is not out:
                writer.close()
        stats = runner.stats
        return DriverResult(
            events=stats.events + stats.table_events - events_before + self.ignored,
            outputs=stats.outputs, dead_letters=Counter(stats.dead_letters),
            table_events=stats.table_events, ignored=self.ignored,
            elapsed_s=time.perf_counter() - start, by_topic=offsets)

    def _iterate(self, source: Iterable[RecordedMessage], progress: bool,
                 total: int | None) -> Iterator[Emitted]:
        feed = self.feed
        if not progress:
            for message in source:
                yield from feed(message)
            yield from self.finish()
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        columns = [BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("events", total=total)
            for n, message in enumerate(source, start=1):
                yield from feed(message)
                if n % 2048 == 0:
                    bar.update(task, completed=n)
            yield from self.finish()
            bar.update(task, completed=total or 0)


def run_recording(processor: Processor, recording: str | Path | Iterable[RecordedMessage],
                  out: str | Path | None = None, *, settings: Any = None,
                  progress: bool = False, **driver_options: Any) -> DriverResult:
    """Run `processor` over a recording file (or messages); write outputs to `out`.

    The size cap and duplicate window come from `settings` (as a worker would use them) or
    from `driver_options` (`max_message_bytes`, `dedup_per_key`, `input_topic`)."""
    driver = (Driver.from_settings(processor, settings, **driver_options)
              if settings is not None else Driver(processor, **driver_options))
    return driver.run(recording, out=out, progress=progress)


def by_key(items: Iterable[tuple[str, str | None, bytes | dict[str, Any]]],
           ) -> dict[tuple[str, str | None], list[Any]]:
    """Outputs grouped per (topic, key) in order, with run-dependent fields removed.

    Kafka keeps order per key, not across keys, so this is what two runs must agree on:
    `by_key(driver_outputs) == by_key(kafka_outputs)`. The groups come sorted by topic and
    key, whatever order the items were read in, so a failed comparison shows only what
    differs.
    """
    grouped: dict[tuple[str, str | None], list[Any]] = {}
    for topic, key, value in items:
        obj = orjson.loads(value) if isinstance(value, bytes | bytearray) else value
        grouped.setdefault((topic, key), []).append(comparable(obj))
    return dict(sorted(grouped.items(), key=lambda item: (item[0][0], item[0][1] or "")))
