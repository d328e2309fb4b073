"""Live input: JSONL events from a stream (stdin, a pipe from any feed), validated and
published.

Each line is one event object, as `streamrisk schemas export` describes them. A valid event
goes to its catalogue topic (`topic_for_type`), keyed by its entity, with its `ts_event` as
the message timestamp. A line that is not a valid event (over the size cap, not JSON, an
unknown type, a schema violation) is reported with its line number and published to `dlq`
as a DeadLetter: `original_topic` "stdin", `original_offset` the line number, the bytes in
`original_value_b64` (cut to half the size cap when longer, which the reason says), and a
reason starting with "line N:". Nothing valid is dropped: publishing failures are counted by
the Publisher and surface in its result. Oversized lines are never held in memory whole.

>>> import io
>>> list(read_lines(io.BytesIO(b'{"a": 1}\\n\\n' + b"x" * 40 + b"\\n"), max_bytes=16))
[(1, b'{"a": 1}', False), (3, b'xxxxxxxxxxxxxxxxx', True)]
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import orjson

from producers.publisher import Publisher
from schemas.codec import DecodeError, decode
from schemas.ids import content_event_id
from schemas.outputs import DeadLetter
from schemas.topics import topic_for_type

WORKER = "publish"
ORIGIN = "stdin"


@dataclass
class LiveStats:
    lines: int = 0
    published: int = 0
    invalid: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


def read_lines(stream: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, too_large) for each non-blank line; a line over `max_bytes`
    yields only its first `max_bytes + 1` bytes and the rest is skipped unread into memory."""
    number = 0
    while True:
        chunk = stream.readline(max_bytes + 2)
        if not chunk:
            return
        number += 1
        too_large = not chunk.endswith(b"\n") and len(chunk) > max_bytes
        if too_large:
            rest = chunk
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(65_536)
            chunk = chunk[:max_bytes + 1]
        line = chunk.rstrip(b"\r\n")
        if line.strip():
            yield number, line, too_large


def dead_letter(line_no: int, data: bytes, error: DecodeError, *, max_bytes: int,
                seq: int) -> DeadLetter:
    """The DeadLetter for an invalid input line (see module docs)."""
    reason = f"line {line_no}: {error}"
    keep = max(1024, max_bytes // 2)  # base64 grows by a third: stay under the cap
    if len(data) > keep:  # worded like the workers' dead letters
        reason += f" (original truncated to {keep} of {len(data)} bytes)"
        data = data[:keep]
    ts_event, key = time.time_ns(), None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        ts = obj.get("ts_event")
        if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0:
            ts_event = ts
        for name in ("symbol", "account", "scope"):
            if isinstance(obj.get(name), str) and obj[name]:
                key = obj[name][:256]
                break
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return DeadLetter(
        event_id=content_event_id("DeadLetter", ORIGIN, ts_event, line_no, digest),
        ts_event=ts_event, ts_init=time.time_ns(), source=WORKER, seq=seq,
        original_topic=ORIGIN, original_partition=-1, original_offset=line_no,
        original_key=key, original_value_b64=base64.b64encode(data).decode(),
        error_kind=error.kind, reason=reason[:2000], worker=WORKER)


def _topic(type_name: str) -> str:
    try:
        return topic_for_type(type_name)
    except KeyError:
        raise DecodeError("unknown_type", f"no topic carries {type_name!r} events") from None


def publish_lines(stream: IO[bytes], publisher: Publisher, *,
                  on_invalid: Callable[[int, DecodeError], None] | None = None,
                  on_line: Callable[[LiveStats], None] | None = None) -> LiveStats:
    """Validate and publish every line of `stream` (see module docs)."""
    max_bytes = publisher.settings.max_message_bytes
    stats = LiveStats()
    for line_no, data, too_large in read_lines(stream, max_bytes):
        stats.lines += 1
        try:
            if too_large:
                raise DecodeError("too_large", f"the line is over the {max_bytes}-byte cap")
            event = decode(data, max_bytes=max_bytes)
            topic = _topic(event.type)
        except DecodeError as exc:
            stats.invalid += 1
            if on_invalid:
                on_invalid(line_no, exc)
            letter = dead_letter(line_no, data, exc, max_bytes=max_bytes, seq=stats.invalid - 1)
            publisher.publish("dlq", letter.original_key, letter)
            stats.by_topic["dlq"] = stats.by_topic.get("dlq", 0) + 1
        else:
            publisher.publish(topic, getattr(event, "key", None), event)
            stats.published += 1
            stats.by_topic[topic] = stats.by_topic.get(topic, 0) + 1
        if on_line:
            on_line(stats)
    return stats
