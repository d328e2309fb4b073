"""Broker-side plumbing of the benchmark: topics, worker processes, publishing, reading.

Workers run as `python -m consumers.runtime <kind> ... --stats FILE`, one OS process each,
so two workers really use two cores; their `--stats` files (`consumers.bench.probe`) say
when each batch ran and when each checkpoint committed. Inputs are published inside one
Kafka transaction per repetition: read-committed workers see nothing until the commit and
then the whole repetition at once, as if it had been sitting in the topic before they
started, without a worker joining the group in the middle of a measurement.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from consumers.bench.probe import StatsFile
from consumers.bench.workloads import Message
from producers.broker import EmbeddedBroker
from producers.kafka import flush_all, make_admin, make_consumer, make_producer
from producers.provision import ensure_topics
from schemas.settings import Settings
from schemas.topics import TopicSpec, all_specs, by_name

ROOT = Path(__file__).resolve().parents[2]
FREEZE_SESSION_MS = 45_000


class BenchError(RuntimeError):
    """A measurement could not be made; the message is one readable line."""


@contextmanager
def bootstrap(servers: str | None) -> Iterator[str]:
    """The given cluster, or an EmbeddedBroker of our own for the duration."""
    if servers:
        yield servers
        return
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        _BROKER_PIDS[broker.bootstrap] = broker.process.pid
        try:
            yield broker.bootstrap
        finally:
            _BROKER_PIDS.pop(broker.bootstrap, None)


_BROKER_PIDS: dict[str, int] = {}


def broker_pids(servers: str) -> list[int]:
    """The process of the broker at `servers` when `bootstrap` started it (its CPU is then
    part of what a measurement costs on this machine), else none."""
    pid = _BROKER_PIDS.get(servers)
    return [] if pid is None else [pid]


def fresh_settings(base: Settings, servers: str, tag: str) -> Settings:
    """`base` on `servers` with topics of its own (a new prefix), every topic created."""
    prefix = f"{base.topic_prefix}bench-{tag}-{uuid.uuid4().hex[:6]}."
    settings = base.model_copy(update={"bootstrap_servers": servers, "topic_prefix": prefix})
    ensure_topics(settings, [_truncatable(spec) for spec in all_specs()])
    return settings


def _truncatable(spec: TopicSpec) -> TopicSpec:
    """risk.instruments and the changelogs as compact,delete: they grow with every event or
    checkpoint and `truncate` empties them between repetitions, but a broker refuses to
    delete records of a compact-only topic (POLICY_VIOLATION). Nothing in a benchmark reads
    them back after the repetition, and with no retention limit nothing else changes."""
    if spec.name != "risk.instruments" and not spec.name.endswith(".changelog"):
        return spec
    return replace(spec, config={**spec.config, "cleanup.policy": "compact,delete",
                                 "retention.ms": "-1"})


# The embedded broker keeps its log in memory and its autosave thread writes the whole of it
# out again every few seconds while anything changed: measured at 16% of a core with 20 MB
# stored and 64% with 80 MB, and 32 to 88 µs of broker CPU per event in the two-worker run.
# Data left by earlier repetitions and steps would therefore take CPU from the workers being
# measured, which a real Kafka (appending to segment files) does not. So every repetition's
# input is deleted once committed, and every step's topics when the step ends.


def truncate(settings: Settings, topics: Iterable[str]) -> None:
    """Delete every record of `topics` (catalogue names, delete policy) under `settings`'
    prefix."""
    partitions = [TopicPartition(settings.topic(name), p, OFFSET_END)
                  for name in topics for p in range(by_name(name).partitions)]
    admin = make_admin(settings)  # held until the answers: a dropped handle never answers
    for future in admin.delete_records(partitions, request_timeout=30).values():
        future.result(timeout=60)


def drop_topics(settings: Settings) -> None:
    """Delete the topics `fresh_settings` made for `settings`."""
    names = [spec.full_name(settings.topic_prefix) for spec in all_specs()]
    admin = make_admin(settings)
    for future in admin.delete_topics(names, request_timeout=30).values():
        future.result(timeout=60)


class ChildProcess:
    """A benchmark's child process (`process`, its output in `log`): frozen and thawed by
    signal, stopped by PID."""

    process: subprocess.Popen[bytes]
    log: Path
    label: str
    """What the process is, for errors ("worker w.stats.jsonl")."""

    def check(self) -> None:
        """BenchError when the process exited on its own."""
        code = self.process.poll()
        if code is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
            raise BenchError(f"{self.label} exited with {code}: "
                             f"{tail[0] if tail else 'no output'}")

    def freeze(self) -> None:
        """SIGSTOP: the process takes no CPU (and sends no fetch) until `thaw`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def terminate(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (after a thaw), then SIGKILL if it has not ended within `timeout_s`."""
        self.thaw()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class WorkerProcess(ChildProcess):
    """One `python -m consumers.runtime` child with a stats file; stopped by PID."""

    def __init__(self, settings: Settings, kind: str, workdir: Path, name: str,
                 *extra: str, config_file: str | None = None) -> None:
        assert settings.bootstrap_servers is not None
        self.stats = StatsFile(workdir / f"{name}.stats.jsonl")
        self.log = workdir / f"{name}.log"
        self.label = f"worker {Path(self.stats.path).name}"
        cmd = [sys.executable, "-m", "consumers.runtime", kind,
               "--bootstrap-servers", settings.bootstrap_servers,
               "--topic-prefix", settings.topic_prefix, "--profile", settings.profile,
               "--stats", str(self.stats.path), *extra]
        if config_file:
            cmd += ["--config", config_file]
        # The benchmark freezes idle workers (SIGSTOP) for seconds at a time; a session
        # timeout longer than that keeps them in their group (nothing else changes).
        # (librdkafka wants max.poll.interval.ms, the profile's, at least as long.)
        session = min(FREEZE_SESSION_MS, settings.profile_defaults.max_poll_interval_ms)
        overrides = {**settings.kafka_overrides, "session.timeout.ms": str(session)}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "STREAMRISK_KAFKA_OVERRIDES": orjson.dumps(overrides).decode()}
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def read(self) -> StatsFile:
        self.stats.read()
        return self.stats

    def stop(self, timeout_s: float = 30.0) -> None:
        self.terminate(timeout_s)
        self.stats.read()


@contextmanager
def workers(settings: Settings, kind: str, count: int, workdir: Path, tag: str,
            *extra: str, config_file: str | None = None) -> Iterator[list[WorkerProcess]]:
    started = [WorkerProcess(settings, kind, workdir, f"{tag}-{i}", *extra,
                             config_file=config_file) for i in range(count)]
    try:
        yield started
    finally:
        for w in started:  # never leave a child behind, whatever failed
            w.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str,
             procs: Sequence[ChildProcess] = (), poll_s: float = 0.02) -> None:
    """Until `condition()`; BenchError when a process exits or `timeout_s` runs out (then
    with each process's last log line, and its logs copied out of the benchmark's
    temporary directory, which is deleted on the way out)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for p in procs:
            p.check()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:g} s waiting for {what}"
                             + _kept_logs(procs))
        time.sleep(poll_s)


def _kept_logs(procs: Sequence[ChildProcess]) -> str:
    if not procs:
        return ""
    kept = Path(tempfile.mkdtemp(prefix="streamrisk-bench-logs-"))
    last = []
    for p in procs:
        if p.log.exists():
            shutil.copy(p.log, kept / p.log.name)
            lines = p.log.read_text(errors="replace").strip().splitlines()
            last.append(f"{p.label}: {lines[-1] if lines else 'no output'}")
    return f" (last lines: {' | '.join(last)}; logs kept in {kept})"


def group_members(settings: Settings, group: str) -> int:
    """Members of a consumer group once it is stable (0 while it rebalances)."""
    admin = make_admin(settings)
    try:
        described = admin.describe_consumer_groups([group])[group].result(10)
    except Exception:  # noqa: BLE001 - the group may not exist yet
        return 0
    state = str(getattr(described.state, "name", described.state)).upper()
    return len(described.members) if state == "STABLE" else 0


class Publisher:
    """Publishes benchmark inputs to one catalogue topic, to the partitions they name."""

    def __init__(self, settings: Settings, topic: str, *, transactional: bool = True,
                 **overrides: Any) -> None:
        self.topic = settings.topic(topic)
        fast: dict[str, Any] = {"linger.ms": 20, "batch.num.messages": 10_000,
                                "queue.buffering.max.messages": 1_000_000, **overrides}
        tid = f"{settings.topic_prefix}bench-input-{uuid.uuid4().hex[:8]}" \
            if transactional else None
        self.producer = make_producer(settings, transactional_id=tid, **fast)
        self.transactional = transactional
        if transactional:
            self.producer.init_transactions(30)

    def send(self, messages: Iterable[Message]) -> None:
        produce = self.producer.produce
        for m in messages:
            while True:
                try:
                    produce(self.topic, m.value, m.key, m.partition)
                    break
                except BufferError:
                    self.producer.poll(0.05)

    def publish(self, messages: Sequence[Message]) -> None:
        """All of `messages`, visible to read-committed readers at once (one transaction)."""
        if self.transactional:
            self.producer.begin_transaction()
        self.send(messages)
        if self.transactional:
            self.producer.commit_transaction(60)
        elif flush_all(self.producer, 60):
            raise BenchError(f"could not deliver the inputs to {self.topic}")


def reader(settings: Settings, topics: Iterable[str], **overrides: Any) -> Consumer:
    """A read-committed consumer assigned to every partition of `topics` from the start."""
    consumer = make_consumer(settings, None, read_committed=True, **overrides)
    names = [settings.topic(t) for t in topics]
    metadata = consumer.list_topics(timeout=10)
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING)
                     for name in names for p in metadata.topics[name].partitions])
    return consumer


def read_all(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0,
             ) -> list[bytes]:
    """Values of the first `expected` committed messages of a catalogue topic."""
    consumer = reader(settings, [topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"read {len(values)} of {expected} messages of "
                                 f"{settings.topic(topic)} within {timeout_s:g} s")
            for msg in consumer.consume(10_000, 0.2):
                if msg.error() is None:
                    values.append(msg.value())  # type: ignore[arg-type]
    finally:
        consumer.close()
    return values
