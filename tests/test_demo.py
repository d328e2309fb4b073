"""`streamrisk demo`: its pieces without a broker (plan, live state, feed rules, view,
scoring), then end to end on the embedded broker it starts itself and on a given cluster;
it always cleans up after itself."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from consumers.cli.app import main
from consumers.demo.feed import MAX_LAG, Feed
from consumers.demo.live import LiveState
from consumers.demo.plan import (
    MAX_SPEED,
    MIN_SPEED,
    DemoPlan,
    live_speed,
    scenario_names,
    warmup_end_ns,
)
from consumers.demo.summary import score
from consumers.demo.view import DemoView, PlainCursor, RunStatus, new_items, plain_line
from producers.simulator import SCENARIOS, Label, SimEvent
from schemas.common import Side
from schemas.market import Quote
from schemas.orders import OrderNew
from schemas.recording import read_recording
from schemas.settings import Settings
from tests.test_broker import noida_alive

NS = 1_000_000_000

# --- pieces, no broker ------------------------------------------------------------------------


def test_plan_covers_every_scenario_and_warms_up_before_the_first() -> None:
    plan = DemoPlan(seed=7, duration_s=20.0, scenarios=(), start_ns=1_800_000_000 * NS)
    assert plan.chosen == tuple(SCENARIOS) == scenario_names()
    sim = plan.simulation()
    labels = sim.planned_labels()
    assert {lb.scenario for lb in labels} == set(SCENARIOS)
    warm_end = warmup_end_ns(sim)
    assert plan.start_ns < warm_end < min(lb.start_ts for lb in labels)
    assert all(lb.end_ts <= plan.end_ns for lb in labels)
    # A name given twice is injected twice.
    twice = DemoPlan(seed=7, duration_s=20.0, scenarios=("fat-finger", "fat-finger"),
                     start_ns=plan.start_ns).simulation()
    assert [lb.scenario for lb in twice.planned_labels()] == ["fat-finger", "fat-finger"]


def test_live_speed_ends_on_time_within_bounds() -> None:
    assert live_speed(300.0, 30.0) == 10.0
    assert live_speed(300.0, 0.0) == MAX_SPEED  # already late: as fast as allowed
    assert live_speed(1.0, 100.0) == MIN_SPEED


def _alert(ts: int, code: str, entity: str, severity: str = "critical",
           kind: str = "instrument") -> dict[str, object]:
    return {"ts_event": ts, "reason_code": code, "severity": severity, "entity": entity,
            "entity_kind": kind, "observed": 9.0, "threshold": 6.0, "message": f"{code} msg",
            "source": "market-worker", "event_id": f"{code}-{ts}"}


def _fill(state: LiveState) -> None:
    state.apply("risk.alerts", _alert(10 * NS, "PRICE_JUMP", "ACME"))
    state.apply("risk.alerts", _alert(11 * NS, "VAR_MODEL_RED", "market-worker/fhs/ACME",
                                      kind="model"))
    state.apply("risk.decisions", {"ts_event": 12 * NS, "decision": "deny",
                                   "account": "ACC-1", "symbol": "ACME", "cl_ord_id": "c1",
                                   "reason_codes": ["RATE_THROTTLE"],
                                   "checks": [{"code": "RATE_THROTTLE", "observed": 101.0,
                                               "limit": 100.0}]})
    state.apply("risk.decisions", {"ts_event": 12 * NS, "decision": "accept",
                                   "account": "ACC-2", "reason_codes": []})
    state.apply("risk.breaches", {"ts_event": 13 * NS, "account": "ACC-1",
                                  "scope": "account:ACC-1", "metric": "order_rate",
                                  "level": "hard", "observed": 101.0, "limit": 100.0})
    state.apply("risk.states", {"ts_event": 14 * NS, "scope": "strategy:ACC-1/momo",
                                "from_state": "active", "to_state": "halted",
                                "cause": "throttle_hits 101 above halt level 100"})
    state.apply("risk.accounts", {"ts_event": 14 * NS, "account": "ACC-2",
                                  "trading_state": "active", "day_pnl": -1234.5,
                                  "gross_exposure": 2.5e6, "positions": [{}, {}]})
    state.apply("risk.instruments", {"ts_event": 15 * NS, "symbol": "ACME", "price": 10.0})
    state.count("risk.model-health", 3)


def test_live_state_counts_and_signals() -> None:
    state = LiveState()
    _fill(state)
    snap = state.snapshot()
    assert snap.alerts_by_reason == {"PRICE_JUMP": 1, "VAR_MODEL_RED": 1}
    assert (snap.accepted, snap.denied) == (1, 1)
    assert snap.states["strategy:ACC-1/momo"].state == "halted"
    assert snap.outputs["risk.model-health"] == 3
    assert state.instrument_mark("ACME") == 15 * NS and state.instrument_mark("X") is None
    # Model alerts count for their instrument; strategies for their account.
    assert [(s.kind, s.entity, s.code) for s in snap.signals] == [
        ("alert", "ACME", "PRICE_JUMP"), ("alert", "ACME", "VAR_MODEL_RED"),
        ("denial", "ACC-1", "RATE_THROTTLE"), ("breach", "ACC-1", "ORDER_RATE hard"),
        ("state", "ACC-1", "HALTED")]
    assert snap.market_alert_ids == {"PRICE_JUMP-10000000000", "VAR_MODEL_RED-11000000000"}
    assert state.snapshot(full=False).signals == []


def test_scoring_counts_the_first_signal_in_the_window_plus_grace() -> None:
    state = LiveState()
    _fill(state)
    labels = [Label("price-spike", "ACME", 9 * NS, 10 * NS),
              Label("runaway-algo", "ACC-1", 11 * NS, 11 * NS),  # breach 2 s later: grace
              Label("fat-finger", "ACC-2", 1 * NS, 2 * NS)]  # nothing about ACC-2
    result = score(state.snapshot().signals, labels, {"ACME", "ACC-1", "ACC-2"}, 5 * NS)
    rows = {row["scenario"]: row for row in result.labels}
    assert rows["price-spike"]["detected"] and rows["price-spike"]["delay_s"] == 1.0
    assert rows["runaway-algo"]["first_reason"] == "denial RATE_THROTTLE"
    assert not rows["fat-finger"]["detected"]
    assert result.detected == 2
    assert result.alert_overall["alerts"] == 2  # alerts only: both inside price-spike + grace


def _market(ts: int, symbol: str) -> SimEvent:
    quote = Quote(event_id=f"q{ts}", ts_event=ts, ts_init=ts, source="t", symbol=symbol,
                  bid=9.9, ask=10.1, bid_size=100, ask_size=100)
    return SimEvent("market", symbol, quote)


def _order(ts: int, symbol: str) -> SimEvent:
    order = OrderNew(event_id=f"o{ts}", ts_event=ts, ts_init=ts, source="t", account="ACC-1",
                     symbol=symbol, side=Side.BUY, qty=10, price=10.0, cl_ord_id=f"c{ts}")
    return SimEvent("orders", "ACC-1", order)


class Harness:
    """A feed whose 'market worker' processes every published market event at once."""

    def __init__(self, lag_calls: int = 0, hold_max_wait_s: float = 60.0) -> None:
        self.sent: list[tuple[str, int]] = []
        self.marks: dict[str, int] = {}
        self.lag_calls = 0
        self.lag_until = lag_calls
        self.first_sent_at_call: int | None = None
        self.feed = Feed(publish=self.publish, mark=self.marks.get, lags=self.lags,
                         tick=lambda: None, stopped=lambda: False, deadline=0.0, status=None,
                         idle=lambda s: None, hold_max_wait_s=hold_max_wait_s)

    def publish(self, topic: str, key: str | None, value: bytes, ts_ms: int) -> None:
        if self.first_sent_at_call is None:
            self.first_sent_at_call = self.lag_calls
        self.sent.append((topic, ts_ms))
        if topic == "market":
            self.marks[key or ""] = max(self.marks.get(key or "", 0), ts_ms * 1_000_000)

    def lags(self) -> dict[str, int]:
        self.lag_calls += 1
        behind = self.lag_calls <= self.lag_until
        return {"market-worker": MAX_LAG["market-worker"] + 1 if behind else 0,
                "order-worker": 0}

    def run(self, events: list[SimEvent]) -> list[tuple[str, int]]:
        self.feed.run(events, warm_end_ns=2**62, end_ns=0)
        return self.sent


def test_orders_wait_for_their_instruments_risk() -> None:
    h = Harness()
    sent = h.run([_market(1 * NS, "ACME"), _order(2 * NS, "ACME"), _order(3 * NS, "BOLT"),
                  _market(4 * NS, "ACME"), _market(5 * NS, "BOLT")])
    # The ACME order goes once ACME's risk is past its time; the BOLT order behind it (FIFO)
    # once BOLT's is.
    assert sent == [("market", 1000), ("market", 4000), ("orders", 2000),
                    ("market", 5000), ("orders", 3000)]
    assert h.feed.stats()["orders_aligned"] == 2


def test_orders_of_a_quiet_instrument_go_after_the_wait() -> None:
    h = Harness(hold_max_wait_s=0.0)
    sent = h.run([_market(1 * NS, "ACME"), _order(2 * NS, "QUIET")])
    assert sent == [("market", 1000), ("orders", 2000)]
    assert h.feed.stats()["orders_by_timeout"] == 1


def test_publishing_waits_for_a_worker_that_is_behind() -> None:
    h = Harness(lag_calls=5)
    h.run([_market(1 * NS, "ACME"), _market(2 * NS, "ACME")])
    assert h.first_sent_at_call is not None and h.first_sent_at_call > 5


def _status() -> RunStatus:
    return RunStatus(broker="embedded broker 127.0.0.1:9092", prefix="streamrisk.", seed=7,
                     scenarios="all 12 scenarios", run_dir="run", began=0.0, deadline=60.0,
                     sim_start_ns=0, sim_end_ns=100 * NS, phase="live", speed=7.0,
                     published=1234, sim_now_ns=50 * NS,
                     progress={"market-worker": (900, 1000), "order-worker": (200, 234)})


@pytest.mark.parametrize(("width", "height", "panels"), [
    (80, 24, ("Alerts",)),  # a small terminal: the alerts only
    (100, 40, ("Alerts", "Pre-trade decisions", "Trading states", "Limit breaches")),
    (160, 45, ("Alerts", "Pre-trade decisions", "Trading states", "Limit breaches")),
])
def test_live_view_fits_the_terminal(width: int, height: int, panels: tuple[str, ...]) -> None:
    state = LiveState()
    _fill(state)
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None,
                      legacy_windows=False)
    console.print(DemoView(_status(), lambda: state.snapshot(full=False)))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    lines = text.splitlines()
    assert len(lines) < height and max(len(line) for line in lines) <= width
    for title in ("streamrisk demo", "LIVE x7", "market time 00:00:50 UTC", "Throughput",
                  "market-worker 900/1,000 (lag 100)", *panels):
        assert title in text, title
    for cell in ("PRICE_JUMP", "ACME (fhs)", "9 vs 6"):
        assert cell in text, cell
    if len(panels) == 4:
        for cell in ("RATE_THROTTLE (101 vs 100)", "HALTED", "strategy:ACC-1/momo",
                     "order_rate 101 over 100", "PnL -1,234 · gross 2.5M"):
            assert cell in text, cell


def test_plain_lines_report_new_alerts_once() -> None:
    state = LiveState()
    _fill(state)
    status = _status()
    snap = state.snapshot(full=False)
    line = plain_line(status, snap)
    assert "alerts 2" in line and "decisions 2 (1 denied)" in line
    assert "lag market-worker 100, order-worker 34" in line
    cursor = PlainCursor()
    first = list(new_items(snap, cursor))
    assert any("PRICE_JUMP ACME" in item for item in first)
    assert any("HALTED" in item for item in first)
    assert list(new_items(snap, cursor)) == []


# --- end to end -------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _assert_nothing_left(run_dir: Path, workers_flags: str) -> None:
    """The children recorded in pids.json are gone (or their PID now belongs to some other
    program), and no process runs with this run's worker flags."""
    pids = json.loads((run_dir / "pids.json").read_text())
    assert {"market-worker", "order-worker"} <= set(pids), pids
    for name, pid in pids.items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ours = any(mark in cmdline for mark in (b"consumers.runtime", b"noida-db",
                                                b"PR_SET_PDEATHSIG"))
        assert not (ours and _alive(pid)), f"{name} (pid {pid}) is still running"
    assert _processes_naming(workers_flags) == []


@pytest.fixture
def clean_env() -> Iterator[dict[str, str]]:
    yield {k: v for k, v in os.environ.items() if not k.startswith("STREAMRISK_")}


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_runs_end_to_end_on_its_own_broker(tmp_path: Path,
                                                  clean_env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    # 12 s covers 84 s of market time: every scenario, a few thousand events, and on an idle
    # 2-core machine the whole run with its evaluation in well under a minute.
    result = subprocess.run([sys.executable, "-m", "consumers.cli.app", "demo",
                             "--duration", "12", "--seed", "7", "--out", str(run_dir)],
                            cwd=tmp_path, env=clean_env, capture_output=True, text=True,
                            timeout=280)
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "Traceback" not in result.stderr
    started = re.search(r"embedded broker at (127\.0\.0\.1:\d+) \(pid (\d+)\)", out)
    assert started, out
    bootstrap, broker_pid = started.group(1), int(started.group(2))
    # Alerts show while it runs (plain lines, stdout is a pipe), before the summary.
    during, _, summary = out.partition("streamrisk demo: summary")
    assert re.search(r"^    alert   (CRITICAL|WARNING) +[A-Z_]+ ", during, re.MULTILINE), out
    # The summary: events, outputs, alerts by reason code, decisions, detections, files.
    published = re.search(r"events +([\d,]+) published \(market [\d,]+, orders [\d,]+\), "
                          r"all delivered", summary)
    assert published, summary
    assert re.search(r"outputs +risk\.instruments [\d,]+", summary)
    assert "Alerts by reason code" in summary and "PRICE_JUMP" in summary
    assert re.search(r"decisions +[\d,]+: [\d,]+ accepted, [\d,]+ denied", summary)
    assert "Detections against the scenario labels" in summary
    detected = re.search(r"(\d+) of 12 injected scenarios detected", summary)
    assert detected and int(detected.group(1)) >= 6, summary
    assert re.search(r"replay check +identical: ", summary), summary
    # The files it names exist: the recording holds what was published, and the report.
    recording = run_dir / "input.jsonl.gz"
    count = sum(1 for _ in read_recording(recording))
    assert count == int(published.group(1).replace(",", ""))
    assert (run_dir / "report" / "report.html").stat().st_size > 0
    assert (run_dir / "labels.jsonl").read_text().count("\n") == 12
    assert f"./{run_dir}" in summary or str(run_dir) in summary
    # Nothing is left running: the broker, the workers.
    assert not noida_alive(broker_pid)
    assert {"broker", "broker-guard"} <= set(json.loads((run_dir / "pids.json").read_text()))
    _assert_nothing_left(run_dir, f"--bootstrap-servers {bootstrap} --topic-prefix streamrisk.")


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_on_a_given_cluster_starts_no_broker(
        tmp_path: Path, make_settings: Callable[..., Settings],
        capsys: pytest.CaptureFixture[str]) -> None:
    from producers.provision import ensure_topics

    settings = make_settings()
    assert settings.bootstrap_servers is not None
    ensure_topics(settings)  # already there: the demo creates topics idempotently
    run_dir = tmp_path / "run"
    code = main(["demo", "--duration", "5", "--seed", "3", "--scenario", "flash-crash",
                 "fat-finger", "--out", str(run_dir),
                 "--bootstrap-servers", settings.bootstrap_servers,
                 "--topic-prefix", settings.topic_prefix, "--profile", settings.profile])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (f"using the cluster at {settings.bootstrap_servers} (topic prefix "
            f"'{settings.topic_prefix}')") in out
    assert "embedded broker" not in out
    assert f"topics under '{settings.topic_prefix}': 0 created" in out
    assert re.search(r"(\d) of 2 injected scenarios detected", out), out
    assert (run_dir / "report" / "report.html").exists()
    assert "broker" not in json.loads((run_dir / "pids.json").read_text())
    _assert_nothing_left(run_dir, f"--topic-prefix {settings.topic_prefix}")


def test_unknown_scenario_is_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--scenario", "flash-crash", "no-such-scenario"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == ("streamrisk demo: error: unknown scenario "
                                    "'no-such-scenario' (known scenarios: "
                                    f"{', '.join(SCENARIOS)})")
