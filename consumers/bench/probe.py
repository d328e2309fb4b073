"""What a worker under benchmark records, and how the benchmark reads it back.

`StatsRecorder` is a `consumers.runtime.MetricsHooks` listener that `streamrisk worker
--stats FILE` (a hidden option) attaches to its worker: it appends one JSON line per batch,
checkpoint, restore and rebalance to FILE, with `time.perf_counter()` times. On Linux that
clock is CLOCK_MONOTONIC, shared by every process of the machine, so the benchmark can put
the times of several worker processes and its own on one axis. Lines are buffered and
written at each checkpoint, restore and rebalance (never per event).

`StatsFile` reads such a file as it grows.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "w.jsonl")
>>> rec = StatsRecorder(path)
>>> rec.batch(500, 0.05); rec.checkpoint(0.01, 2, 7); rec.close()
>>> stats = StatsFile(path)
>>> stats.read(); stats.events, len(stats.batches), stats.checkpoints[0].keys
(500, 1, 7)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from consumers.runtime.metrics import MetricsHooks


class StatsRecorder(MetricsHooks):
    """Appends the worker's observations to a JSON-lines file (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._lines: list[bytes] = []
        self._unsnapshotted = 0
        self._write({"k": "start", "t": time.perf_counter()})
        self._flush()

    def _write(self, obj: dict[str, Any]) -> None:
        self._lines.append(orjson.dumps(obj) + b"\n")

    def _flush(self) -> None:
        if self._lines:
            self._file.write(b"".join(self._lines))
            self._file.flush()
            self._lines.clear()

    def batch(self, events: int, seconds: float) -> None:
        if events:
            end = time.perf_counter()
            self._write({"k": "b", "t0": end - seconds, "t1": end, "n": events,
                         "cpu": time.process_time()})

    def unsnapshotted(self, partitions: int) -> None:
        self._unsnapshotted = partitions  # reported with the checkpoint that follows

    def checkpoint(self, seconds: float, partitions: int, keys: int) -> None:
        end = time.perf_counter()
        self._write({"k": "c", "t0": end - seconds, "t1": end, "p": partitions,
                     "keys": keys, "u": self._unsnapshotted, "cpu": time.process_time()})
        self._flush()

    def restore(self, seconds: float, partition: int, keys: int) -> None:
        end = time.perf_counter()
        self._write({"k": "r", "t0": end - seconds, "t1": end, "p": partition, "keys": keys})
        self._flush()

    def rebalance(self, assigned: int, revoked: int) -> None:
        self._write({"k": "a", "t": time.perf_counter(), "assigned": assigned,
                     "revoked": revoked})
        self._flush()

    def close(self) -> None:
        self._write({"k": "stop", "t": time.perf_counter()})
        self._flush()
        self._file.close()


@dataclass(frozen=True)
class Span:
    t0: float
    t1: float
    n: int = 0
    keys: int = 0
    cpu: float = 0.0
    """CPU seconds the worker process had used (all threads) when the span ended."""
    unsnapshotted: int = 0
    """Of a checkpoint: active partitions left with input their snapshots do not hold."""


@dataclass
class StatsFile:
    """The lines of one worker's stats file, read incrementally with `read()`."""

    path: str | Path
    started: float | None = None
    stopped: float | None = None
    batches: list[Span] = field(default_factory=list)
    checkpoints: list[Span] = field(default_factory=list)
    restores: list[Span] = field(default_factory=list)
    rebalances: list[tuple[float, int, int]] = field(default_factory=list)
    events: int = 0
    _offset: int = 0

    def read(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line being written stays for the next read
        self._offset += end
        for line in data[:end].splitlines():
            obj = orjson.loads(line)
            kind = obj["k"]
            if kind == "b":
                self.batches.append(Span(obj["t0"], obj["t1"], obj["n"], cpu=obj["cpu"]))
                self.events += obj["n"]
            elif kind == "c":
                self.checkpoints.append(Span(obj["t0"], obj["t1"], obj["p"], obj["keys"],
                                             obj["cpu"], obj.get("u", 0)))
            elif kind == "r":
                self.restores.append(Span(obj["t0"], obj["t1"], obj["p"], obj["keys"]))
            elif kind == "a":
                self.rebalances.append((obj["t"], obj["assigned"], obj["revoked"]))
            elif kind == "start":
                self.started = obj["t"]
            elif kind == "stop":
                self.stopped = obj["t"]

    @property
    def assigned(self) -> int:
        """Partitions held now (the eager assignor revokes everything before assigning)."""
        held = 0
        for _, assigned, revoked in self.rebalances:
            held = max(0, held - revoked) + assigned
        return held

    def committed_after(self, t: float) -> Span | None:
        """The first checkpoint that started at or after `t`."""
        for span in self.checkpoints:
            if span.t0 >= t:
                return span
        return None
