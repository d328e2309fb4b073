"""The client helpers of `producers.kafka` that need no broker."""

from __future__ import annotations

import os
import sys

import pytest
from confluent_kafka import Consumer

from producers.kafka import lower_fetcher_priority
from schemas.settings import PROFILES


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
