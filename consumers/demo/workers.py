"""The market, order and scope workers of a demo run, as child processes.

Each worker is `python -m consumers.runtime KIND` (the same as `streamrisk worker KIND`) with
the run's global options; secrets stay in the environment, never on the command line. Its
stdout and stderr go to `<run dir>/<kind>-worker.log`. The children run in their own session,
so a Ctrl-C in the terminal reaches the demo only, and the demo stops them itself: SIGTERM
(the worker's graceful stop: final checkpoint, leave the group), then SIGKILL if one has not
exited after a grace period. On Linux a child also gets SIGTERM from the kernel if the demo
dies without cleaning up (PR_SET_PDEATHSIG), so even a `kill -9` of the demo leaves no worker
behind; `start_guard` gives the same protection to the embedded broker, which another
module starts. Their PIDs are written to `<run dir>/pids.json` for whoever wants to check.

`WorkerProgress` tells how far each worker has got: its consumer group's committed offsets
on its input topic (a worker commits with every checkpoint), read with plain consumers that
never join the group, against the offsets of what the demo published (`DeliveredOffsets`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from producers.kafka import DeliveryTracker, make_consumer
from schemas.settings import Settings

KINDS: dict[str, tuple[str, str]] = {
    # kind -> (processor name, input topic)
    "market": ("market-worker", "market"),
    "orders": ("order-worker", "orders"),
    "scopes": ("scope-worker", "risk.scope-accounts"),
}
FED_BY_DEMO = ("market", "orders")
"""Kinds whose input the demo publishes (their progress is measured against it); the scope
worker's input comes from the order workers."""

# Runs in the child before the worker: ask the kernel for SIGTERM when the parent dies, give
# up if it already has, then become the worker (prctl survives exec).
_LAUNCHER = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


# A guard for a child this process did not start itself (the embedded broker): it sleeps
# until the kernel tells it the demo died (PR_SET_PDEATHSIG), then stops that child by PID,
# provided the PID still runs the same program (its arguments include all of `markers`).
_GUARD = """\
import ctypes, os, signal, sys, time
parent, pid, markers = int(sys.argv[1]), int(sys.argv[2]), [m.encode() for m in sys.argv[3:]]
def ours():
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = fh.read().split(b"\\0")
    except OSError:
        return False
    return all(m in args for m in markers)
def reap(*_):
    if ours():
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            time.sleep(0.1)
            if not ours():
                break
        else:
            os.kill(pid, signal.SIGKILL)
    os._exit(0)
signal.signal(signal.SIGTERM, reap)
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    reap()
while True:
    signal.pause()
"""


def record_pids(run_dir: Path, pids: dict[str, int]) -> None:
    """Add name -> PID entries to `<run dir>/pids.json`."""
    path = run_dir / "pids.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    known.update(pids)
    path.write_text(json.dumps(known, indent=2) + "\n")


def start_guard(pid: int, *markers: str) -> subprocess.Popen[bytes] | None:
    """Start a guard that stops `pid` (if its arguments still include `markers`) when the
    demo dies without cleaning up; Linux only (None elsewhere). Stop the guard with SIGKILL
    once `pid` has been stopped normally."""
    if not sys.platform.startswith("linux"):
        return None
    return subprocess.Popen([sys.executable, "-c", _GUARD, str(os.getpid()), str(pid),
                             *markers],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@dataclass
class WorkerProcess:
    kind: str
    name: str
    group: str
    input_topic: str
    log_path: Path
    process: subprocess.Popen[bytes]
    started: float
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        if self.exit_code is None:
            self.exit_code = self.process.poll()
        return self.exit_code is None

    def last_words(self) -> str:
        """The last useful line of the worker's log (why it stopped)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        useful = [ln.strip() for ln in lines if ln.strip() and "Traceback" not in ln]
        return useful[-1] if useful else "no output"


class Workers:
    """Starts, watches and stops the run's workers."""

    def __init__(self, run_dir: Path, settings: Settings, global_args: list[str]) -> None:
        self.run_dir = run_dir
        self.settings = settings
        self.global_args = global_args
        self.procs: list[WorkerProcess] = []

    def start(self, kind: str) -> WorkerProcess:
        name, input_topic = KINDS[kind]
        log_path = self.run_dir / f"{name}.log"
        cmd = [sys.executable, "-m", "consumers.runtime", kind, *self.global_args]
        if sys.platform.startswith("linux"):
            cmd = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *cmd[1:]]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log: IO[bytes]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        proc = WorkerProcess(kind, name, f"{self.settings.topic_prefix}{name}", input_topic,
                             log_path, process, time.monotonic())
        self.procs.append(proc)
        self.write_pids()
        return proc

    def write_pids(self) -> None:
        record_pids(self.run_dir, {p.name: p.pid for p in self.procs})

    def failed(self) -> list[WorkerProcess]:
        """Workers that exited on their own (they should run until stopped)."""
        return [p for p in self.procs if not p.running()]

    def stop(self, grace_s: float = 15.0) -> dict[str, int | None]:
        """SIGTERM all, wait up to `grace_s`, SIGKILL the rest; name -> exit code."""
        for p in self.procs:
            if p.running():
                _signal(p.process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            try:
                p.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(p.process, signal.SIGKILL)
                p.process.wait(timeout=5)
            p.exit_code = p.process.returncode
        return {p.name: p.exit_code for p in self.procs}


def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)


@dataclass
class DeliveredOffsets(DeliveryTracker):
    """A delivery tracker that also keeps, per topic and partition, the offset after the
    last message the broker acknowledged: what a worker must have committed to have
    processed everything published (control markers and the workers' own writes to an
    input topic, such as MassCancel, come after it and do not count)."""

    ends: dict[str, dict[int, int]] = field(default_factory=dict)

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            offset, partition = msg.offset(), msg.partition()
            if offset is not None and partition is not None:
                with self._lock:
                    ends = self.ends.setdefault(msg.topic() or "", {})
                    ends[partition] = max(ends.get(partition, 0), offset + 1)
        super().on_delivery(err, msg)

    def ends_of(self, topic: str) -> dict[int, int]:
        with self._lock:
            return dict(self.ends.get(topic, {}))


class WorkerProgress:
    """How far each worker has got: its group's committed offsets on its input topic."""

    def __init__(self, settings: Settings, procs: list[WorkerProcess],
                 start: dict[str, dict[int, int]]) -> None:
        """`start`: input topic (full name) -> partition -> offset at the run's start, so
        only this run's events are counted."""
        self.settings = settings
        self.start = start
        self._consumers: dict[str, tuple[Consumer, list[TopicPartition], str]] = {}
        for p in procs:
            full = settings.topic(p.input_topic)
            parts = [TopicPartition(full, n) for n in sorted(start.get(full, {}))]
            self._consumers[p.name] = (make_consumer(settings, p.group, read_committed=True),
                                       parts, full)

    def poll(self, ends: DeliveredOffsets,
             timeout_s: float = 2.0) -> dict[str, tuple[int, int]]:
        """name -> (events of this run processed, events of this run delivered), counting
        offsets from the run's start to the end of what was delivered."""
        out = {}
        for name, (consumer, parts, full) in self._consumers.items():
            try:
                committed = consumer.committed(parts, timeout=timeout_s)
            except Exception:  # noqa: BLE001 - a slow answer: report nothing this time
                continue
            start, end = self.start.get(full, {}), ends.ends_of(full)
            position = {tp.partition: tp.offset for tp in committed}
            done = total = 0
            for partition, last in end.items():
                begin = start.get(partition, 0)
                total += max(0, last - begin)
                done += max(0, min(position.get(partition, -1), last) - begin)
            out[name] = (done, total)
        return out

    def close(self) -> None:
        for consumer, _parts, _full in self._consumers.values():
            consumer.close()
        self._consumers.clear()
