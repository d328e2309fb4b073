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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

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


@runtime_checkable
class TableProcessor(Processor, Protocol):
    """Optional extension: a processor that also reads side tables.

    Every worker reads each topic in `tables` in full (all partitions, from the beginning,
    read-committed) and hands its events to `apply_table` before and between input batches;
    the in-process driver hands them over in recording order. Outputs returned by
    `apply_table` (for example orders released from an event-time hold) are published in the
    checkpoint of the partition that owns `output.key` as a state key, so a processor must
    only return outputs for keys it holds state for. Table positions are not checkpointed:
    after a restart the tables are read again from the beginning.

    A processor may also set `input_topic` (catalogue name) when its name is not a worker of
    the catalogue (`schemas.topics.WORKER_INPUTS`).
    """

    tables: tuple[str, ...]

    def apply_table(self, topic: str, event: Envelope) -> Sequence[Output]:
        """Update side state from one table event; return outputs it releases (often none)."""
        ...


class DispatchByType:
    """`process` and `apply_table` for a processor with one handler per event type.

    A subclass fills `_handlers` (event `type` -> method) and names, in `table_types`, the
    types each side table may carry; an event of another type, or a table event of a type
    its topic does not carry, changes nothing.
    """

    table_types: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    _handlers: Mapping[str, Callable[[Any], Sequence[Output]]]

    def process(self, event: Envelope) -> Sequence[Output]:
        handler = self._handlers.get(event.type)
        return handler(event) if handler is not None else []

    def apply_table(self, topic: str, event: Envelope) -> Sequence[Output]:
        """A table event of a type its topic carries (`table_types`)."""
        if event.type not in self.table_types.get(topic, ()):
            return []
        return self.process(event)
