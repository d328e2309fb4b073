"""As-of tables and the event-time hold: decisions must not depend on input interleaving."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.alignment import HoldQueue
from engine.asof import AsOfTable

versions = st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(0, 1000),
                              st.integers()), max_size=60, unique_by=lambda v: (v[0], v[1]))


@given(versions, st.randoms(use_true_random=False), st.integers(-10, 1100))
def test_as_of_does_not_depend_on_arrival_order(rows, rng, ts):
    in_order = AsOfTable[int](max_versions=1000)
    for key, t, value in sorted(rows, key=lambda r: r[1]):
        in_order.put(key, t, value)
    shuffled_rows = list(rows)
    rng.shuffle(shuffled_rows)
    shuffled = AsOfTable[int](max_versions=1000)
    for key, t, value in shuffled_rows:
        shuffled.put(key, t, value)
    for key in "ABC":
        expected = max((r for r in rows if r[0] == key and r[1] <= ts), key=lambda r: r[1],
                       default=None)
        assert in_order.as_of(key, ts) == shuffled.as_of(key, ts)
        assert in_order.as_of(key, ts) == (expected[2] if expected else None)


def test_history_is_bounded_per_key():
    table = AsOfTable[int](max_versions=4)
    for t in range(100):
        table.put("A", t, t)
    assert table.as_of("A", 99) == 99
    assert table.as_of("A", 96) == 96
    assert table.as_of("A", 10) is None  # dropped from the retained history


def _queue(marks: dict[str, int], max_wait_ns: int | None) -> HoldQueue[tuple[int, str]]:
    return HoldQueue(ts_of=lambda e: e[0], needs=lambda e: [e[1]], watermark=marks.get,
                     max_wait_ns=max_wait_ns)


def test_hold_releases_only_when_every_needed_key_passed_the_event_time():
    marks: dict[str, int] = {}
    q = _queue(marks, max_wait_ns=None)
    q.offer((10, "A"), now_ns=0)
    q.offer((5, "B"), now_ns=0)
    marks["A"] = 10  # equal is not enough: another version at ts 10 may still come
    assert q.release(now_ns=10**12) == []
    marks["A"] = 11
    assert q.release(now_ns=0) == [(10, "A")]
    assert q.release(now_ns=0) == []  # (5, "B") waits for B
    marks["B"] = 6
    assert q.release(now_ns=0) == [(5, "B")]
    assert q.stats.released_aligned == 2 and q.stats.released_by_timeout == 0


def test_hold_is_fifo_and_times_out_in_live_mode():
    marks = {"B": 100}
    q = _queue(marks, max_wait_ns=50)
    q.offer((10, "A"), now_ns=0)
    q.offer((20, "B"), now_ns=1)
    assert q.release(now_ns=49) == []  # B is ready but must not overtake A
    assert q.release(now_ns=50) == [(10, "A"), (20, "B")]
    assert q.stats.released_by_timeout == 1


@given(st.lists(st.tuples(st.integers(0, 100), st.sampled_from("AB")), max_size=30),
       st.lists(st.tuples(st.sampled_from("AB"), st.integers(0, 120)), max_size=30))
def test_hold_never_releases_an_event_before_its_tables_without_timeout(events, updates):
    marks: dict[str, int] = {}
    q = _queue(marks, max_wait_ns=None)
    released: list[tuple[int, str]] = []
    for event in events:
        q.offer(event, now_ns=0)
    for key, ts in updates:
        marks[key] = max(marks.get(key, ts), ts)
        for event in q.release(now_ns=0):
            assert marks.get(event[1], -1) > event[0]
            released.append(event)
    assert released == events[: len(released)]  # arrival order kept
    assert len(q) == len(events) - len(released)
