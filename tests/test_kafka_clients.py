"""The client helpers of `producers.kafka` that need no broker."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer

import producers.kafka
from producers.kafka import IDLE_PAUSE_MIN_LIBRDKAFKA, idle_probe_s, lower_fetcher_priority
from schemas.settings import PROFILES, Settings


def _threads() -> dict[int, tuple[str, int]]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                out[int(tid)] = (fh.read().strip(), os.getpriority(os.PRIO_PROCESS, int(tid)))
        except OSError:
            continue
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux")
def test_only_librdkafka_broker_threads_are_lowered() -> None:
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "nice-test"})
    try:
        before = _threads()
        main = os.getpriority(os.PRIO_PROCESS, 0)
        assert any(name.startswith("rdk:broker") for name, _ in before.values())
        assert lower_fetcher_priority(12) >= 1  # this consumer's threads at least
        after = _threads()  # (other clients of the test process may start or end threads)
        brokers = [nice for t, (name, nice) in after.items()
                   if name.startswith("rdk:broker") and t in before]
        assert brokers and all(nice >= 12 for nice in brokers)
        others = {t: nice for t, (name, nice) in after.items()
                  if not name.startswith("rdk:broker") and t in before}
        assert all(nice == before[t][1] for t, nice in others.items())
        assert os.getpriority(os.PRIO_PROCESS, 0) == main
    finally:
        consumer.close()


def test_only_profiles_for_the_embedded_broker_lower_priorities() -> None:
    assert PROFILES["embedded"].lower_fetcher_priority
    assert PROFILES["test"].lower_fetcher_priority
    assert not PROFILES["production"].lower_fetcher_priority


@pytest.fixture
def fresh_version_check() -> Iterator[None]:
    """The version check is made once per process: start and leave it unmade."""
    producers.kafka._pausing_is_safe.cache_clear()
    yield
    producers.kafka._pausing_is_safe.cache_clear()


def _librdkafka(monkeypatch: pytest.MonkeyPatch, major: int, minor: int) -> None:
    """librdkafka's version as `confluent_kafka.libversion()` reports it (0xMMmmrrxx)."""
    number = (major << 24) | (minor << 16) | (1 << 8) | 0xFF
    monkeypatch.setattr(producers.kafka, "libversion",
                        lambda: (f"{major}.{minor}.1", number))


@pytest.mark.usefixtures("fresh_version_check")
def test_idle_pausing_follows_the_profile_on_a_recent_librdkafka(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _librdkafka(monkeypatch, *IDLE_PAUSE_MIN_LIBRDKAFKA)
    assert idle_probe_s(Settings(profile="embedded")) == pytest.approx(
        PROFILES["embedded"].idle_probe_ms / 1000)  # type: ignore[operator]
    assert idle_probe_s(Settings(profile="production")) is None  # real Kafka holds fetches


@pytest.mark.usefixtures("fresh_version_check")
def test_an_older_librdkafka_never_pauses_idle_input(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    _librdkafka(monkeypatch, 2, 12)
    runtime_log = logging.getLogger("streamrisk.runtime")  # the CLI may stop its propagation
    runtime_log.addHandler(caplog.handler)
    try:
        assert idle_probe_s(Settings(profile="embedded")) is None
        assert idle_probe_s(Settings(profile="test")) is None
    finally:
        runtime_log.removeHandler(caplog.handler)
    # (one record may be captured twice: by the handler added here and through the root)
    records = {id(r): r for r in caplog.records if r.levelname == "WARNING"}
    warnings = [r.getMessage() for r in records.values()]
    assert len(warnings) == 1 and "2.12.1 is older than 2.16" in warnings[0]


@pytest.mark.usefixtures("fresh_version_check")
def test_the_installed_librdkafka_may_pause() -> None:
    """The suite runs the pausing path: the confluent-kafka it installs is recent enough."""
    assert idle_probe_s(Settings(profile="test")) is not None
