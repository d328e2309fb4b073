"""Signed, size-capped state snapshots: what a worker writes to its changelog per key.

A processor's state is opaque bytes (River objects are pickled, and unpickling runs code), so
every changelog message is authenticated before anything in it is used:

    MAGIC | u32 header length | header (JSON) | body chunk | HMAC-SHA256(key, all before it)

The header names the worker, the entity key, the changelog partition, the input offset the
state includes (`source_offset`, the last input offset applied to the key), the river
version, and the chunk position. A message whose MAC does not verify is rejected before its
header is even parsed, so a forged or corrupted snapshot is never unpickled; a snapshot
written for another key, partition or worker is rejected too (a valid MAC does not make a
copied snapshot valid elsewhere). A snapshot from another river version is refused (River
pickles do not load across versions): the key starts cold.

Size: a snapshot never exceeds `max_message_bytes`. Bigger state is split into chunks; chunk
0 is keyed by the entity key and chunk i > 0 by `key + "\\x00" + i`, so a compacted topic keeps
the latest of each, and every chunk carries the snapshot id (a digest of the whole body), so
chunks of different snapshots are never mixed. A key's state is deleted by a tombstone (None)
at the entity key.

>>> codec = SnapshotCodec(b"secret", worker="w", max_message_bytes=4096)
>>> snap = Snapshot(key="AAPL", state=b"state" * 2000, dedup=b"", source_offset=41, partition=3)
>>> messages = codec.encode(snap)
>>> len(messages) > 1 and all(len(v) <= 4096 for _, v in messages)
True
>>> restored, rejected = codec.assemble({k: v for k, v in messages}, partition=3)
>>> restored["AAPL"] == snap, rejected
(True, [])
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Literal, TypeVar

import orjson

StateT = TypeVar("StateT")

MAGIC = b"SRSNAP1"
MAC_SIZE = 32
CHUNK_SEPARATOR = "\x00"
# Room left in each message for the Kafka record (key, headers, batch framing).
RECORD_OVERHEAD = 512
FORMAT_VERSION = 1

RejectKind = Literal["signature", "version", "incomplete", "format"]


@lru_cache(maxsize=1)
def river_version() -> str:
    """The installed river version (read from package metadata: importing river is slow)."""
    try:
        return metadata.version("river")
    except metadata.PackageNotFoundError:
        return "none"


class SnapshotError(ValueError):
    """A changelog message that must not be used; `kind` says why."""

    def __init__(self, kind: RejectKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind: RejectKind = kind
        self.reason = reason


@dataclass(frozen=True)
class Snapshot:
    """The state of one key as of `source_offset` (the last input offset applied to it)."""

    key: str
    state: bytes | None
    dedup: bytes
    source_offset: int
    partition: int
    river_version: str = ""

    def __post_init__(self) -> None:
        if not self.river_version:
            object.__setattr__(self, "river_version", river_version())


REPLAY_MARK = "\x00replay-from"
"""Reserved changelog key, one per partition: the input position every snapshot in the
partition is current with. Keys are snapshotted less often than offsets are committed, so a
restore replays the input from this mark up to the committed offset."""


def replay_mark(partition: int, position: int) -> Snapshot:
    """The mark saying every key of `partition` holds exactly the input before `position`.

    >>> codec = SnapshotCodec(b"secret", worker="w", max_message_bytes=4096)
    >>> [(key, value)] = codec.encode(replay_mark(3, 1200))
    >>> restored, _ = codec.assemble({key: value}, partition=3)
    >>> restored[REPLAY_MARK].source_offset
    1200
    """
    return Snapshot(key=REPLAY_MARK, state=None, dedup=b"", source_offset=position,
                    partition=partition)


@dataclass(frozen=True)
class Rejected:
    """A key whose changelog entry was refused; the key starts cold."""

    key: str
    kind: RejectKind
    reason: str
    message_key: str


@dataclass(frozen=True)
class _Chunk:
    header: dict[str, object]
    body: bytes


def chunk_key(key: str, index: int) -> str:
    """Message key of chunk `index` of `key`'s snapshot.

    >>> chunk_key("AAPL", 0), chunk_key("AAPL", 2)
    ('AAPL', 'AAPL\\x002')
    """
    return key if index == 0 else f"{key}{CHUNK_SEPARATOR}{index}"


def entity_of(message_key: str) -> tuple[str, int]:
    """Inverse of `chunk_key`."""
    key, sep, index = message_key.rpartition(CHUNK_SEPARATOR)
    if sep and index.isdigit():
        return key, int(index)
    return message_key, 0


class SnapshotCodec:
    """Seal snapshots into signed messages and verify them back, for one worker."""

    def __init__(self, secret: bytes, *, worker: str, max_message_bytes: int,
                 expected_river_version: str | None = None) -> None:
        if not secret:
            raise ValueError("the snapshot key must not be empty")
        self._secret = secret
        self.worker = worker
        self.max_message_bytes = max_message_bytes
        self.river_version = expected_river_version or river_version()

    # --- writing ------------------------------------------------------------------------------

    def _sign(self, unsigned: bytes) -> bytes:
        return hmac.new(self._secret, unsigned, hashlib.sha256).digest()

    def _message(self, header: dict[str, object], chunk: bytes) -> bytes:
        head = orjson.dumps(header)
        unsigned = MAGIC + struct.pack(">I", len(head)) + head + chunk
        return unsigned + self._sign(unsigned)

    def chunk_capacity(self, key: str) -> int:
        """Body bytes that fit in one message for `key`, after framing and the record."""
        widest = self._header(key, "0" * 32, 0, 10**9, 10**9, 10**9, 10**12, self.river_version)
        framing = len(MAGIC) + 4 + len(orjson.dumps(widest)) + MAC_SIZE
        capacity = self.max_message_bytes - framing - RECORD_OVERHEAD - 2 * len(key.encode())
        if capacity < 64:
            raise ValueError(f"max_message_bytes {self.max_message_bytes} leaves no room for "
                             f"a snapshot of key {key!r}")
        return capacity

    def _header(self, key: str, sid: str, index: int, count: int, state_len: int,
                total: int, offset: int, river: str, partition: int = 0) -> dict[str, object]:
        return {"v": FORMAT_VERSION, "w": self.worker, "k": key, "p": partition, "o": offset,
                "rv": river, "id": sid, "i": index, "n": count, "sl": state_len, "len": total}

    def encode(self, snap: Snapshot) -> list[tuple[str, bytes]]:
        """(message key, value) pairs, every value at most `max_message_bytes` long, stamped
        with this process's river version."""
        state = snap.state
        body = (state or b"") + snap.dedup
        sid = hashlib.blake2b(body, digest_size=16).hexdigest()
        capacity = self.chunk_capacity(snap.key)
        pieces = [body[i:i + capacity] for i in range(0, len(body), capacity)] or [b""]
        state_len = -1 if state is None else len(state)
        return [(chunk_key(snap.key, i),
                 self._message(self._header(snap.key, sid, i, len(pieces), state_len, len(body),
                                            snap.source_offset, self.river_version,
                                            snap.partition), piece))
                for i, piece in enumerate(pieces)]

    # --- reading ------------------------------------------------------------------------------

    def verify(self, data: bytes, *, message_key: str, partition: int) -> _Chunk:
        """Check the MAC first, then the header; raises SnapshotError."""
        if len(data) < len(MAGIC) + 4 + MAC_SIZE or not data.startswith(MAGIC):
            raise SnapshotError("signature", "not a signed streamrisk snapshot")
        unsigned, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
        if not hmac.compare_digest(mac, self._sign(unsigned)):
            raise SnapshotError("signature", "HMAC-SHA256 signature does not verify")
        # Only authenticated bytes are parsed from here on.
        (head_len,) = struct.unpack_from(">I", unsigned, len(MAGIC))
        start = len(MAGIC) + 4
        try:
            header = orjson.loads(unsigned[start:start + head_len])
        except orjson.JSONDecodeError:
            raise SnapshotError("format", "unreadable snapshot header") from None
        if not isinstance(header, dict) or header.get("v") != FORMAT_VERSION:
            raise SnapshotError("format", "unknown snapshot format version")
        key, index = entity_of(message_key)
        if header.get("w") != self.worker:
            raise SnapshotError("signature", f"snapshot of worker {header.get('w')!r} "
                                             f"in the changelog of {self.worker!r}")
        if header.get("k") != key or header.get("i") != index:
            raise SnapshotError("signature", f"snapshot of key {header.get('k')!r} stored "
                                             f"under key {key!r}")
        if header.get("p") != partition:
            raise SnapshotError("signature", f"snapshot of partition {header.get('p')} found "
                                             f"in partition {partition}")
        return _Chunk(header, unsigned[start + head_len:])

    def decode(self, key: str, parts: Mapping[int, bytes], partition: int) -> Snapshot:
        """Rebuild one key's snapshot from its verified chunk values (index -> value)."""
        if 0 not in parts:
            raise SnapshotError("incomplete", "first chunk missing")
        head = self.verify(parts[0], message_key=key, partition=partition)
        h = head.header
        count = int(h["n"])  # type: ignore[call-overload]
        bodies = [head.body]
        for i in range(1, count):
            if i not in parts:
                raise SnapshotError("incomplete", f"chunk {i} of {count} missing")
            chunk = self.verify(parts[i], message_key=chunk_key(key, i), partition=partition)
            if chunk.header.get("id") != h["id"]:
                raise SnapshotError("incomplete", f"chunk {i} belongs to another snapshot")
            bodies.append(chunk.body)
        body = b"".join(bodies)
        if len(body) != h["len"] or hashlib.blake2b(body, digest_size=16).hexdigest() != h["id"]:
            raise SnapshotError("incomplete", "snapshot body does not match its id")
        if h["rv"] != self.river_version:
            raise SnapshotError("version", f"written with river {h['rv']}, running "
                                           f"{self.river_version}: rebuilt from scratch")
        state_len = int(h["sl"])  # type: ignore[call-overload]
        state = None if state_len < 0 else body[:state_len]
        return Snapshot(key=key, state=state, dedup=body[max(state_len, 0):],
                        source_offset=int(h["o"]),  # type: ignore[call-overload]
                        partition=partition, river_version=str(h["rv"]))

    def assemble(self, latest: Mapping[str, bytes | None], partition: int,
                 ) -> tuple[dict[str, Snapshot | None], list[Rejected]]:
        """Snapshots from the latest value per message key of one changelog partition.

        Returns each entity key's snapshot (None: a tombstone, the key has no state) and the
        keys whose entry was refused (their state starts cold)."""
        grouped: dict[str, dict[int, bytes]] = {}
        deleted: set[str] = set()
        for message_key, value in latest.items():
            key, index = entity_of(message_key)
            if value is None:
                if index == 0:
                    deleted.add(key)
                continue
            grouped.setdefault(key, {})[index] = value
        restored: dict[str, Snapshot | None] = dict.fromkeys(deleted - grouped.keys())
        rejected: list[Rejected] = []
        for key, parts in grouped.items():
            if key in deleted and 0 not in parts:
                restored[key] = None  # stale chunks of a deleted key
                continue
            try:
                restored[key] = self.decode(key, parts, partition)
            except SnapshotError as exc:
                rejected.append(Rejected(key, exc.kind, exc.reason, key))
        return restored, rejected


def load_state(data: bytes, cls: type[StateT], version: int, key: str) -> StateT:
    """A processor's pickled state of `key` (the runtime checked the snapshot's HMAC before
    this), which must be a `cls` whose `version` attribute is `version`; ValueError when it
    is anything else (an old format, another processor's state)."""
    state = pickle.loads(data)
    if not isinstance(state, cls) or getattr(state, "version", None) != version:
        raise ValueError(f"snapshot of {key!r} is not {cls.__name__} v{version}")
    return state
