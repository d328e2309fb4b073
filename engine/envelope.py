"""Envelope fields of an output, derived from the input that caused it.

`event_id` comes from the cause's id and the rule that fired, `ts_event` is the cause's event
time and `seq` its sequence number, so outputs are identical in-process, through Kafka and
after a crash. `ts_init` is the one wall-clock field (excluded from determinism comparisons).
"""

from __future__ import annotations

import time
from typing import Any

from schemas.common import Envelope
from schemas.ids import derive_event_id

# Fields that may differ between two runs over the same input (DESIGN.md section 5).
NONDETERMINISTIC_SUFFIX = "_latency_ns"
NONDETERMINISTIC_FIELDS = frozenset({"ts_init"})


def output_envelope(cause: Envelope, rule: str, source: str) -> dict[str, Any]:
    """Keyword arguments for an output model's envelope fields.

    >>> from schemas.market import Trade
    >>> t = Trade(event_id="e1", ts_event=5, ts_init=5, source="sim", seq=3, symbol="X",
    ...           price=1.0, qty=1.0)
    >>> env = output_envelope(t, "VOL_SPIKE", "market-worker")
    >>> (env["ts_event"], env["seq"], env["source"])
    (5, 3, 'market-worker')
    """
    return {
        "event_id": derive_event_id(cause.event_id, rule),
        "ts_event": cause.ts_event,
        "ts_init": time.time_ns(),
        "source": source,
        "seq": cause.seq,
    }


def comparable(obj: Any) -> Any:
    """A JSON-like value with every run-dependent field removed, for determinism checks.

    >>> comparable({"ts_init": 1, "a": {"decision_latency_ns": 5, "b": 2}})
    {'a': {'b': 2}}
    """
    if isinstance(obj, dict):
        return {k: comparable(v) for k, v in obj.items()
                if k not in NONDETERMINISTIC_FIELDS and not k.endswith(NONDETERMINISTIC_SUFFIX)}
    if isinstance(obj, list):
        return [comparable(v) for v in obj]
    return obj
