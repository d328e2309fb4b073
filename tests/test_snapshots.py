"""Signed snapshots: round trips within the size cap, and nothing unsigned is ever accepted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.snapshots import (
    MAC_SIZE,
    REPLAY_MARK,
    Snapshot,
    SnapshotCodec,
    SnapshotError,
    chunk_key,
    entity_of,
    replay_mark,
)

SECRET = b"test-secret"


def codec(max_bytes: int = 4096, secret: bytes = SECRET, worker: str = "w",
          river: str | None = None) -> SnapshotCodec:
    return SnapshotCodec(secret, worker=worker, max_message_bytes=max_bytes,
                         expected_river_version=river)


@settings(max_examples=60)
@given(state=st.one_of(st.none(), st.binary(max_size=20_000)),
       dedup=st.binary(max_size=2048).map(lambda b: b[: len(b) - len(b) % 8]),
       max_bytes=st.integers(1500, 9000), offset=st.integers(-1, 10**12),
       key=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1,
                   max_size=40))
def test_round_trip_and_every_message_fits(state: bytes | None, dedup: bytes, max_bytes: int,
                                           offset: int, key: str) -> None:
    c = codec(max_bytes)
    snap = Snapshot(key=key, state=state, dedup=dedup, source_offset=offset, partition=5)
    messages = c.encode(snap)
    assert all(len(value) <= max_bytes for _, value in messages)
    assert [k for k, _ in messages] == [chunk_key(key, i) for i in range(len(messages))]
    restored, rejected = c.assemble(dict(messages), partition=5)
    assert rejected == []
    assert restored == {key: snap}


@settings(max_examples=40)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(position: int, bit: int) -> None:
    c = codec(100_000)
    [(key, value)] = c.encode(Snapshot("AAPL", b"pickled-state" * 20, b"", 7, 0))
    position %= len(value)
    forged = bytearray(value)
    forged[position] ^= 1 << bit
    restored, rejected = c.assemble({key: bytes(forged)}, partition=0)
    assert restored == {}
    assert [r.kind for r in rejected] in (["signature"],)


def test_another_key_signs_nothing_valid() -> None:
    mine, theirs = codec(), codec(secret=b"attacker")
    messages = dict(theirs.encode(Snapshot("AAPL", b"x", b"", 1, 0)))
    restored, rejected = mine.assemble(messages, partition=0)
    assert restored == {} and rejected[0].kind == "signature"


def test_a_valid_snapshot_moved_elsewhere_is_refused() -> None:
    c = codec()
    [(_, value)] = c.encode(Snapshot("AAPL", b"x", b"", 1, 0))
    with pytest.raises(SnapshotError, match="key"):
        c.verify(value, message_key="MSFT", partition=0)
    with pytest.raises(SnapshotError, match="partition"):
        c.verify(value, message_key="AAPL", partition=1)
    with pytest.raises(SnapshotError, match="worker"):
        codec(worker="other").verify(value, message_key="AAPL", partition=0)


def test_unsigned_and_short_values_are_refused() -> None:
    c = codec()
    for junk in (b"", b"SRSNAP1", b"\x80\x04pickle", b"SRSNAP1" + b"\x00" * (4 + MAC_SIZE)):
        with pytest.raises(SnapshotError) as info:
            c.verify(junk, message_key="k", partition=0)
        assert info.value.kind == "signature"


def test_chunks_of_different_snapshots_never_mix() -> None:
    c = codec(1500)
    old = dict(c.encode(Snapshot("K", b"a" * 4000, b"", 1, 0)))
    new = dict(c.encode(Snapshot("K", b"b" * 4000, b"", 2, 0)))
    assert len(old) == len(new) > 2
    mixed = dict(new)
    mixed[chunk_key("K", 1)] = old[chunk_key("K", 1)]
    restored, rejected = c.assemble(mixed, partition=0)
    assert restored == {} and rejected[0].kind == "incomplete"
    missing = {k: v for k, v in new.items() if k != chunk_key("K", 2)}
    assert c.assemble(missing, partition=0)[1][0].kind == "incomplete"


def test_smaller_snapshot_over_stale_chunks_and_tombstones() -> None:
    c = codec(1500)
    latest: dict[str, bytes | None] = dict(c.encode(Snapshot("K", b"a" * 4000, b"", 1, 0)))
    latest.update(c.encode(Snapshot("K", b"small", b"", 2, 0)))  # head overwritten only
    restored, rejected = c.assemble(latest, partition=0)
    assert rejected == [] and restored["K"] is not None and restored["K"].state == b"small"
    latest["K"] = None
    restored, rejected = c.assemble(latest, partition=0)
    assert restored == {"K": None} and rejected == []


def test_river_version_mismatch_starts_cold() -> None:
    writer, reader = codec(river="0.1.0"), codec(river="0.26.1")
    restored, rejected = reader.assemble(dict(writer.encode(Snapshot("K", b"s", b"", 1, 0))),
                                         partition=0)
    assert restored == {} and rejected[0].kind == "version"


def test_no_state_keeps_the_duplicate_window() -> None:
    c = codec()
    snap = Snapshot("K", None, b"12345678", 3, 0)
    restored, _ = c.assemble(dict(c.encode(snap)), partition=0)
    assert restored["K"] == snap and restored["K"] is not None
    assert restored["K"].state is None and restored["K"].dedup == b"12345678"


def test_chunk_key_round_trip_and_empty_secret() -> None:
    assert entity_of(chunk_key("A\x00B", 3)) == ("A\x00B", 3)
    assert entity_of("plain") == ("plain", 0)
    with pytest.raises(ValueError):
        SnapshotCodec(b"", worker="w", max_message_bytes=4096)
    with pytest.raises(ValueError):
        codec(600).chunk_capacity("k")


@given(position=st.integers(0, 10**12), partition=st.integers(0, 63))
def test_a_replay_mark_is_one_signed_message_of_its_partition(position: int,
                                                              partition: int) -> None:
    c = codec()
    [(key, value)] = c.encode(replay_mark(partition, position))
    assert key == REPLAY_MARK and entity_of(key) == (REPLAY_MARK, 0)
    restored, rejected = c.assemble({key: value, "AAPL": None}, partition)
    assert not rejected and restored["AAPL"] is None
    mark = restored[REPLAY_MARK]
    assert mark is not None and mark.source_offset == position and mark.state is None
    # a mark moved to another partition would replay the wrong input: refused
    _, moved = c.assemble({key: value}, partition + 1)
    assert [r.kind for r in moved] == ["signature"]
