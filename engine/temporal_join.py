"""Event-time join of an input stream with a side table: what makes the order worker's
decisions independent of how far the market worker has got.

The order worker consumes `orders` and reads `risk.instruments` as a table. Both arrive at
their own pace, so on its own the worker would decide an order against whatever instrument
risk happened to be read so far. `TableJoin` restores the in-process order of
`engine.pipeline.Pipeline` (table events and orders merged by event time, table first at
equal times):

* table events are buffered, not applied, and each table key's *seen* watermark (the
  highest event time read for it) is kept;
* input events wait in a FIFO `engine.alignment.HoldQueue` until every table key they need
  (an order's instrument, and the instruments its account holds) has been seen later than
  the event's own time, so every version up to that time has arrived;
* before the first held event at time T is released, every buffered table event with event
  time <= T is applied, in event-time order; none after T is. So an event at T sees the
  table exactly as of T, whatever the interleaving of the two topics.

When the hold cannot end by alignment (live feeds go quiet, an instrument stops ticking), it
ends by a maximum wait per event (`max_wait_ns`), or once nothing at all has arrived for
`idle_ns` (the end of a replay) for the events the table as a whole has reached: event time
at most `idle_ns` after the newest table event read. An idle table that has not got that far
(the market worker is starting, or far behind) keeps them waiting, up to the maximum wait.
Nor is a table idle while its reader knows there is more to read (`table_current=False`):
quiet then means the reader is behind, not that the market worker has stopped.
Those releases are counted: only they can make two runs differ. Buffered table events are
applied when the input is idle too, and the oldest ones are applied early (counted as
`table_forced`) once more than `max_buffered` wait.

The join is pure: the caller says what time it is (`now_ns`, wall clock, used only for the
waits) and executes the steps `poll` yields, each before taking the next.

>>> join: TableJoin[tuple[int, str]] = TableJoin(
...     ts_of=lambda e: e[0], needs=lambda e: [e[1]], max_wait_ns=None, idle_ns=None)
>>> join.offer((10, "AAPL"), now_ns=0)
>>> join.offer_table("risk.instruments", 9, "AAPL", "v9", now_ns=0)
>>> [(s.kind, s.item) for s in join.poll(now_ns=1)]  # seen up to 9: a version at 10 may come
[('table', 'v9')]
>>> join.offer_table("risk.instruments", 12, "AAPL", "v12", now_ns=2)
>>> [(s.kind, s.item) for s in join.poll(now_ns=3)]  # v12 is after the order: not applied
[('input', (10, 'AAPL'))]
>>> len(join), join.buffered
(0, 1)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from engine.alignment import HoldQueue

I = TypeVar("I")  # noqa: E741 - the input item type


class Step(NamedTuple):
    """Something to execute now: a table event to apply, or an input event to process."""

    kind: Literal["table", "input"]
    topic: str
    item: Any


@dataclass
class JoinStats:
    table_applied: int = 0
    table_forced: int = 0
    """Table events applied before any input needed them (the buffer was full)."""
    released_aligned: int = 0
    released_by_timeout: int = 0
    """Input events released by the maximum wait or by idleness (not aligned)."""
    released_by_idle: int = 0
    """Of those, the ones released by idleness (or because the input finished)."""
    max_held: int = 0
    max_buffered: int = 0


class TableJoin(Generic[I]):
    """Input events held until the table has caught up in event time (module docstring).

    `ts_of(item)` is the input event's time (None: it needs nothing, e.g. undecodable bytes
    on their way to the dead-letter topic); `needs(item)` names the table keys it reads,
    asked when it reaches the head of its queue, after the steps before it have run (`poll`
    produces them lazily), so it can depend on the state those events left;
    `partition_of(item)` is its input partition. Each partition is a
    FIFO `HoldQueue` (an account's events keep their order); across partitions the head
    with the earliest event time goes first, so events consumed in bursts from different
    partitions are still decided in event-time order (the table is never applied past an
    event that is still waiting).
    """

    def __init__(self, *, ts_of: Callable[[I], int | None],
                 needs: Callable[[I], Iterable[str]], max_wait_ns: int | None,
                 idle_ns: int | None, max_buffered: int = 200_000,
                 partition_of: Callable[[I], int] = lambda item: 0) -> None:
        self._ts_of = ts_of
        self._needs = needs
        self._partition_of = partition_of
        self._seen: dict[str, int] = {}
        self._holds: dict[int, HoldQueue[I]] = {}
        self.max_wait_ns = max_wait_ns
        self.idle_ns = idle_ns
        self.max_buffered = max_buffered
        self._table: list[tuple[int, int, str, Any]] = []
        self._arrivals = 0
        self._held = 0
        self._last_offer_ns: int | None = None
        self._newest: int | None = None
        self.stats = JoinStats()

    def _hold_ts(self, item: I) -> int:
        ts = self._ts_of(item)
        return -1 if ts is None else ts

    def _item_needs(self, item: I) -> Iterable[str]:
        return () if self._ts_of(item) is None else self._needs(item)

    # --- feeding ------------------------------------------------------------------------------

    def offer(self, item: I, now_ns: int) -> None:
        """An input event, in its partition's order."""
        partition = self._partition_of(item)
        hold = self._holds.get(partition)
        if hold is None:
            hold = self._holds[partition] = HoldQueue(
                ts_of=self._hold_ts, needs=self._item_needs, watermark=self._seen.get,
                max_wait_ns=self.max_wait_ns)
        hold.offer(item, now_ns)
        self._held += 1
        self._last_offer_ns = now_ns
        self.stats.max_held = max(self.stats.max_held, self._held)

    def offer_table(self, topic: str, ts: int, key: str | None, item: Any,
                    now_ns: int) -> None:
        """A table event at event time `ts` for table key `key` (None: no key to track)."""
        heapq.heappush(self._table, (ts, self._arrivals, topic, item))
        self._arrivals += 1
        if key is not None and ts > self._seen.get(key, -1):
            self._seen[key] = ts
        if self._newest is None or ts > self._newest:
            self._newest = ts
        self._last_offer_ns = now_ns
        self.stats.max_buffered = max(self.stats.max_buffered, len(self._table))

    def watermark(self, key: str) -> int | None:
        """Highest event time read (not necessarily applied yet) for a table key."""
        return self._seen.get(key)

    # --- releasing ----------------------------------------------------------------------------

    def idle(self, now_ns: int) -> bool:
        """Nothing arrived, input or table, for `idle_ns`."""
        return (self.idle_ns is not None and self._last_offer_ns is not None
                and now_ns - self._last_offer_ns >= self.idle_ns)

    def _next(self) -> tuple[HoldQueue[I], I] | None:
        """The partition head with the earliest event time (ties: lowest partition)."""
        best: tuple[int, int, HoldQueue[I], I] | None = None
        for partition, hold in self._holds.items():
            head = hold.peek()
            if head is None:
                continue
            ts = self._hold_ts(head)
            if best is None or (ts, partition) < best[:2]:
                best = (ts, partition, hold, head)
        return None if best is None else (best[2], best[3])

    def poll(self, now_ns: int, *, finished: bool = False, table_current: bool = True
             ) -> Iterator[Step]:
        """The steps that may run now, in order, produced lazily: execute each step before
        taking the next. An input event's `needs` is asked only once every step before it
        has run, so it sees the state those steps left (an account's fill just released
        decides which instruments its next order waits for). `finished`: the input has
        ended (nothing more will arrive), so everything is released. `table_current=False`:
        the caller knows the table has more to read, so quiet is not idleness."""
        idle = finished or (table_current and self.idle(now_ns))
        while True:
            found = self._next()
            if found is None:
                break
            hold, head = found
            ts = self._ts_of(head)
            if ts is not None:
                yield from self._apply_upto(ts)
            timeouts = hold.stats.released_by_timeout
            released = hold.release(now_ns, limit=1)
            if released:
                if hold.stats.released_by_timeout > timeouts:
                    self.stats.released_by_timeout += 1
                else:
                    self.stats.released_aligned += 1
            elif finished or (idle and self._reached(ts)):
                released = [hold.pop()]
                self.stats.released_by_timeout += 1
                self.stats.released_by_idle += 1
            else:
                break
            self._held -= 1
            yield Step("input", "", released[0])
        if idle and not self._held:
            yield from self._apply_upto(None)
        while len(self._table) > self.max_buffered:
            ts, _, topic, item = heapq.heappop(self._table)
            self.stats.table_applied += 1
            self.stats.table_forced += 1
            yield Step("table", topic, item)

    def _reached(self, ts: int | None) -> bool:
        """The table as a whole has got to event time `ts` (within the idle allowance)."""
        if ts is None:
            return True
        assert self.idle_ns is not None
        return self._newest is not None and ts <= self._newest + self.idle_ns

    def _apply_upto(self, ts: int | None) -> Iterator[Step]:
        table = self._table
        while table and (ts is None or table[0][0] <= ts):
            _, _, topic, item = heapq.heappop(table)
            self.stats.table_applied += 1
            yield Step("table", topic, item)

    def discard(self, dropped: Callable[[I], bool]) -> int:
        """Forget held input events (their partition was revoked or rewound)."""
        removed = sum(hold.discard(dropped) for hold in self._holds.values())
        self._held -= removed
        return removed

    def __len__(self) -> int:
        """Input events held."""
        return self._held

    @property
    def buffered(self) -> int:
        """Table events read but not applied yet."""
        return len(self._table)
