"""Replay: republish a recording (or a mapped CSV file) into Kafka, exactly.

What a replay keeps: each message's key, headers and value bytes, and its order within the
file, which is its order per key (one key always lands on one partition, and the idempotent
producer keeps per-partition order). The Kafka message timestamp is the event's `ts_event`
in ms (the recorded timestamp for values that are not events). Topics are renamed with a
topic map (`market=market-copy`) and get the settings' prefix.

Pacing is by event time: with `speed` X the gap between two messages is their event-time
gap divided by X (wall clock; the events keep their own times); without it the replay runs
as fast as the broker takes it. A time window keeps events with start <= ts_event < end.

Lines that are not in the recording format (or CSV rows that are not valid events) are
reported with their line numbers and skipped; every good line is published.

>>> parse_topic_map(["market=market-copy"])
{'market': 'market-copy'}
"""

from __future__ import annotations

import gzip
import io
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from producers.csv_input import CsvMapping, CsvRowError, read_csv_events
from producers.publisher import Publisher
from schemas.recording import RecordedMessage


class ReplayError(ValueError):
    """The replay cannot start (bad option or unreadable file): one readable line."""


# A line that is not a message: the same record as a bad CSV row, so CSV rows pass through.
BadLine = CsvRowError


@dataclass
class ReplayStats:
    read: int = 0
    published: int = 0
    filtered: int = 0  # outside the time window
    bad: list[BadLine] = field(default_factory=list)
    topics: dict[str, int] = field(default_factory=dict)  # target topic -> messages


def parse_topic_map(specs: Iterable[str]) -> dict[str, str]:
    """`A=B` pairs (repeatable, or comma separated) -> {A: B}."""
    out: dict[str, str] = {}
    for spec in specs:
        for part in spec.split(","):
            source, sep, target = part.partition("=")
            if not sep or not source.strip() or not target.strip():
                raise ReplayError(f"bad --topic-map {part!r}: use FROM=TO (e.g. market=market2)")
            out[source.strip()] = target.strip()
    return out


class RecordingFile:
    """A plain, .gz or .zst recording opened for reading; `position` is how far into the
    file itself reading got (compressed bytes for compressed files), for progress bars."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self._raw = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._stream: IO[bytes]
        if self.path.name.endswith(".gz"):
            self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb")  # type: ignore[assignment]
        elif self.path.name.endswith(".zst"):
            import zstandard

            self._stream = io.BufferedReader(
                zstandard.ZstdDecompressor().stream_reader(self._raw, closefd=False))
        else:
            self._stream = self._raw

    @property
    def position(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return self.size

    def lines(self) -> Iterator[RecordedMessage | BadLine]:
        return recording_lines(self._stream)

    def close(self) -> None:
        self._stream.close()
        self._raw.close()

    def __enter__(self) -> RecordingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recording_lines(stream: IO[bytes]) -> Iterator[RecordedMessage | BadLine]:
    """Each non-blank line as a message, or as the reason (and line number) it is not one."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield RecordedMessage.from_json(line)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            yield BadLine(number, str(exc) or type(exc).__name__)


def csv_lines(path: str | Path, mapping: CsvMapping) -> Iterator[RecordedMessage | BadLine]:
    """A mapped CSV file as recording messages on the `market` topic, keyed by symbol."""
    for item in read_csv_events(path, mapping):
        if isinstance(item, CsvRowError):
            yield item
        else:
            yield RecordedMessage.from_event("market", getattr(item, "symbol", None), item)


def event_time_ns(message: RecordedMessage) -> int:
    """The message's event time: the value's `ts_event`, else its recorded timestamp."""
    if message.value is not None:
        ts = message.value.get("ts_event")
        if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0:
            return ts
    return message.timestamp * 1_000_000


class EventTimePacer:
    """Sleeps so that wall-clock gaps are event-time gaps divided by `speed` (None: no
    pacing). Events that go back in time are sent at once. `idle` runs while waiting."""

    def __init__(self, speed: float | None, *, idle: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if speed is not None and speed <= 0:
            raise ReplayError(f"--speed must be positive, got {speed:g}")
        self.speed = speed
        self.idle = idle or time.sleep
        self.clock = clock
        self._origin: tuple[int, float] | None = None

    def wait(self, ts_ns: int) -> None:
        if self.speed is None:
            return
        now = self.clock()
        if self._origin is None:
            self._origin = (ts_ns, now)
            return
        first_ts, first_wall = self._origin
        ahead = first_wall + (ts_ns - first_ts) / 1e9 / self.speed - now
        if ahead > 0.002:
            self.idle(ahead)


def replay(lines: Iterable[RecordedMessage | BadLine], publisher: Publisher, *,
           speed: float | None = None, topic_map: dict[str, str] | None = None,
           start_ns: int | None = None, end_ns: int | None = None,
           on_topic: Callable[[str, str, int], None] | None = None,
           on_bad: Callable[[BadLine], None] | None = None,
           on_progress: Callable[[ReplayStats], None] | None = None,
           progress_every: int = 1000) -> ReplayStats:
    """Publish every good message of `lines` in order; see the module docs.

    `on_topic(source, target, ts_ns)` runs once before the first message to each target topic
    (to make sure it exists; `ts_ns` is that message's event time); `on_bad` gets each bad
    line; `on_progress` runs every `progress_every` lines.
    """
    topic_map = topic_map or {}
    stats = ReplayStats()
    pacer = EventTimePacer(speed, idle=publisher.poll)
    for item in lines:
        stats.read += 1
        if on_progress and stats.read % progress_every == 0:
            on_progress(stats)
        if isinstance(item, BadLine):
            stats.bad.append(item)
            if on_bad:
                on_bad(item)
            continue
        ts = event_time_ns(item)
        if (start_ns is not None and ts < start_ns) or (end_ns is not None and ts >= end_ns):
            stats.filtered += 1
            continue
        target = topic_map.get(item.topic, item.topic)
        if target not in stats.topics:
            if on_topic:
                on_topic(item.topic, target, ts)
            stats.topics[target] = 0
        pacer.wait(ts)
        publisher.publish_bytes(target, item.key, _value(item), headers=item.headers,
                                timestamp_ms=ts // 1_000_000)
        stats.topics[target] += 1
        stats.published += 1
    if on_progress:
        on_progress(stats)
    return stats


def _value(message: RecordedMessage) -> bytes | None:
    if message.value is None and message.value_b64 is None:
        return None  # a recorded tombstone stays a tombstone
    return message.value_bytes()

