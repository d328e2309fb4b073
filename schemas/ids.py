"""Deterministic event ids.

Outputs derive their id from the triggering input's id and the rule that fired, never from
Kafka offsets, so a file replay and a topic replay produce the same ids and downstream can
deduplicate. Inputs without a natural id (CSV rows) get one from their content.
"""

from __future__ import annotations

import hashlib


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def derive_event_id(input_event_id: str, rule: str) -> str:
    """Id of the output that `rule` produced for the input `input_event_id`.

    >>> derive_event_id("evt-1", "VOL_SPIKE") == derive_event_id("evt-1", "VOL_SPIKE")
    True
    >>> derive_event_id("evt-1", "VOL_SPIKE") != derive_event_id("evt-1", "VAR_BREACH")
    True
    """
    return _digest(f"{input_event_id}\x1f{rule}")


def content_event_id(kind: str, key: str, ts_event: int, *extra: object) -> str:
    """Id for an input that has none, from what it is about and when it happened.

    >>> content_event_id("Bar", "AAPL", 1_700_000_000_000_000_000)
    'Bar-AAPL-1700000000000000000'
    """
    suffix = "-" + _digest("\x1f".join(map(str, extra))) if extra else ""
    return f"{kind}-{key}-{ts_event}{suffix}"
