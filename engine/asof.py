"""Versioned tables read "as of" an event time.

The order worker reads instrument risk as a table. If it kept only the latest row, an
order's decision would depend on how far the market worker had got when the order arrived.
Keeping a short history per key and reading the version valid at the order's `ts_event`
makes the decision a function of event time alone, whatever the interleaving of the inputs.

How much history is enough: the order worker's runtime holds each order until the table has
got past its time and applies the table in event time, so normally an order reads one of the
newest versions. Orders can still be older than most of the table: a partition that lags the
others (taken over after a rebalance from an older committed offset), a catch-up after a
restart with the event-time join off or its buffer overflowing. Hence a history bounded by
event time (`horizon_ns`: every version within that much of the newest, plus the one valid
at the start of that window) with `max_versions` as a memory cap, and `kept_since` to tell a
read older than the retained history (the versions valid then were dropped) from a key that
had no version yet at that time.
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
    dropped: bool = False
    """Older versions were dropped: a read before `times[0]` finds nothing by our doing."""


class AsOfTable(Generic[V]):
    """Per-key versions ordered by event time, with bounded history.

    `max_versions` bounds memory per key; the oldest versions are dropped first, so a read
    further back than the retained history finds nothing (None); `kept_since` says when that
    is because versions were dropped. With `horizon_ns`, versions older than the newest minus
    the horizon are dropped too, except the one still valid at that point.

    >>> table: AsOfTable[str] = AsOfTable(max_versions=3)
    >>> for ts, v in [(10, "a"), (20, "b"), (30, "c")]:
    ...     table.put("AAPL", ts, v)
    >>> table.as_of("AAPL", 25), table.as_of("AAPL", 30), table.as_of("AAPL", 5)
    ('b', 'c', None)
    >>> table.watermark("AAPL")
    30
    >>> table.put("AAPL", 40, "d")  # "a" is dropped: a read at 15 is older than the history
    >>> table.as_of("AAPL", 15), table.kept_since("AAPL")
    (None, 20)
    >>> timed: AsOfTable[str] = AsOfTable(max_versions=100, horizon_ns=15)
    >>> for ts, v in [(10, "a"), (20, "b"), (30, "c"), (40, "d")]:
    ...     timed.put("AAPL", ts, v)
    >>> timed.as_of("AAPL", 25), timed.as_of("AAPL", 15), timed.kept_since("AAPL")
    ('b', None, 20)
    """

    def __init__(self, max_versions: int = 256, horizon_ns: int | None = None) -> None:
        if max_versions < 1:
            raise ValueError("max_versions must be at least 1")
        if horizon_ns is not None and horizon_ns < 0:
            raise ValueError("horizon_ns must not be negative")
        self.max_versions = max_versions
        self.horizon_ns = horizon_ns
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
        drop = len(rows.times) - self.max_versions
        if self.horizon_ns is not None:
            # keep the version valid at the window's start: a read there must still find it
            valid_at_start = bisect.bisect_right(rows.times, rows.times[-1] - self.horizon_ns)
            drop = max(drop, valid_at_start - 1)
        if drop > 0:
            del rows.times[:drop]
            del rows.values[:drop]
            rows.dropped = True

    def as_of(self, key: str, ts: int) -> V | None:
        """The latest version with event time <= ts, or None when there is none."""
        rows = self._rows.get(key)
        if rows is None:
            return None
        at = bisect.bisect_right(rows.times, ts)
        return rows.values[at - 1] if at else None

    def kept_since(self, key: str) -> int | None:
        """Event time of the oldest version kept for `key` when older ones were dropped
        (None: nothing dropped, or the key is unknown). A read before it finds nothing
        because the history moved on, not because the key had no version then."""
        rows = self._rows.get(key)
        return rows.times[0] if rows is not None and rows.dropped else None

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
