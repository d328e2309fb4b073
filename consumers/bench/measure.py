"""Measuring helpers shared by `streamrisk bench` and the scripts in `benchmarks/`.

Figures are medians of several repetitions in one process run; latencies are percentiles of
samples. `Clock` keeps wall and CPU time side by side: on a shared machine the wall clock
stretches when other processes take the cores, CPU time does not.

>>> percentile([5, 1, 4, 2, 3], 0.5)
3
>>> median([3.0, 1.0, 2.0])
2.0
>>> c = Clock(); c.start(); c.stop(); c.wall >= 0 and c.cpu >= 0
True
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

N = TypeVar("N", int, float)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(values: Sequence[N], q: float) -> N:
    """The `q` quantile (0..1) of `values` by rank (nearest rank below), unsorted input."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Clock:
    """Wall and CPU seconds of this process, accumulated over start/stop pairs."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._w = self._c = 0.0

    def start(self) -> None:
        self._w, self._c = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def per_call_us(fn: Callable[[], object], iterations: int) -> float:
    """Mean µs per call of `fn` over a tight loop, with the garbage collector off (a
    collection landing in one repetition would skew it)."""
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(iterations):
            fn()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / iterations / 1000


def progress_bar(console: Console | None = None, *, transient: bool = True,
                 width: int = 28) -> Progress:
    """The suite's rich progress bar: description, bar, done/total, elapsed."""
    return Progress(TextColumn(f"{{task.description:<{width}}}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    transient=transient)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repetitions, plus the runs themselves (for JSON details)."""
    return {"median": median(values), "min": min(values), "max": max(values),
            "runs": list(values)}
