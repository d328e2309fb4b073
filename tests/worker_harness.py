"""Workers as child processes, for the subprocess tests (tests/test_runtime_cluster.py,
tests/test_market_worker.py).

A `WorkerProcess` is `python -m consumers.runtime <target> ...`, exactly what
`streamrisk worker ...` runs, with its output in a log file; it is stopped by PID (SIGKILL
for a crash, SIGTERM for a clean stop). `Workers` starts them and, on `close()`, kills
whatever a failed test left running. Each test module wraps it in a small fixture:

    @pytest.fixture
    def spawn(tmp_path):
        with Workers(tmp_path) as workers:
            yield workers.start

The Kafka helpers (`wait_members`, `high_watermarks`) complement those of tests.processors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COUNTING = ("--processor", "tests.processors:CountingProcessor")
MARKET = ("market",)


class WorkerProcess:
    """One `python -m consumers.runtime` child running `target` (worker kind or --processor),
    stopped by PID."""

    def __init__(self, settings: Settings, log: Path, *extra: str,
                 target: Sequence[str] = COUNTING, commit_interval_ms: int = 200) -> None:
        assert settings.bootstrap_servers is not None
        cmd = [sys.executable, "-m", "consumers.runtime", *target,
               "--bootstrap-servers", settings.bootstrap_servers,
               "--topic-prefix", settings.topic_prefix, "--profile", settings.profile,
               "--commit-interval", str(commit_interval_ms), *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "STREAMRISK_MAX_MESSAGE_BYTES": str(settings.max_message_bytes),
               "COLUMNS": "400"}  # one log line per line (rich wraps at 80 off a terminal)
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                            stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        """True while running; a child that died other than by SIGKILL or cleanly fails the
        test with the end of its log."""
        if self.process.poll() is not None and self.process.returncode not in (0, -9):
            raise AssertionError(f"worker exited with {self.process.returncode}: "
                                 f"{self.log.read_text()[-2000:]}")
        return self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no final checkpoint, no goodbye to the group."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM: a final checkpoint, then the worker leaves the group; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def events_in(self) -> int:
        """Events this worker consumed, from the summary it logs on a clean stop."""
        for line in reversed(self.log.read_text().splitlines()):
            if "stopped:" in line:
                return int(line.split("stopped:", 1)[1].split()[0])
        raise AssertionError(f"no summary in {self.log}: {self.log.read_text()[-2000:]}")


class Workers:
    """Starts WorkerProcesses with logs under `directory`; `close()` kills leftovers."""

    def __init__(self, directory: Path, *, target: Sequence[str] = COUNTING) -> None:
        self.directory = directory
        self.target = tuple(target)
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings, *extra: str, **options: Any) -> WorkerProcess:
        options.setdefault("target", self.target)
        log = self.directory / f"worker-{len(self.started)}.log"
        worker = WorkerProcess(settings, log, *extra, **options)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:  # never leave a child behind, whatever failed
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(10)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def group_of(settings: Settings, worker: str = "market-worker") -> str:
    """The default consumer group of a worker (`<prefix><worker name>`)."""
    return f"{settings.topic_prefix}{worker}"


def wait_members(settings: Settings, group: str, members: int, timeout_s: float = 60.0,
                 alive: Any = None) -> None:
    """Wait until `group` is stable with `members` members, each holding partitions."""
    from confluent_kafka import ConsumerGroupState

    from producers.kafka import make_admin

    admin = make_admin(settings)  # keep a reference: the futures die with their client
    deadline = time.monotonic() + timeout_s
    while True:
        described = admin.describe_consumer_groups([group])[group].result(10)
        holding = [m for m in described.members
                   if m.assignment and m.assignment.topic_partitions]
        if described.state == ConsumerGroupState.STABLE and len(holding) == members == len(
                described.members):
            return
        if alive is not None and not alive():
            raise AssertionError(f"a worker died before group {group} was stable")
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group}: {described.state}, {len(described.members)} "
                               f"members, {len(holding)} holding partitions; wanted {members}")
        time.sleep(0.2)


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    """End offset of every non-empty partition of a catalogue topic."""
    from confluent_kafka import TopicPartition

    from producers.kafka import make_consumer

    consumer = make_consumer(settings, None, read_committed=False)
    try:
        full = settings.topic(topic)
        metadata = consumer.list_topics(full, timeout=10)
        ends = {}
        for p in metadata.topics[full].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(full, p), 10, cached=False)
            if high > 0:
                ends[p] = high
        return ends
    finally:
        consumer.close()
