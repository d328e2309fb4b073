"""The market worker through the embedded broker gives exactly what `streamrisk evaluate`
gives on the same recording: with one worker, with two workers in one group, and after a
kill -9 mid-stream and a restart (DESIGN.md section 5, issue 5).

One simulated recording (`streamrisk simulate --start now`: flash crash, stale feed and
crossed quotes over enough instruments to cover most partitions) is run through
`streamrisk evaluate` once; each test replays it into the `market` topic
(`producers.replay`), runs `streamrisk worker market` as child processes
(tests.worker_harness), reads every output topic back read-committed with the recorder, and
compares with `engine.envelope.comparable` per (topic, key) in order and as a multiset per
topic. Only `ts_init` and `*_latency_ns` may differ.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from consumers.cli.app import main
from consumers.recorder import Recorder
from engine.envelope import comparable
from producers.provision import ensure_topics
from producers.publisher import Publisher
from producers.replay import RecordingFile, replay
from schemas.recording import read_recording
from schemas.settings import Settings
from schemas.topics import by_name, changelog_spec
from tests.processors import committed_total, wait_committed
from tests.worker_harness import (
    MARKET,
    WorkerProcess,
    Workers,
    group_of,
    high_watermarks,
    wait_members,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTPUTS = ("risk.instruments", "risk.alerts", "risk.model-health", "dlq")
SCENARIOS = ("flash-crash", "stale-feed", "crossed-quotes")
EVENTS = 8000
INSTRUMENTS = 20
SPEED = 20.0  # event-time pace of the live part of the kill test (~56 s of market time)

Output = tuple[str, str | None, bytes]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rec = tmp_path_factory.mktemp("sim") / "market.jsonl.zst"
    scenarios = [arg for name in SCENARIOS for arg in ("--scenario", name)]
    assert main(["simulate", "--events", str(EVENTS), "--seed", "5", "--instruments",
                 str(INSTRUMENTS), "--accounts", "0", *scenarios, "--start", "now",
                 "--out", str(rec)]) == 0
    return rec


@pytest.fixture(scope="module")
def evaluated(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Output]:
    """What `streamrisk evaluate` writes for the recording (the reference)."""
    out = tmp_path_factory.mktemp("evaluate")
    assert main(["evaluate", str(recording), "--out", str(out), "--max-plots", "0"]) == 0
    outputs = [(m.topic, m.key, m.value_bytes()) for m in read_recording(out / "outputs.jsonl")]
    # The reference is worth comparing with: every output topic of a market worker and the
    # scenarios' alerts are in it, and nothing was dead-lettered.
    topics = Counter(t for t, _, _ in outputs)
    assert topics["risk.instruments"] == EVENTS and topics["risk.model-health"] > 50
    reasons = {orjson.loads(v)["reason_code"] for t, _, v in outputs if t == "risk.alerts"}
    assert {"CROSSED_QUOTE", "STALE_FEED", "PRICE_JUMP", "VAR_MODEL_RED"} <= reasons, reasons
    assert "dlq" not in topics
    return outputs


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    s = make_settings()
    ensure_topics(s, [by_name("market"), changelog_spec("market-worker"),
                      *(by_name(t) for t in OUTPUTS)])
    return s


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    with Workers(tmp_path, target=MARKET) as workers:
        yield workers.start


def replay_into(settings: Settings, recording: Path, start: int = 0, stop: int = EVENTS,
                speed: float | None = None) -> dict[int, int]:
    """Publish messages [start, stop) of the recording to `market` (producers.replay, paced
    at `speed` times event time when given); the end offset of each partition afterwards."""
    with RecordingFile(recording) as source, Publisher(settings) as publisher:
        stats = replay(itertools.islice(source.lines(), start, stop), publisher, speed=speed)
        result = publisher.close()
    assert result.ok and stats.published == stop - start and not stats.bad, result.summary()
    ends = high_watermarks(settings, "market")
    assert sum(ends.values()) == stop
    assert len(ends) >= 6, f"{INSTRUMENTS} instruments landed on only {sorted(ends)}"
    return ends


def record_outputs(settings: Settings, out: Path, expected: int) -> list[Output]:
    """Every committed output, read back with the recorder. The workers have committed all
    input, so the outputs are all there: one more than expected, or a pause, ends it."""
    stats = Recorder(settings, OUTPUTS, out, max_events=expected + 1,
                     idle_timeout_s=1.5).run()
    assert stats.stopped_by == "idle-timeout", "more outputs than evaluate wrote"
    return [(m.topic, m.key, m.value_bytes()) for m in read_recording(out)]


def assert_same_outputs(got: Sequence[Output], want: Sequence[Output]) -> None:
    """Equal as a multiset per topic and in order per (topic, key), once run-dependent fields
    are removed (`engine.envelope.comparable`)."""
    views = []
    for items in (got, want):
        per_key: dict[tuple[str, str | None], list[bytes]] = {}
        per_topic: dict[str, Counter[bytes]] = {}
        for topic, key, value in items:
            text = orjson.dumps(comparable(orjson.loads(value)), option=orjson.OPT_SORT_KEYS)
            per_key.setdefault((topic, key), []).append(text)
            per_topic.setdefault(topic, Counter())[text] += 1
        views.append((per_key, per_topic))
    (got_keys, got_topics), (want_keys, want_topics) = views
    for topic in sorted(set(got_topics) | set(want_topics)):
        g, w = got_topics.get(topic, Counter()), want_topics.get(topic, Counter())
        missing, extra = w - g, g - w
        assert not missing and not extra, (
            f"{topic}: {sum(missing.values())} outputs missing, {sum(extra.values())} "
            f"unexpected, e.g. {next(iter(missing or extra))[:400]!r}")
    differ = [k for k in want_keys if got_keys.get(k) != want_keys[k]]
    assert not differ, f"{len(differ)} (topic, key) streams out of order, e.g. {differ[0]}"
    assert len(got) == len(want)


def test_one_worker_gives_evaluates_outputs(settings: Settings, recording: Path,
                                            evaluated: list[Output], tmp_path: Path,
                                            spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn(settings)
    ends = replay_into(settings, recording)
    wait_committed(settings, group_of(settings), "market", ends, timeout_s=120,
                   alive=worker.alive)
    assert worker.terminate() == 0
    assert worker.events_in() == EVENTS
    assert_same_outputs(record_outputs(settings, tmp_path / "out.jsonl", len(evaluated)),
                        evaluated)


def test_two_workers_in_one_group_give_evaluates_outputs(
        settings: Settings, recording: Path, evaluated: list[Output], tmp_path: Path,
        spawn: Callable[..., WorkerProcess]) -> None:
    a, b = spawn(settings), spawn(settings)
    both = lambda: a.alive() and b.alive()  # noqa: E731
    wait_members(settings, group_of(settings), 2, alive=both)
    ends = replay_into(settings, recording)
    wait_committed(settings, group_of(settings), "market", ends, timeout_s=120, alive=both)
    assert a.terminate() == 0 and b.terminate() == 0
    shares = a.events_in(), b.events_in()
    assert min(shares) > 0 and sum(shares) >= EVENTS, shares  # both did part of the work
    assert_same_outputs(record_outputs(settings, tmp_path / "out.jsonl", len(evaluated)),
                        evaluated)


def test_kill_9_mid_stream_and_restart_give_evaluates_outputs(
        settings: Settings, recording: Path, evaluated: list[Output], tmp_path: Path,
        spawn: Callable[..., WorkerProcess]) -> None:
    first = spawn(settings, "--instance-id", "m1")
    # Half the stream first and every partition checkpointed, so that when the worker dies
    # every instrument has state in the changelog that the rest of the stream builds on.
    half = EVENTS // 2
    wait_committed(settings, group_of(settings), "market",
                   replay_into(settings, recording, 0, half), timeout_s=120, alive=first.alive)
    # The rest arrives live, over a few seconds, so the kill lands with every partition
    # part-way through it and transactions open, however fast the machine.
    with ThreadPoolExecutor(1) as pool:
        rest = pool.submit(replay_into, settings, recording, half, EVENTS, SPEED)
        deadline = time.monotonic() + 120
        group = group_of(settings)
        while committed_total(settings, group) < half + EVENTS // 8:  # a few checkpoints in
            assert first.alive() and time.monotonic() < deadline
            time.sleep(0.05)
        first.kill()
        at_kill = committed_total(settings, group)
        ends = rest.result()
    assert at_kill < EVENTS, "the worker finished before it could be killed"
    restarted = spawn(settings, "--instance-id", "m1")
    wait_committed(settings, group_of(settings), "market", ends, timeout_s=120,
                   alive=restarted.alive)
    assert restarted.terminate() == 0
    assert_same_outputs(record_outputs(settings, tmp_path / "out.jsonl", len(evaluated)),
                        evaluated)
    # It resumed from the last checkpoint with every instrument's state from the changelog:
    # it read what was not committed at the kill, not the whole stream again.
    assert EVENTS - at_kill <= restarted.events_in() <= EVENTS - half
    restored = re.findall(r"stopped: .* restores \((\d+) keys\)", restarted.log.read_text())
    assert restored and int(restored[-1]) == INSTRUMENTS, restored
