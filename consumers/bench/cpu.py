"""Who uses the machine's cores during a measurement: CPU time of the processes involved.

On the embedded broker every process of a measurement shares the same cores: the worker's
Python thread (the engine, decoding, producing), its librdkafka threads (fetching, the
transactions), the broker, and the benchmark itself (publisher and alert reader). A figure
such as the two-worker speedup is bounded by what all of them cost per event, not by the
worker alone, so the benchmark reports each one's CPU per event next to its rates.

>>> import os
>>> meter = CpuMeter({"me": [os.getpid()]}, main_thread_of=("me",))
>>> with meter:
...     _ = sum(i * i for i in range(200_000))
>>> meter.seconds["me"] > 0 and 0 <= meter.seconds["me main thread"] <= meter.seconds["me"]
True
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

import psutil


def _cpu_s(pid: int, main_thread: bool) -> tuple[float, float]:
    """(whole process, its main thread) CPU seconds so far; (0, 0) for a process gone. The
    main thread is the one whose id is the process id (Linux); 0 where there is none."""
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        main = 0.0
        if main_thread:
            for thread in process.threads():
                if thread.id == pid:
                    main = thread.user_time + thread.system_time
        return times.user + times.system, main
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0, 0.0


class CpuMeter:
    """CPU seconds each group of processes used between `__enter__` and `__exit__`
    (`seconds`, by group name; for groups in `main_thread_of` also `"<name> main thread"`,
    the processes' main threads alone), and the wall time between (`wall_s`)."""

    def __init__(self, groups: Mapping[str, Sequence[int]],
                 main_thread_of: Iterable[str] = ()) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.main_thread_of = frozenset(main_thread_of)
        self.seconds: dict[str, float] = {}
        self.wall_s = 0.0
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pids in self.groups.items():
            main = name in self.main_thread_of
            readings = [_cpu_s(pid, main) for pid in pids]
            out[name] = sum(total for total, _ in readings)
            if main:
                out[f"{name} main thread"] = sum(thread for _, thread in readings)
        return out

    def __enter__(self) -> CpuMeter:
        self._start = self._read()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        end = self._read()
        self.wall_s = time.perf_counter() - self._t0
        # (a process gone by the end reads 0: it counts for nothing rather than negative)
        self.seconds = {name: max(0.0, end[name] - self._start[name]) for name in end}

    def per_event_us(self, events: int) -> dict[str, float]:
        """Each group's CPU per event, in µs."""
        return {name: s / max(1, events) * 1e6 for name, s in self.seconds.items()}

    def cores(self) -> dict[str, float]:
        """Each group's average share of a core over the wall time."""
        return {name: s / self.wall_s if self.wall_s > 0 else 0.0
                for name, s in self.seconds.items()}
