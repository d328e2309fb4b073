"""Duplicate detection by `event_id`, per state key, with bounded memory.

Why per key: a re-sent event keeps its key (instrument, account), so it lands in the same
partition and the same key; a per-key window therefore catches it wherever the key is
processed, and the decision depends only on that key's own event sequence. That makes it
identical in-process, through one worker, through several workers (whatever the partition
count) and across crashes: each key's window travels inside the key's state snapshot, so a
worker that resumes from the last checkpoint has exactly the window it had then, and the
events it re-reads after the checkpoint are not mistaken for duplicates.

Memory: each key keeps the 8-byte BLAKE2b digests of its last `capacity` event ids in one
`bytearray` (8 * capacity bytes; 2 KiB for the default 256). Events without a state key
(the processor's `key_of` returns None) are not deduplicated.

>>> dedup = KeyedDedup(capacity=2)
>>> [dedup.check("AAPL", e) for e in ("e1", "e2", "e1", "e3", "e1")]
[False, False, True, False, False]
>>> restored = KeyedDedup(capacity=2)
>>> restored.restore("AAPL", dedup.snapshot("AAPL"))
>>> restored.check("AAPL", "e3"), restored.check("AAPL", "e2")
(True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

DIGEST_SIZE = 8


def id_digest(event_id: str) -> bytes:
    """A process-independent 8-byte digest of an event id (Python's hash() is salted)."""
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST_SIZE).digest()


class DedupRing:
    """The last `capacity` digests of one key, oldest overwritten first."""

    __slots__ = ("_buf", "_next", "capacity")

    def __init__(self, capacity: int, data: bytes = b"") -> None:
        self.capacity = capacity
        keep = len(data) - len(data) % DIGEST_SIZE
        data = data[:keep][-capacity * DIGEST_SIZE:] if capacity else b""
        self._buf = bytearray(data)
        self._next = 0  # write position once the ring is full (points at the oldest digest)

    def __len__(self) -> int:
        return len(self._buf) // DIGEST_SIZE

    def __contains__(self, digest: bytes) -> bool:
        buf = self._buf
        at = buf.find(digest)
        while at != -1:
            if at % DIGEST_SIZE == 0:
                return True
            at = buf.find(digest, at + 1)
        return False

    def add(self, digest: bytes) -> None:
        if not self.capacity:
            return
        if len(self._buf) < self.capacity * DIGEST_SIZE:
            self._buf += digest
            return
        at = self._next * DIGEST_SIZE
        self._buf[at:at + DIGEST_SIZE] = digest
        self._next = (self._next + 1) % self.capacity

    def seen_or_add(self, digest: bytes) -> bool:
        """True when `digest` is in the window; otherwise remember it and return False."""
        if digest in self:
            return True
        self.add(digest)
        return False

    def to_bytes(self) -> bytes:
        """Digests oldest first: the same window always serialises to the same bytes."""
        at = self._next * DIGEST_SIZE
        return bytes(self._buf[at:] + self._buf[:at])


class KeyedDedup:
    """One `DedupRing` per state key."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._rings: dict[str, DedupRing] = {}
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._rings)

    def check(self, key: str, event_id: str) -> bool:
        """True when `event_id` was already seen for `key` (a duplicate); else remember it."""
        if not self.capacity:
            return False
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = DedupRing(self.capacity)
        if ring.seen_or_add(id_digest(event_id)):
            self.duplicates += 1
            return True
        return False

    def snapshot(self, key: str) -> bytes:
        ring = self._rings.get(key)
        return ring.to_bytes() if ring is not None else b""

    def restore(self, key: str, data: bytes | None) -> None:
        if data:
            self._rings[key] = DedupRing(self.capacity, data)
        else:
            self._rings.pop(key, None)

    def evict(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._rings.pop(key, None)

    def memory_bytes(self) -> int:
        """Bytes held in digests (excluding dict overhead), for the state-size report."""
        return sum(len(r._buf) for r in self._rings.values())
