"""The recording format: JSONL, one message per line, optionally .gz or .zst compressed.

Each line holds `topic` (catalogue name, no prefix), `partition`, `offset`, `key`,
`timestamp` (ms, as Kafka stores it), `headers` (list of [name, value] strings) and either
`value` (the event as a JSON object) or `value_b64` (raw bytes that are not valid JSON).
`simulate --out`, `record` and `evaluate` write it; `replay` and `evaluate` read it.
"""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from schemas.codec import DecodeError, decode, encode, from_object, to_object
from schemas.common import Envelope


class RecordingError(ValueError):
    """A recording line that is not in the recording format; carries the line number."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class RecordedMessage:
    topic: str
    key: str | None
    value: dict[str, Any] | None = None
    value_b64: str | None = None
    partition: int = -1
    offset: int = -1
    timestamp: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_event(cls, topic: str, key: str | None, event: Envelope, *, partition: int = -1,
                   offset: int = -1, headers: list[tuple[str, str]] | None = None,
                   ) -> RecordedMessage:
        return cls(topic=topic, key=key, value=to_object(event), partition=partition,
                   offset=offset, timestamp=event.ts_event // 1_000_000,
                   headers=list(headers or []))

    @classmethod
    def from_bytes(cls, topic: str, key: str | None, data: bytes, **kw: Any) -> RecordedMessage:
        """Keep JSON objects as `value`, anything else as base64 in `value_b64`."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return cls(topic=topic, key=key, value=obj, **kw)
        return cls(topic=topic, key=key, value_b64=base64.b64encode(data).decode(), **kw)

    def value_bytes(self) -> bytes:
        if self.value is not None:
            return orjson.dumps(self.value)
        return base64.b64decode(self.value_b64 or "")

    def event(self) -> Envelope:
        """The decoded event; raises DecodeError when the value is not a valid event."""
        if self.value is not None:
            return from_object(self.value)
        return decode(self.value_bytes())

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {"topic": self.topic, "partition": self.partition,
                               "offset": self.offset, "key": self.key,
                               "timestamp": self.timestamp,
                               "headers": [list(h) for h in self.headers]}
        if self.value is not None:
            obj["value"] = self.value
        else:
            obj["value_b64"] = self.value_b64
        return orjson.dumps(obj)

    @classmethod
    def from_json(cls, line: bytes | str) -> RecordedMessage:
        obj = orjson.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("each line must be a JSON object")
        if not isinstance(obj.get("topic"), str) or not obj["topic"]:
            raise ValueError("missing 'topic'")
        if "value" not in obj and "value_b64" not in obj:
            raise ValueError("a line needs 'value' or 'value_b64'")
        value = obj.get("value")
        if value is not None and not isinstance(value, dict):
            raise ValueError("'value' must be a JSON object (use 'value_b64' for raw bytes)")
        key = obj.get("key")
        headers = obj.get("headers") or []
        return cls(topic=obj["topic"], key=None if key is None else str(key), value=value,
                   value_b64=obj.get("value_b64"), partition=int(obj.get("partition", -1)),
                   offset=int(obj.get("offset", -1)), timestamp=int(obj.get("timestamp", 0)),
                   headers=[(str(h[0]), str(h[1])) for h in headers])


def _open(path: Path, mode: str) -> IO[bytes]:
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, mode + "b")  # type: ignore[return-value]
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, mode + "b")  # noqa: SIM115 - wrapped and closed by the caller
        if mode == "r":
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
        return zstandard.ZstdCompressor().stream_writer(raw, closefd=True)
    return open(path, mode + "b")


def read_recording(path: str | Path) -> Iterator[RecordedMessage]:
    """Yield the messages of a recording; raises RecordingError naming the bad line."""
    path = Path(path)
    with _open(path, "r") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield RecordedMessage.from_json(line)
            except (ValueError, TypeError, IndexError) as exc:
                raise RecordingError(str(path), number, str(exc)) from None


def read_events(path: str | Path) -> Iterator[tuple[RecordedMessage, Envelope | DecodeError]]:
    """Each message with its decoded event, or the DecodeError that refused it."""
    for message in read_recording(path):
        try:
            yield message, message.event()
        except DecodeError as exc:
            yield message, exc


class RecordingWriter:
    """Writes messages in the recording format; use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = _open(self.path, "w")
        self.count = 0

    def write(self, message: RecordedMessage) -> None:
        self._fh.write(message.to_json() + b"\n")
        self.count += 1

    def write_event(self, topic: str, key: str | None, event: Envelope, **kw: Any) -> None:
        self.write(RecordedMessage.from_event(topic, key, event, **kw))

    def write_all(self, messages: Iterable[RecordedMessage]) -> None:
        for message in messages:
            self.write(message)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RecordedMessage", "RecordingError", "RecordingWriter", "encode", "read_events",
           "read_recording"]
