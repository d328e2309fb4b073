"""Broker trouble: a stalled broker and a restarted broker delay a worker but lose nothing.

These tests own their broker (they freeze and restart it), so they always use an embedded
one, whatever KAFKA_BOOTSTRAP says.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumers.runtime import Worker, WorkerConfig
from engine.driver import Driver, by_key
from producers.broker import EmbeddedBroker, free_port
from producers.kafka import make_consumer, seek_when_ready
from producers.provision import ensure_topics
from schemas.settings import Settings, load_settings
from tests.processors import (
    CountingProcessor,
    committed_total,
    ends_of,
    make_stream,
    produce_recording,
    read_committed,
    runtime_specs,
    wait_committed,
)
from tests.threaded_worker import Background

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTPUTS = ("risk.instruments", "risk.alerts", "dlq")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    own = EmbeddedBroker(port=free_port(), data_dir=tmp_path / "broker")
    own.start()
    try:
        yield own
    finally:
        own.stop()


def settings_for(broker: EmbeddedBroker) -> Settings:
    # Snapshots at every checkpoint: a worker that has committed everything then writes
    # nothing more, so "restart between checkpoints" below holds (with the default interval
    # it still writes the deferred snapshot up to a second later).
    s = load_settings(None, bootstrap_servers=broker.bootstrap, topic_prefix="stall.",
                      profile="test",
                      worker={"commit_interval_ms": 200, "snapshot_interval_ms": 0})
    ensure_topics(s, runtime_specs())
    return s


def not_all_committed(settings: Settings, group: str, total: int) -> bool:
    """The trouble starts while the worker still has work in flight."""
    return committed_total(settings, group) < total


def reference(stream: list) -> dict:
    got: list = []
    Driver(CountingProcessor()).run(stream,
                                    on_output=lambda e: got.append((e.topic, e.key, e.value)))
    return by_key(got)


def half_way(settings: Settings, seed: int) -> tuple[list, WorkerConfig, Background]:
    """A 12,000-event stream whose first half a running worker has committed."""
    stream = make_stream(12_000, symbols=16, garbage=0.01, seed=seed)
    produce_recording(settings, stream[:6000])
    processor = CountingProcessor()
    config = WorkerConfig.from_settings(settings, processor)
    running = Background(Worker(processor, settings, config))
    wait_committed(settings, config.group, "market", ends_of(stream[:6000]),
                   alive=running.alive)
    return stream, config, running


def test_a_stalled_broker_only_delays(broker: EmbeddedBroker) -> None:
    settings = settings_for(broker)
    stream, config, running = half_way(settings, seed=31)
    assert broker.process is not None
    produce_recording(settings, stream[6000:])
    assert not_all_committed(settings, config.group, len(stream))
    broker.process.send_signal(signal.SIGSTOP)  # the broker freezes mid-stream
    try:
        running.thread.join(4.0)
    finally:
        broker.process.send_signal(signal.SIGCONT)
    wait_committed(settings, config.group, "market", ends_of(stream), alive=running.alive,
                   timeout_s=90)
    running.stop()
    assert by_key(read_committed(settings, OUTPUTS)) == reference(stream)


def test_a_restarted_broker_only_delays(broker: EmbeddedBroker) -> None:
    """A clean broker restart between checkpoints, on the same port and data directory.

    (A restart in the middle of a transaction is handled too: the worker drops its producers
    the moment the broker goes away. But noida-db 0.2.3 can still, now and then, keep a
    transaction that a pre-restart request re-opened hanging forever, pre-KIP-890 style, which
    blocks read-committed readers of that partition; so this test restarts between
    checkpoints, where the outcome does not depend on that broker bug.)"""
    settings = settings_for(broker)
    stream, config, running = half_way(settings, seed=32)
    port, data_dir = broker.port, broker.data_dir
    broker._own_dir = False
    broker.stop()
    running.thread.join(1.0)
    restarted = EmbeddedBroker(port=port, data_dir=data_dir)
    restarted.start()
    broker.process = restarted.process
    produce_recording(settings, stream[6000:])
    wait_committed(settings, config.group, "market", ends_of(stream), alive=running.alive,
                   timeout_s=120)
    running.stop()
    assert running.worker.metrics.rebalances >= 2  # the group was rebuilt after the restart
    assert by_key(read_committed(settings, OUTPUTS)) == reference(stream)


def test_a_seek_waits_for_the_committed_offset_fetch(broker: EmbeddedBroker) -> None:
    """Right after an assignment librdkafka refuses a seek until the group's committed offset
    has come back. A worker whose restore beats that answer (a restarted broker is slow to
    give it) keeps the partition paused and seeks again: the seek reports "not yet" instead
    of raising, and a later one lands where asked."""
    settings = settings_for(broker)
    topic = settings.topic("market")
    stream = make_stream(200, symbols=4, partitions=1, seed=33)
    produce_recording(settings, stream)
    consumer = make_consumer(settings, "seek-test")
    try:
        with committed_offset_withheld(broker, consumer, topic):
            assert not seek_when_ready(consumer, TopicPartition(topic, 0, 150))
        deadline = time.monotonic() + 30
        while not seek_when_ready(consumer, TopicPartition(topic, 0, 150)):
            assert time.monotonic() < deadline, "the partition never became seekable"
            consumer.poll(0.05)
        consumer.resume([TopicPartition(topic, 0)])
        assert first_offset_read(consumer, deadline) == 150  # not the committed offset 10
    finally:
        consumer.close()


@contextmanager
def committed_offset_withheld(broker: EmbeddedBroker, consumer: Consumer,
                              topic: str) -> Iterator[None]:
    """Partition 0 of `topic` assigned to `consumer` and paused, its group's committed offset
    10, while the broker is frozen (SIGSTOP): that offset cannot come back until the block
    ends."""
    assert broker.process is not None
    consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
    broker.process.send_signal(signal.SIGSTOP)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.pause([TopicPartition(topic, 0)])
        consumer.poll(0.2)
        yield
    finally:
        broker.process.send_signal(signal.SIGCONT)


def first_offset_read(consumer: Consumer, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            return message.offset()
    return None


def test_a_partition_long_unseekable_is_warned_about_then_activated(
        broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A restored partition whose seek librdkafka keeps refusing waits in SEEKING with its
    input paused; past `SEEKING_WARN_S` the worker says so (once per multiple), and once the
    committed offset comes back the same retry activates it where the restore left it."""
    import logging

    from consumers.runtime import worker as runtime

    monkeypatch.setattr(runtime, "SEEKING_WARN_S", 0.5)
    settings = settings_for(broker)
    topic = settings.topic("market")
    produce_recording(settings, make_stream(200, symbols=4, partitions=1, seed=34))
    processor = CountingProcessor()
    for _ in range(3):
        caplog.clear()
        worker = Worker(processor, settings, WorkerConfig.from_settings(settings, processor))
        consumer = make_consumer(settings, worker.config.group)
        worker._consumer = consumer
        state = worker._parts[0] = runtime._Partition(runtime.RESTORING, position=150)
        try:
            with (committed_offset_withheld(broker, consumer, topic),
                  caplog.at_level(logging.INFO, logger="streamrisk.runtime")):
                worker._activate(0, state)
                time.sleep(0.6)
                worker._activate(0, state)
                worker._activate(0, state)  # not again before the next multiple (1 s)
            if state.status == runtime.ACTIVE:
                # librdkafka took the seek while the broker was frozen (twice in CI under
                # load, cause unknown): the case under test did not arise, try again
                continue
            assert state.status == runtime.SEEKING and state.seek_warnings == 1
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert "partition 0: librdkafka has refused to seek" in warnings[0]
            deadline = time.monotonic() + 30
            while state.status != runtime.ACTIVE:
                assert time.monotonic() < deadline, "the partition never became seekable"
                consumer.poll(0.05)
                worker._retry_seeks()
            assert first_offset_read(consumer, deadline) == 150  # the restored position
            return
        finally:
            consumer.close()
    pytest.fail("in three tries librdkafka never refused the seek while the broker was frozen")
