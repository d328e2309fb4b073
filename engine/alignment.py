"""Hold main-stream events until their side tables have caught up in event time.

An order at event time T is released once every instrument it needs has been seen in the
instrument table at a time later than T, so the as-of read (`engine.asof`) finds the
version that will never change again. Live feeds may go quiet, so a hold can also end by a
maximum wait; in that case the read uses the latest version seen and the release is
counted, since only then can two runs differ.

The queue is pure: the caller says what time it is (`now_ns`, wall clock, used for nothing
but the maximum wait) and which table watermarks it has seen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

E = TypeVar("E")


@dataclass
class HoldStats:
    released_aligned: int = 0
    released_by_timeout: int = 0
    max_held: int = 0


class HoldQueue(Generic[E]):
    """First-in first-out hold of events; an event blocks the ones behind it.

    FIFO keeps each partition's (and so each account's) order: an account's later order is
    never decided before an earlier one.

    >>> marks = {"AAPL": 5}
    >>> q: HoldQueue[tuple[int, str]] = HoldQueue(
    ...     ts_of=lambda e: e[0], needs=lambda e: [e[1]], watermark=marks.get, max_wait_ns=None)
    >>> q.offer((10, "AAPL"), now_ns=0)
    >>> q.release(now_ns=1)
    []
    >>> marks["AAPL"] = 11
    >>> q.release(now_ns=2)
    [(10, 'AAPL')]
    """

    def __init__(self, *, ts_of: Callable[[E], int], needs: Callable[[E], Iterable[str]],
                 watermark: Callable[[str], int | None], max_wait_ns: int | None) -> None:
        self._ts_of = ts_of
        self._needs = needs
        self._watermark = watermark
        self.max_wait_ns = max_wait_ns
        self._queue: deque[tuple[int, E]] = deque()
        self.stats = HoldStats()

    def offer(self, event: E, now_ns: int) -> None:
        self._queue.append((now_ns, event))
        self.stats.max_held = max(self.stats.max_held, len(self._queue))

    def _caught_up(self, event: E) -> bool:
        ts = self._ts_of(event)
        for key in self._needs(event):
            mark = self._watermark(key)
            if mark is None or mark <= ts:
                return False
        return True

    def peek(self) -> E | None:
        """The event that is released next (None when nothing is held)."""
        return self._queue[0][1] if self._queue else None

    def release(self, now_ns: int, limit: int | None = None) -> list[E]:
        """Events that may be processed now, in arrival order (at most `limit`)."""
        out: list[E] = []
        while self._queue and (limit is None or len(out) < limit):
            arrived, event = self._queue[0]
            if self._caught_up(event):
                self.stats.released_aligned += 1
            elif self.max_wait_ns is not None and now_ns - arrived >= self.max_wait_ns:
                self.stats.released_by_timeout += 1
            else:
                break
            self._queue.popleft()
            out.append(event)
        return out

    def drain(self) -> list[E]:
        """Everything held, e.g. at the end of a finite input; counted as timeouts."""
        out = [event for _, event in self._queue]
        self.stats.released_by_timeout += len(out)
        self._queue.clear()
        return out

    def pop(self) -> E:
        """Release the first event whatever it waits for (the input went idle); counted as a
        timeout."""
        self.stats.released_by_timeout += 1
        return self._queue.popleft()[1]

    def discard(self, dropped: Callable[[E], bool]) -> int:
        """Drop the held events for which `dropped` is true (their partition was revoked:
        they will be consumed again); the others keep their order."""
        kept = deque(item for item in self._queue if not dropped(item[1]))
        removed = len(self._queue) - len(kept)
        self._queue = kept
        return removed

    def clear(self) -> None:
        """Drop held events (partition revoked: they will be consumed again)."""
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)
