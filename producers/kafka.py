"""The one place that constructs confluent-kafka clients from settings.

Producers, consumers and the CLI all get their clients here, so security options,
profiles and logging are applied the same way everywhere. librdkafka's own log lines go to
the `streamrisk.kafka` logger (silent unless STREAMRISK_DEBUG is set) rather than stderr,
so a CLI error stays one readable line.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
    libversion,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata

from schemas.settings import Settings

log = logging.getLogger("streamrisk.kafka")
if not os.environ.get("STREAMRISK_DEBUG"):
    log.addHandler(logging.NullHandler())
    log.propagate = False


class BrokerUnreachable(RuntimeError):
    """No broker answered within the connect timeout."""


def _with_logger(conf: dict[str, Any]) -> dict[str, Any]:
    conf = dict(conf)
    conf.setdefault("logger", log)
    return conf


def make_producer(settings: Settings, *, transactional_id: str | None = None,
                  **overrides: Any) -> Producer:
    """An idempotent acks=all producer; transactional when `transactional_id` is given."""
    conf = settings.producer_config(transactional_id)
    conf.update(overrides)
    return Producer(_with_logger(conf))


def command_producer(settings: Settings) -> Producer:
    """An acks=all producer for a few one-off messages (a command, limit changes), without
    idempotence: an idempotent producer waits about 0.5 s for its producer id before its
    first delivery (librdkafka asks on a timer while no connection is up yet), time a kill
    switch should not lose. Idempotence would only keep out a retried copy, and each of
    these messages carries an event id of its own that readers drop as a repeat."""
    no_idempotence: dict[str, Any] = {"enable.idempotence": False}
    return make_producer(settings, **no_idempotence)


# librdkafka prefetches up to 100,000 messages per partition by default and fetches again
# as soon as a response comes back; a broker that does not hold empty fetch responses for
# fetch.wait.max.ms (the embedded one answers at once) then keeps the fetcher in a tight
# loop for as long as the consumer is at the end of its partitions, e.g. the whole time a
# worker works through a backlog it has already prefetched. A bounded prefetch is paused
# while full: measured on a preloaded backlog, worker CPU per event -18%, broker -41%,
# events/s +28% (consumers/bench). settings.kafka_overrides still win.
BOUNDED_PREFETCH: dict[str, Any] = {"queued.min.messages": 2000, "fetch.queue.backoff.ms": 20}


def make_consumer(settings: Settings, group_id: str | None, *, read_committed: bool = True,
                  instance_id: str | None = None, **overrides: Any) -> Consumer:
    """A manual-commit consumer; read_committed unless told otherwise."""
    conf = settings.consumer_config(group_id, read_committed=read_committed,
                                    instance_id=instance_id)
    for key, value in BOUNDED_PREFETCH.items():
        conf.setdefault(key, value)
    conf.update(overrides)
    return Consumer(_with_logger(conf))


def make_admin(settings: Settings) -> AdminClient:
    return AdminClient(_with_logger(settings.admin_config()))


def check_reachable(settings: Settings, timeout_s: float | None = None) -> ClusterMetadata:
    """Cluster metadata, or BrokerUnreachable with one readable line within `timeout_s`."""
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    admin = make_admin(settings)
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        reason = error.str() if isinstance(error, KafkaError) else str(exc)
        raise BrokerUnreachable(
            f"cannot reach Kafka at {settings.bootstrap_servers} within {timeout:g} s "
            f"({reason})") from None


@dataclass
class DeliveryTracker:
    """Counts delivery reports so no message is dropped silently.

    Pass `tracker.on_delivery` as the `on_delivery` callback of every produce call; after
    `flush()`, `failed` says how many messages the broker never acknowledged.
    """

    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    max_errors_kept: int = 20
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is None:
                self.delivered += 1
                return
            self.failed += 1
            if len(self.errors) < self.max_errors_kept:
                self.errors.append(f"{msg.topic()}: {err.str()}")


def flush_all(producer: Producer, timeout_s: float = 30.0) -> int:
    """Flush, polling delivery callbacks, until empty or `timeout_s`; returns messages left."""
    deadline = time.monotonic() + timeout_s
    remaining = len(producer)
    while remaining and time.monotonic() < deadline:
        remaining = producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
    return int(remaining)


def consume_ready(consumer: Consumer, num: int, timeout: float) -> list[Message]:
    """Up to `num` messages: what is ready now, else the first to arrive within `timeout`
    seconds plus whatever came with it.

    `Consumer.consume(num, timeout)` waits until `num` messages are there or the timeout
    ends, so under a light load a message waits for the batch to fill: at 5,000 events/s a
    batch of 500 adds up to 100 ms before the first of them is processed.
    """
    messages = consumer.consume(num, 0)
    if messages or timeout <= 0:
        return messages
    first = consumer.consume(1, timeout)
    if first and num > 1:
        first += consumer.consume(num - 1, 0)
    return first


def seek_when_ready(consumer: Consumer, partition: TopicPartition) -> bool:
    """Seek an assigned partition to `partition.offset`; False if librdkafka cannot yet.

    Right after an assignment librdkafka first fetches the group's committed offset, and
    until that answer comes a seek fails with `_STATE`: a slow or just-restarted broker
    stretches that window past a fast restore. When the answer lands while the seek is in
    flight, librdkafka starts fetching from the committed offset and the seek fails with
    `_OUTDATED` instead (seen once on a clean-clone CI run). Either way the caller keeps the
    partition paused and tries again; any other error is raised.
    """
    try:
        consumer.seek(partition)
    except KafkaException as exc:
        if exc.args[0].code() in (KafkaError._STATE, KafkaError._OUTDATED):
            return False
        raise
    return True


IDLE_PAUSE_MIN_LIBRDKAFKA = (2, 16)
"""The oldest librdkafka seen to resume idle-paused partitions without losing a message.

With 2.12.1 (what confluent-kafka 2.12 ships), a market worker paused at the end of its input
(`IdlePause`), stalled for 10-12 s (SIGSTOP, as a long GC or VM pause would), then given one
new transaction per partition skipped the first message of some partitions in 6 of 73
repetitions on the embedded broker: processed past it, committed past it, never seen again.
With pausing switched off on the same version, none of 30; with 2.16.0 and pausing on, none
of 30."""


@functools.cache
def _pausing_is_safe() -> bool:
    """This librdkafka is at least `IDLE_PAUSE_MIN_LIBRDKAFKA`; if not, says so once in the
    worker's log (this module's is silent): an operator should see why."""
    version = libversion()[1]
    if (version >> 24, (version >> 16) & 0xFF) >= IDLE_PAUSE_MIN_LIBRDKAFKA:
        return True
    logging.getLogger("streamrisk.runtime").warning(
        "librdkafka %s is older than %d.%d: idle input is fetched, not paused "
        "(pausing was seen to skip messages on older versions)",
        libversion()[0], *IDLE_PAUSE_MIN_LIBRDKAFKA)
    return False


def idle_probe_s(settings: Settings) -> float | None:
    """Seconds between looks at idle-paused partitions (profile `idle_probe_ms`), or None:
    never pause, fetch as usual. None too when this librdkafka is older than
    `IDLE_PAUSE_MIN_LIBRDKAFKA`, because pausing could then lose input; the cost is the idle
    fetch loop (CPU), never correctness."""
    probe_ms = settings.profile_defaults.idle_probe_ms
    if not probe_ms or not _pausing_is_safe():
        return None
    return probe_ms / 1000


class IdlePause:
    """Pauses partitions read to their end and resumes them for one fetch every `probe_s`.

    For brokers that answer an empty fetch at once instead of holding it for
    fetch.wait.max.ms (the embedded one): a caught-up consumer fetches in a tight loop,
    measured at 46-60% of a core in its librdkafka thread and nearly as much again in the
    broker. Paused, it costs one fetch round per probe, and what arrives meanwhile waits at
    most `probe_s` longer. Pausing drops what was prefetched for those partitions; librdkafka
    resumes from the last message handed to the application, so nothing is skipped (pause
    only what has been read to its end).

    `forget` drops partitions whose pause state is no longer this object's to undo (revoked,
    or paused and resumed for another reason).

    librdkafka starts fetching a resumed partition only when its broker thread next wakes,
    up to a second later. `resume` therefore also asks the broker for one partition's
    watermarks: that request wakes the thread, and the fetch follows within about half a
    millisecond (measured: 0.46 ms against 980 ms without it). The request is synchronous,
    about 0.3 ms; `timeout_s` bounds it when the broker does not answer.
    """

    def __init__(self, consumer: Consumer, probe_s: float, timeout_s: float = 1.0) -> None:
        self.consumer = consumer
        self.probe_s = probe_s
        self.timeout_s = timeout_s
        self.paused: list[TopicPartition] = []
        self._since = 0.0

    def pause(self, partitions: list[TopicPartition]) -> None:
        if not self.paused and partitions:
            self.consumer.pause(partitions)
            self.paused = list(partitions)
            self._since = time.monotonic()

    @property
    def probe_due(self) -> bool:
        return bool(self.paused) and time.monotonic() - self._since >= self.probe_s

    @property
    def probe_in(self) -> float:
        """Seconds until the next probe is due (0 when due, `probe_s` when nothing is
        paused)."""
        if not self.paused:
            return self.probe_s
        return max(0.0, self._since + self.probe_s - time.monotonic())

    def forget(self, topic: str, partitions: Iterable[int]) -> list[TopicPartition]:
        """Stop tracking `partitions` of `topic`; returns those of them that were paused."""
        gone = set(partitions)
        dropped = [tp for tp in self.paused if tp.topic == topic and tp.partition in gone]
        if dropped:
            self.paused = [tp for tp in self.paused if tp not in dropped]
        return dropped

    def resume(self) -> None:
        """Resume what is paused, if anything, and wake the fetcher."""
        if not self.paused:
            return
        partitions, self.paused = self.paused, []
        self.consumer.resume(partitions)
        first = partitions[0]
        try:
            self.consumer.get_watermark_offsets(TopicPartition(first.topic, first.partition),
                                                self.timeout_s, cached=False)
        except KafkaException as exc:  # the fetch still starts when the thread next wakes
            log.debug("waking the fetcher after resume: %s", exc)


def lower_fetcher_priority(niceness: int = 10) -> int:
    """Lower the scheduling priority of this process's librdkafka broker threads (Linux;
    elsewhere nothing happens); returns how many threads were changed.

    On a broker that answers empty fetches at once (the embedded one) an idle consumer's
    broker thread fetches in a tight loop; at normal priority that loop takes CPU from the
    thread doing the work. At a lower priority it runs when a core is free, and a fetch
    that brings data is still served within a scheduling period.
    """
    changed = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                name = fh.read().strip()
            if name.startswith("rdk:broker") and \
                    os.getpriority(os.PRIO_PROCESS, int(tid)) < niceness:
                os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
                changed += 1
        except OSError:  # the thread ended meanwhile, or not allowed: leave it
            continue
    return changed
