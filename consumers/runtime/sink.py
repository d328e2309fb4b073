"""Where a worker's messages go, and how a checkpoint makes them final.

`TransactionalSink` (exactly-once): one transactional producer per input partition, with
`transactional.id = <prefix><worker>.<group>.p<partition>`. Everything caused by input
partition p (outputs, dead letters, p's state snapshots) and p's input offset are committed
in one Kafka transaction. Because the id belongs to the partition, not to the process, the
next owner of p (after a rebalance, a crash, or a restart anywhere) initialises the same id:
the broker aborts whatever the previous owner left open and fences it, so a zombie can never
commit afterwards. This does not rely on the broker timing out abandoned transactions or on
KIP-447 generation checks, neither of which the embedded broker implements.

`AtLeastOnceSink` (brokers without transactions): one idempotent producer; a checkpoint
flushes the outputs, then the snapshots, then commits the offsets synchronously. A crash
between those steps re-delivers outputs (same event ids, so downstream can deduplicate);
snapshots newer than the committed offsets are detected by their source offset and not
applied twice (see `engine.driver.EventRunner.restore`).

Errors are classified into `SinkError.kind`: `abort` (the transaction must be aborted; the
partition goes back to its last checkpoint), `fatal` (the producer is unusable and is
recreated; the partition goes back to its last checkpoint) and `fenced` (another worker
initialised the partition's id: it owns the partition now, or will until the group settles).
Retriable errors are retried until `retry_s` runs out, so a stalled broker only delays.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Literal, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from producers.kafka import DeliveryTracker, make_producer
from schemas.settings import Settings

log = logging.getLogger("streamrisk.runtime")

SinkErrorKind = Literal["abort", "fatal", "fenced"]
T = TypeVar("T")

_FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                 KafkaError.INVALID_PRODUCER_EPOCH}


class SinkError(Exception):
    def __init__(self, kind: SinkErrorKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind: SinkErrorKind = kind
        self.reason = reason


def classify(exc: BaseException) -> SinkError:
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return SinkError("fatal", str(exc))
    if error.code() in _FENCED_CODES:
        return SinkError("fenced", error.str())
    if error.fatal():
        return SinkError("fatal", error.str())
    return SinkError("abort", error.str())


def retrying(call: Callable[[], T], retry_s: float) -> T:
    """Call until it succeeds, retrying retriable errors (a stalled broker) for `retry_s`."""
    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and error.retriable()
            if not retriable or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _produce(producer: Producer, topic: str, value: bytes | None, key: str | bytes | None,
             partition: int) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition)
            return
        except BufferError:  # local queue full: let librdkafka send, then retry
            producer.poll(0.05)


class _Buffered:
    """Outputs are buffered per (input partition, topic, target partition) and handed to
    librdkafka with one `produce_batch` call per buffer at the end of each consumed batch: a
    produce call per message costs several times more (lock traffic and wake-ups of the
    producer threads). The target partition is the batch's, not the message's:
    confluent-kafka 2.16's `produce_batch` ignores a per-message `partition` and places
    each message by its key."""

    def __init__(self) -> None:
        self._buffers: dict[int, dict[tuple[str, int], list[dict[str, Any]]]] = {}
        self.touched: set[int] = set()
        self.send_failures: dict[int, SinkError] = {}
        """Partitions whose producer refused messages (fenced, fatal): reported by the next
        commit, which must not commit their transaction."""
        self.urgent_topics: frozenset[str] = frozenset()
        """Full names of the topics whose messages make their partition `urgent`."""
        self.urgent: set[int] = set()
        """Partitions that sent a message to an urgent topic since their last commit."""

    def _producer_for(self, partition: int) -> Producer:
        raise NotImplementedError

    def _classify(self, partition: int, exc: KafkaException) -> SinkError:
        return classify(exc)

    def produce(self, partition: int, topic: str, key: str | bytes | None,
                value: bytes | None, target: int = -1) -> None:
        """Publish on behalf of input `partition` (to partition `target` of `topic`, or by
        key when -1): inside that partition's open transaction in exactly-once mode."""
        topics = self._buffers.get(partition)
        if topics is None:
            topics = self._buffers[partition] = {}
        buffer = topics.get((topic, target))
        if buffer is None:
            buffer = topics[(topic, target)] = []
        buffer.append({"value": value, "key": key})

    def send(self) -> None:
        """Hand every buffered message to librdkafka."""
        for partition, topics in self._buffers.items():
            producer = None
            for (topic, target), buffer in topics.items():
                if not buffer:
                    continue
                producer = producer or self._producer_for(partition)
                try:
                    producer.produce_batch(topic, buffer, partition=target)
                    for message in buffer:
                        if "_error" in message:  # queue full: let it drain, one by one
                            _produce(producer, topic, message["value"], message["key"],
                                     target)
                except KafkaException as exc:
                    self.send_failures.setdefault(partition, self._classify(partition, exc))
                buffer.clear()
                self.touched.add(partition)
                if topic in self.urgent_topics:
                    self.urgent.add(partition)

    def drop_buffered(self, partition: int) -> None:
        self._buffers.pop(partition, None)
        self.urgent.discard(partition)


class _Hung(Exception):
    """A transactional call did not return within its deadline."""


# Producers whose calls hung: kept referenced so their destructor (which may block on the
# same stuck state) never runs on the worker's thread.
_ABANDONED: list[Producer] = []


class _CallThread(threading.Thread):
    """A daemon thread that runs one call at a time and then waits for the next."""

    def __init__(self, idle: list[_CallThread], lock: threading.Lock) -> None:
        super().__init__(name="txn", daemon=True)
        self._calls: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = \
            queue.SimpleQueue()
        self._idle = idle
        self._lock = lock

    def give(self, call: Callable[[], None], finished: threading.Event) -> None:
        self._calls.put((call, finished))

    def run(self) -> None:
        while True:
            call, finished = self._calls.get()
            call()
            with self._lock:  # idle again before the caller hears of it: ready for its next
                self._idle.append(self)
            finished.set()


# Threads kept between checkpoints: starting one per call per checkpoint cost more CPU than
# the commits' own Python work. Only a thread whose call returned goes back to the idle
# list, so one stuck in a hung librdkafka call is never handed another.
_IDLE_THREADS: list[_CallThread] = []
_IDLE_LOCK = threading.Lock()


def _forget_threads() -> None:
    """In a forked child: none of the parent's threads exist there."""
    global _IDLE_LOCK
    _IDLE_THREADS.clear()
    _IDLE_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_threads)


def _call_thread() -> _CallThread:
    with _IDLE_LOCK:
        if _IDLE_THREADS:
            return _IDLE_THREADS.pop()
    thread = _CallThread(_IDLE_THREADS, _IDLE_LOCK)
    thread.start()
    return thread


def run_all(calls: Mapping[int, Callable[[], T]], deadline_s: float,
            give_up: threading.Event | None = None, tick: Callable[[], None] | None = None,
            ) -> dict[int, T | BaseException]:
    """Run calls in parallel daemon threads; a call still running after `deadline_s` (or
    once `give_up` is set) gives `_Hung`. `tick` runs every 50 ms while waiting. librdkafka's
    transactional calls can block past their own timeout when the broker restarts
    mid-transaction, so the worker never waits on one without a deadline."""
    results: dict[int, T | BaseException] = {}
    done: dict[int, threading.Event] = {}
    for key, call in calls.items():
        finished = done[key] = threading.Event()

        def target(key: int = key, call: Callable[[], T] = call) -> None:
            try:
                results[key] = call()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                results[key] = exc

        _call_thread().give(target, finished)
    end = time.monotonic() + deadline_s
    for key, finished in done.items():
        while not finished.is_set() and time.monotonic() < end:
            if tick is not None:
                tick()
            if give_up is not None and give_up.is_set():
                break
            finished.wait(min(0.05, max(0.0, end - time.monotonic())))
        if not finished.is_set():
            reason = ("the broker connection was lost" if give_up is not None
                      and give_up.is_set() else f"still blocked after {deadline_s:g} s")
            results[key] = _Hung(f"transactional call abandoned: {reason}")
    return {key: results[key] for key in calls}


class TransactionalSink(_Buffered):
    """Exactly-once: a transactional producer per input partition."""

    exactly_once = True

    def __init__(self, settings: Settings, base_id: str, *, retry_s: float | None = None,
                 timeout_s: float | None = None) -> None:
        self.settings = settings
        self.base_id = base_id
        p = settings.profile_defaults
        self.timeout_s = timeout_s or max(5.0, p.socket_timeout_ms / 1000)
        # The worker's thread waits for commits: stay well inside max.poll.interval.ms, or the
        # group would consider the worker dead while it waits.
        self.deadline_s = min(3 * max(5.0, p.transaction_timeout_ms / 1000),
                              p.max_poll_interval_ms / 2000)
        self.retry_s = retry_s or max(1.0, self.deadline_s - 2 * self.timeout_s)
        super().__init__()
        self._producers: dict[int, Producer] = {}
        self.broker_lost = threading.Event()
        """Set when every broker went away. Whatever the old producers still hold must never
        reach a restarted broker: a broker without KIP-890 (the embedded one) would accept it
        into a transaction it has already aborted, a "hanging transaction" that blocks
        read-committed readers for good. The worker then calls `abandon_all`."""

    def _producer_for(self, partition: int) -> Producer:
        return self._producers[partition]

    def _classify(self, partition: int, exc: KafkaException) -> SinkError:
        """A call on a producer that has failed fatally says only "Local: Fatal error", and
        its error_cb is not told the cause either; a transactional call on it raises the
        cause (fenced, for instance), so ask one. The producer is unusable anyway."""
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError._FATAL:
            try:
                self._producers[partition].abort_transaction(0)
            except KafkaException as cause:
                return classify(cause)
        return classify(exc)

    def _error_callback(self) -> tuple[Callable[[KafkaError], None], threading.Event]:
        """An error_cb that reports a lost broker only once its producer is in service: a
        producer still being opened while the broker is away says so too, and that must not
        throw away the producers that replaced the lost ones."""
        ready = threading.Event()

        def on_error(error: KafkaError) -> None:
            if ready.is_set() and error.code() == KafkaError._ALL_BROKERS_DOWN:
                self.broker_lost.set()

        return on_error, ready

    def _watch(self) -> None:
        """Serve the producers' error callbacks while commits are blocked in other threads,
        so losing the broker is noticed within ~50 ms, before it can come back."""
        for producer in list(self._producers.values()):
            with contextlib.suppress(KafkaException):  # the blocked call reports fatal errors
                producer.poll(0)

    def abandon_all(self) -> list[int]:
        """Drop every producer without another request to the broker (see `broker_lost`);
        returns their partitions, which must go back to their last checkpoint."""
        partitions = sorted(self._producers)
        for producer in self._producers.values():
            with contextlib.suppress(KafkaException):
                producer.purge(True, True, False)
            _ABANDONED.append(producer)
        self._producers.clear()
        self._buffers.clear()
        self.touched.clear()
        self.urgent.clear()
        self.send_failures.clear()
        self.broker_lost.clear()
        return partitions

    def transactional_id(self, partition: int) -> str:
        return f"{self.base_id}.p{partition}"

    def has(self, partition: int) -> bool:
        return partition in self._producers

    def _failure(self, partition: int, outcome: BaseException) -> SinkError:
        if isinstance(outcome, _Hung):
            # Never touch that producer again: the next owner of the id (us, after the
            # rewind) fences it.
            producer = self._producers.pop(partition, None)
            if producer is not None:
                _ABANDONED.append(producer)
            return SinkError("fatal", str(outcome))
        if isinstance(outcome, KafkaException):
            return classify(outcome)
        raise outcome

    def open(self, partitions: Iterable[int]) -> dict[int, SinkError]:
        """Create, initialise (fencing the previous owner) and begin, in parallel."""
        wanted = [p for p in partitions if p not in self._producers]

        def start(partition: int) -> Producer:
            on_error, ready = self._error_callback()
            producer = make_producer(self.settings,
                                     transactional_id=self.transactional_id(partition),
                                     error_cb=on_error)
            retrying(lambda: producer.init_transactions(self.timeout_s), self.retry_s)
            producer.begin_transaction()
            producer.poll(0)  # serve what the opening said before it counts
            ready.set()
            return producer

        failures: dict[int, SinkError] = {}
        calls = {p: (lambda p=p: start(p)) for p in wanted}
        for partition, outcome in run_all(calls, self.deadline_s).items():
            if isinstance(outcome, BaseException):
                failures[partition] = self._failure(partition, outcome)
            else:
                self._producers[partition] = outcome
        return failures

    def poll(self) -> None:
        self.send()
        for partition, producer in self._producers.items():
            try:
                producer.poll(0)
            except KafkaException as exc:  # fatal errors surface here too
                self.send_failures.setdefault(partition, self._classify(partition, exc))

    def flush_outputs(self) -> None:
        """Nothing to do: the transaction makes outputs and snapshots atomic."""

    def commit(self, offsets: Mapping[int, list[TopicPartition]], consumer: Consumer,
               only: Collection[int] | None = None) -> dict[int, SinkError]:
        """Commit the transaction of every partition in `offsets` or `touched` (of those in
        `only`, when given: the others stay open), each with its input offsets. Returns the
        partitions that failed; the others begin a new one."""
        self.send()
        if only is None:
            failures = dict(self.send_failures)
            self.send_failures.clear()
            wanted = set(offsets) | (self.touched & self._producers.keys())
            self.touched.clear()
            self.urgent.clear()
        else:
            failures = {p: self.send_failures.pop(p) for p in only if p in self.send_failures}
            wanted = (set(offsets) | self.touched) & self._producers.keys() & set(only)
            self.touched -= wanted | failures.keys()
            self.urgent -= wanted | failures.keys()
        partitions = sorted(wanted - failures.keys())
        if not partitions:
            return failures
        metadata = consumer.consumer_group_metadata()

        def commit_one(partition: int) -> None:
            producer = self._producers[partition]
            marks = offsets.get(partition)
            if marks:
                retrying(lambda: producer.send_offsets_to_transaction(
                    marks, metadata, self.timeout_s), self.retry_s)
            retrying(lambda: producer.commit_transaction(self.timeout_s), self.retry_s)
            producer.begin_transaction()

        calls = {p: (lambda p=p: commit_one(p)) for p in partitions}
        outcomes = run_all(calls, self.deadline_s, self.broker_lost, self._watch)
        for partition, outcome in outcomes.items():
            if isinstance(outcome, BaseException):
                failures[partition] = self._failure(partition, outcome)
        return failures

    def reset(self, partition: int, error: SinkError | None = None) -> None:
        """Drop the open transaction of `partition`: abort it, or throw the producer away
        when it is fatally broken (the next `open` makes a new one)."""
        self.drop_buffered(partition)
        self.touched.discard(partition)
        producer = self._producers.get(partition)
        if producer is None:
            return
        if error is None or error.kind == "abort":
            def abort() -> None:
                retrying(lambda: producer.abort_transaction(self.timeout_s), self.retry_s)
                producer.begin_transaction()

            outcome = run_all({partition: abort}, self.deadline_s)[partition]
            if not isinstance(outcome, BaseException):
                return
            log.warning("abort of %s failed (%s): recreating the producer",
                        self.transactional_id(partition), outcome)
            if isinstance(outcome, _Hung):
                self._failure(partition, outcome)
                return
        self._producers.pop(partition, None)
        producer.purge()  # a fenced or fatal producer must not deliver anything more

    def close(self, partition: int) -> None:
        """Give a partition up: abort what is open, then release the producer."""
        self.close_many([partition])

    def close_many(self, partitions: Iterable[int]) -> None:
        producers = {}
        for partition in partitions:
            self.drop_buffered(partition)
            self.touched.discard(partition)
            producer = self._producers.pop(partition, None)
            if producer is not None:
                producers[partition] = producer

        def aborter(producer: Producer) -> Callable[[], None]:
            def abort() -> None:
                try:
                    producer.abort_transaction(self.timeout_s)
                except KafkaException:
                    producer.purge()

            return abort

        outcomes = run_all({p: aborter(pr) for p, pr in producers.items()},
                           self.timeout_s * 2)
        for partition, outcome in outcomes.items():
            if isinstance(outcome, _Hung):
                _ABANDONED.append(producers[partition])

    def close_all(self) -> None:
        self.close_many(list(self._producers))


class AtLeastOnceSink(_Buffered):
    """At-least-once: one idempotent producer; commit = flush, then commit offsets."""

    exactly_once = False

    def __init__(self, settings: Settings, *, retry_s: float | None = None) -> None:
        super().__init__()
        self.settings = settings
        p = settings.profile_defaults
        self.retry_s = retry_s or max(10.0, 2 * p.message_timeout_ms / 1000)
        self.tracker = DeliveryTracker()
        self._fatal: str | None = None
        self._producer = self._new_producer()
        self._failed_before = 0
        self._handled: SinkError | None = None

    def _new_producer(self) -> Producer:
        def on_error(error: KafkaError) -> None:
            if error.fatal():
                self._fatal = error.str()

        return make_producer(self.settings, on_delivery=self.tracker.on_delivery,
                             error_cb=on_error)

    def has(self, partition: int) -> bool:
        return True

    def open(self, partitions: Iterable[int]) -> dict[int, SinkError]:
        return {}

    def _producer_for(self, partition: int) -> Producer:
        return self._producer

    def poll(self) -> None:
        self.send()
        try:
            self._producer.poll(0)
        except KafkaException as exc:
            self._fatal = self._fatal or str(exc)

    def flush_outputs(self) -> None:
        """Wait until every message so far is acknowledged; SinkError when one never was."""
        self.send()
        if self.send_failures:
            error = next(iter(self.send_failures.values()))
            self.send_failures.clear()
            raise error
        deadline = time.monotonic() + self.retry_s
        while len(self._producer) and time.monotonic() < deadline and not self._fatal:
            self._producer.flush(0.5)
        if self._fatal:
            raise SinkError("fatal", self._fatal)
        if len(self._producer):
            raise SinkError("abort", f"{len(self._producer)} messages not acknowledged "
                                     f"within {self.retry_s:g} s")
        if self.tracker.failed > self._failed_before:
            self._failed_before = self.tracker.failed
            raise SinkError("abort", "delivery failed: " + "; ".join(self.tracker.errors[-3:]))

    def commit(self, offsets: Mapping[int, list[TopicPartition]], consumer: Consumer,
               only: Collection[int] | None = None) -> dict[int, SinkError]:
        """Flush every output (`only` makes no difference: one producer sends them all, and
        each is visible once sent), then commit `offsets`."""
        partitions = set(offsets) | self.touched
        self.touched.clear()
        try:
            self.flush_outputs()
        except SinkError as exc:
            return dict.fromkeys(partitions, exc)
        marks = [tp for tps in offsets.values() for tp in tps]
        if not marks:
            return {}
        try:
            retrying(lambda: consumer.commit(offsets=marks, asynchronous=False), self.retry_s)
        except KafkaException as exc:
            return dict.fromkeys(offsets, classify(exc))
        return {}

    def reset(self, partition: int, error: SinkError | None = None) -> None:
        self.drop_buffered(partition)
        # One producer serves every partition: recreate it once per fatal error.
        if error is not None and error.kind == "fatal" and error is not self._handled:
            self._handled = error
            old, self._producer = self._producer, self._new_producer()
            self._fatal = None
            old.purge()

    def close(self, partition: int) -> None:
        """Nothing per partition: the one producer is shared."""

    def close_all(self) -> None:
        self.send()
        self._producer.flush(self.retry_s)


Sink = TransactionalSink | AtLeastOnceSink
