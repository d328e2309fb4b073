"""The in-process two-stage pipeline (engine.pipeline): market risk feeding order risk in
event time, the reference of the Kafka order worker; and `streamrisk evaluate` on a
recording with orders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from consumers.cli.app import main
from engine.driver import Driver, Emitted, by_key
from engine.market_risk import MarketRiskProcessor
from engine.order_risk import OrderRiskProcessor
from engine.pipeline import Pipeline
from producers.simulator import SimConfig, Simulation, write_labels
from schemas.common import Side
from schemas.control import LimitConfig
from schemas.market import InstrumentPhase, InstrumentStatus, Trade
from schemas.orders import OrderNew
from schemas.recording import RecordedMessage, RecordingWriter, read_recording
from tests.order_flow import desk_day, final_day_pnl, flat

S = 1_000_000_000
T0 = 1_704_205_800 * S


def _trade(n: int, ts: int, price: float = 100.0) -> RecordedMessage:
    t = Trade(event_id=f"t{n}", ts_event=ts, ts_init=ts, source="test", seq=n, symbol="AAPL",
              price=price, qty=100.0)
    return RecordedMessage.from_event("market", "AAPL", t)


def _order(n: int, ts: int) -> RecordedMessage:
    o = OrderNew(event_id=f"o{n}", ts_event=ts, ts_init=ts, source="test", seq=n, account="A",
                 symbol="AAPL", side=Side.BUY, price=100.0, qty=10, cl_ord_id=f"c{n}")
    return RecordedMessage.from_event("orders", "A", o)


def _decisions(messages: list[RecordedMessage]) -> list[dict[str, Any]]:
    got: list[Emitted] = []
    Pipeline.default().run(messages, on_output=got.append)
    return [orjson.loads(e.value) for e in got if e.topic == "risk.decisions"]


def test_an_order_sees_instrument_risk_up_to_its_own_time_table_first() -> None:
    status = InstrumentStatus(event_id="s", ts_event=T0, ts_init=T0, source="test",
                              symbol="AAPL", status=InstrumentPhase.TRADING, tick_size=0.01,
                              lot_size=1.0)
    messages = [RecordedMessage.from_event("market", "AAPL", status),
                _order(0, T0 - 1),  # before any instrument risk: fails closed
                _trade(1, T0 + S), _order(1, T0 + S)]  # same time: the table comes first
    # the same events in another file order give the same decisions (merged in event time)
    shuffled = [messages[0], messages[2], messages[1], messages[3]]
    for stream in (messages, shuffled):
        first, second = _decisions(stream)
        assert first["cl_ord_id"] == "c0" and first["reason_codes"] == [
            "MISSING_REFERENCE_DATA"]
        assert second["cl_ord_id"] == "c1" and second["decision"] == "accept"


@pytest.fixture(scope="module")
def simulated() -> tuple[list[RecordedMessage], Any]:
    # the fat finger comes second, once the account's personal model has warmed up
    sim = Simulation(SimConfig(seed=5, instruments=3, accounts=4, duration_s=120,
                               scenarios=("duplicate-orders", "fat-finger")))
    messages = [RecordedMessage.from_event(e.topic, e.key, e.event) for e in sim]
    return messages, sim.labels()


def test_the_pipeline_is_the_two_stages_run_one_after_the_other(simulated: Any) -> None:
    messages, _ = simulated
    got: list[Emitted] = []
    result = Pipeline.default().run(messages, on_output=got.append)
    # reference: the market stage alone, then its instrument risk and the orders sorted by
    # event time (table first at equal times) through the order stage alone
    market_out: list[Emitted] = []
    Driver(MarketRiskProcessor()).run([m for m in messages if m.topic == "market"],
                                      on_output=market_out.append)
    merged = []
    for n, e in enumerate(market_out):
        if e.topic == "risk.instruments":
            value = orjson.loads(e.value)
            merged.append((value["ts_event"], 0, n, RecordedMessage(
                topic=e.topic, key=e.key, value=value)))
    for n, m in enumerate(messages):
        if m.topic == "orders":
            assert m.value is not None
            merged.append((m.value["ts_event"], 1, n, m))
    merged.sort(key=lambda item: item[:3])
    order_out: list[Emitted] = []
    Driver(OrderRiskProcessor()).run([m for *_, m in merged], on_output=order_out.append)
    expected = [(e.topic, e.key, e.value) for e in market_out + order_out]
    assert by_key((e.topic, e.key, e.value) for e in got) == by_key(expected)
    assert result.events == len(messages)
    assert result.outputs == len(got) and result.by_topic["risk.decisions"] > 0
    assert result.ignored == 0 and not result.dead_letters


def test_bad_input_of_either_stage_is_dead_lettered_and_counted(simulated: Any) -> None:
    messages, _ = simulated
    bad = [RecordedMessage.from_bytes("market", "X", b"\xffnot json"),
           RecordedMessage.from_bytes("orders", "A", b"{\"type\": \"OrderNew\"}"),
           RecordedMessage.from_bytes("risk.alerts", "X", b"{}")]
    got: list[Emitted] = []
    result = Pipeline.default().run(messages[:50] + bad, on_output=got.append)
    assert result.dead_letters == {"undecodable": 1, "invalid": 1}
    assert sum(e.topic == "dlq" for e in got) == 2 and result.ignored == 1
    assert result.events == 53


def test_evaluate_scores_decisions_breaches_and_states_against_account_labels(
        simulated: Any, tmp_path: Path) -> None:
    messages, labels = simulated
    rec, lab = tmp_path / "sim.jsonl", tmp_path / "labels.jsonl"
    with RecordingWriter(rec) as writer:
        for m in messages:
            writer.write(m)
    write_labels(lab, labels)
    out = tmp_path / "report"
    assert main(["evaluate", str(rec), "--out", str(out), "--labels", str(lab),
                 "--max-plots", "0"]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["processed"] == len(messages)
    orders = report["orders"]
    assert orders["decisions"]["accept"] > 0 and orders["decisions"]["deny"] > 0
    assert orders["deny_reasons"]["DUPLICATE_ORDER"] >= 1
    denials = orders["scoring"]["denials"]
    assert denials["scenarios"]["fat-finger"]["recall"] == 1.0
    assert denials["scenarios"]["duplicate-orders"]["recall"] == 1.0
    rows = {r["scenario"]: r for r in denials["labels"]}
    assert "PERSONAL_THRESHOLD" in rows["fat-finger"]["first_reason"]
    assert rows["duplicate-orders"]["first_reason"] == "DUPLICATE_ORDER"
    assert 0 < denials["overall"]["precision"] <= 1
    assert set(orders["scoring"]) == {"denials", "breaches", "states", "any"}
    written = {m.topic for m in read_recording(out / "outputs.jsonl")}
    assert {"risk.decisions", "risk.accounts", "risk.instruments"} <= written
    page = (out / "report.html").read_text()
    assert "Orders against labelled account scenarios" in page and "fat-finger" in page
    # the market scoring leaves account labels out
    assert report["labels"]["overall"]["labels"] == 0


# --- the third stage: desk/firm aggregation -----------------------------------------------

def _values(got: list[Emitted], topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(e.value) for e in got if e.topic == topic]


def test_desk_loss_over_accounts_moves_the_desk_and_gates_the_other_accounts() -> None:
    got: list[Emitted] = []
    result = Pipeline.default().run(flat(desk_day((1.0, 1.5))), on_output=got.append)
    assert not result.dead_letters
    assert _values(got, "risk.scope-accounts")
    states = [s for s in _values(got, "risk.states") if s["scope"] == "desk:D"]
    assert [(s["from_state"], s["to_state"], s["source"]) for s in states] == [
        ("active", "reducing", "scope-worker"), ("reducing", "halted", "scope-worker")]
    assert all(s["cause"] and s["metric"] == "day_loss" for s in states)
    desk = [r for r in _values(got, "risk.scopes") if r["scope"] == "desk:D"]
    assert desk[-1]["accounts"] == 3 and desk[-1]["trading_state"] == "halted"
    assert desk[-1]["day_pnl"] == pytest.approx(final_day_pnl((1.0, 1.5)), abs=1e-6)
    breaches = [b for b in _values(got, "risk.breaches") if b["source"] == "scope-worker"]
    assert [(b["level"], b["scope"], b["account"]) for b in breaches] == [
        ("soft", "desk:D", "A2"), ("hard", "desk:D", "A2")]
    assert result.by_topic["risk.scopes"] == len(_values(got, "risk.scopes"))
    assert result.outputs == len(got)
    assert "risk.scopes" in OrderRiskProcessor.tables
    a3 = [(d["decision"], d["reason_codes"], d["trading_state"])
          for d in _values(got, "risk.decisions") if d["account"] == "A3"]
    assert a3 == [("accept", [], "active"),
                  ("deny", ["TRADING_STATE"], "reducing"),  # a buy: the desk is reducing
                  ("accept", [], "reducing")]  # a sell reduces A3's position


def test_an_account_moved_to_another_desk_takes_its_figures_along() -> None:
    """After the losses phase desk:D reduces on A1's and A2's losses. A1 is then moved to
    desk:E on risk.limits; with its next AccountRisk desk:D drops it (A2's loss alone is
    under the soft level: desk:D recovers) and desk:E sums it."""
    phases = desk_day((1.0, 1.5), tag="mv")
    ts = T0 + 14 * S
    move = RecordedMessage.from_event("risk.limits", "account:A1", LimitConfig(
        event_id="mv-l-A1-E", ts_event=ts, ts_init=ts, source="test", scope="account:A1",
        parent="desk:E", changed_by="alice"))
    order = RecordedMessage.from_event("orders", "A1", OrderNew(
        event_id="mv-o-after", ts_event=ts + S, ts_init=ts, source="test", account="A1",
        symbol="AAPL", side=Side.SELL, price=99.0, qty=1.0, cl_ord_id="mv-c-after"))
    got: list[Emitted] = []
    result = Pipeline.default().run([*phases["setup"], *phases["losses"], move, order],
                                    on_output=got.append)
    assert not result.dead_letters
    withdrawals = [c for c in _values(got, "risk.scope-accounts") if c["withdrawn"]]
    assert [(c["scope"], c["account"]) for c in withdrawals] == [("desk:D", "A1")]
    latest = {(c["scope"], c["account"]): c for c in _values(got, "risk.scope-accounts")}
    desk_d = [r for r in _values(got, "risk.scopes") if r["scope"] == "desk:D"]
    desk_e = [r for r in _values(got, "risk.scopes") if r["scope"] == "desk:E"]
    assert desk_d[-1]["accounts"] == 2 and desk_e[-1]["accounts"] == 1
    assert desk_d[-1]["day_pnl"] == pytest.approx(
        latest[("desk:D", "A2")]["day_pnl"] + latest[("desk:D", "A3")]["day_pnl"])
    a1 = [r for r in _values(got, "risk.accounts") if r["account"] == "A1"][-1]
    assert a1["desk"] == "E" and desk_e[-1]["day_pnl"] == pytest.approx(a1["day_pnl"])
    states = [(s["from_state"], s["to_state"])
              for s in _values(got, "risk.states") if s["scope"] == "desk:D"]
    assert states == [("active", "reducing"), ("reducing", "active")]


def test_the_scope_stage_can_be_left_out() -> None:
    got: list[Emitted] = []
    Pipeline(MarketRiskProcessor(), OrderRiskProcessor(), None).run(
        flat(desk_day()), on_output=got.append)
    assert not _values(got, "risk.scopes")
    assert not [s for s in _values(got, "risk.states") if s["source"] == "scope-worker"]


def test_recorded_scope_outputs_are_not_inputs_of_the_pipeline() -> None:
    got: list[Emitted] = []
    first = Pipeline.default()
    first.run(flat(desk_day()), on_output=got.append)
    recorded = [RecordedMessage(topic=e.topic, key=e.key, value=orjson.loads(e.value))
                for e in got if e.topic in ("risk.scopes", "risk.scope-accounts")]
    again: list[Emitted] = []
    result = Pipeline.default().run(flat(desk_day()) + recorded, on_output=again.append)
    assert result.ignored == len(recorded)
    assert by_key((e.topic, e.key, e.value) for e in again) == by_key(
        (e.topic, e.key, e.value) for e in got)
