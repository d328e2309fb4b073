"""The processor protocol: what a worker runs for each event, with no Kafka in sight.

A processor owns per-key state (key = instrument or account). The Kafka runtime
(`consumers.runtime`) and the in-process driver (`engine.driver`) both drive processors
through this protocol, which is what makes their outputs comparable:

1. `process(event)` returns the outputs for one decoded input event, in order. Time is the
   event's `ts_event`; a processor never reads the wall clock for risk logic.
2. `dirty_keys()` names the keys whose state changed since the last call (and clears the
   set); the runtime snapshots exactly those at each checkpoint.
3. `snapshot(key)` returns the key's state as bytes (None when the key has no state: a
   tombstone); `restore(key, data)` rebuilds it; `evict(keys)` forgets keys whose partition
   was revoked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from schemas.common import Envelope


class Output(NamedTuple):
    """One event to publish: catalogue topic name (no prefix), message key, value."""

    topic: str
    key: str
    value: Envelope


@runtime_checkable
class Processor(Protocol):
    """A stateful, deterministic event handler keyed by entity."""

    name: str
    """Worker name; its changelog topic is `<name>.changelog`."""

    def key_of(self, event: Envelope) -> str | None:
        """The state key an input event belongs to (None: stateless for this event)."""
        ...

    def process(self, event: Envelope) -> Sequence[Output]:
        """Handle one input event and return its outputs. Scores before it learns."""
        ...

    def dirty_keys(self) -> set[str]:
        """Keys changed since the previous call; the set is cleared by the call."""
        ...

    def snapshot(self, key: str) -> bytes | None:
        """The state of `key` as bytes, or None when the key holds no state."""
        ...

    def restore(self, key: str, data: bytes | None) -> None:
        """Replace the state of `key` with a snapshot (None deletes it)."""
        ...

    def evict(self, keys: Iterable[str]) -> None:
        """Forget the state of `keys` (their partition moved to another worker)."""
        ...
