"""Measurements through the broker, with workers as separate processes.

- `MarketGroup`: events/s of a market worker group (one or two processes, exactly-once) on
  the same repetitions the in-process run gets. Each repetition is published in one
  transaction; its time runs from the first batch a worker starts on it to the end of the
  checkpoint that commits the last one (the commit is counted; time the worker spends idle
  waiting for its checkpoint timer is not). Two workers: first start of either to the later
  end.
- `alert_latency`: a worker with a short commit interval; the benchmark publishes at a
  fixed rate and reads `risk.alerts` read-committed: event produced -> alert consumed.
- `worker_decisions`: the order worker over a preloaded day; the decision latency every
  RiskDecision carries (`decision_latency_ns`, around the gate inside the worker).
- `restore_runs`: a changelog holding N warm instruments; a new worker process per
  repetition (the previous one killed with SIGKILL, as in a crash); restore time from the
  partitions' assignment to the last one restored.

`MarketGroup` and `alert_latency` also report the CPU per event of every process involved
(`process_meter`): the workers' main threads and their other (librdkafka) threads, the
broker when the benchmark started it, and the benchmark process itself (publisher, alert
reader).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from consumers.bench.cluster import (
    BenchError,
    Publisher,
    WorkerProcess,
    broker_pids,
    drop_topics,
    fresh_settings,
    read_all,
    reader,
    truncate,
    wait_for,
    workers,
)
from consumers.bench.cpu import CpuMeter
from consumers.bench.inprocess import Template, clone_instruments, latency_ms
from consumers.bench.measure import percentile
from consumers.bench.probe import StatsFile
from consumers.bench.workloads import MARKET_PARTITIONS, Message, order_topic, to_messages
from engine.market_risk import MarketRiskProcessor
from engine.snapshots import Snapshot, SnapshotCodec
from producers.kafka import consume_ready, lower_fetcher_priority, make_admin
from schemas.common import Envelope
from schemas.settings import Settings

Tick = Callable[[int], None]
START_TIMEOUT_S = 120.0
MARKET_STREAMS = ("market", "risk.instruments", "risk.model-health",
                  "market-worker.changelog")
"""What a market worker's input, outputs and changelog grow by: deleted once committed
(`cluster.truncate`). risk.instruments is compacted, but the embedded broker had not
compacted any of it after a repetition: 15.6 MB for 15,000 events. The changelog grows by
every dirty key's snapshot at every snapshot round (about 6 MB per repetition of each group
when that was every checkpoint);
kept, it made the broker's autosave cost grow from repetition to repetition (24 to 68 µs
of broker CPU per event over six), and the two-worker runs, which have no core to spare,
slowed the most. Nothing in these steps restores from it: the workers keep their state in
memory."""


def _no_tick(n: int) -> None:
    pass


class GroupWatch:
    """Members of a consumer group, once it is stable."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.admin = make_admin(settings)
        self.group = group
        self._next = 0.0
        self._members = 0

    def members(self) -> int:
        now = time.monotonic()
        if now >= self._next:  # describing costs a round trip: not more than 5 times a second
            self._next = now + 0.2
            try:
                described = self.admin.describe_consumer_groups([self.group])[self.group] \
                    .result(10)
                state = str(getattr(described.state, "name", described.state)).upper()
                self._members = len(described.members) if state == "STABLE" else 0
            except Exception:  # noqa: BLE001 - not created yet
                self._members = 0
        return self._members


def wait_ready(settings: Settings, procs: Sequence[WorkerProcess], group: str) -> None:
    """Until the group is stable with every process in it and all partitions assigned."""
    watch = GroupWatch(settings, group)
    wait_for(lambda: watch.members() == len(procs)
             and sum(p.read().assigned for p in procs) >= MARKET_PARTITIONS,
             START_TIMEOUT_S, f"{len(procs)} worker(s) to join {group}", procs)


def committed(procs: Sequence[WorkerProcess], total: int, since: float) -> bool:
    """Every process has handled its share of `total` events and committed its last batch
    started after `since` (the end of a repetition's span; snapshot rounds may follow)."""
    if sum(p.read().events for p in procs) < total:
        return False
    for p in procs:
        batches = [b for b in p.stats.batches if b.t0 >= since]
        if batches and p.stats.committed_after(batches[-1].t1) is None:
            return False
    return True


def processed(procs: Sequence[WorkerProcess], total: int, since: float) -> bool:
    """`committed`, and every partition's snapshot round has followed: the next step empties
    the topics or freezes the process, which must not meet a transaction still open.
    Partitions take their rounds one at a time, up to a snapshot interval (more with many
    keys, see `worker.snapshot_budget`) after the last batch; each checkpoint reports how
    many partitions still hold input their snapshots do not."""
    if not committed(procs, total, since):
        return False
    for p in procs:
        batches = [b for b in p.stats.batches if b.t0 >= since]
        last = p.stats.checkpoints[-1] if p.stats.checkpoints else None
        if last is None or last.unsnapshotted or (batches and last.t0 < batches[-1].t1):
            return False
    return True


def process_meter(procs: Sequence[WorkerProcess], servers: str) -> CpuMeter:
    """A meter of the workers (main threads apart), the broker (when ours) and this process."""
    return CpuMeter({"worker": [p.process.pid for p in procs], "broker": broker_pids(servers),
                     "bench": [os.getpid()]}, main_thread_of=("worker",))


def by_process(measured: dict[str, float]) -> dict[str, float]:
    """A `process_meter` reading (µs per event, cores...) by process: the workers' main
    threads, their other threads, the broker (0 when not ours), the benchmark process, and
    all of them."""
    main = measured["worker main thread"]
    out = {"worker_main_thread": main,
           "worker_other_threads": max(0.0, measured["worker"] - main),
           "broker": measured["broker"], "bench": measured["bench"]}
    out["total"] = sum(out.values())
    return out


@dataclass
class WorkerRates:
    workers: int
    rates: list[float] = field(default_factory=list)
    cpu_us_per_event: list[float] = field(default_factory=list)
    """CPU of the worker processes (every thread) per event, per repetition."""
    per_worker_events: list[list[int]] = field(default_factory=list)
    cpu_by_process_us: list[dict[str, float]] = field(default_factory=list)
    """Per repetition, µs of CPU per event of each process (`by_process`), from the
    repetition's commit by the publisher until its last batch is committed."""
    cores_busy: list[float] = field(default_factory=list)
    """Per repetition, the cores all those processes kept busy meanwhile."""
    checkpoints: int = 0
    checkpoint_ms_median: float = 0.0


def span_rate(processes: Sequence[StatsFile], events: int, since: float,
              ) -> tuple[float, list[int], float]:
    """Events/s from the first batch started after `since` to the end of the checkpoint
    committing the last one, over the stats of several processes; events per process; CPU
    seconds the processes used."""
    starts, ends, counts = [], [], []
    cpu = 0.0
    for stats in processes:
        batches = [b for b in stats.batches if b.t0 >= since]
        counts.append(sum(b.n for b in batches))
        if not batches:
            continue
        last = max(b.t1 for b in batches)
        commit = stats.committed_after(last)
        assert commit is not None
        starts.append(min(b.t0 for b in batches))
        ends.append(last + (commit.t1 - commit.t0))
        # The CPU counter is read at the end of every batch and checkpoint: from the last
        # reading before the repetition (the process was frozen until just before it).
        earlier = [s.cpu for s in (*stats.batches, *stats.checkpoints) if s.t1 < since]
        cpu += commit.cpu - (max(earlier) if earlier else batches[0].cpu)
    return events / (max(ends) - min(starts)), counts, cpu


class MarketGroup:
    """A group of `count` market worker processes on topics of their own. Repetitions are
    published one transaction each; between them the processes can be frozen (SIGSTOP) so
    that other measurements run on an otherwise idle machine."""

    def __init__(self, base: Settings, servers: str, count: int, workdir: Path, *,
                 config_file: str | None = None) -> None:
        self.settings = fresh_settings(base, servers, f"rate{count}")
        self.servers = servers
        self.group = f"{self.settings.topic_prefix}market-worker"
        self.publisher = Publisher(self.settings, "market")
        self.result = WorkerRates(count)
        self.total = 0
        self.procs = [WorkerProcess(self.settings, "market", workdir, f"market-x{count}-{i}",
                                    config_file=config_file) for i in range(count)]

    def ready(self, warmup: Sequence[Message]) -> None:
        """Every process in the group, every partition assigned, the warm-up processed."""
        wait_ready(self.settings, self.procs, self.group)
        since = time.perf_counter()
        self.publisher.publish(warmup)
        self.total += len(warmup)
        wait_for(lambda: processed(self.procs, self.total, since), START_TIMEOUT_S,
                 "the warm-up", self.procs)
        truncate(self.settings, MARKET_STREAMS)

    def rep(self, messages: Sequence[Message]) -> float:
        since = time.perf_counter()
        self.publisher.publish(messages)
        self.total += len(messages)
        # metered to the repetition's last commit: what the processes spend idle after it,
        # waiting for the snapshot rounds, is no cost of its events
        with process_meter(self.procs, self.servers) as meter:
            wait_for(lambda: committed(self.procs, self.total, since), START_TIMEOUT_S,
                     "a repetition to be committed", self.procs)
        wait_for(lambda: processed(self.procs, self.total, since), START_TIMEOUT_S,
                 "a repetition's snapshot rounds", self.procs)
        rate, counts, cpu = span_rate([p.stats for p in self.procs], len(messages), since)
        self.result.rates.append(rate)
        self.result.cpu_us_per_event.append(cpu / len(messages) * 1e6)
        self.result.cpu_by_process_us.append(by_process(meter.per_event_us(len(messages))))
        self.result.cores_busy.append(by_process(meter.cores())["total"])
        self.result.per_worker_events.append(counts)
        truncate(self.settings, MARKET_STREAMS)  # committed: only weight for the broker now
        return rate

    def freeze(self) -> None:
        for p in self.procs:
            p.freeze()

    def thaw(self) -> None:
        for p in self.procs:
            p.thaw()

    def close(self) -> WorkerRates:
        for p in self.procs:
            p.stop()
        drop_topics(self.settings)
        spans = [c for p in self.procs for c in p.stats.checkpoints if c.n]
        self.result.checkpoints = len(spans)
        if spans:
            self.result.checkpoint_ms_median = percentile(
                [(c.t1 - c.t0) * 1000 for c in spans], 0.5)
        return self.result


# --- latency ------------------------------------------------------------------------------


class AlertReader(threading.Thread):
    """Reads `risk.alerts` read-committed and times each alert against its cause's send
    time (`sent`, filled by the publisher: event_id -> perf_counter)."""

    def __init__(self, settings: Settings, sent: dict[str, float]) -> None:
        super().__init__(daemon=True, name="bench-alert-reader")
        self.settings = settings
        self.consumer = reader(settings, ["risk.alerts"], **{"fetch.wait.max.ms": 5})
        self.sent = sent
        self.samples: list[tuple[float, float]] = []
        """(send time, latency s) per alert of a timed event."""
        self.stop_flag = threading.Event()

    def run(self) -> None:
        sent = self.sent
        self.consumer.consume(1, 0.5)  # joined: its broker threads exist
        if self.settings.profile_defaults.lower_fetcher_priority:
            lower_fetcher_priority()  # its idle fetcher must not compete with the worker
        while not self.stop_flag.is_set():
            # what is there now, else the first alert to arrive: Consumer.consume(1000, t)
            # would hold an alert until 1,000 are there or t ends, timing this loop instead
            messages = consume_ready(self.consumer, 1000, 0.02)
            now = time.perf_counter()
            for msg in messages:
                if msg.error() is not None:
                    continue
                cause = orjson.loads(msg.value()).get("cause_event_id")  # type: ignore[arg-type]
                at = sent.get(cause)
                if at is not None:
                    self.samples.append((at, now - at))
        self.consumer.close()


def paced(publisher: Publisher, messages: Sequence[Message], rate: float,
          sent: dict[str, float], tick: Tick = _no_tick) -> float:
    """Publish at `rate` messages/s (sent in 1 ms slots); returns the achieved rate."""
    producer, topic = publisher.producer, publisher.topic
    start = time.perf_counter()
    i = 0
    n = len(messages)
    while i < n:
        now = time.perf_counter()
        due = min(n, int((now - start) * rate) + 1)
        while i < due:
            m = messages[i]
            sent[m.event_id] = time.perf_counter()
            try:
                producer.produce(topic, m.value, m.key, m.partition)
            except BufferError:
                producer.poll(0.01)
                continue
            i += 1
            if i % 1000 == 0:
                tick(1000)
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)
    tick(n % 1000)
    return n / (time.perf_counter() - start)


def alert_latency(base: Settings, servers: str, warmup: Sequence[Message],
                  messages: Sequence[Message], rate: float, commit_interval_ms: int,
                  segments: int, workdir: Path, *, guarantee: str = "exactly-once",
                  config_file: str | None = None, tick: Tick = _no_tick) -> dict[str, Any]:
    settings = fresh_settings(base, servers, "latency")
    group = f"{settings.topic_prefix}market-worker"
    warm = Publisher(settings, "market")
    # a live feed handler sends each event at once: the publisher's default 20 ms linger
    # (right for preloading backlogs) would be counted as alert latency
    publisher = Publisher(settings, "market", transactional=False, **{"linger.ms": 0})
    sent: dict[str, float] = {}
    with workers(settings, "market", 1, workdir, "market-latency", "--commit-interval",
                 str(commit_interval_ms), "--guarantee", guarantee,
                 config_file=config_file) as procs:
        wait_ready(settings, procs, group)
        since = time.perf_counter()
        warm.publish(warmup)
        wait_for(lambda: processed(procs, len(warmup), since), START_TIMEOUT_S,
                 "the warm-up", procs)
        truncate(settings, MARKET_STREAMS)
        alerts = AlertReader(settings, sent)
        alerts.start()
        try:
            time.sleep(0.5)  # the reader has joined its partitions
            since = time.perf_counter()
            with process_meter(procs, servers) as meter:  # while paced: the machine's load
                achieved = paced(publisher, messages, rate, sent, tick)
            total = len(warmup) + len(messages)
            wait_for(lambda: processed(procs, total, since), START_TIMEOUT_S,
                     "the timed events to be committed", procs)
            time.sleep(0.3)  # the last committed alerts reach the reader
        finally:
            alerts.stop_flag.set()
            alerts.join(10)
        timed = [b for b in procs[0].stats.batches if b.t0 >= since]
    drop_topics(settings)
    busy = sum(b.t1 - b.t0 for b in timed)
    cpu_us = ((timed[-1].cpu - timed[0].cpu) / max(1, sum(b.n for b in timed[1:])) * 1e6
              if len(timed) > 1 else 0.0)
    commits = [ck for ck in procs[0].stats.checkpoints if ck.t0 >= since and ck.n]
    if not alerts.samples:
        raise BenchError("no alert came back from the latency run")
    ordered = [int(lat * 1e9) for _, lat in sorted(alerts.samples)]
    result = latency_ms(ordered, segments)
    result.update({"rate_achieved": achieved, "commit_interval_ms": commit_interval_ms,
                   "guarantee": guarantee, "events": len(messages),
                   "worker_busy_share": busy / (len(messages) / achieved),
                   "worker_cpu_us_per_event": cpu_us,
                   "checkpoints": len(commits),
                   "checkpoint_ms_median": percentile([(ck.t1 - ck.t0) * 1000
                                                       for ck in commits], 0.5)
                   if commits else 0.0})
    result["cpu_by_process_us"] = by_process(meter.per_event_us(len(messages)))
    result["cores_by_process"] = by_process(meter.cores())
    return result


# --- decisions in the order worker --------------------------------------------------------


def worker_decisions(base: Settings, servers: str, events: Sequence[Envelope], segments: int,
                     workdir: Path, *, config_file: str | None = None,
                     tick: Tick = _no_tick) -> dict[str, Any]:
    settings = fresh_settings(base, servers, "orders")
    by_topic: dict[str, list[Envelope]] = {}
    keys: dict[str, Callable[[Envelope], str]] = {}
    for event in events:
        topic, _ = order_topic(event)
        by_topic.setdefault(topic, []).append(event)
        keys[topic] = lambda e: order_topic(e)[1]
    for topic in ("risk.limits", "risk.instruments"):  # tables first: read before any input
        table = to_messages(by_topic[topic], keys[topic], partitions=1 if topic ==
                            "risk.limits" else MARKET_PARTITIONS)
        Publisher(settings, topic, transactional=False).publish(table)
    orders = to_messages(by_topic["orders"], keys["orders"])
    Publisher(settings, "orders", transactional=False).publish(orders)
    expected = sum(1 for e in by_topic["orders"] if e.type in ("OrderNew", "OrderReplace"))
    tick(1)
    with workers(settings, "orders", 1, workdir, "orders", config_file=config_file) as procs:
        wait_for(lambda: processed(procs, len(orders), 0.0), START_TIMEOUT_S * 2,
                 "the order worker to process the day", procs, poll_s=0.1)
        batches = procs[0].stats.batches
        rate = len(orders) / (batches[-1].t1 - batches[0].t0)
    tick(1)
    values = read_all(settings, "risk.decisions", expected)
    decisions = sorted((obj["ts_event"], obj["decision_latency_ns"])
                       for obj in map(orjson.loads, values))
    drop_topics(settings)
    result = latency_ms([lat for _, lat in decisions], segments)
    result.update({"orders_events": len(orders), "worker_events_per_s": rate})
    tick(1)
    return result


# --- restore ------------------------------------------------------------------------------


def write_changelog(settings: Settings, template: Template, instruments: int,
                    versions: int = 1) -> int:
    """Signed snapshots of `instruments` warm instruments (`versions` per key, the latest
    wins) in the market worker's changelog; returns the bytes written."""
    codec = SnapshotCodec(settings.snapshot_key_bytes(), worker=MarketRiskProcessor.name,
                          max_message_bytes=settings.max_message_bytes)
    processor = MarketRiskProcessor()
    symbols = [f"R{i:05d}" for i in range(instruments)]
    clone_instruments(processor, template, symbols)
    publisher = Publisher(settings, "market-worker.changelog", transactional=False)
    written = 0
    for version in range(versions):
        messages = []
        for i, symbol in enumerate(symbols):
            partition = i % MARKET_PARTITIONS
            snap = Snapshot(key=symbol, state=processor.snapshot(symbol), dedup=template.dedup,
                            source_offset=version, partition=partition)
            for key, value in codec.encode(snap):
                messages.append(Message(key, partition, value, ""))
                written += len(value)
        publisher.publish(messages)
    return written


def _restored(proc: WorkerProcess, instruments: int) -> bool:
    stats = proc.read()
    return (sum(r.keys for r in stats.restores) >= instruments
            and len(stats.restores) >= MARKET_PARTITIONS)


def restore_runs(base: Settings, servers: str, template: Template, instruments: int,
                 reps: int, workdir: Path, *, versions: int = 1,
                 config_file: str | None = None, tick: Tick = _no_tick) -> dict[str, Any]:
    settings = fresh_settings(base, servers, "restore")
    written = write_changelog(settings, template, instruments, versions)
    tick(1)
    seconds, from_start = [], []
    for rep in range(reps):
        group = f"{settings.topic_prefix}restore-{rep}"
        with workers(settings, "market", 1, workdir, f"restore-{rep}", "--group", group,
                     config_file=config_file) as procs:
            stats = procs[0].stats
            wait_for(partial(_restored, procs[0], instruments), START_TIMEOUT_S,
                     f"{instruments} instruments to be restored", procs, poll_s=0.05)
            assigned = min(t for t, n, _ in stats.rebalances if n)
            done = max(r.t1 for r in stats.restores)
            seconds.append(done - assigned)
            from_start.append(done - (stats.started or assigned))
            procs[0].kill()  # the crash the next repetition recovers from
        tick(1)
    drop_topics(settings)
    return {"seconds": seconds, "from_process_start_s": from_start, "instruments": instruments,
            "changelog_bytes": written, "versions_per_key": versions}
