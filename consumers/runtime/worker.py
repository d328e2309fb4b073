"""The worker loop: consume -> `EventRunner` -> produce, with checkpoints and state hand-over.

A `Worker` runs any processor (`engine.processor.Processor`) in a consumer group on the
processor's input topic (range assignor on the embedded broker). It consumes in batches,
hands each message to the same `engine.driver.EventRunner` the in-process driver uses (size
cap, decode, dedup, process, dead letters), and produces the outputs keyed to
`settings.topic(output.topic)`. Every `commit_interval_ms` or `commit_interval_events`,
whichever comes first, it checkpoints.

Failure semantics (exactly-once, the default)
---------------------------------------------
* A checkpoint of input partition p is ONE Kafka transaction holding: every output and dead
  letter caused by p's events since the previous checkpoint (produced inside the open
  transaction as the events are processed) and p's next input offset
  (`send_offsets_to_transaction`). Readers of outputs read committed, so they see all of a
  checkpoint or nothing of it. Each partition has its own transactional producer (see
  `consumers.runtime.sink`): whoever owns p next fences the previous owner.
* Urgent outputs (`worker.urgent_topics`: alerts, breaches, decisions, state changes by
  default) do not wait for the interval: a partition whose open transaction holds one is
  checkpointed at the end of that batch (offsets and all, alone), so read-committed readers
  see it milliseconds after its event while everything else is committed every
  `commit_interval_ms`. Only when the batch was not full: a worker that is behind works
  through its backlog at the interval's pace.
* State is snapshotted less often than that (`snapshot_interval_ms`, 1 s by default):
  pickling every changed key at every 20 ms checkpoint cost more than the events
  themselves. Once p's interval has passed, a checkpoint of p also holds a signed snapshot
  of every key of p changed since the last one (to `<prefix><worker>.changelog`, partition
  p, tagged with the source offset and the river version; `engine.snapshots`) and p's
  replay mark: the input position all of p's snapshots are current with. Each partition
  keeps its own snapshot clock, staggered by partition number, and while the worker keeps
  up the most overdue partition gets a checkpoint of its own (when `snapshot_interval_ms`
  is at least `commit_interval_ms`): the worker pauses for one partition's keys at a
  time, not for all of them at once (with 1,000 instruments that pause was 100-300 ms).
  Behind, the interval's checkpoint takes every due partition. A partition whose round
  cost more than its share of `snapshot_budget` (10% of the worker's time) waits longer
  for the next, so with many keys a restore replays more input instead of the worker
  spending its time pickling.
  Revokes and graceful stops always snapshot. Workers with side tables snapshot at every
  checkpoint (a table event changes keys, and replaying the input would not repeat it).
* Crash (kill -9) at any moment: the open transactions are aborted when the partitions'
  next owner (another worker, or this one restarted) initialises their producers; it then
  rebuilds p's state from the changelog, processes p's input again from the replay mark up
  to the committed offset with those outputs dropped (they were published; processing is
  deterministic, so the state comes out as it was), and goes on from the committed offset.
  Events after the checkpoint are processed again, against the state of the checkpoint:
  nothing lost, nothing duplicated for read-committed readers. If retention has removed
  input after the mark, the replay cannot happen: counted
  (`recoveries["replay_unavailable"]`) and logged, the state misses those events.
* Rebalance, revoked partitions: the checkpoint in flight is COMMITTED (we still own the
  partitions inside the revoke callback, so this is safe, and it saves the next owner the
  work); if that commit fails, the transaction is aborted instead and the partitions' keys
  are evicted. Buffered input of revoked partitions is dropped (messages of partitions that
  are not active are ignored). With the eager range assignor every rebalance revokes
  everything: partitions whose commit succeeded are parked, state kept, and if the group
  hands them straight back and their committed offset is still ours, they go on without a
  restore. Anything else is evicted.
* Assigned partitions are paused until their state is rebuilt: latest snapshot per key,
  tombstones delete, read to the end with a separate non-group consumer, while the other
  partitions keep flowing; a partition revoked mid-restore is cancelled. A snapshot whose
  signature fails is never unpickled: its key starts cold, a RiskAlert
  SNAPSHOT_SIGNATURE_INVALID (entity_kind "worker") is published and it is counted. A
  snapshot from another river version is refused too (the key starts cold, counted). A
  restore can finish before librdkafka has fetched the partition's committed offset (a
  restarted broker answers slowly), and until then it refuses to seek: the partition stays
  paused and the seek is retried, with a warning every `SEEKING_WARN_S` (30 s) while it
  lasts.
* Committed offsets out of range (retention removed them, or the topic was recreated)
  follow `settings.worker.out_of_range_policy`: `earliest` (default) resumes at the log
  start, `latest` at its end, `fail` stops the worker with an error. Either way it is
  counted (`recoveries["offset_out_of_range"]`). A group without committed offsets starts
  at the log start (`latest` policy: the end).
* Fatal producer errors (fenced, out-of-order sequence...) and aborted transactions: the
  partition goes back to its last checkpoint (producer recreated, keys evicted, state
  restored, input re-read from the committed offset). A fenced partition waits a moment
  first so a pending rebalance can take it away. Retriable errors (a stalled or restarting
  broker) are retried: processing is delayed, nothing acknowledged is lost. A checkpoint
  that fails `max_consecutive_failures` times in a row stops the worker with the reason.
* Graceful stop (SIGTERM/SIGINT via `consumers.runtime.shutdown`, or `stop()`): a final
  checkpoint, then `consumer.close()` leaves the group, and `run()` returns.

At-least-once (`guarantee="at-least-once"`, brokers without transactions): a checkpoint
flushes outputs, then snapshots, then commits offsets. After a crash, outputs since the last
committed offsets are produced again with the same deterministic event ids (downstream
dedupes); state is never applied twice, because events already contained in a restored
snapshot (offset <= its source offset) are skipped.

Duplicates (same event_id for the same key, within the last `worker.dedup_per_key` events of
that key) are dropped, counted and dead-lettered as `duplicate`; the window is part of each
key's snapshot, so it survives crashes and moves with the key.

Side tables (`engine.processor.TableProcessor`): read in full by a `TableReader` before any
input and between batches; their outputs go into the transaction of the partition that owns
the output key.

Event-time join (`engine.temporal_join`): a processor that names `aligned_tables` (with
`table_key(topic, event)` and `hold_needs(event)`, e.g. the order worker with
`risk.instruments`) gets its input held until those tables have caught up with each input
event's time, and the tables' events applied in event time up to it, as the in-process
pipeline does. Held input is not processed, so its partition's position (and committed
offset) stays before it: a crash or a revoke drops the hold and the events are consumed
again. `worker.table_max_wait_ms` bounds a hold (live feeds that go quiet; 0 turns the join
off) and `worker.table_idle_ms` releases everything when nothing has arrived for that long
(the end of a replay). A hold longer than 20 batches pauses the input.

Idle input (profile `idle_probe_ms`, for brokers that answer an empty fetch at once instead
of holding it): once every active input partition is read to its end and a poll brought no
input, the input is paused, and every `idle_probe_ms` it is resumed for one look
(`producers.kafka.IdlePause`). A caught-up worker then costs about 15% of a core instead of
85% (its fetcher and the broker answering it), and the first input after a quiet spell
waits at most `idle_probe_ms` longer. A worker with input to process is never paused for
this. Pausing and resuming never moves a position: librdkafka resumes after the last
message it handed over (from librdkafka 2.16 on; older versions are never paused, see
`producers.kafka.IDLE_PAUSE_MIN_LIBRDKAFKA`).

Outputs nobody owns (`processor.output_owner(output)` is None: firm, desk and instrument
TradingStateChanged, audit echoes, rejections of commands and limit changes) come from
table events every worker applies alike. Exactly one copy is published: by the worker that
holds input partition 0 (in that partition's transaction), and only for table events read
after the worker started: those read while bootstrapping the tables were published when
they happened. While partition 0 is held here but not active yet (restoring, seeking, or
parked between a revoke and the next assignment) they wait for it, so a command that
arrives during a rebalance still gets its record; if partition 0 goes elsewhere they are
dropped. Dropped ones are counted in `scope_outputs_dropped`. Owned outputs go to the
transaction of the partition that holds their owner.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumers.runtime.metrics import MetricsHooks, RuntimeMetrics
from consumers.runtime.restore import ChangelogReader, RestoreJob
from consumers.runtime.sink import AtLeastOnceSink, SinkError, TransactionalSink, retrying
from consumers.runtime.tables import TableReader
from engine.driver import Emitted, EventRunner, input_topic_of, tables_of
from engine.processor import Output, Processor
from engine.snapshots import REPLAY_MARK, SnapshotCodec, chunk_key, replay_mark
from engine.temporal_join import TableJoin
from producers.kafka import (
    BrokerUnreachable,
    IdlePause,
    check_reachable,
    consume_ready,
    idle_probe_s,
    lower_fetcher_priority,
    make_consumer,
    seek_when_ready,
)
from schemas.codec import DecodeError, decode, encode
from schemas.common import Envelope, Severity
from schemas.ids import derive_event_id
from schemas.outputs import RiskAlert
from schemas.settings import Guarantee, Settings

log = logging.getLogger("streamrisk.runtime")

Status = Literal["restoring", "seeking", "active", "parked"]
RESTORING: Status = "restoring"
SEEKING: Status = "seeking"
"""Restored, but its input cannot be positioned yet: right after an assignment librdkafka
refuses a seek (`_STATE`) until it has fetched the group's committed offset, which a slow or
restarted broker delays."""
ACTIVE: Status = "active"
PARKED: Status = "parked"
SIGNATURE_ALERT = "SNAPSHOT_SIGNATURE_INVALID"
CAUGHT_UP_QUIET_S = 1.0
"""`exit_when_caught_up`: how long without input before a partition whose committed offset
is short of its high watermark (a transaction marker at the end) counts as caught up."""
UNALIGNED_WARN_S = 5.0
"""Least time between two warnings that the event-time join released input unaligned."""
SEEKING_WARN_S = 30.0
"""A partition still SEEKING this long after its restore is warned about (and again at every
further multiple): its input stays paused meanwhile, and an operator should know."""


class WorkerError(RuntimeError):
    """The worker cannot go on; the message is one readable line."""


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker runs; `from_settings` fills it from `settings.worker`."""

    group: str
    input_topic: str
    guarantee: Guarantee = "exactly-once"
    commit_interval_ms: int = 500
    commit_interval_events: int = 5000
    snapshot_interval_ms: int = 1000
    """A partition's changed keys are snapshotted at a checkpoint this long after its
    previous snapshot (0: at every checkpoint); a restore replays the input in between."""
    snapshot_budget: float = 0.1
    """Share of the worker's time its snapshot rounds may take: a partition whose round
    cost more than its share waits longer than `snapshot_interval_ms` for the next (with
    many keys, each changing a few times a second, pickling them every second cost more
    than the events did)."""
    batch_size: int = 500
    dedup_per_key: int = 256
    out_of_range_policy: Literal["earliest", "latest", "fail"] = "earliest"
    max_consecutive_failures: int = 8
    instance_id: str | None = None
    """Static group membership (`group.instance.id`): a worker restarted with the same id
    gets its partitions back without a rebalance. A static member does not leave the group
    on close, so its partitions move only after the session timeout."""
    urgent_topics: tuple[str, ...] = ()
    """Outputs a desk acts on (catalogue names): exactly-once, a partition that produced one
    is committed at the end of the batch instead of at the next interval, whenever that
    batch did not fill `batch_size` (the worker is keeping up; behind, the interval
    stands)."""
    freeze_state: bool = True
    """Once tables and restores are done, move every object alive to the garbage
    collector's permanent generation (`gc.freeze`): the models, books and tables a worker
    holds are long-lived, and a full collection walking them stalled single events for tens
    of milliseconds. Objects frozen still go when their last reference does, and the heap
    is thawed and collected again when the partitions settle after the next rebalance."""

    @classmethod
    def from_settings(cls, settings: Settings, processor: Processor, *,
                      group: str | None = None, **overrides: Any) -> WorkerConfig:
        w = settings.worker
        values: dict[str, Any] = {
            "group": group or f"{settings.topic_prefix}{processor.name}",
            "input_topic": input_topic_of(processor), "guarantee": w.guarantee,
            "commit_interval_ms": w.commit_interval_ms,
            "commit_interval_events": w.commit_interval_events,
            "snapshot_interval_ms": w.snapshot_interval_ms,
            "snapshot_budget": w.snapshot_budget, "batch_size": w.batch_size,
            "dedup_per_key": w.dedup_per_key, "out_of_range_policy": w.out_of_range_policy,
            "urgent_topics": tuple(w.urgent_topics)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class _Partition:
    status: Status
    position: int = -1
    """Next input offset to process."""
    committed: int = -1
    """Position at the last successful checkpoint."""
    retry_at: float = 0.0
    restore_started: float = 0.0
    """`perf_counter` when its restore began (for the restore-time metric)."""
    restored_keys: int = 0
    replay_until: int = -1
    """Input before this offset was published before the restore: it is processed again
    only to rebuild the state, and its outputs are dropped."""
    marked: int = -1
    """Position in the partition's latest committed replay mark (-1: none yet)."""
    seeking_since: float = 0.0
    """`monotonic` when it entered SEEKING."""
    seek_warnings: int = 0
    snapshot_due: float = 0.0
    """`monotonic` time from which its next snapshot round is due (see
    `Worker._snapshot_due`)."""

    @property
    def past_mark(self) -> bool:
        """It has input its snapshots do not hold: a snapshot round of it is to come."""
        return self.position >= 0 and self.position != self.marked


@dataclass(slots=True)
class _Held:
    """An input message waiting in the event-time join."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    event: Envelope | None
    """Decoded (None: bad bytes, on their way to the dead-letter topic)."""


def _held_ts(held: _Held) -> int | None:
    return None if held.event is None else held.event.ts_event


class _TopicNames(dict[str, str]):
    """Catalogue name -> full topic name, filled on first use."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings

    def __missing__(self, short: str) -> str:
        self[short] = full = self._settings.topic(short)
        return full


class Worker:
    """Runs a processor in a consumer group with checkpoints; see the module docstring."""

    def __init__(self, processor: Processor, settings: Settings,
                 config: WorkerConfig | None = None, *,
                 hooks: Iterable[MetricsHooks] = ()) -> None:
        self.processor = processor
        self.settings = settings
        self.config = config or WorkerConfig.from_settings(settings, processor)
        self.metrics = RuntimeMetrics(worker=processor.name,
                                      input_topic=self.config.input_topic)
        for hook in hooks:
            self.metrics.add_listener(hook)
        self.runner = EventRunner(processor, input_topic=self.config.input_topic,
                                  max_message_bytes=settings.max_message_bytes,
                                  dedup_per_key=self.config.dedup_per_key)
        self.codec = SnapshotCodec(settings.snapshot_key_bytes(), worker=processor.name,
                                   max_message_bytes=settings.max_message_bytes)
        self._names = _TopicNames(settings)
        self.input_full = settings.topic(self.config.input_topic)
        self.changelog_full = settings.topic(f"{processor.name}.changelog")
        self._tables = tables_of(processor)
        # Table events change keys outside the input, and a replay of the input would not
        # repeat them: such workers snapshot every change at every checkpoint.
        self._snapshot_every_s = (0.0 if self._tables
                                  else self.config.snapshot_interval_ms / 1000)
        self._input_partitions = 1
        self._snapshot_epoch = time.monotonic()
        self._parts: dict[int, _Partition] = {}
        self._parked: dict[int, _Partition] = {}
        self._pending: set[int] = set()
        self._seeking: set[int] = set()
        self._chunks: dict[str, int] = {}
        self._stopping = False
        self._closing = False
        self._failed = False
        self._failures: dict[int, int] = {}
        self._events_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._out_counts: dict[str, int] = {}
        self._dead_seen: dict[str, int] = {}
        self._consumer: Consumer | None = None
        self._sink: TransactionalSink | AtLeastOnceSink | None = None
        self._restorer: ChangelogReader | None = None
        self._table_reader: TableReader | None = None
        self._cooperative = "cooperative" in settings.profile_defaults.assignor
        self.exit_when_caught_up = False
        self._owner = getattr(processor, "output_owner", None)
        self._bootstrapping = False
        self.scope_outputs_dropped = 0
        self._unowned_waiting: list[Emitted] = []
        """Outputs nobody owns, caused while partition 0 was held here but not yet active
        (restoring, seeking, or parked during a rebalance): published once it is."""
        self._aligned: frozenset[str] = frozenset()
        self.join: TableJoin[_Held] | None = self._make_join()
        self._hold_paused: list[TopicPartition] = []
        self._unaligned_warned = -UNALIGNED_WARN_S * 1_000_000_000
        self._last_input = time.monotonic()
        self._input_idle: IdlePause | None = None
        self._input_at_end: set[int] = set()
        """Input partitions whose end was reported and nothing read since (profile
        `idle_probe_ms`: once all are and a poll brings no input, see `_pause_when_idle`)."""
        self._settled = False
        """Every assigned partition restored since the last rebalance (see freeze_state)."""

    # --- public -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish: final checkpoint, leave the group, return from run()."""
        self._stopping = True

    def assigned(self) -> dict[int, str]:
        """Input partitions this worker holds and their status (for tests and status)."""
        return {p: st.status for p, st in sorted(self._parts.items())}

    def idle_paused(self) -> list[int]:
        """Input partitions paused because they were read to their end (profile
        `idle_probe_ms`), between two probes."""
        idle = self._input_idle
        return sorted(tp.partition for tp in idle.paused) if idle is not None else []

    def positions(self) -> dict[int, int]:
        return {p: st.position for p, st in sorted(self._parts.items())}

    def run(self) -> None:
        """Process until `stop()`; raises WorkerError when it cannot go on."""
        self._setup()
        try:
            while not self._stopping:
                self._service()
                if not self._settled:
                    self._settle()
                consumer = self._consumer
                assert consumer is not None
                if self._input_idle is not None and self._input_idle.probe_due:
                    self._probe_input()
                messages = consume_ready(consumer, self.config.batch_size,
                                         self._poll_timeout())
                if self._input_idle is not None:
                    if self._pause_when_idle(messages):  # not only ends of partitions
                        self._last_input = time.monotonic()
                elif messages:
                    self._last_input = time.monotonic()
                if messages:
                    self._process(messages)
                if self._checkpoint_due():
                    self._checkpoint_and_recover()
                    if self.exit_when_caught_up and self._caught_up():
                        self._stopping = True
                elif len(messages) < self.config.batch_size:
                    self._commit_urgent()
                    self._snapshot_one_due()
        except BaseException:
            self._failed = True
            raise
        finally:
            self._shutdown()

    # --- setup and shutdown -------------------------------------------------------------------

    def _setup(self) -> None:
        settings = self.settings
        try:
            metadata = check_reachable(settings)
        except BrokerUnreachable as exc:
            raise WorkerError(str(exc)) from None
        topics = metadata.topics
        needed = [self.input_full, self.changelog_full, self._names["dlq"],
                  *(settings.topic(t) for t in self._tables)]
        missing = [t for t in needed if t not in topics]
        if missing:
            raise WorkerError(f"missing topics: {', '.join(missing)} (create them with "
                              "`streamrisk topics create`)")
        inputs = len(topics[self.input_full].partitions)
        self._input_partitions = inputs
        changelog = len(topics[self.changelog_full].partitions)
        if changelog < inputs:
            raise WorkerError(f"{self.changelog_full} has {changelog} partitions but "
                              f"{self.input_full} has {inputs}: a changelog needs at least as "
                              "many as its input")
        base = f"{settings.topic_prefix}{self.processor.name}.{self.config.group}"
        self._sink = (TransactionalSink(settings, base)
                      if self.config.guarantee == "exactly-once" else AtLeastOnceSink(settings))
        if self._sink.exactly_once:  # at-least-once outputs are visible once sent anyway
            self._sink.urgent_topics = frozenset(self._names[t] for t in self.config.urgent_topics)
        self._restorer = ChangelogReader(settings, self.changelog_full)
        if self._tables:
            counts = {settings.topic(t): len(topics[settings.topic(t)].partitions)
                      for t in self._tables}
            self._table_reader = TableReader(settings, self._tables, counts)
            self._bootstrapping = True
            try:
                self._table_reader.bootstrap(self._apply_table)
            finally:
                self._bootstrapping = False
        client: dict[str, Any] = {"client.id": f"{settings.client_id}-{self.processor.name}-"
                                                f"{socket.gethostname()}-{os.getpid()}"}
        probe_s = idle_probe_s(settings)
        if probe_s:
            client["enable.partition.eof"] = True  # what `_pause_when_idle` goes by
        consumer = make_consumer(settings, self.config.group, read_committed=True,
                                 instance_id=self.config.instance_id, **client)
        if probe_s:
            self._input_idle = IdlePause(consumer, probe_s)
        consumer.subscribe([self.input_full], on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._consumer = consumer

    def _shutdown(self) -> None:
        self._closing = True
        try:
            if not self._failed and self._consumer is not None:
                self._checkpoint_and_recover(final=True)
        finally:
            if self._consumer is not None:
                self._consumer.close()  # leaves the group; on_revoke drops what is left
            if self._sink is not None:
                self._sink.close_all()
            if self._restorer is not None:
                self._restorer.close()
            if self._table_reader is not None:
                self._table_reader.close()
            self._flush_counts()

    # --- the hot path -------------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        if self.join is not None:
            self._offer(messages)
            return
        start = time.perf_counter()
        handle = self.runner.handle
        sink = self._sink
        assert sink is not None
        produce = sink.produce
        names = self._names
        counts = self._out_counts
        handled = 0
        watch = self.metrics.wants_outputs
        seen: list[Emitted] = []
        for message, partition, state, offset in self._fresh(messages):
            emitted = handle(partition, offset, message.key(), message.value(),
                             message.timestamp()[1])
            if offset < state.replay_until:
                self._replayed(state, offset)
                continue
            for out in emitted:
                produce(partition, names[out.topic], out.key, out.value)
                counts[out.topic] = counts.get(out.topic, 0) + 1
            if watch:
                seen += emitted
            state.position = offset + 1
            handled += 1
        self._events_since_checkpoint += handled
        sink.poll()
        self.metrics.batch(handled, time.perf_counter() - start)
        if seen:
            self.metrics.outputs(seen)

    def _replayed(self, state: _Partition, offset: int) -> None:
        """Input published before its partition's restore, processed again only to rebuild
        the state: its outputs are dropped and only its position counts."""
        self.metrics.replayed_events += 1
        state.position = offset + 1

    def _fresh(self, messages: list[Message]) -> Iterator[tuple[Message, int, _Partition, int]]:
        """The messages still to process, with their partition, its state and their offset:
        consumer errors are handled, and messages of partitions that are revoked or
        restoring, or already processed, are skipped."""
        parts = self._parts
        for message in messages:
            if message.error() is not None:
                self._consumer_error(message)
                continue
            partition: int = message.partition()  # type: ignore[assignment]
            state = parts.get(partition)
            offset: int = message.offset()  # type: ignore[assignment]
            if state is None or state.status != ACTIVE or offset < state.position:
                continue
            yield message, partition, state, offset

    def _consumer_error(self, message: Message) -> None:
        error = message.error()
        if error is None:
            return
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
            self.metrics.recovery("offset_out_of_range")
            if self.config.out_of_range_policy == "fail":
                raise WorkerError(f"{self.input_full}[{message.partition()}]: committed offset "
                                  "out of range and worker.out_of_range_policy is 'fail' "
                                  f"({error.str()})")
            return
        if error.fatal():
            raise WorkerError(f"consumer failed: {error.str()}")
        log.warning("consumer error (retrying): %s", error.str())

    def _settle(self) -> None:
        """Once the partitions are restored: lower the priority of the Kafka clients'
        threads (profile `lower_fetcher_priority`) and freeze the heap (`freeze_state`)."""
        if self._parts and not self._pending and all(
                st.status == ACTIVE for st in self._parts.values()):
            self._settled = True
            if self.settings.profile_defaults.lower_fetcher_priority:
                lower_fetcher_priority()  # every client of the worker exists by now
            if self.config.freeze_state:
                # thaw first: what the last rebalance evicted can be collected now
                gc.unfreeze()
                gc.collect()
                gc.freeze()

    def _poll_timeout(self) -> float:
        if self._pending or self._seeking or (self._restorer is not None and self._restorer.busy):
            return 0.01
        if self._input_idle is not None and self._input_idle.paused:
            return min(0.1, self._input_idle.probe_in)
        return 0.1

    # --- idle input (profile `idle_probe_ms`) -------------------------------------------------

    def _pause_when_idle(self, messages: list[Message]) -> bool:
        """Note which input partitions these messages show read to their end; when the worker
        is idle (no input in them, every active partition at its end) pause the input, so that
        the fetcher does not ask the broker for more in a loop. Returns whether any message is
        input. A worker with input to process keeps fetching as before: under load, pausing a
        partition that is momentarily at its end would only add a probe's wait to its next
        events."""
        at_end = self._input_at_end
        data = False
        for message in messages:  # in order: the last word on a partition wins
            error = message.error()
            if error is None:
                data = True
                at_end.discard(message.partition())
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())  # type: ignore[arg-type]
        idle = self._input_idle
        if data or idle is None or idle.paused or self._hold_paused:
            return data
        active = [p for p, st in self._parts.items() if st.status == ACTIVE]
        if active and at_end.issuperset(active):
            idle.pause([TopicPartition(self.input_full, p) for p in sorted(active)])
        return data

    def _probe_input(self) -> None:
        """Resume the idle-paused partitions for one look: they report their ends again
        once their fetches come back empty, and the input is paused again if nothing came."""
        idle = self._input_idle
        assert idle is not None
        self._input_at_end.difference_update(tp.partition for tp in idle.paused)
        idle.resume()

    def _release_idle(self, partitions: Iterable[int], *, resume: bool) -> None:
        """Stop tracking `partitions` as idle: they are revoked, lost, going back to a
        checkpoint (which pauses and resumes them itself) or resumed by the hold."""
        idle = self._input_idle
        if idle is None:
            return
        gone = set(partitions)
        self._input_at_end -= gone
        paused = idle.forget(self.input_full, gone)
        if paused and resume and self._consumer is not None:
            self._consumer.resume(paused)  # a later assignment must not start paused

    # --- side tables --------------------------------------------------------------------------

    def _apply_table(self, topic: str, value: bytes | None) -> None:
        join = self.join
        if join is not None and topic in self._aligned:
            event = self.runner.decode_table(value)
            if event is not None:
                key = self.processor.table_key(topic, event)  # type: ignore[attr-defined]
                join.offer_table(topic, event.ts_event, key,
                                 (topic, event, self._bootstrapping), time.monotonic_ns())
            return
        for out in self.runner.apply_table(topic, value):
            self._route(out, self._bootstrapping)

    def _zero_not_active_yet(self) -> bool:
        """Partition 0 is held here but restoring or seeking, or parked in a rebalance."""
        zero = self._parts.get(0)
        return 0 in self._parked or (zero is not None and zero.status != ACTIVE)

    def _settle_unowned(self) -> None:
        """After partition 0 changed here: publish what waited for it once it is active,
        drop it once partition 0 is neither held nor parked (its next holder did not see
        those table events as its own); otherwise keep waiting."""
        if not self._unowned_waiting or self._zero_not_active_yet():
            return
        active = 0 in self._parts  # held here and not "not active yet": active
        waiting, self._unowned_waiting = self._unowned_waiting, []
        log.info("%s %s output(s) of table events that waited for partition 0",
                 "publishing" if active else "dropping", len(waiting))
        if not active:
            self.scope_outputs_dropped += len(waiting)
            return
        for out in waiting:
            self._route(out)

    def _route(self, out: Emitted, history: bool = False) -> None:
        """Publish an output not caused by an input message: in the transaction of the
        partition owning it (or any active partition); see the module docstring for outputs
        nobody owns. `history`: caused by a table event read while bootstrapping."""
        sink = self._sink
        assert sink is not None
        partition: int | None
        if self._owner is not None:
            value = decode(out.value, max(len(out.value), self.settings.max_message_bytes))
            owner = self._owner(Output(out.topic, out.key or "", value))
            if owner is None:
                if not history and self._zero_not_active_yet():
                    self._unowned_waiting.append(out)
                    return
                if history or 0 not in self._parts:
                    self.scope_outputs_dropped += 1
                    return
                partition = 0
            else:
                partition = self.runner.key_partition.get(owner)
        else:
            partition = self.runner.key_partition.get(out.key or "")
        state = self._parts.get(partition) if partition is not None else None
        if partition is None or state is None or state.status != ACTIVE:
            active = [p for p, st in self._parts.items() if st.status == ACTIVE]
            if not active:
                log.warning("dropping %s output for %s: no active partition", out.topic,
                            out.key)
                return
            partition = active[0]
        sink.produce(partition, self._names[out.topic], out.key, out.value)
        self._out_counts[out.topic] = self._out_counts.get(out.topic, 0) + 1
        if self.metrics.wants_outputs:
            self.metrics.outputs((out,))

    # --- event-time join ----------------------------------------------------------------------

    def _make_join(self) -> TableJoin[_Held] | None:
        processor, worker = self.processor, self.settings.worker
        aligned = frozenset(getattr(processor, "aligned_tables", ())) & set(self._tables)
        needs = getattr(processor, "hold_needs", None)
        if (not aligned or not callable(needs) or worker.table_max_wait_ms == 0
                or not callable(getattr(processor, "table_key", None))):
            return None
        self._aligned = aligned

        def held_needs(held: _Held) -> Iterable[str]:
            assert held.event is not None
            return needs(held.event)

        return TableJoin(ts_of=_held_ts, needs=held_needs,
                         max_wait_ns=worker.table_max_wait_ms * 1_000_000,
                         idle_ns=worker.table_idle_ms * 1_000_000,
                         partition_of=lambda held: held.partition)

    def _offer(self, messages: list[Message]) -> None:
        """Hold consumed input in the join (which releases the partitions' heads in event
        time order), then run whatever the join releases."""
        join = self.join
        assert join is not None
        parts = self._parts
        cap = self.runner.max_message_bytes
        now = time.monotonic_ns()
        for message, partition, _, offset in self._fresh(messages):
            value = message.value()
            event = None
            if value is not None and len(value) <= cap:
                try:
                    event = decode(value, cap)
                except DecodeError:
                    event = None
            join.offer(_Held(partition, offset, message.key(), value, message.timestamp()[1],
                             event), now)
        self._pump(now)
        consumer = self._consumer
        if (len(join) > 20 * self.config.batch_size and not self._hold_paused
                and consumer is not None):
            self._hold_paused = [TopicPartition(self.input_full, p)
                                 for p, st in parts.items() if st.status == ACTIVE]
            consumer.pause(self._hold_paused)
            self._release_idle(parts, resume=False)  # the hold resumes them all

    def _pump(self, now: int) -> None:
        """Run the table events and held input the join releases now."""
        join, sink = self.join, self._sink
        assert join is not None and sink is not None
        reader = self._table_reader
        unaligned = join.stats.released_by_timeout
        start = time.perf_counter()
        runner, parts, names, counts = self.runner, self._parts, self._names, self._out_counts
        watch = self.metrics.wants_outputs
        seen: list[Emitted] = []
        handled = steps = 0
        # one step at a time: the join asks what the next held event needs only after the
        # steps before it have run (lazily produced)
        for step in join.poll(now, table_current=reader is None or reader.current):
            steps += 1
            if step.kind == "table":
                topic, event, history = step.item
                for out in runner.apply_table_event(topic, event):
                    self._route(out, history)
                continue
            held: _Held = step.item
            state = parts.get(held.partition)
            if state is None or state.status != ACTIVE or held.offset < state.position:
                continue
            emitted = runner.handle(held.partition, held.offset, held.key, held.value,
                                    held.timestamp_ms, held.event)
            if held.offset < state.replay_until:
                self._replayed(state, held.offset)
                continue
            for out in emitted:
                sink.produce(held.partition, names[out.topic], out.key, out.value)
                counts[out.topic] = counts.get(out.topic, 0) + 1
            if watch:
                seen += emitted
            state.position = held.offset + 1
            handled += 1
        if join.stats.released_by_timeout != unaligned:
            self._warn_unaligned(now)
        if self._hold_paused and len(join) <= 10 * self.config.batch_size:
            resume = [tp for tp in self._hold_paused
                      if (st := self._parts.get(tp.partition)) is not None
                      and st.status == ACTIVE and tp.partition not in self._pending]
            self._hold_paused = []
            if resume and self._consumer is not None:
                self._consumer.resume(resume)
        if not steps:
            return
        self._events_since_checkpoint += handled
        sink.poll()
        if handled:
            self.metrics.batch(handled, time.perf_counter() - start)
        if seen:
            self.metrics.outputs(seen)

    def _warn_unaligned(self, now: int) -> None:
        """Say (at most every UNALIGNED_WARN_S) that input was released before its side
        table caught up in event time: those events alone can differ between two runs."""
        if now - self._unaligned_warned < UNALIGNED_WARN_S * 1_000_000_000:
            return
        self._unaligned_warned = now
        assert self.join is not None
        js = self.join.stats
        log.warning("event-time join: %d input events released before the side table caught "
                    "up (%d by idleness, %d by table_max_wait_ms), %d aligned so far",
                    js.released_by_timeout, js.released_by_idle,
                    js.released_by_timeout - js.released_by_idle, js.released_aligned)

    def _unhold(self, partitions: Iterable[int]) -> None:
        """Drop held input of partitions that are revoked or go back to a checkpoint."""
        if self.join is not None:
            gone = set(partitions)
            if gone:
                self.join.discard(lambda held: held.partition in gone)

    # --- checkpoints --------------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        return (self._events_since_checkpoint >= self.config.commit_interval_events
                or (time.monotonic() - self._last_checkpoint) * 1000
                >= self.config.commit_interval_ms)

    def _commit_urgent(self) -> None:
        """Commit now the active partitions whose transaction holds an urgent output (see
        `WorkerConfig.urgent_topics`); the others wait for the interval."""
        sink = self._sink
        assert sink is not None
        if not sink.urgent_topics:
            return
        sink.send()
        parts = self._parts
        urgent = [p for p in sorted(sink.urgent)
                  if p in parts and parts[p].status == ACTIVE]
        if urgent:
            self._checkpoint_and_recover(only=urgent)

    def _snapshot_due(self, partition: int, now: float | None = None,
                      cost_s: float = 0.0) -> float:
        """When the next snapshot round of `partition` falls due, its last one having taken
        `cost_s`: on a grid of the interval shifted by partition number, so that the
        partitions' rounds (each pauses the worker while it pickles that partition's keys)
        come one at a time and stay apart after a checkpoint that had to take several; and
        far enough ahead that the rounds of all partitions keep within `snapshot_budget`."""
        every = self._snapshot_every_s
        if every == 0:
            return 0.0
        now = time.monotonic() if now is None else now
        parts = max(1, self._input_partitions)
        gap = max(every, parts * cost_s / self.config.snapshot_budget)
        phase = self._snapshot_epoch + every * (partition % parts) / parts
        return phase + every * (math.floor((now + gap - every - phase) / every) + 1)

    def _snapshot_one_due(self) -> None:
        """While the worker keeps up: the snapshot round of the most overdue partition, in a
        checkpoint of its own. Left to the interval's checkpoint, the rounds of every due
        partition would come at once: with 1,000 instruments that paused the worker for
        100-300 ms every second, and every alert behind it waited as long."""
        every = self._snapshot_every_s
        if every == 0 or self.config.snapshot_interval_ms < self.config.commit_interval_ms:
            # side tables, or rounds due at every interval checkpoint: a partition's
            # offsets are never committed more often than the interval asks
            return
        now = time.monotonic()
        due = [(st.snapshot_due, p) for p, st in self._parts.items()
               if st.status == ACTIVE and now >= st.snapshot_due
               and st.position >= st.replay_until]
        if not due:
            return
        _, partition = min(due)
        state = self._parts[partition]
        if not state.past_mark:
            state.snapshot_due = self._snapshot_due(partition, now)  # no input since its mark
            return
        self._checkpoint_and_recover(only=[partition], snapshot=True)

    def _checkpoint_and_recover(self, final: bool = False, only: list[int] | None = None,
                                snapshot: bool = False) -> None:
        """Checkpoint every active partition, or those in `only` (an urgent commit or one
        partition's snapshot round, which leave the interval's clock alone); a failed
        partition goes back to its last checkpoint."""
        active = only if only is not None else [p for p, st in self._parts.items()
                                                if st.status == ACTIVE]
        # a last snapshot spares whoever restores these partitions next a replay
        failures = self._checkpoint(active, snapshot=final or snapshot,
                                    urgent=only is not None)
        if (failures and not final and isinstance(self._sink, TransactionalSink)
                and self._sink.broker_lost.is_set()):
            self._broker_lost()
            return
        for partition in active:
            if partition not in failures:
                self._failures.pop(partition, None)
        for partition, error in failures.items():
            if final:
                continue
            count = self._failures[partition] = self._failures.get(partition, 0) + 1
            if count >= self.config.max_consecutive_failures:
                raise WorkerError(f"checkpoints of {self.input_full}[{partition}] failed "
                                  f"{count} times in a row: {error.reason}")
            self._rewind(partition, error)

    def _checkpoint(self, partitions: list[int], *, snapshot: bool = False,
                    urgent: bool = False) -> dict[int, SinkError]:
        """Commit the outputs and input offsets of `partitions`; those for which `snapshot`
        is asked or whose snapshot round is due (`_Partition.snapshot_due`) also get a
        snapshot of their dirty keys and a replay mark at their position. `urgent`: only
        these partitions, between intervals (the interval's clocks stay; snapshots only
        where asked or where they cannot wait)."""
        now = time.monotonic()
        if not urgent:
            self._events_since_checkpoint = 0
            self._last_checkpoint = now
        sink, consumer = self._sink, self._consumer
        assert sink is not None and consumer is not None
        start = time.perf_counter()
        wanted = set(partitions)
        parts = self._parts
        # A partition without a committed replay mark snapshots before its offsets move on
        # (its changelog is as of its committed offset: written before marks existed, or
        # nothing yet). An urgent checkpoint leaves keys to their partition's round, except
        # in workers with side tables, which snapshot whenever offsets move.
        every = self._snapshot_every_s

        def snapshot_wanted(state: _Partition) -> bool:
            if snapshot or every == 0 or state.marked < 0:
                return True
            return not urgent and now >= state.snapshot_due

        # A partition still replaying after a restore writes no snapshot (its state is
        # behind what it published): its keys wait for the first round after the replay.
        snapping = {p for p in partitions
                    if snapshot_wanted(parts[p]) and parts[p].position >= parts[p].replay_until}
        dirty = self.runner.take_dirty() if snapping else set()
        by_partition: dict[int, list[str]] = {}
        leftover = set()
        key_partition = self.runner.key_partition
        for key in dirty:
            partition = key_partition.get(key)
            if partition in snapping:
                by_partition.setdefault(partition, []).append(key)
            elif partition is not None:
                leftover.add(key)
        self.runner.dirty |= leftover
        try:
            sink.flush_outputs()  # at-least-once: outputs are acknowledged before snapshots
        except SinkError as exc:
            self.runner.dirty |= dirty - leftover
            return dict.fromkeys(wanted, exc)
        keys = 0
        pickling = time.perf_counter()
        for partition, part_keys in by_partition.items():
            for key in sorted(part_keys):
                keys += self._write_snapshot(partition, key)
        round_s = (time.perf_counter() - pickling) / max(1, len(snapping))
        offsets = {}
        for partition in partitions:
            state = parts[partition]
            if partition in snapping and state.past_mark:
                [(_, mark)] = self.codec.encode(replay_mark(partition, state.position))
                sink.produce(partition, self.changelog_full, REPLAY_MARK, mark, partition)
            # (a partition replaying after a restore is behind its committed offset)
            if state.position >= 0 and (state.position > state.committed
                                        or (partition in by_partition
                                            and state.position == state.committed)):
                offsets[partition] = [TopicPartition(self.input_full, partition,
                                                     state.position)]
        failures = sink.commit(offsets, consumer, only=partitions if urgent else None)
        for partition in partitions:
            if partition not in failures:
                state = parts[partition]
                state.committed = max(state.committed, state.position)
                if partition in snapping:
                    state.marked = state.position
                    state.snapshot_due = self._snapshot_due(partition, now, round_s)
        self._flush_counts()
        self.metrics.unsnapshotted(sum(1 for st in parts.values()
                                       if st.status == ACTIVE and st.past_mark))
        self.metrics.checkpoint(time.perf_counter() - start, len(offsets), keys)
        self._sample_lag(partitions)
        return failures

    def _write_snapshot(self, partition: int, key: str) -> int:
        sink = self._sink
        assert sink is not None
        snap = self.runner.snapshot(key)
        if snap.state is None and not snap.dedup:
            messages: list[tuple[str, bytes | None]] = [(key, None)]
        else:
            messages = list(self.codec.encode(snap))
        previous = self._chunks.pop(key, 1)
        if len(messages) > 1:
            self._chunks[key] = len(messages)
        for index in range(len(messages), previous):  # chunks of a bigger, older snapshot
            messages.append((chunk_key(key, index), None))
        for message_key, value in messages:
            sink.produce(partition, self.changelog_full, message_key, value, partition)
        return 1

    def _sample_lag(self, partitions: list[int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        for partition in partitions:
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.input_full, partition), cached=True)
            except KafkaException:
                continue
            position = self._parts[partition].position
            if high >= 0 and position >= 0:
                self.metrics.lag(partition, max(0, high - position))

    def _flush_counts(self) -> None:
        for topic, count in self._out_counts.items():
            self.metrics.produced(topic, count)
        self._out_counts.clear()
        dead = self.runner.stats.dead_letters
        for kind, total in dead.items():
            new = total - self._dead_seen.get(kind, 0)
            if new:
                self.metrics.dead_letter(kind, new)
                self._dead_seen[kind] = total

    def _caught_up(self) -> bool:
        consumer = self._consumer
        if consumer is None or self._pending or not self._parts:
            return False
        # held input (the event-time join) is consumed but neither processed nor committed
        quiet = (time.monotonic() - self._last_input >= CAUGHT_UP_QUIET_S
                 and (self.join is None or len(self.join) == 0))
        for partition, state in self._parts.items():
            if state.status != ACTIVE or state.position < state.replay_until:
                return False
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.input_full, partition), 5.0, cached=False)
            # Transactional input ends in a commit marker (and aborted batches leave
            # offsets nobody reads): a partition short of its high watermark counts as
            # caught up once everything consumed is committed and nothing has come for a
            # while.
            if state.committed < high and not (state.committed == state.position and quiet):
                return False
        return True

    # --- going back to the last checkpoint ----------------------------------------------------

    def _rewind(self, partition: int, error: SinkError | None, reason: str = "") -> None:
        """Throw away everything of `partition` since its last checkpoint and restore it."""
        state = self._parts.get(partition)
        sink, consumer = self._sink, self._consumer
        assert sink is not None and consumer is not None
        self.metrics.recovery(reason or (error.kind if error else "rewind"))
        log.warning("partition %s goes back to its last checkpoint: %s", partition,
                    error.reason if error else reason)
        sink.reset(partition, error)
        if state is not None:
            delay = 1.0 if error is not None and error.kind == "fenced" else 0.0
            self._restart(partition, delay)

    def _broker_lost(self) -> None:
        """Every broker went away: drop every producer before it can send to the restarted
        broker, and take every partition back to its last checkpoint."""
        sink, restorer = self._sink, self._restorer
        assert isinstance(sink, TransactionalSink) and restorer is not None
        sink.abandon_all()
        log.warning("lost the broker: every partition goes back to its last checkpoint")
        self.metrics.recovery("broker_lost")
        for partition in list(self._parts):
            restorer.cancel([partition])
            self._restart(partition, 0.5)

    def _restart(self, partition: int, delay: float) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._unhold([partition])
        self._release_idle([partition], resume=False)  # the restore resumes it
        for key in self.runner.evict_partition(partition):
            self._chunks.pop(key, None)
        self._parts[partition] = _Partition(RESTORING, retry_at=time.monotonic() + delay,
                                            snapshot_due=self._snapshot_due(partition))
        consumer.pause([TopicPartition(self.input_full, partition)])
        self._pending.add(partition)

    # --- restores -----------------------------------------------------------------------------

    def _service(self) -> None:
        restorer = self._restorer
        assert restorer is not None
        if isinstance(self._sink, TransactionalSink) and self._sink.broker_lost.is_set():
            self._broker_lost()
        if self._pending:
            self._start_restores()
        if restorer.busy:
            idle = not any(st.status == ACTIVE for st in self._parts.values())
            for job in restorer.poll(0.05 if idle else 0.0):
                self._finish_restore(job)
        if self._seeking:
            self._retry_seeks()
        if self._table_reader is not None:
            self._table_reader.drain(self._apply_table)
        if self.join is not None:
            self._pump(time.monotonic_ns())

    def _start_restores(self) -> None:
        sink, restorer, consumer = self._sink, self._restorer, self._consumer
        assert sink is not None and restorer is not None and consumer is not None
        now = time.monotonic()
        assigned = {tp.partition for tp in consumer.assignment()
                    if tp.topic == self.input_full}
        ready = []
        for partition in sorted(self._pending):
            state = self._parts.get(partition)
            if state is None or state.status != RESTORING or partition not in assigned:
                self._pending.discard(partition)
            elif state.retry_at <= now:
                ready.append(partition)
        if not ready:
            return
        # Fence the previous owner first: its open transaction is aborted before we read.
        log.debug("opening %s", ready)
        for partition, error in sink.open(ready).items():
            log.warning("cannot open partition %s yet: %s", partition, error.reason)
            self._parts[partition].retry_at = now + 1.0
            ready.remove(partition)
        if not ready:
            return
        try:
            finished = restorer.start(ready)
        except KafkaException as exc:
            log.warning("cannot start restoring %s yet: %s", ready, exc)
            for partition in ready:
                self._parts[partition].retry_at = now + 1.0
            return
        self._pending.difference_update(ready)
        for job in finished:
            self._finish_restore(job)

    def _finish_restore(self, job: RestoreJob) -> None:
        partition = job.partition
        state = self._parts.get(partition)
        if state is None or state.status != RESTORING:
            return
        restored, rejected = self.codec.assemble(job.values(), partition)
        mark = restored.pop(REPLAY_MARK, None)
        keys = 0
        for snap in restored.values():
            if snap is not None:
                self.runner.restore(snap)
                keys += 1
        for refused in rejected:
            self.metrics.snapshot_rejected(refused.kind)
            log.warning("changelog %s[%s] key %r refused (%s): %s", self.changelog_full,
                        partition, refused.key, refused.kind, refused.reason)
            if refused.kind == "signature":
                value, offset, ts = job.latest.get(refused.message_key, (None, -1, 0))
                self._signature_alert(partition, refused.key, value or b"", offset, ts)
        position, low = self._resume_position(partition)
        replay_from = position
        if mark is not None and mark.source_offset < position:
            if mark.source_offset >= low:
                replay_from = mark.source_offset
                log.info("partition %s: replaying input %s..%s to bring its state up to the "
                         "committed offset", partition, replay_from, position)
            else:
                self.metrics.recovery("replay_unavailable")
                log.warning("partition %s: its snapshots are as of input offset %s, which "
                            "retention has removed (the log starts at %s): events up to %s "
                            "are missing from its state", partition, mark.source_offset, low,
                            position)
        self.runner.resumed(partition, replay_from)
        state.position = replay_from
        state.marked = -1 if mark is None else replay_from
        state.committed = state.replay_until = position
        state.restore_started, state.restored_keys = job.started, keys
        self._activate(partition, state)

    def _activate(self, partition: int, state: _Partition) -> None:
        """Point the paused input at the restored position and resume it; if librdkafka
        cannot seek yet, the partition waits in SEEKING and `_retry_seeks` tries again."""
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(self.input_full, partition, state.position)
        if not seek_when_ready(consumer, tp):
            now = time.monotonic()
            if state.status != SEEKING:
                log.info("partition %s restored; its input is not seekable yet (the "
                         "consumer is still fetching the committed offset)", partition)
                state.seeking_since, state.seek_warnings = now, 0
            elif now - state.seeking_since >= SEEKING_WARN_S * (state.seek_warnings + 1):
                state.seek_warnings += 1
                log.warning("partition %s: librdkafka has refused to seek it for %.1f s (the "
                            "group's committed offset has not come back); its input stays "
                            "paused", partition, now - state.seeking_since)
            state.status = SEEKING
            self._seeking.add(partition)
            return
        consumer.resume([tp])
        state.status = ACTIVE
        self._seeking.discard(partition)
        self._settle_unowned()
        seconds = time.perf_counter() - state.restore_started
        log.debug("partition %s restored: %s keys in %.3f s, resuming at %s",
                  partition, state.restored_keys, seconds, state.position)
        self.metrics.restore(seconds, partition, state.restored_keys)

    def _retry_seeks(self) -> None:
        for partition in sorted(self._seeking):
            state = self._parts.get(partition)
            if state is None or state.status != SEEKING:  # revoked or restarted meanwhile
                self._seeking.discard(partition)
            else:
                self._activate(partition, state)

    def _signature_alert(self, partition: int, key: str, value: bytes, offset: int,
                         timestamp_ms: int) -> None:
        sink = self._sink
        assert sink is not None
        import hashlib

        digest = hashlib.blake2b(value, digest_size=12).hexdigest()
        where = f"{self.changelog_full}:{partition}:{offset}"
        alert = RiskAlert(
            event_id=derive_event_id(f"{where}:{digest}", SIGNATURE_ALERT),
            ts_event=max(0, timestamp_ms) * 1_000_000, ts_init=time.time_ns(),
            source=self.processor.name, reason_code=SIGNATURE_ALERT,
            severity=Severity.CRITICAL, entity=self.processor.name[:128],
            entity_kind="worker", observed=1.0, threshold=0.0,
            message=(f"snapshot of key {key[:200]!r} at {where} failed its signature check "
                     "and was not loaded; the key starts cold"),
            cause_event_id=where[:128])
        value = encode(alert)
        sink.produce(partition, self._names[RiskAlert.TOPIC], self.processor.name, value)
        self._out_counts[RiskAlert.TOPIC] = self._out_counts.get(RiskAlert.TOPIC, 0) + 1
        if self.metrics.wants_outputs:
            self.metrics.outputs(((RiskAlert.TOPIC, self.processor.name, value),))

    def _resume_position(self, partition: int) -> tuple[int, int]:
        """The committed offset, or where the out-of-range policy says to start; and the
        partition's log start."""
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(self.input_full, partition)
        timeout = max(5.0, self.settings.profile_defaults.socket_timeout_ms / 1000)
        patience = 2 * self.settings.profile_defaults.transaction_timeout_ms / 1000
        # A stalled broker delays the resume; it does not lose the partition.
        committed = retrying(lambda: consumer.committed([tp], timeout), patience)[0].offset
        low, high = retrying(lambda: consumer.get_watermark_offsets(tp, timeout, cached=False),
                             patience)
        policy = self.config.out_of_range_policy
        if committed < 0:  # a new group
            return (high if policy == "latest" else max(low, 0)), low
        if low <= committed <= high:
            return int(committed), low
        self.metrics.recovery("offset_out_of_range")
        if policy == "fail":
            raise WorkerError(f"committed offset {committed} of {self.input_full}[{partition}] "
                              f"is outside [{low}, {high}] and worker.out_of_range_policy is "
                              "'fail'")
        log.warning("committed offset %s of %s[%s] is outside [%s, %s]: resuming at the %s",
                    committed, self.input_full, partition, low, high,
                    "start" if policy == "earliest" else "end")
        return int(low if policy == "earliest" else high), low

    # --- rebalance callbacks (run inside consumer.consume) ------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._settled = False
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        mine = [tp.partition for tp in partitions if tp.topic == self.input_full]
        sink = self._sink
        assert sink is not None
        reusable = [p for p in mine if p in self._parked and sink.has(p)]
        committed: dict[int, int] = {}
        if reusable:
            try:
                for tp in consumer.committed(
                        [TopicPartition(self.input_full, p) for p in reusable], 10.0):
                    committed[tp.partition] = tp.offset
            except KafkaException:
                committed = {}
        restore = []
        for partition in mine:
            parked = self._parked.pop(partition, None)
            if parked is not None and committed.get(partition) == parked.position >= 0:
                parked.status = ACTIVE
                self._parts[partition] = parked
                continue
            if parked is not None:
                self._drop(partition)
            self._parts[partition] = _Partition(RESTORING,
                                                snapshot_due=self._snapshot_due(partition))
            restore.append(partition)
        for partition in list(self._parked):
            del self._parked[partition]
            self._drop(partition)
        self._settle_unowned()  # partition 0 kept, restoring, or gone
        if restore:
            consumer.pause([TopicPartition(self.input_full, p) for p in restore])
            self._pending.update(restore)
        log.info("assigned %s: restoring %s, kept %s", mine, restore,
                 sorted(set(mine) - set(restore)))
        self.metrics.rebalance(len(mine), 0)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.input_full]
        self._unhold(mine)  # not processed: consumed again from the committed offset
        self._hold_paused = []
        self._release_idle(mine, resume=True)
        active = [p for p in mine if p in self._parts and self._parts[p].status == ACTIVE]
        failures: dict[int, SinkError] = {}
        if active and not self._failed:
            try:
                failures = self._checkpoint(active, snapshot=True)
            except Exception as exc:  # noqa: BLE001 - a revoke must always hand over
                log.warning("checkpoint on revoke failed: %s", exc)
                failures = {p: SinkError("abort", str(exc)) for p in active}
        else:
            failures = {p: SinkError("abort", "not committed") for p in active}
        for partition in mine:
            state = self._parts.pop(partition, None)
            if state is None:
                continue
            if (state.status == ACTIVE and partition not in failures and not self._cooperative
                    and not self._closing):
                state.status = PARKED
                self._parked[partition] = state
            else:
                self._drop(partition)
        self._settle_unowned()  # partition 0 given up for good, unless parked
        if self._cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        log.info("revoked %s (%s)", mine, f"{len(failures)} not committed" if failures
                 else "committed")
        self.metrics.rebalance(0, len(mine))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revoke (session timeout): nothing can be
        committed, whatever is open is aborted."""
        log.warning("lost %s", [tp.partition for tp in partitions])
        self._release_idle([tp.partition for tp in partitions
                            if tp.topic == self.input_full], resume=True)
        self.metrics.rebalance(0, sum(tp.topic == self.input_full for tp in partitions))
        for tp in partitions:
            if tp.topic == self.input_full:
                self._parts.pop(tp.partition, None)
                self._parked.pop(tp.partition, None)
                self._drop(tp.partition)
        self._settle_unowned()
        if self._cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def _drop(self, partition: int) -> None:
        """Forget a partition: its keys, its restore, its open transaction."""
        self._unhold([partition])
        for key in self.runner.evict_partition(partition):
            self._chunks.pop(key, None)
        self._pending.discard(partition)
        if self._restorer is not None:
            self._restorer.cancel([partition])
        if self._sink is not None:
            self._sink.close(partition)
        self.metrics.forget_partition(partition)


__all__ = ["Worker", "WorkerConfig", "WorkerError"]
