"""A fixed-length window kept in arrival order and in sorted order, for rolling empirical
quantiles and tail means (what filtered historical simulation needs; river's
RollingQuantile gives quantiles but not the mean beyond one).

Insert and evict are O(log n) searches plus a memmove of at most n floats.

>>> w = SortedWindow(4)
>>> for v in [3.0, -1.0, 2.0, 0.0, -5.0]:
...     w.append(v)
>>> len(w), w.quantile(0.0), w.quantile(0.5), w.tail_mean(0.5)
(4, -5.0, -0.5, -3.0)
"""

from __future__ import annotations

import bisect
import math
from array import array
from typing import Any


class SortedWindow:
    """Values are stored as C doubles (`array('d')`: the same float64 values, 8 bytes each
    instead of a float object and two pointers), in a ring in arrival order and in a sorted
    array: a window of 500 takes 8 KB of memory and pickles as two byte strings."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be positive, got {size}")
        self.size = size
        self._fifo = array("d")
        self._head = 0  # once full: the position of the oldest value
        self._sorted = array("d")

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Snapshots written before the arrays held a deque and a list (oldest first).
        if not isinstance(state.get("_fifo"), array):
            state = {**state, "_fifo": array("d", state["_fifo"]), "_head": 0,
                     "_sorted": array("d", state["_sorted"])}
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self._fifo)

    def append(self, value: float) -> None:
        fifo = self._fifo
        if len(fifo) == self.size:
            head = self._head
            old = fifo[head]
            fifo[head] = value
            self._head = head + 1 if head + 1 < self.size else 0
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        else:
            fifo.append(value)
        bisect.insort(self._sorted, value)

    def values(self) -> list[float]:
        """The window in arrival order, oldest first."""
        head = self._head
        return list(self._fifo[head:]) + list(self._fifo[:head])

    def quantile(self, q: float) -> float:
        """Linearly interpolated empirical quantile (numpy's default 'linear' method)."""
        s = self._sorted
        if not s:
            raise ValueError("empty window")
        pos = q * (len(s) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        frac = pos - lo
        return s[lo] + (s[hi] - s[lo]) * frac

    def tail_mean(self, q: float) -> float:
        """Mean of the ceil(q * n) smallest values (at least one)."""
        s = self._sorted
        if not s:
            raise ValueError("empty window")
        k = max(1, math.ceil(q * len(s) - 1e-9))
        return sum(s[:k]) / k
