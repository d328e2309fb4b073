"""Workers as separate processes: two in one group, kill -9 at random moments, a dead worker's
partitions moving to the survivor. After each scenario the read-committed outputs must equal
the in-process driver's, per (topic, key) and in order: nothing lost, nothing duplicated.

Workers run as `python -m consumers.runtime --processor tests.processors:CountingProcessor`,
exactly what `streamrisk worker --processor ...` runs.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.driver import by_key
from producers.kafka import make_admin
from producers.provision import ensure_topics
from schemas.recording import RecordedMessage
from schemas.settings import Settings
from tests.processors import (
    BIG_CAP,
    big_reference,
    big_stream,
    committed_total,
    ends_of,
    expire_dead_member,
    produce_recording,
    read_committed,
    recording_producer,
    runtime_specs,
    wait_committed,
)
from tests.worker_harness import WorkerProcess, Workers, group_of

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CAP = BIG_CAP
OUTPUTS = ("risk.instruments", "risk.alerts", "dlq")


@pytest.fixture(scope="module")
def stream() -> tuple[RecordedMessage, ...]:
    return big_stream()


@pytest.fixture(scope="module")
def reference() -> dict[tuple[str, str | None], list[object]]:
    return big_reference()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    s = make_settings(max_message_bytes=CAP)
    ensure_topics(s, runtime_specs())
    return s


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    with Workers(tmp_path) as workers:
        yield workers.start


def assert_matches(settings: Settings, reference: dict[tuple[str, str | None], list[object]],
                   ) -> None:
    got = by_key(read_committed(settings, OUTPUTS))
    differ = [k for k in set(got) | set(reference) if got.get(k) != reference.get(k)]
    assert not differ, (f"{len(differ)} (topic, key) streams differ, e.g. {differ[0]}: "
                        f"{len(got.get(differ[0], []))} vs {len(reference.get(differ[0], []))}")


def test_two_workers_in_one_group(settings: Settings, stream: tuple[RecordedMessage, ...],
                                  reference: dict[tuple[str, str | None], list[object]],
                                  spawn: Callable[..., WorkerProcess]) -> None:
    a, b = spawn(settings), spawn(settings)
    produce_recording(settings, stream)
    wait_committed(settings, group_of(settings), "market", ends_of(stream), timeout_s=120,
                   alive=lambda: a.alive() and b.alive())
    assert a.terminate() == 0 and b.terminate() == 0  # SIGTERM: final checkpoint, exit 0
    assert "stopped:" in a.log.read_text() and "stopped:" in b.log.read_text()
    assert_matches(settings, reference)
    # Both left the group on the way out.
    admin = make_admin(settings)  # keep a reference: the future dies with its client
    group = admin.describe_consumer_groups([group_of(settings)])[group_of(settings)].result(10)
    assert not group.members


def test_kill_9_at_random_moments_then_restart(settings: Settings,
                                               stream: tuple[RecordedMessage, ...],
                                               reference: dict[tuple[str, str | None],
                                                               list[object]],
                                               spawn: Callable[..., WorkerProcess]) -> None:
    rng = random.Random(7)
    produce_recording(settings, stream)
    kills = 0
    progress = []
    for _ in range(3):
        worker = spawn(settings, "--instance-id", "w1")
        time.sleep(rng.uniform(1.0, 2.5))
        worker.alive()
        worker.kill()
        kills += 1
        progress.append(committed_total(settings, group_of(settings)))
    worker = spawn(settings, "--instance-id", "w1")
    wait_committed(settings, group_of(settings), "market", ends_of(stream), timeout_s=120,
                   alive=worker.alive)
    assert worker.terminate() == 0
    assert kills == 3 and progress[-1] < len(stream)  # the kills really were mid-stream
    assert_matches(settings, reference)


def test_a_dead_workers_partitions_move_to_the_survivor(
        settings: Settings, stream: tuple[RecordedMessage, ...],
        reference: dict[tuple[str, str | None], list[object]],
        spawn: Callable[..., WorkerProcess]) -> None:
    survivor, victim = spawn(settings), spawn(settings)
    produce_recording(settings, stream[:20_000])
    ends = ends_of(stream[:20_000])
    wait_committed(settings, group_of(settings), "market", ends, timeout_s=120,
                   alive=lambda: survivor.alive() and victim.alive())
    produce_recording(settings, stream[20_000:])
    time.sleep(0.5)  # the victim dies with work in flight
    victim.kill()
    if not os.environ.get("KAFKA_BOOTSTRAP"):
        # The embedded broker never expires a silent member (real Kafka does after the
        # session timeout): play the broker's part.
        assert expire_dead_member(settings, group_of(settings), f"-{victim.process.pid}")
    wait_committed(settings, group_of(settings), "market", ends_of(stream), timeout_s=120,
                   alive=survivor.alive)
    assert survivor.terminate() == 0
    assert_matches(settings, reference)


def test_a_crash_long_after_the_last_snapshot_replays_the_input_since(
        settings: Settings, stream: tuple[RecordedMessage, ...],
        reference: dict[tuple[str, str | None], list[object]],
        spawn: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    """Offsets are committed every 200 ms but keys are snapshotted only once, at the first
    checkpoint: after a kill -9 the next worker rebuilds the state by replaying the input
    from that snapshot's mark to the committed offset, and publishes nothing twice."""
    monkeypatch.setenv("STREAMRISK_WORKER__SNAPSHOT_INTERVAL_MS", "3600000")
    produce_recording(settings, stream)
    first = spawn(settings, "--instance-id", "w1")
    deadline = time.monotonic() + 60
    while committed_total(settings, group_of(settings)) < len(stream) // 3:
        assert first.alive() and time.monotonic() < deadline
        time.sleep(0.1)
    first.kill()
    assert committed_total(settings, group_of(settings)) < len(stream)
    second = spawn(settings, "--instance-id", "w1")
    wait_committed(settings, group_of(settings), "market", ends_of(stream), timeout_s=120,
                   alive=second.alive)


def test_a_crash_after_urgent_commits_replays_from_their_marks(
        settings: Settings, stream: tuple[RecordedMessage, ...],
        reference: dict[tuple[str, str | None], list[object]],
        spawn: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 10-minute interval, the only commits are urgent ones: a batch that raised an
    alert commits its partition at once (`worker.urgent_topics`), the first time with a
    snapshot of its keys and a replay mark. Input trickles in, so the worker keeps up and
    its batches stay short. After a kill -9 the next worker restores those snapshots,
    replays from the marks, and the outputs are the in-process run's."""
    monkeypatch.setenv("STREAMRISK_WORKER__COMMIT_INTERVAL_EVENTS", "1000000")
    first = spawn(settings, "--instance-id", "w1", commit_interval_ms=600_000)
    trickle = recording_producer(settings)
    deadline = time.monotonic() + 60
    for start in range(0, 12_000, 400):
        produce_recording(settings, stream[start:start + 400], trickle)
        # the first chunk waits for a commit: the worker is up, and the rest trickles in
        # while it keeps up (a backlog would be worked through in full batches)
        while committed_total(settings, group_of(settings)) == 0:
            assert first.alive() and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.05)
    first.kill()
    produce_recording(settings, stream[12_000:], trickle)
    second = spawn(settings, "--instance-id", "w1")
    wait_committed(settings, group_of(settings), "market", ends_of(stream), timeout_s=120,
                   alive=second.alive)
    assert second.terminate() == 0
    assert "replaying input" in second.log.read_text()
    assert_matches(settings, reference)
