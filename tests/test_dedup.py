"""Duplicate detection: bounded, exact within the window, and the same after a restore."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.dedup import DIGEST_SIZE, DedupRing, KeyedDedup, id_digest

ids = st.lists(st.sampled_from([f"e{i}" for i in range(30)]), max_size=200)


def reference(stream: list[str], capacity: int) -> list[bool]:
    """Duplicate iff the id is among the last `capacity` distinct ids remembered."""
    window: list[str] = []
    out = []
    for event_id in stream:
        if event_id in window:
            out.append(True)
            continue
        out.append(False)
        window.append(event_id)
        if len(window) > capacity:
            window.pop(0)
    return out


@given(ids, st.integers(1, 12))
def test_matches_a_sliding_window_of_remembered_ids(stream: list[str], capacity: int) -> None:
    dedup = KeyedDedup(capacity)
    assert [dedup.check("k", e) for e in stream] == reference(stream, capacity)
    assert dedup.duplicates == sum(reference(stream, capacity))


@given(ids, st.integers(0, 200), st.integers(1, 12))
def test_snapshot_and_restore_mid_stream_changes_nothing(stream: list[str], cut: int,
                                                         capacity: int) -> None:
    cut = min(cut, len(stream))
    straight = KeyedDedup(capacity)
    expected = [straight.check("k", e) for e in stream]
    first = KeyedDedup(capacity)
    got = [first.check("k", e) for e in stream[:cut]]
    second = KeyedDedup(capacity)  # a new process: only the snapshot bytes survive
    second.restore("k", first.snapshot("k"))
    got += [second.check("k", e) for e in stream[cut:]]
    assert got == expected


@given(ids, st.integers(1, 50))
def test_memory_is_bounded_per_key(stream: list[str], capacity: int) -> None:
    dedup = KeyedDedup(capacity)
    for event_id in stream:
        dedup.check("k", event_id)
    assert len(dedup.snapshot("k")) <= capacity * DIGEST_SIZE
    assert dedup.memory_bytes() <= capacity * DIGEST_SIZE


def test_keys_are_independent_and_eviction_forgets() -> None:
    dedup = KeyedDedup(8)
    assert not dedup.check("A", "e1")
    assert not dedup.check("B", "e1")  # same id, another key: not a duplicate here
    assert dedup.check("A", "e1")
    dedup.evict(["A"])
    assert not dedup.check("A", "e1")
    assert len(dedup) == 2


def test_misaligned_byte_matches_are_not_duplicates() -> None:
    ring = DedupRing(4)
    a, b = id_digest("a"), id_digest("b")
    ring.add(a)
    ring.add(b)
    straddle = (a + b)[3:3 + DIGEST_SIZE]  # bytes that occur in the buffer, off alignment
    assert straddle not in ring
    assert a in ring and b in ring


def test_capacity_zero_disables_and_shrinking_keeps_newest() -> None:
    assert not KeyedDedup(0).check("k", "e") and not KeyedDedup(0).check("k", "e")
    big = KeyedDedup(10)
    for i in range(10):
        big.check("k", f"e{i}")
    small = KeyedDedup(3)
    small.restore("k", big.snapshot("k"))
    assert [small.check("k", f"e{i}") for i in (9, 8, 7)] == [True, True, True]
    assert not small.check("k", "e0")


def test_digest_is_stable_across_processes() -> None:
    # A fixed value: Python's salted hash() would differ per process and break restores.
    assert id_digest("evt-1").hex() == id_digest("evt-1").hex()
    assert len(id_digest("evt-1")) == DIGEST_SIZE
    import subprocess
    import sys

    other = subprocess.run([sys.executable, "-c", "from engine.dedup import id_digest;"
                            "print(id_digest('evt-1').hex())"], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert other == id_digest("evt-1").hex()
