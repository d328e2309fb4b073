"""The worker runtime against the real embedded broker, compared with the in-process driver.

Every comparison is `by_key(kafka outputs) == by_key(driver outputs)`: the same outputs per
(topic, key), in order, with run-dependent fields removed, as read-committed readers see them.
Workers run in this process here; `test_runtime_cluster.py` runs them as subprocesses.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition

from consumers.runtime import Worker, WorkerConfig, WorkerError
from consumers.runtime.sink import AtLeastOnceSink
from engine.driver import Driver, by_key
from engine.processor import Output
from engine.snapshots import Snapshot, SnapshotCodec
from producers.kafka import make_consumer, make_producer
from producers.provision import ensure_topics
from schemas.common import Envelope
from schemas.control import LimitConfig
from schemas.recording import RecordedMessage
from schemas.settings import Settings
from schemas.topics import by_name
from tests.processors import (
    BIG_CAP,
    CountingProcessor,
    SymbolState,
    big_reference,
    big_stream,
    committed_offsets,
    ends_of,
    make_stream,
    produce_recording,
    read_committed,
    recording_producer,
    runtime_specs,
    wait_committed,
)
from tests.threaded_worker import Background

pytestmark = pytest.mark.kafka

CAP = 20_000
OUTPUTS = ("risk.instruments", "risk.alerts", "dlq")


def expected(stream: Sequence[RecordedMessage], processor: Any = None,
             ) -> list[tuple[str, str | None, bytes]]:
    got: list[tuple[str, str | None, bytes]] = []
    Driver(processor or CountingProcessor(), max_message_bytes=CAP).run(
        stream, on_output=lambda e: got.append((e.topic, e.key, e.value)))
    return got


def assert_same(kafka: list[tuple[str, str | None, bytes]],
                driver: list[tuple[str, str | None, bytes]]) -> None:
    got, want = by_key(kafka), by_key(driver)
    if got != want:
        diff = [k for k in sorted(set(got) | set(want), key=str) if got.get(k) != want.get(k)]
        first = diff[0]
        raise AssertionError(f"{len(diff)} (topic, key) streams differ, e.g. {first}: "
                             f"{len(got.get(first, []))} messages vs {len(want.get(first, []))}")
    assert len(kafka) == len(driver)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    s = make_settings(max_message_bytes=CAP, worker={"commit_interval_ms": 200})
    ensure_topics(s, runtime_specs())
    return s


def run_until_caught_up(processor: Any, settings: Settings, **config: Any) -> Worker:
    worker = Worker(processor, settings, WorkerConfig.from_settings(settings, processor,
                                                                    **config))
    worker.exit_when_caught_up = True
    worker.run()
    return worker


def test_one_worker_equals_the_driver_and_dead_letters_every_bad_record(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(max_message_bytes=BIG_CAP, worker={"commit_interval_ms": 200})
    ensure_topics(settings, runtime_specs())
    stream = big_stream()
    produce_recording(settings, stream)
    worker = run_until_caught_up(CountingProcessor(), settings)
    outputs = read_committed(settings, OUTPUTS)
    assert by_key(outputs) == big_reference()
    # Every bad record is in the dead-letter topic, at its place, with its kind and reason.
    letters = {(d["original_partition"], d["original_offset"]): d
               for d in (orjson.loads(v) for t, _, v in outputs if t == "dlq")}
    bad = [(m, dict(m.headers)["garbage"]) for m in stream if m.headers]
    assert len(bad) >= 400
    for m, kind in bad:
        letter = letters.pop((m.partition, m.offset))
        assert letter["error_kind"] == kind and letter["reason"]
        assert letter["original_topic"] == "market" and letter["original_key"] == m.key
    assert not letters  # and nothing else was dead-lettered
    kinds = Counter(kind for _, kind in bad)
    assert set(kinds) == {"undecodable", "invalid", "unknown_type", "too_large", "duplicate"}
    assert worker.metrics.dead_letters == kinds
    # ... and every good one was processed: one InstrumentRisk each.
    assert sum(1 for t, _, _ in outputs if t == "risk.instruments") == len(stream) - len(bad)
    assert committed_offsets(settings, worker.config.group, "market") == ends_of(stream)


def test_a_new_worker_resumes_from_the_changelog(settings: Settings) -> None:
    stream = make_stream(6000, symbols=20, garbage=0.01, seed=4, max_message_bytes=CAP)
    first, second = stream[:3500], stream[3500:]
    produce_recording(settings, first)
    one = run_until_caught_up(CountingProcessor(), settings)
    assert one.metrics.snapshots_written > 0
    produce_recording(settings, second)
    two = run_until_caught_up(CountingProcessor(), settings)
    assert two.metrics.restored_keys == 20  # every key's state came back from the changelog
    assert two.metrics.events_in == len(second)
    assert_same(read_committed(settings, OUTPUTS), expected(stream))


def test_caught_up_on_transactional_input(settings: Settings) -> None:
    """Input published in transactions ends each partition in a commit marker, one offset
    past the last message: the worker still finds itself caught up and stops."""
    from producers.kafka import make_producer

    stream = make_stream(800, symbols=10, seed=6, max_message_bytes=CAP)
    producer = make_producer(settings, transactional_id=f"{settings.topic_prefix}txn-input")
    producer.init_transactions(10)
    producer.begin_transaction()
    for m in stream:
        producer.produce(settings.topic(m.topic), m.value_bytes(), m.key, m.partition,
                         timestamp=m.timestamp)
    producer.commit_transaction(30)
    processor = CountingProcessor()
    worker = Worker(processor, settings, WorkerConfig.from_settings(settings, processor))
    worker.exit_when_caught_up = True
    background = Background(worker)
    background.thread.join(60)
    stopped_by_itself = not background.alive()
    background.stop()
    assert stopped_by_itself, "the worker never found itself caught up"
    assert worker.metrics.events_in == len(stream)
    assert_same(read_committed(settings, OUTPUTS), expected(stream))


def test_idle_input_is_paused_and_what_trickles_in_later_is_processed_once(
        settings: Settings) -> None:
    """On a profile with `idle_probe_ms` (the test one) a worker with nothing left to
    process pauses its input, so its fetcher stops asking an embedded broker for more in a
    loop, and probes it. Input that then trickles in, a few events at a time with quiet
    gaps, is all processed once: the outputs are the driver's."""
    import time

    assert settings.profile_defaults.idle_probe_ms
    stream = make_stream(2400, symbols=12, seed=8, max_message_bytes=CAP)
    produce_recording(settings, stream[:800])
    processor = CountingProcessor()
    config = WorkerConfig.from_settings(settings, processor)
    running = Background(Worker(processor, settings, config))
    try:
        wait_committed(settings, config.group, "market", ends_of(stream[:800]),
                       alive=running.alive)
        partitions = sorted(ends_of(stream))
        worker = running.worker

        def paused_after(events: int) -> None:
            deadline = time.monotonic() + 10
            # probes resume the partitions for a moment: look until they are all paused
            while worker.metrics.events_in < events or worker.idle_paused() != partitions:
                assert running.alive() and time.monotonic() < deadline, worker.idle_paused()
                time.sleep(0.001)

        paused_after(800)
        trickle = recording_producer(settings)
        for start in range(800, len(stream), 50):
            produce_recording(settings, stream[start:start + 50], trickle)
            paused_after(min(start + 50, len(stream)))  # read to their end, paused again
        wait_committed(settings, config.group, "market", ends_of(stream), alive=running.alive)
    finally:
        running.stop()
    assert running.worker.metrics.events_in == len(stream)
    assert_same(read_committed(settings, OUTPUTS), expected(stream))


def test_urgent_outputs_are_committed_without_waiting_for_the_interval(
        settings: Settings) -> None:
    """Alerts (`worker.urgent_topics`) commit their input partition's transaction at the
    end of their batch: read-committed readers get every one while the 10-minute interval
    keeps the partitions without an alert uncommitted. The final outputs are the driver's."""
    import time

    assert "risk.alerts" in settings.worker.urgent_topics
    stream = make_stream(1200, symbols=12, seed=11, max_message_bytes=CAP)
    reference = expected(stream, CountingProcessor(alert_move=0.015))
    alerts = [out for out in reference if out[0] == "risk.alerts"]
    alerting = {m.partition for m in stream if m.key in {key for _, key, _ in alerts}}
    quiet = set(ends_of(stream)) - alerting
    assert alerts and quiet  # this seed: 13 alerts from partitions 0, 1, 3, 4 and 5
    produce_recording(settings, stream)
    processor = CountingProcessor(alert_move=0.015)
    config = WorkerConfig.from_settings(settings, processor, commit_interval_ms=600_000,
                                        commit_interval_events=1_000_000)
    running = Background(Worker(processor, settings, config))
    try:
        deadline = time.monotonic() + 60
        # the last batch's urgent commit follows its processing: read until it has landed
        got = read_committed(settings, ["risk.alerts"], timeout_s=30)
        while len(got) < len(alerts) and time.monotonic() < deadline:
            assert running.alive()
            time.sleep(0.1)
            got = read_committed(settings, ["risk.alerts"], timeout_s=30)
        assert running.worker.metrics.events_in == len(stream)
        assert_same(got, alerts)
        committed = committed_offsets(settings, config.group, "market")
        assert all(committed[p] < 0 for p in quiet), committed
        assert all(committed[p] > 0 for p in alerting), committed
    finally:
        running.stop()
    assert_same(read_committed(settings, OUTPUTS), reference)


def test_snapshot_rounds_come_one_partition_at_a_time(settings: Settings) -> None:
    """Each partition has its own snapshot clock, staggered by partition number, and a worker
    that keeps up takes the round of one partition at a time in a checkpoint of its own: no
    checkpoint pickles every changed key at once (with 1,000 instruments that paused the
    worker for 100-300 ms every second). The outputs are the driver's."""
    import statistics
    import time

    from consumers.runtime.metrics import MetricsHooks

    class Rounds(MetricsHooks):
        def __init__(self) -> None:
            self.keys: list[tuple[float, int]] = []
            self.left: list[int] = []

        def checkpoint(self, seconds: float, partitions: int, keys: int) -> None:
            self.keys.append((time.monotonic(), keys))

        def unsnapshotted(self, partitions: int) -> None:
            self.left.append(partitions)

    stream = make_stream(4800, symbols=40, seed=13, max_message_bytes=CAP)
    per_partition = Counter(partition for partition, _ in {(m.partition, m.key) for m in stream})
    rounds = Rounds()
    processor = CountingProcessor()
    config = WorkerConfig.from_settings(settings, processor, commit_interval_ms=100,
                                        snapshot_interval_ms=400)
    running = Background(Worker(processor, settings, config, hooks=[rounds]))
    try:
        trickle = recording_producer(settings)
        for start in range(0, len(stream), 40):  # about 1,300 events/s: the worker keeps up
            produce_recording(settings, stream[start:start + 40], trickle)
            time.sleep(0.03)
        wait_committed(settings, config.group, "market", ends_of(stream), alive=running.alive)
        # the rounds after the last input: every checkpoint says how many are still to come
        deadline = time.monotonic() + 30
        while rounds.left[-1] and running.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rounds.left[-1] == 0 == running.worker.metrics.unsnapshotted_partitions
    finally:
        running.stop()
    assert max(rounds.left) > 0  # while input came: the partitions between their rounds
    assert_same(read_committed(settings, OUTPUTS), expected(stream))
    snapped = [(t, keys) for t, keys in rounds.keys if keys]
    settled = [keys for t, keys in snapped if t > snapped[0][0] + 1.0]  # first marks done
    assert len(settled) >= 2 * len(per_partition), settled  # every partition, round after round
    # mostly one partition's keys (a few more when the worker was briefly behind and an
    # interval checkpoint took the partitions due meanwhile), never every key at once
    assert statistics.median(settled) <= max(per_partition.values()), (settled, per_partition)
    assert max(settled) < len({m.key for m in stream}), settled


def test_snapshot_rounds_keep_to_their_grid_and_their_budget(settings: Settings) -> None:
    """Partition p's rounds fall on the snapshot interval's grid shifted by p/n of it, and a
    round that cost more than its share of `snapshot_budget` pushes the next one further
    out, still on p's grid."""
    config = WorkerConfig.from_settings(settings, CountingProcessor(), snapshot_interval_ms=800,
                                        snapshot_budget=0.1)
    worker = Worker(CountingProcessor(), settings, config)
    worker._input_partitions = 8
    epoch, every = worker._snapshot_epoch, 0.8
    now = epoch + 5.03
    dues = [worker._snapshot_due(p, now) for p in range(8)]
    assert all(now < due <= now + every for due in dues), dues
    assert sorted(round((due - epoch) % every, 6) for due in dues) == [
        round(every * p / 8, 6) for p in range(8)]
    # 40 ms for one of eight partitions is 40% of an 800 ms interval: four times the budget
    later = worker._snapshot_due(3, now, cost_s=0.04)
    assert now + 3.2 - every < later <= now + 3.2
    assert round((later - epoch) % every, 6) == round(every * 3 / 8, 6)
    assert worker._snapshot_due(3, now, cost_s=0.005) == dues[3]  # within budget: no change


def test_at_least_once_without_crashes_equals_the_driver(make_settings: Callable[..., Settings],
                                                        ) -> None:
    settings = make_settings(max_message_bytes=CAP,
                             worker={"guarantee": "at-least-once", "commit_interval_ms": 100})
    ensure_topics(settings, runtime_specs())
    stream = make_stream(8000, symbols=12, garbage=0.01, seed=8, max_message_bytes=CAP)
    produce_recording(settings, stream[:5000])
    run_until_caught_up(CountingProcessor(), settings)
    produce_recording(settings, stream[5000:])
    worker = run_until_caught_up(CountingProcessor(), settings)
    assert worker.metrics.restored_keys == 12
    assert_same(read_committed(settings, OUTPUTS), expected(stream))


class Boom:
    """Unpickling this runs code: what a forged snapshot would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.path).write_text, ("pwned",))


def test_a_forged_snapshot_is_never_unpickled(settings: Settings, tmp_path: Path) -> None:
    stream = make_stream(2000, symbols=4, seed=6)
    victim = stream[0].key
    assert victim is not None
    partition = stream[0].partition
    marker = tmp_path / "pwned"
    forger = SnapshotCodec(b"not-the-key", worker="market-worker", max_message_bytes=CAP)
    genuine = SnapshotCodec(settings.snapshot_key_bytes(), worker="market-worker",
                            max_message_bytes=CAP)
    others = sorted({m.key for m in stream if m.key and m.key != victim})
    other = others[0]
    other_part = next(m.partition for m in stream if m.key == other)
    producer = make_producer(settings)
    changelog = settings.topic("market-worker.changelog")
    for key, value in forger.encode(Snapshot(victim, pickle.dumps(Boom(str(marker))), b"",
                                             10**9, partition)):
        producer.produce(changelog, value, key, partition)
    state = pickle.dumps(SymbolState(count=1000, qty=1.0, price=100.0))
    for key, value in genuine.encode(Snapshot(other, state, b"", -1, other_part)):
        producer.produce(changelog, value, key, other_part)
    assert producer.flush(10) == 0
    produce_recording(settings, stream)
    worker = run_until_caught_up(CountingProcessor(), settings)
    assert not marker.exists()
    assert worker.metrics.snapshots_rejected == Counter({"signature": 1})
    outputs = read_committed(settings, OUTPUTS)
    alerts = [orjson.loads(v) for t, _, v in outputs if t == "risk.alerts"
              and orjson.loads(v)["reason_code"] == "SNAPSHOT_SIGNATURE_INVALID"]
    assert len(alerts) == 1 and alerts[0]["entity_kind"] == "worker"
    assert victim in alerts[0]["message"]
    seen = [orjson.loads(v)["events_seen"] for t, k, v in outputs
            if t == "risk.instruments" and k == victim]
    assert seen[0] == 1  # the forged key started cold
    seen_other = [orjson.loads(v)["events_seen"] for t, k, v in outputs
                  if t == "risk.instruments" and k == other]
    assert seen_other[0] == 1001  # the genuine snapshot was used


def test_a_fenced_producer_is_recreated_and_resumes_from_the_checkpoint(
        settings: Settings) -> None:
    stream = make_stream(12_000, symbols=16, seed=12)
    produce_recording(settings, stream[:4000])
    processor = CountingProcessor()
    config = WorkerConfig.from_settings(settings, processor)
    worker = Worker(processor, settings, config)
    running = Background(worker)
    wait_committed(settings, config.group, "market", ends_of(stream[:4000]), alive=running.alive)
    # Another producer takes the transactional id of every partition: the worker is fenced.
    base = f"{settings.topic_prefix}market-worker.{config.group}"
    intruders = []
    for p in range(8):
        intruder = make_producer(settings, transactional_id=f"{base}.p{p}")
        intruder.init_transactions(10)
        intruders.append(intruder)
    produce_recording(settings, stream[4000:])
    wait_committed(settings, config.group, "market", ends_of(stream), alive=running.alive,
                   timeout_s=90)
    running.stop()
    assert worker.metrics.recoveries["fenced"] >= 1
    assert_same(read_committed(settings, OUTPUTS), expected(stream))


def test_out_of_range_offsets_follow_the_policy(make_settings: Callable[..., Settings]) -> None:
    stream = make_stream(500, symbols=3, seed=1)
    strict = make_settings(max_message_bytes=CAP, worker={"out_of_range_policy": "fail"})
    ensure_topics(strict, runtime_specs())
    produce_recording(strict, stream)
    from producers.kafka import make_consumer

    group = f"{strict.topic_prefix}market-worker"
    from confluent_kafka import TopicPartition

    committer = make_consumer(strict, group)
    committer.commit(offsets=[TopicPartition(strict.topic("market"), p, 10**6)
                              for p in range(8)], asynchronous=False)
    committer.close()
    with pytest.raises(WorkerError, match="out_of_range_policy is 'fail'"):
        run_until_caught_up(CountingProcessor(), strict)
    lenient = strict.model_copy(update={"worker": strict.worker.model_copy(
        update={"out_of_range_policy": "earliest"})})
    worker = run_until_caught_up(CountingProcessor(), lenient)
    assert worker.metrics.recoveries["offset_out_of_range"] == 8
    assert_same(read_committed(lenient, OUTPUTS), expected(stream))


class TableAware(CountingProcessor):
    """Alerts on moves bigger than the latest `move` limit read from risk.limits."""

    tables = ("risk.limits",)

    def apply_table(self, topic: str, event: Envelope) -> Sequence[Output]:
        assert isinstance(event, LimitConfig)
        level = event.limits.get("move")
        if level is not None and level.hard is not None:
            self.alert_move = level.hard
        return []


def test_side_tables_are_read_before_any_input(settings: Settings) -> None:
    ensure_topics(settings, [by_name("risk.limits")])
    limit = LimitConfig.model_validate({
        "event_id": "lim-1", "ts_event": 1, "ts_init": 1, "source": "test", "scope": "firm:F",
        "changed_by": "risk-officer", "limits": {"move": {"soft": 0.0001, "hard": 0.0002}}})
    stream = make_stream(3000, symbols=6, seed=3)
    produce_recording(settings, [RecordedMessage.from_event("risk.limits", "firm:F", limit),
                                 *stream])
    worker = run_until_caught_up(TableAware(), settings)
    assert worker.runner.stats.table_events == 1
    reference = TableAware()
    want = expected([RecordedMessage.from_event("risk.limits", "firm:F", limit), *stream],
                    reference)
    assert reference.alert_move == 0.0002
    assert_same(read_committed(settings, OUTPUTS), want)


def test_missing_topics_are_one_readable_error(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    with pytest.raises(WorkerError, match=r"missing topics: .*market"):
        Worker(CountingProcessor(), settings).run()


def test_an_assignment_change_during_a_restore(settings: Settings) -> None:
    """A worker is still restoring a partition (its changelog ends in a transaction another
    writer left open) when a second worker joins: the restore is cancelled with the revoke,
    whoever gets the partition restores it once the changelog is readable, and nothing is
    lost or doubled."""
    import time

    stream = make_stream(8000, symbols=24, seed=14)
    produce_recording(settings, stream[:3000])
    run_until_caught_up(CountingProcessor(), settings)  # changelog now holds snapshots
    produce_recording(settings, stream[3000:])
    stuck = stream[0].partition
    blocker = make_producer(settings, transactional_id=f"{settings.topic_prefix}other-writer")
    blocker.init_transactions(10)
    blocker.begin_transaction()
    blocker.produce(settings.topic("market-worker.changelog"), b"in flight", b"x", stuck)
    assert blocker.flush(10) == 0
    processor = CountingProcessor()
    config = WorkerConfig.from_settings(settings, processor)
    first = Background(Worker(processor, settings, config))
    deadline = time.monotonic() + 30
    while first.worker.assigned().get(stuck) != "restoring" or any(
            s == "restoring" for p, s in first.worker.assigned().items() if p != stuck):
        assert first.alive() and time.monotonic() < deadline, first.worker.assigned()
        time.sleep(0.05)
    second = Background(Worker(CountingProcessor(), settings, config))
    while first.worker.metrics.rebalances < 3:  # assigned, revoked, assigned again
        assert first.alive() and second.alive() and time.monotonic() < deadline
        time.sleep(0.05)
    # Neither worker may process the stuck partition before its state is back.
    assert all(w.worker.assigned().get(stuck) in (None, "restoring") for w in (first, second))
    blocker.abort_transaction(10)  # the changelog becomes readable to the end
    wait_committed(settings, config.group, "market", ends_of(stream), alive=lambda: (
        first.alive() and second.alive()))
    first.stop()
    second.stop()
    assert_same(read_committed(settings, OUTPUTS), expected(stream))


def test_a_message_for_a_given_partition_lands_there(settings: Settings) -> None:
    """Snapshots and replay marks go to the changelog partition of their input partition,
    whatever their key hashes to (one key here, sent to all eight partitions)."""
    sink = AtLeastOnceSink(settings)
    topic = settings.topic("market-worker.changelog")
    for target in range(8):
        sink.produce(target, topic, "one-key", str(target).encode(), target)
    sink.produce(0, topic, "one-key", b"by key")
    sink.flush_outputs()
    sink.close_all()
    consumer = make_consumer(settings, None)
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                for p in range(8)]
    finally:
        consumer.close()
    assert sorted(ends) == [1] * 7 + [2]  # one each, and the keyed one where its key hashes
