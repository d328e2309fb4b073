"""`streamrisk bench`: the suite's pieces without a broker, then its smallest configuration
end to end (own worker processes on the test broker) through the CLI. These tests check
what the benchmark reports and how, never how fast anything is."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from consumers.bench.inprocess import latency_ms, market_rates, state_size
from consumers.bench.probe import StatsFile, StatsRecorder
from consumers.bench.suite import KEYS, SMALLEST, TARGETS, verdicts
from consumers.bench.workloads import (
    balanced_partitions,
    market_events,
    market_messages,
    order_day,
    order_topic,
)
from consumers.cli.app import main
from engine.processor import Processor
from schemas.codec import decode
from schemas.common import Envelope
from schemas.market import Quote
from schemas.settings import load_settings


def test_a_timed_out_wait_names_each_process_last_line_and_keeps_its_log(
        tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    from consumers.bench.cluster import BenchError, ChildProcess, wait_for

    class Sleeper(ChildProcess):
        def __init__(self) -> None:
            self.log = tmp_path / "sleeper.log"
            self.log.write_text("starting\nassigned [0, 1]: restoring [0]\n")
            self.label = "worker sleeper"
            self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    sleeper = Sleeper()
    try:
        with pytest.raises(BenchError) as raised:
            wait_for(lambda: False, 0.05, "a repetition to be committed", [sleeper])
    finally:
        sleeper.kill()
    message = str(raised.value)
    assert "\n" not in message  # one line for the CLI
    assert "waiting for a repetition to be committed" in message
    assert "worker sleeper: assigned [0, 1]: restoring [0]" in message
    kept = Path(message.rsplit("logs kept in ", 1)[1].rstrip(")"))
    assert (kept / "sleeper.log").read_text() == sleeper.log.read_text()
    shutil.rmtree(kept)


def test_cpu_meter_tells_a_process_main_thread_from_its_other_threads() -> None:
    """A child whose main thread sleeps while another thread of it computes: the meter puts
    the CPU in the process and next to nothing in its main thread (as a worker's
    librdkafka threads against its Python thread)."""
    import subprocess
    import sys

    from consumers.bench.cpu import CpuMeter

    busy = ("import sys, threading, time\n"
            "def spin():\n"
            "    end = time.process_time() + 0.4\n"
            "    while time.process_time() < end: pass\n"
            "t = threading.Thread(target=spin); t.start(); t.join()\n"
            "print('done', flush=True); sys.stdin.read()\n")  # alive until told
    child = subprocess.Popen([sys.executable, "-c", busy], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        with CpuMeter({"child": [child.pid], "gone": [2 ** 22 + 7]},
                      main_thread_of=("child",)) as meter:
            assert child.stdout.readline() == "done\n"
    finally:
        child.stdin.close()
        child.wait(30)
    assert meter.seconds["child"] >= 0.3
    assert meter.seconds["child main thread"] < 0.25 * meter.seconds["child"]
    assert meter.seconds["gone"] == 0.0  # no such process: nothing, not an error
    assert meter.per_event_us(1000)["child"] == pytest.approx(meter.seconds["child"] * 1000)
    assert meter.cores()["child"] == pytest.approx(meter.seconds["child"] / meter.wall_s)


def test_balanced_partitions_spread_the_load_and_pin_each_key() -> None:
    counts = Counter({f"K{i}": 10 + i for i in range(30)})
    where = balanced_partitions(counts, 8)
    load: Counter[int] = Counter()
    for key, n in counts.items():
        load[where[key]] += n
    assert set(where) == set(counts) and set(load) == set(range(8))
    assert max(load.values()) - min(load.values()) <= max(counts.values())


def test_market_messages_keep_each_instrument_on_one_partition() -> None:
    msgs = market_messages(400, instruments=6, seed=3)
    assert len(msgs) == 400
    seen: dict[str, int] = {}
    for m in msgs:
        assert seen.setdefault(m.key, m.partition) == m.partition
        event = decode(m.value)
        assert event.event_id == m.event_id and event.symbol == m.key  # type: ignore[attr-defined]


def test_crossed_quotes_are_injected_for_latency_probes() -> None:
    events = market_events(600, instruments=4, seed=2, crossed_every=5)
    quotes = [e for e in events if isinstance(e, Quote)]
    crossed = [q for q in quotes if q.bid > q.ask]
    assert len(crossed) == len(quotes) // 5


def test_order_day_routes_every_event_to_its_topic() -> None:
    topics = Counter(order_topic(e)[0] for e in order_day(200, 5, 4, seed=1))
    assert set(topics) == {"orders", "risk.instruments", "risk.limits"}


def test_stats_file_reads_what_the_recorder_writes(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    rec = StatsRecorder(path)
    rec.rebalance(8, 0)
    rec.restore(0.01, 3, 5)
    rec.batch(0, 0.001)  # empty batches are not recorded
    rec.batch(100, 0.02)
    rec.batch(50, 0.01)
    rec.checkpoint(0.0, 2, 7)  # spans as the worker reports them: after the batches
    rec.unsnapshotted(3)  # reported just before the checkpoint it belongs to
    rec.checkpoint(0.0, 0, 0)
    rec.rebalance(0, 8)
    rec.rebalance(4, 0)
    rec.close()
    stats = StatsFile(path)
    stats.read()
    assert stats.events == 150 and len(stats.batches) == 2
    assert stats.assigned == 4 and stats.restores[0].keys == 5
    assert stats.committed_after(stats.batches[-1].t1) == stats.checkpoints[0]
    assert [c.unsnapshotted for c in stats.checkpoints] == [0, 3]
    assert stats.started is not None and stats.stopped is not None


def test_latency_percentiles_are_medians_over_segments() -> None:
    samples = [1_000_000] * 99 + [50_000_000]  # 1 ms, and one 50 ms outlier
    result = latency_ms(samples * 2, 2)
    assert result["p50_ms"] == 1.0 and result["samples"] == 200
    assert len(result["p99_runs"]) == 2 and result["max_ms"] == 50.0


def test_in_process_run_and_state_size_on_a_tiny_stream() -> None:
    settings = load_settings(None)
    msgs = market_messages(300, instruments=3, seed=1)
    run = market_rates(settings, msgs[:100], [msgs[100:200], msgs[200:]])
    assert len(run.rates) == 2 and all(r > 0 for r in run.rates)
    assert sorted(run.runner.key_partition) == sorted({m.key for m in msgs})
    from consumers.bench.inprocess import build_processor

    size = state_size(run.runner, settings, lambda: build_processor("market", settings))
    assert size.keys == 3 and size.memory_bytes > 1000 and size.snapshot_bytes > 1000


def test_verdicts_follow_the_design_targets() -> None:
    good = {"kafka_to_inprocess_ratio": 0.9, "two_workers_speedup": 1.8,
            "alert_latency_p99_ms": 10.0, "decision_latency_p99_ms": 0.5,
            "restore_s_1000_instruments": 2.0}
    assert all(verdicts(good).values()) and set(verdicts(good)) == set(TARGETS)
    assert not verdicts({**good, "two_workers_speedup": 1.2})["two_workers_speedup"]


@pytest.mark.kafka
@pytest.mark.slow
def test_smallest_suite_through_the_cli_writes_every_key(kafka_bootstrap: str,
                                                         topic_prefix: str,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "--smallest", "--json", str(out), "--bootstrap-servers",
                 kafka_bootstrap, "--topic-prefix", topic_prefix, "--profile", "test"])
    assert code == 0
    result = orjson.loads(out.read_bytes())
    assert list(result)[:len(KEYS)] == list(KEYS)
    for key in KEYS:
        value = result[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert math.isfinite(value) and value > 0, (key, value)
    assert result["alert_latency_p50_ms"] <= result["alert_latency_p99_ms"]
    assert result["decision_latency_p50_ms"] <= result["decision_latency_p99_ms"]
    assert result["kafka_to_inprocess_ratio"] == pytest.approx(
        result["kafka_events_per_s"] / result["inprocess_events_per_s"])
    scaling = result["scaling"]
    assert [p["keys"] for p in scaling["instruments"]] == list(SMALLEST.scaling_instruments)
    assert [p["keys"] for p in scaling["accounts"]] == list(SMALLEST.scaling_accounts)
    for point in scaling["instruments"] + scaling["accounts"]:
        assert point["events_per_s"] > 0 and point["memory_bytes_per_key"] > 0
    details = result["details"]
    assert len(details["kafka_x1"]["rates"]) == SMALLEST.reps
    assert len(details["kafka_x2"]["rates"]) == SMALLEST.reps
    # two workers really shared the partitions
    assert all(min(counts) > 0 for counts in details["kafka_x2"]["per_worker_events"])
    assert len(details["restore"]["seconds"]) == SMALLEST.restore_reps
    assert details["alert_latency"]["samples"] > 0
    assert details["alert_latency_wide"]["instruments"] == SMALLEST.latency_wide_instruments
    assert details["alert_latency_wide"]["samples"] > 0
    # where the CPU went: the workers' threads and the benchmark; no broker of its own here
    for step in ("one_worker", "two_workers"):
        per_event = details["cpu_per_event_us"][step]
        assert per_event["worker_main_thread"] > 0 and per_event["broker"] == 0
        assert per_event["total"] == pytest.approx(sum(
            v for k, v in per_event.items() if k != "total"))
    assert all(busy > 0 for busy in details["kafka_x2"]["cores_busy"])
    assert details["two_workers_cpu_estimate"] > 0
    assert details["alert_latency"]["cores_by_process"]["worker_main_thread"] > 0


def test_bench_refuses_a_json_path_in_a_missing_directory(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         ) -> None:
    code = main(["bench", "--smallest", "--json", str(tmp_path / "nope" / "b.json")])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]




def test_encode_writes_the_same_bytes_as_orjson_over_model_dump() -> None:
    """The codec serialises with pydantic-core (a performance change): byte for byte what
    orjson wrote before, for inputs and the engine's outputs, unicode and edge floats."""
    from schemas.codec import encode
    from schemas.common import Severity
    from schemas.outputs import FeatureContribution, RiskAlert

    settings = load_settings(None)
    from consumers.bench.inprocess import build_processor

    market = build_processor("market", settings)
    events = list(codec_samples_and_outputs(market))
    for value in (0.0, -0.0, 5e-324, 1e-7, 1e16, 1e21, 1 / 3, 1.7976931348623157e308):
        events.append(RiskAlert(
            event_id="x", ts_event=1, ts_init=2**63 - 1, source="s", reason_code="R",
            severity=Severity.INFO, entity="E", entity_kind="instrument", cause_event_id="c",
            observed=value, threshold=-value, message='σ ü \u2028 "q" \\ \n \x01 😀',
            features=[FeatureContribution(name="n", value=value, contribution=0.5)]))
    assert len({e.type for e in events}) >= 14
    for event in events:
        assert encode(event) == orjson.dumps(event.model_dump(exclude_none=True))


def codec_samples_and_outputs(market: Processor) -> list[Envelope]:
    from consumers.bench.workloads import codec_samples

    out: list[Envelope] = list(codec_samples())
    for event in market_events(400, instruments=3, seed=4, crossed_every=7):
        out.append(event)
        out.extend(o.value for o in market.process(event))
    return out


def test_sorted_window_in_arrays_keeps_values_order_and_old_snapshots() -> None:
    """The FHS window stores C doubles (a memory/snapshot change): the same quantiles as a
    plain sorted list, signed zeros kept, and windows pickled in the old layout (a deque
    and a list) still load."""
    import pickle
    import random
    from collections import deque

    from engine.models.window import SortedWindow

    rng = random.Random(5)
    values = [rng.gauss(0.0, 1.0) for _ in range(700)] + [0.0, -0.0] * 20
    window = SortedWindow(300)
    for v in values:
        window.append(v)
    recent = values[-300:]
    assert window.values() == recent
    assert list(window._sorted) == sorted(recent)
    assert [math.copysign(1, v) for v in window.values()[-4:]] == [1, -1, 1, -1]
    old = SortedWindow.__new__(SortedWindow)
    old.__dict__.update({"size": 300, "_fifo": deque(recent), "_sorted": sorted(recent)})
    loaded = pickle.loads(pickle.dumps(old))
    copy = pickle.loads(pickle.dumps(window))
    for v in values[:400]:
        for w in (window, loaded, copy):
            w.append(v)
    assert window.values() == loaded.values() == copy.values()
    for q in (0.0, 0.01, 0.05, 0.5, 1.0):
        assert window.quantile(q) == loaded.quantile(q) == copy.quantile(q)
    assert window.tail_mean(0.025) == loaded.tail_mean(0.025)


def _latency_curve() -> ModuleType:
    """benchmarks/latency_curve.py, a script rather than a package module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "latency_curve.py"
    spec = importlib.util.spec_from_file_location("latency_curve", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latency_curve_reports_the_last_rate_within_target_and_draws_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    curve = _latency_curve()

    def point(rate: float, p99: float) -> dict[str, object]:
        cores = {"worker_main_thread": rate / 5000, "worker_other_threads": 0.1,
                 "broker": 0.4, "bench": 0.3}
        return {"rate": rate, "rate_achieved": rate * 0.999, "p50_ms": p99 / 3,
                "p99_ms": p99, "worker_busy_share": rate / 4000,
                "cores_by_process": {**cores, "total": sum(cores.values())}}

    points = [point(500, 20.0), point(1000, 45.0), point(2000, 300.0), point(3000, 40.0)]
    # a rate past the first miss does not count, however it came out
    assert curve.highest_rate_within(points, 50.0) == pytest.approx(999.0)
    assert curve.highest_rate_within(points[2:], 50.0) is None
    console = Console(record=True, width=200)
    console.print(curve.table(points, 2))
    text = console.export_text()
    assert "1,998" in text and "300.0" in text and "publisher and alert reader" in text
    png = tmp_path / "curve.png"
    curve.plot(points, 2, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(SystemExit) as bad:
        curve.main(["--rates", "fast"])
    assert bad.value.code == 2
    assert "--rates: not a list of numbers" in capsys.readouterr().err
