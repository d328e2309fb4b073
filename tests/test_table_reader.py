"""`consumers.runtime.tables.TableReader` against the broker: it knows when it has read every
partition to its end, which is what lets the event-time join tell a finished replay from a
reader that fell behind."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from consumers.runtime.tables import TableReader
from producers.kafka import make_producer
from producers.provision import ensure_topics
from schemas.settings import Settings

pytestmark = pytest.mark.kafka

TOPIC = "risk.limits"  # a table topic of one partition


def _publish(settings: Settings, count: int, start: int = 0) -> None:
    producer = make_producer(settings)
    for n in range(start, start + count):
        producer.produce(settings.topic(TOPIC), b"%d" % n, b"k%d" % n)
    assert producer.flush(30) == 0


def _drain_until(reader: TableReader, apply: Callable[[str, bytes | None], object],
                 done: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the reader never got there"
        reader.drain(apply)
        time.sleep(0.01)


def test_current_only_once_every_partition_is_read_to_its_end(kafka_settings: Settings
                                                               ) -> None:
    ensure_topics(kafka_settings)
    _publish(kafka_settings, 3)
    got: list[bytes | None] = []
    reader = TableReader(kafka_settings, [TOPIC], {kafka_settings.topic(TOPIC): 1}, batch=1)
    try:
        assert reader.bootstrap(lambda _, v: got.append(v)) == 3
        _drain_until(reader, lambda _, v: got.append(v), lambda: reader.current)
        assert got == [b"0", b"1", b"2"]

        _publish(kafka_settings, 2, start=3)
        _drain_until(reader, lambda _, v: got.append(v), lambda: len(got) == 4)
        # one message per drain (batch=1): a message was just read, the end comes after it
        assert not reader.current
        _drain_until(reader, lambda _, v: got.append(v), lambda: reader.current)
        assert got[3:] == [b"3", b"4"]
    finally:
        reader.close()


def test_a_consumer_that_goes_back_does_not_take_the_table_back(kafka_settings: Settings
                                                                 ) -> None:
    """Should the consumer fetch from an older position again (a restarted fetch), the
    versions already applied are skipped, not applied a second time."""
    from confluent_kafka import TopicPartition

    ensure_topics(kafka_settings)
    _publish(kafka_settings, 4)
    got: list[bytes | None] = []
    full = kafka_settings.topic(TOPIC)
    reader = TableReader(kafka_settings, [TOPIC], {full: 1})
    try:
        reader.bootstrap(lambda _, v: got.append(v))
        assert got == [b"0", b"1", b"2", b"3"]
        reader._consumer.seek(TopicPartition(full, 0, 1))  # as a restarted fetch would
        _publish(kafka_settings, 1, start=4)
        _drain_until(reader, lambda _, v: got.append(v), lambda: b"4" in got)
        _drain_until(reader, lambda _, v: got.append(v), lambda: reader.current)
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        assert reader.repeats_skipped == 3
    finally:
        reader.close()


def test_an_idle_reader_rests_and_its_probes_find_what_arrived(kafka_settings: Settings
                                                                ) -> None:
    probe_ms = kafka_settings.profile_defaults.idle_probe_ms
    assert probe_ms, "the test profile pauses idle table readers"
    ensure_topics(kafka_settings)
    _publish(kafka_settings, 1)
    got: list[bytes | None] = []

    def apply(_: str, value: bytes | None) -> None:
        got.append(value)

    reader = TableReader(kafka_settings, [TOPIC], {kafka_settings.topic(TOPIC): 1})
    try:
        reader.bootstrap(apply)
        _drain_until(reader, apply, lambda: reader.current)
        reader.drain(apply)
        assert reader.resting  # read to its end: paused until the next probe

        # a probe that finds nothing clears the ends seen; the end is reported again after
        # the resume, so the reader is current and resting again (were it not, the join
        # would never see idleness)
        time.sleep(2 * probe_ms / 1000)
        reader.drain(apply)  # the probe: resumes, and pauses again once the end is back
        _drain_until(reader, apply, lambda: reader.current and reader.resting)

        # what arrives while it rests is read after the next probe
        _publish(kafka_settings, 1, start=1)
        _drain_until(reader, apply, lambda: len(got) == 2)
        _drain_until(reader, apply, lambda: reader.current and reader.resting)
        assert got == [b"0", b"1"]
    finally:
        reader.close()
