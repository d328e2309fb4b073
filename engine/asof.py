"""Versioned tables read "as of" an event time.

The order worker reads instrument risk as a table. If it kept only the latest row, an
order's decision would depend on how far the market worker had got when the order arrived.
Keeping a short history per key and reading the version valid at the order's `ts_event`
makes the decision a function of event time alone, whatever the interleaving of the inputs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class _Versions(Generic[V]):
    times: list[int] = field(default_factory=list)
    values: list[V] = field(default_factory=list)


class AsOfTable(Generic[V]):
    """Per-key versions ordered by event time, with bounded history.

    `max_versions` bounds memory per key; the oldest versions are dropped first, so a read
    further back than the retained history finds nothing (None), as if the key were unknown.

    >>> table: AsOfTable[str] = AsOfTable(max_versions=3)
    >>> for ts, v in [(10, "a"), (20, "b"), (30, "c")]:
    ...     table.put("AAPL", ts, v)
    >>> table.as_of("AAPL", 25), table.as_of("AAPL", 30), table.as_of("AAPL", 5)
    ('b', 'c', None)
    >>> table.watermark("AAPL")
    30
    """

    def __init__(self, max_versions: int = 256) -> None:
        if max_versions < 1:
            raise ValueError("max_versions must be at least 1")
        self.max_versions = max_versions
        self._rows: dict[str, _Versions[V]] = {}

    def put(self, key: str, ts: int, value: V) -> None:
        """Add a version. Equal timestamps keep arrival order (the later one wins as_of)."""
        rows = self._rows.setdefault(key, _Versions())
        if not rows.times or ts >= rows.times[-1]:
            rows.times.append(ts)
            rows.values.append(value)
        else:  # late arrival: keep the list sorted by event time
            at = bisect.bisect_right(rows.times, ts)
            rows.times.insert(at, ts)
            rows.values.insert(at, value)
        if len(rows.times) > self.max_versions:
            drop = len(rows.times) - self.max_versions
            del rows.times[:drop]
            del rows.values[:drop]

    def as_of(self, key: str, ts: int) -> V | None:
        """The latest version with event time <= ts, or None when there is none."""
        rows = self._rows.get(key)
        if rows is None:
            return None
        at = bisect.bisect_right(rows.times, ts)
        return rows.values[at - 1] if at else None

    def latest(self, key: str) -> V | None:
        rows = self._rows.get(key)
        return rows.values[-1] if rows else None

    def watermark(self, key: str) -> int | None:
        """The highest event time seen for `key` (None when never seen)."""
        rows = self._rows.get(key)
        return rows.times[-1] if rows else None

    def keys(self) -> Iterator[str]:
        return iter(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)
