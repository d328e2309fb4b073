"""Helpers for tests that drive the CLI against the embedded broker and read back what it
published, plus a fake clock for the pacers (no wall clock in tests)."""

from __future__ import annotations

from pathlib import Path

from consumers.cli.app import main
from consumers.recorder import Recorder
from schemas.recording import RecordedMessage, read_recording
from schemas.settings import Settings


def global_args(settings: Settings) -> list[str]:
    """The global options that point a `streamrisk` command at `settings`' broker and topics."""
    return ["--bootstrap-servers", settings.bootstrap_servers or "", "--topic-prefix",
            settings.topic_prefix, "--profile", settings.profile]


def cli(settings: Settings, *args: str) -> int:
    """Run `streamrisk ARGS` against `settings`; its exit code."""
    return main([*args, *global_args(settings)])


def record(settings: Settings, topics: list[str], path: Path, count: int) -> list[RecordedMessage]:
    """Exactly `count` messages of `topics` (read-committed), recorded to `path`."""
    stats = Recorder(settings, topics, path, max_events=count, idle_timeout_s=15).run()
    assert stats.count == count, stats
    return list(read_recording(path))


class FakeClock:
    """A clock that only moves when a pacer idles; `waits` lists every idle, rounded to 1 µs."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def idle(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.now += seconds
