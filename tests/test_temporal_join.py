"""The event-time join of orders with the instrument table (engine.temporal_join): whatever
the interleaving of the two streams, each input event sees every table version of the keys
it needs up to its own time, and nothing later of any key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.temporal_join import Step, TableJoin


class Order(NamedTuple):
    ts: int
    needs: tuple[str, ...]


class Row(NamedTuple):
    key: str
    ts: int


KEYS = ("A", "B", "C")


def _join(max_wait_ns: int | None = None, idle_ns: int | None = None,
          max_buffered: int = 10_000) -> TableJoin[Order]:
    return TableJoin(ts_of=lambda o: o.ts, needs=lambda o: o.needs, max_wait_ns=max_wait_ns,
                     idle_ns=idle_ns, max_buffered=max_buffered)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Row], list[Order], list[bool]]:
    rows = []
    for key in KEYS:
        times = sorted(draw(st.lists(st.integers(0, 60), min_size=1, max_size=12)))
        rows += [Row(key, t) for t in times]
    # the table topic interleaves keys in any way, each key in its own time order
    order = draw(st.permutations(range(len(rows))))
    per_key: dict[str, list[Row]] = {k: [r for r in rows if r.key == k] for k in KEYS}
    table: list[Row] = []
    taken = dict.fromkeys(KEYS, 0)
    for i in order:
        key = rows[i].key
        table.append(per_key[key][taken[key]])
        taken[key] += 1
    times = sorted(draw(st.lists(st.integers(0, 60), min_size=1, max_size=15)))
    orders = [Order(t, tuple(draw(st.sets(st.sampled_from(KEYS), max_size=2)))) for t in times]
    # arrival interleaving of the two topics: True = next table row, False = next order
    arrivals = draw(st.permutations([True] * len(table) + [False] * len(orders)))
    return table, orders, list(arrivals)


def _as_the_table_arrives(join: TableJoin[Any], table: list[Row]
                          ) -> Iterator[tuple[bool, Step]]:
    """Offer the table rows one by one, then finish; each step the join yields, with
    whether it came of finishing. The caller runs each step before the next is made."""
    for now, row in enumerate([*table, None]):
        if row is not None:
            join.offer_table("t", row.ts, row.key, row, now)
        for step in join.poll(now, finished=row is None):
            yield row is None, step


@settings(max_examples=200, deadline=None)
@given(streams())
def test_each_order_sees_the_table_exactly_as_of_its_time(
        data: tuple[list[Row], list[Order], list[bool]]) -> None:
    table, orders, arrivals = data
    join = _join()
    applied: list[Row] = []
    seen: list[tuple[Order, list[Row]]] = []

    def run(steps: Iterable[Step]) -> None:
        for step in steps:
            if step.kind == "table":
                applied.append(step.item)
            else:
                seen.append((step.item, list(applied)))

    rows, pending = iter(table), iter(orders)
    for now, is_table in enumerate(arrivals):
        if is_table:
            row = next(rows)
            join.offer_table("risk.instruments", row.ts, row.key, row, now)
        else:
            join.offer(next(pending), now)
        run(join.poll(now))
    run(join.poll(len(arrivals), finished=True))
    assert [o for o, _ in seen] == orders  # every order once, in order
    for order, before in seen:
        assert all(r.ts <= order.ts for r in before)  # nothing from after the order
        for key in order.needs:  # and every version of what it reads up to its time
            assert sorted(r for r in before if r.key == key) == sorted(
                r for r in table if r.key == key and r.ts <= order.ts)
    assert sorted(applied) == sorted(table) and join.buffered == 0
    assert join.stats.released_aligned + join.stats.released_by_timeout == len(orders)


@settings(max_examples=100, deadline=None)
@given(streams(), st.lists(st.integers(0, 3), min_size=15, max_size=15))
def test_orders_held_in_several_partitions_go_in_event_time_order(
        data: tuple[list[Row], list[Order], list[bool]], partitions: list[int]) -> None:
    """Orders consumed in a burst from several partitions (each in its own order) while the
    table catches up: decided in event-time order across partitions, each exactly as of its
    time for what it reads, and never after a later table version of anything."""
    table, orders, _ = data
    part = {id(o): partitions[i] for i, o in enumerate(orders)}
    join: TableJoin[Order] = TableJoin(ts_of=lambda o: o.ts, needs=lambda o: o.needs,
                                       max_wait_ns=None, idle_ns=None,
                                       partition_of=lambda o: part[id(o)])
    # the burst: every partition's orders, interleaved partition by partition
    for p in sorted(set(partitions), reverse=True):
        for o in orders:
            if part[id(o)] == p:
                join.offer(o, 0)
    applied: list[Row] = []
    seen: list[tuple[Order, list[Row]]] = []
    for _, step in _as_the_table_arrives(join, table):
        if step.kind == "table":
            applied.append(step.item)
        else:
            seen.append((step.item, list(applied)))
    assert [o.ts for o, _ in seen] == sorted(o.ts for o in orders)
    for order, before in seen:
        assert all(r.ts <= order.ts for r in before)
        for key in order.needs:
            assert sorted(r for r in before if r.key == key) == sorted(
                r for r in table if r.key == key and r.ts <= order.ts)


def test_an_order_waits_for_its_instrument_then_for_the_maximum_wait() -> None:
    join = _join(max_wait_ns=100)
    join.offer(Order(10, ("A",)), now_ns=0)
    join.offer(Order(11, ()), now_ns=0)  # needs nothing, but waits behind the first (FIFO)
    join.offer_table("t", 10, "A", Row("A", 10), now_ns=0)  # not later than the order yet
    assert [s.kind for s in join.poll(50)] == ["table"]
    steps = list(join.poll(100))
    assert [s.item for s in steps] == [Order(10, ("A",)), Order(11, ())]
    assert join.stats.released_by_timeout == 1 and join.stats.released_aligned == 1


def test_idle_input_releases_everything_and_applies_the_table() -> None:
    join = _join(idle_ns=1000)
    join.offer(Order(5, ("A",)), now_ns=0)
    join.offer_table("t", 9, "B", Row("B", 9), now_ns=10)
    assert list(join.poll(500)) == []
    steps = list(join.poll(1010))
    assert [(s.kind, s.item) for s in steps] == [("input", Order(5, ("A",))),
                                                 ("table", Row("B", 9))]
    assert join.stats.released_by_timeout == 1


def test_idle_waits_while_the_table_has_not_reached_the_order() -> None:
    join = _join(idle_ns=1000)
    join.offer(Order(5_000, ("A",)), now_ns=0)  # the table is starting: nothing read yet
    assert list(join.poll(5_000)) == []
    join.offer_table("t", 3_000, "A", Row("A", 3_000), now_ns=5_000)  # far behind the order
    assert [s.kind for s in join.poll(9_000)] == ["table"]
    join.offer_table("t", 4_500, "B", Row("B", 4_500), now_ns=9_000)  # within the allowance
    assert [s.kind for s in join.poll(9_500)] == ["table"]  # before the order: applied
    assert [s.kind for s in join.poll(10_000)] == ["input"]  # idle, and the table got there


def test_quiet_is_not_idleness_while_the_table_has_more_to_read() -> None:
    """A worker behind on reading the table (`table_current=False`) sees no new table
    events, but the market worker has published them: releasing would decide the order on
    old instrument risk."""
    join = _join(idle_ns=1000)
    join.offer(Order(5, ("A",)), now_ns=0)
    join.offer_table("t", 4, "A", Row("A", 4), now_ns=0)
    assert [s.kind for s in join.poll(5_000, table_current=False)] == ["table"]
    assert join.stats.released_by_timeout == 0
    assert [s.kind for s in join.poll(5_000, table_current=True)] == ["input"]


def test_discard_forgets_held_events_and_a_full_buffer_is_applied_early() -> None:
    join = _join(max_buffered=2)
    for ts in (1, 2):
        join.offer(Order(ts, ("A",)), now_ns=0)
    assert join.discard(lambda o: o.ts == 1) == 1 and len(join) == 1
    for ts in (10, 11, 12):
        join.offer_table("t", ts, "B", Row("B", ts), now_ns=0)
    forced = list(join.poll(0))
    assert [s.item for s in forced] == [Row("B", 10)]
    assert join.stats.table_forced == 1 and join.buffered == 2


class AccountOrder(NamedTuple):
    ts: int
    account: int
    key: str


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.tuples(st.integers(0, 2), st.sampled_from(KEYS)), min_size=15,
                           max_size=15))
def test_what_an_order_needs_is_asked_after_the_orders_before_it_have_run(
        data: tuple[list[Row], list[Order], list[bool]],
        accounts: list[tuple[int, str]]) -> None:
    """An order waits for its own key and every key its account holds, and an account
    comes to hold a key by an earlier order's execution (as a fill opens a position): the
    join must ask what an order needs only once the steps before it have run, even when one
    table event releases a run of orders at once."""
    table, plain, _ = data
    orders = [AccountOrder(o.ts, *accounts[i]) for i, o in enumerate(plain)]
    holdings: dict[int, set[str]] = {}
    join: TableJoin[AccountOrder] = TableJoin(
        ts_of=lambda o: o.ts, needs=lambda o: {o.key, *holdings.get(o.account, ())},
        max_wait_ns=None, idle_ns=None, partition_of=lambda o: o.account)
    for o in orders:
        join.offer(o, 0)
    applied: list[Row] = []
    for finished, step in _as_the_table_arrives(join, table):
        if step.kind == "table":
            applied.append(step.item)
            continue
        order: AccountOrder = step.item
        if not finished:  # released aligned: every version it reads is there
            for key in {order.key, *holdings.get(order.account, ())}:
                assert sorted(r for r in applied if r.key == key) == sorted(
                    r for r in table if r.key == key and r.ts <= order.ts)
        holdings.setdefault(order.account, set()).add(order.key)
