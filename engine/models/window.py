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
from collections import deque


class SortedWindow:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be positive, got {size}")
        self.size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def append(self, value: float) -> None:
        if len(self._fifo) == self.size:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._fifo.append(value)
        bisect.insort(self._sorted, value)

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
