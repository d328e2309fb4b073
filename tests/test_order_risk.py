"""The order risk processor end to end, without a broker: decisions, fills, limits, audit,
duplicates, snapshots and determinism.

The factories at the top are shared by the other order-risk test modules.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.envelope import comparable
from engine.limits import AUDIT_KEY_PREFIX
from engine.order_config import OrderConfig
from engine.order_risk import OrderRiskProcessor
from engine.processor import Output, Processor, TableProcessor
from schemas.codec import to_object
from schemas.common import Envelope, Side
from schemas.control import (
    LimitConfig,
    LimitLevel,
    LimitOverride,
    StateCommand,
    TradingStateCommand,
)
from schemas.orders import ExecType, ExecutionReport, OrderCancel, OrderNew, OrderReplace
from schemas.outputs import SCOPE_FIGURES, InstrumentRisk

S = 1_000_000_000
_ids = itertools.count()


def eid(prefix: str = "e") -> str:
    return f"{prefix}{next(_ids)}"


def irisk(symbol: str = "AAPL", ts: int = 0, price: float = 100.0, **kw: Any) -> InstrumentRisk:
    values: dict[str, Any] = {"vol": 0.01, "var_95": 0.02, "var_99": 0.03, "es_975": 0.03,
                              "var_method": "ewma", "adv": 1_000_000.0, "tick_size": 0.01,
                              "lot_size": 1.0}
    values.update(kw)
    return InstrumentRisk(event_id=eid("ir"), ts_event=ts, ts_init=0, source="market-worker",
                          symbol=symbol, price=price, **values)


def order(account: str = "A", symbol: str = "AAPL", ts: int = S, side: str = "buy",
          qty: float = 100, price: float | None = 100.0, cl: str | None = None,
          **kw: Any) -> OrderNew:
    if price is None:
        kw.setdefault("ord_type", "market")
    return OrderNew(event_id=eid("o"), ts_event=ts, ts_init=0, source="oms", account=account,
                    symbol=symbol, side=Side(side), qty=qty, price=price,
                    cl_ord_id=cl or eid("c"), **kw)


def replace(orig: str, account: str = "A", symbol: str = "AAPL", ts: int = S,
            side: str = "buy", qty: float = 100, price: float = 100.0,
            cl: str | None = None, **kw: Any) -> OrderReplace:
    return OrderReplace(event_id=eid("r"), ts_event=ts, ts_init=0, source="oms",
                        account=account, symbol=symbol, side=Side(side), qty=qty,
                        price=price, cl_ord_id=cl or eid("c"), orig_cl_ord_id=orig, **kw)


def cancel(orig: str, account: str = "A", symbol: str = "AAPL", ts: int = S) -> OrderCancel:
    return OrderCancel(event_id=eid("x"), ts_event=ts, ts_init=0, source="oms", account=account,
                       cl_ord_id=eid("c"), orig_cl_ord_id=orig, symbol=symbol)


def fill(cl: str, account: str = "A", symbol: str = "AAPL", ts: int = S, side: str = "buy",
         qty: float = 100, px: float = 100.0, leaves: float = 0.0,
         exec_id: str | None = None, **kw: Any) -> ExecutionReport:
    return ExecutionReport(event_id=eid("f"), ts_event=ts, ts_init=0, source="venue",
                           account=account, cl_ord_id=cl, exec_id=exec_id or eid("x"),
                           exec_type=ExecType.FILL if leaves == 0 else ExecType.PARTIAL_FILL,
                           symbol=symbol, side=Side(side), last_px=px, last_qty=qty,
                           leaves_qty=leaves, cum_qty=qty, **kw)


def limit_config(scope: str, parent: str | None = None, ts: int = 0, by: str = "alice",
                 appetite: float = 1.0, override: LimitOverride | None = None,
                 levels_map: dict[str, tuple[float | None, float | None]] | None = None,
                 **levels: tuple[float | None, float | None]) -> LimitConfig:
    levels = {**(levels_map or {}), **levels}
    return LimitConfig(event_id=eid("l"), ts_event=ts, ts_init=0, source="cli", scope=scope,
                       parent=parent, changed_by=by, risk_appetite=appetite, override=override,
                       limits={m: LimitLevel(soft=s, hard=h) for m, (s, h) in levels.items()})


def command(scope: str, what: str = "kill", ts: int = S, by: str = "ops",
            reason: str = "test") -> TradingStateCommand:
    return TradingStateCommand(event_id=eid("k"), ts_event=ts, ts_init=0, source="cli",
                               scope=scope, command=StateCommand(what), issued_by=by, reason=reason)


def of_type(outputs: Iterable[Output], type_name: str) -> list[Any]:
    return [o.value for o in outputs if o.value.type == type_name]


def decision(outputs: Sequence[Output]) -> Any:
    found = of_type(outputs, "RiskDecision")
    assert len(found) == 1, outputs
    return found[0]


def run(processor: OrderRiskProcessor, events: Iterable[Envelope]) -> list[Output]:
    out: list[Output] = []
    for ev in events:
        out.extend(processor.process(ev))
    return out


def canonical(outputs: Iterable[Output]) -> list[tuple[str, str, Any]]:
    return [(o.topic, o.key, comparable(to_object(o.value))) for o in outputs]


@pytest.fixture
def proc() -> OrderRiskProcessor:
    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 0, 100.0))
    p.process(irisk("MSFT", 0, 50.0))
    return p


# --- protocol ---------------------------------------------------------------------------------


def test_implements_the_processor_protocols(proc: OrderRiskProcessor) -> None:
    assert isinstance(proc, Processor) and isinstance(proc, TableProcessor)
    assert proc.name == "order-worker"
    assert proc.key_of(order(account="ACC-9")) == "ACC-9"
    assert proc.key_of(irisk()) is None
    assert proc.key_of(command("account:A")) is None
    assert proc.apply_table("risk.instruments", order()) == []  # wrong topic for the type


def test_every_order_new_and_replace_gets_one_decision(proc: OrderRiskProcessor) -> None:
    first = order(cl="c1")
    out = proc.process(first)
    d = decision(out)
    assert (d.decision.value, d.cl_ord_id, d.order_event_id) == ("accept", "c1", first.event_id)
    assert d.ts_event == first.ts_event and d.decision_latency_ns > 0
    out = proc.process(replace("c1", cl="c2", price=100.5, ts=2 * S))
    assert decision(out).decision.value == "accept"
    book = proc.accounts["A"].book
    assert list(book.open_orders) == ["c2"] and book.open_buy["AAPL"] == 100
    assert of_type(proc.process(cancel("c2", ts=3 * S)), "RiskDecision") == []
    assert book.open_orders == {}


def test_fat_finger_is_denied_with_reason_and_numbers(proc: OrderRiskProcessor) -> None:
    out = proc.process(order(qty=500_000, price=100.0))
    d = decision(out)
    assert d.decision.value == "deny"
    assert "MAX_ORDER_NOTIONAL" in d.reason_codes and "ADV_PARTICIPATION" in d.reason_codes
    notional = next(c for c in d.checks if c.code == "MAX_ORDER_NOTIONAL")
    assert (notional.observed, notional.limit) == (50_000_000.0, 5_000_000.0)
    breaches = of_type(out, "LimitBreach")
    assert {(b.metric, b.level.value) for b in breaches} >= {("order_notional", "hard")}
    assert proc.accounts["A"].book.open_orders == {}  # a denied order never rests


def test_missing_reference_data_fails_closed_by_default_and_open_when_configured() -> None:
    closed = OrderRiskProcessor()
    d = decision(closed.process(order(symbol="NEW")))
    assert d.decision.value == "deny" and d.reason_codes == ["MISSING_REFERENCE_DATA"]
    opened = OrderRiskProcessor(OrderConfig(fail_closed_on_missing_reference=False))
    d = decision(opened.process(order(symbol="NEW")))
    assert d.decision.value == "accept"
    assert [w.code for w in d.warnings] == ["MISSING_REFERENCE_DATA"]


def test_an_order_older_than_the_kept_history_says_so() -> None:
    """Five updates a second for two minutes: far more than the 64 versions once kept.
    An order 100 s behind (a lagging partition) still reads the version of its time; one
    older than the horizon is denied with its own code and the numbers, not as if the
    instrument had never had risk; one before the first version is MISSING_REFERENCE_DATA."""
    p = OrderRiskProcessor()
    step = S // 5
    for i in range(600):
        p.process(irisk("AAPL", 10 * S + i * step, 100.0 + i * 0.01))
    newest = 10 * S + 599 * step
    late = decision(p.process(order(ts=newest - 50 * S, price=100.0)))
    assert late.decision.value == "accept", late.checks
    expired = decision(p.process(order(ts=newest - 90 * S, price=100.0, qty=7)))
    assert expired.reason_codes == ["REFERENCE_HISTORY_EXPIRED"]
    check = expired.checks[0]
    kept = p.instruments.kept_since("AAPL")
    assert kept is not None and kept <= newest - 60 * S
    assert check.observed == pytest.approx((kept - (newest - 90 * S)) / 1e9)
    assert f"kept for AAPL (at {kept}" in check.message and "60 s" in check.message
    q = OrderRiskProcessor()
    q.process(irisk("AAPL", 10 * S, 100.0))
    assert decision(q.process(order(ts=5 * S))).reason_codes == ["MISSING_REFERENCE_DATA"]
    assert q.instruments.kept_since("AAPL") is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=80), st.integers(0, 3_000),
       st.integers(-10, 11_000))
def test_a_horizon_history_reads_like_a_full_one_inside_the_horizon(
        times: list[int], horizon: int, ts: int) -> None:
    from engine.asof import AsOfTable

    full: AsOfTable[int] = AsOfTable(max_versions=10_000)
    timed: AsOfTable[int] = AsOfTable(max_versions=10_000, horizon_ns=horizon)
    for i, t in enumerate(times):
        full.put("K", t, i)
        timed.put("K", t, i)
    newest = max(times)
    kept = timed.kept_since("K")
    if ts >= newest - horizon or kept is None:
        assert timed.as_of("K", ts) == full.as_of("K", ts)
    else:  # older than the window: found only if not dropped, and kept_since says so
        assert timed.as_of("K", ts) in (None, full.as_of("K", ts))
        assert (timed.as_of("K", ts) is None) == (ts < kept)


def test_from_settings_takes_the_fail_closed_switch() -> None:
    from schemas.settings import load_settings

    settings = load_settings(None, fail_closed_on_missing_reference=False)
    p = OrderRiskProcessor.from_settings(settings)
    assert p.config.fail_closed_on_missing_reference is False


# --- fills and account risk -------------------------------------------------------------------


def test_fills_update_positions_and_publish_account_risk(proc: OrderRiskProcessor) -> None:
    proc.process(order(cl="c1", qty=200))
    out = proc.process(fill("c1", qty=120, px=100.0, leaves=80, ts=2 * S, counterparty="BRK1"))
    risk = of_type(out, "AccountRisk")
    assert len(risk) == 1
    snap = risk[0]
    assert [(p.symbol, p.qty, p.avg_cost) for p in snap.positions] == [("AAPL", 120, 100.0)]
    assert snap.gross_exposure == pytest.approx(12_000.0)
    assert snap.open_order_notional == pytest.approx(8_000.0)
    assert snap.counterparty_exposure == {"BRK1": pytest.approx(12_000.0)}
    assert snap.var_95 == pytest.approx(12_000.0 * 0.02)
    proc.process(irisk("AAPL", 3 * S, 90.0))
    out = proc.process(fill("c1", qty=80, px=90.0, ts=4 * S))
    snap = of_type(out, "AccountRisk")[0]
    assert snap.positions[0].qty == 200
    assert snap.unrealized_pnl == pytest.approx(-1200.0)
    assert snap.day_pnl == pytest.approx(-1200.0)
    assert snap.drawdown_trailing == pytest.approx(1200.0)
    assert proc.accounts["A"].book.open_orders == {}


def test_an_account_moved_to_another_desk_withdraws_from_the_old_one_once(
        proc: OrderRiskProcessor) -> None:
    """Re-parented on risk.limits, the account's next AccountRisk sends its old desk a
    withdrawal (no figures) and its new desk the figures; the firm above both keeps getting
    them and a desk left already gets nothing more."""
    run(proc, [limit_config("desk:D", parent="firm:F"), limit_config("desk:E", parent="firm:F"),
               limit_config("account:A", parent="desk:D"), order(cl="c1", qty=10)])
    first = proc.process(fill("c1", qty=10, ts=2 * S))
    assert [(c.scope, c.withdrawn) for c in of_type(first, "ScopeContribution")] == [
        ("desk:D", False), ("firm:F", False)]
    proc.process(limit_config("account:A", parent="desk:E", ts=3 * S))
    moved = run(proc, [order(cl="c2", qty=5, ts=4 * S), fill("c2", qty=5, ts=5 * S)])
    contributions = of_type(moved, "ScopeContribution")
    assert [(c.scope, c.withdrawn) for c in contributions[:3]] == [
        ("desk:D", True), ("desk:E", False), ("firm:F", False)]
    assert {(c.scope, c.withdrawn) for c in contributions[3:]} <= {("desk:E", False),
                                                                    ("firm:F", False)}
    withdrawal, joined = contributions[0], contributions[-2]
    assert withdrawal.account == "A" and withdrawal.gross_exposure == 0.0
    assert joined.scope == "desk:E" and joined.gross_exposure == pytest.approx(1_500.0)
    assert len({c.event_id for c in contributions}) == len(contributions)
    owners = {o.key: proc.output_owner(o) for o in moved if o.topic == "risk.scope-accounts"}
    assert owners == {"desk:D": "A", "desk:E": "A", "firm:F": "A"}
    later = of_type(run(proc, [order(cl="c3", qty=5, ts=6 * S), fill("c3", qty=5, ts=7 * S)]),
                    "ScopeContribution")
    assert later and {(c.scope, c.withdrawn) for c in later} == {("desk:E", False),
                                                                  ("firm:F", False)}


_DESKS = ("desk:D1", "desk:D2", "desk:D3")


@st.composite
def _moves(draw: st.DrawFn) -> list[tuple[str, str, str | None]]:
    """Trades of accounts A and B mixed with moves: an account to another desk (or none),
    a desk to another firm (or none)."""
    steps: list[tuple[str, str, str | None]] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["trade", "trade", "account", "desk"]))
        if kind == "trade":
            steps.append(("trade", draw(st.sampled_from(["A", "B"])), None))
        elif kind == "account":
            steps.append(("account", f"account:{draw(st.sampled_from(['A', 'B']))}",
                          draw(st.sampled_from([*_DESKS, None]))))
        else:
            steps.append(("desk", draw(st.sampled_from(_DESKS)),
                          draw(st.sampled_from(["firm:F1", "firm:F2", None]))))
    return steps


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_moves())
def test_every_scope_sums_exactly_the_accounts_that_last_said_they_belong_to_it(
        steps: list[tuple[str, str, str | None]]) -> None:
    """Through both stages (order worker, then scope stage): whatever the moves, each desk
    and firm counts an account exactly when the account's latest AccountRisk named it, with
    that AccountRisk's gross exposure."""
    from engine.scope_risk import ScopeRiskProcessor

    orders, scopes = OrderRiskProcessor(), ScopeRiskProcessor()
    orders.process(irisk("AAPL", 0, 100.0))
    named: dict[str, tuple[set[str], float]] = {}  # account -> (its scopes, gross exposure)
    for i, (kind, who, parent) in enumerate(steps):
        ts = (i + 1) * S
        if kind != "trade":
            orders.process(limit_config(who, parent=parent, ts=ts))
            continue
        out = run(orders, [order(who, cl=f"c{i}", qty=1, ts=ts),
                           fill(f"c{i}", who, qty=1, ts=ts + 1)])
        for c in of_type(out, "ScopeContribution"):
            scopes.process(c)
        risk = of_type(out, "AccountRisk")[-1]
        named[who] = ({f"desk:{risk.desk}"} if risk.desk else set()) | (
            {f"firm:{risk.firm}"} if risk.firm else set()), risk.gross_exposure
    for scope, agg in scopes.scopes.items():
        members = {a for a, m in agg.members.items() if not m.withdrawn}
        assert members == {a for a, (where, _) in named.items() if scope in where}, scope
        assert agg.totals[SCOPE_FIGURES.index("gross_exposure")] == pytest.approx(
            sum(named[a][1] for a in members))
    for account, (where, _) in named.items():
        assert where <= scopes.scopes.keys(), account


def test_duplicate_execution_reports_change_nothing(proc: OrderRiskProcessor) -> None:
    proc.process(order(cl="c1", qty=100))
    first = fill("c1", qty=50, leaves=50, exec_id="X-1", ts=2 * S)
    proc.process(first)
    before = proc.snapshot("A")
    again = fill("c1", qty=50, leaves=50, exec_id="X-1", ts=3 * S)  # same exec, new event id
    assert proc.process(again) == []
    assert proc.snapshot("A") == before
    assert proc.accounts["A"].book.positions["AAPL"].qty == 50


def test_duplicate_order_event_is_decided_once(proc: OrderRiskProcessor) -> None:
    ev = order(cl="c1")
    assert decision(proc.process(ev)).decision.value == "accept"
    assert proc.process(ev) == []


def test_market_orders_use_the_reference_price_for_notional(proc: OrderRiskProcessor) -> None:
    d = decision(proc.process(order(price=None, qty=60_000)))
    check = next(c for c in d.checks if c.code == "MAX_ORDER_NOTIONAL")
    assert check.observed == pytest.approx(6_000_000.0)


# --- limits -----------------------------------------------------------------------------------


def test_a_limit_change_applies_to_the_next_order_and_is_audited(
        proc: OrderRiskProcessor) -> None:
    assert decision(proc.process(order(qty=300))).decision.value == "accept"
    change = limit_config("account:A", order_notional=(None, 20_000.0))
    out = proc.process(change)
    assert len(out) == 1
    audit = out[0]
    echo: Any = audit.value
    assert audit.topic == "risk.limits" and audit.key.startswith(AUDIT_KEY_PREFIX)
    assert echo.changed_by == "alice" and echo.source == "order-worker"
    assert echo.limits == change.limits
    d = decision(proc.process(order(qty=300, ts=2 * S)))
    assert d.decision.value == "deny" and d.reason_codes == ["MAX_ORDER_NOTIONAL"]
    assert proc.process(audit.value) == []  # our own echo read back changes nothing
    assert proc.process(change) == []  # a repeat is not a change: no second audit record


def test_rejected_limit_change_raises_an_alert_and_changes_nothing(
        proc: OrderRiskProcessor) -> None:
    bad = limit_config("account:A", by="  ", order_notional=(None, 1.0))
    out = proc.process(bad)
    alerts = of_type(out, "RiskAlert")
    assert [a.reason_code for a in alerts] == ["LIMIT_CHANGE_REJECTED"]
    assert "changed_by" in alerts[0].message
    assert proc.limits.get("account:A") is None
    assert decision(proc.process(order(qty=10))).decision.value == "accept"


def test_override_applies_until_expiry_in_event_time(proc: OrderRiskProcessor) -> None:
    proc.process(limit_config("account:A", order_notional=(None, 10_000.0)))
    ov = LimitOverride(limits={"order_notional": LimitLevel(hard=50_000.0)}, approver="bob",
                       expires_ts=10 * S, reason="rebalance")
    proc.process(limit_config("account:A", order_notional=(None, 10_000.0), override=ov))
    assert decision(proc.process(order(qty=300, ts=5 * S))).decision.value == "accept"
    late = decision(proc.process(order(qty=300, ts=11 * S, price=100.01)))
    assert late.decision.value == "deny" and "MAX_ORDER_NOTIONAL" in late.reason_codes


def test_personal_unusual_order_raises_an_alert(proc: OrderRiskProcessor) -> None:
    for i in range(40):
        proc.process(order(qty=100 + i % 5, ts=(i + 1) * S, price=100.0 + (i % 3) * 0.01))
    out = proc.process(order(qty=20_000, ts=50 * S))
    alerts = of_type(out, "RiskAlert")
    assert [a.reason_code for a in alerts] == ["ORDER_UNUSUAL"]
    assert alerts[0].features and alerts[0].features[0].name in ("size", "size_adv")
    d = decision(out)  # the default personal action denies (a fat finger)
    personal = [c for c in d.checks if c.code == "PERSONAL_THRESHOLD"]
    assert personal and personal[0].limit <= 5_000_000.0
    assert d.decision.value == "deny" and "PERSONAL_THRESHOLD" in d.reason_codes


# --- no lookahead -----------------------------------------------------------------------------


def test_orders_read_instrument_risk_as_of_their_event_time() -> None:
    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 1 * S, 100.0))
    p.process(irisk("AAPL", 10 * S, 200.0))  # arrives before the earlier order below
    d = decision(p.process(order(ts=5 * S, price=100.0)))
    assert d.decision.value == "accept"  # the 200 price is in the order's future
    late = decision(p.process(order(ts=11 * S, price=100.0, account="B")))
    assert "PRICE_COLLAR" in late.reason_codes
    assert p.instrument_watermark("AAPL") == 10 * S
    as_of = p.instrument_as_of("AAPL", 5 * S)
    assert as_of is not None and as_of.price == 100.0


# --- state: snapshot, restore, evict, determinism ---------------------------------------------


def _stream() -> list[Envelope]:
    evs: list[Envelope] = [irisk("AAPL", 0, 100.0), irisk("MSFT", 0, 50.0),
                           limit_config("account:A", parent="desk:D", day_loss=(500.0, 900.0)),
                           limit_config("desk:D", parent="firm:F")]
    ts = S
    for i in range(30):
        ts += S
        sym = "AAPL" if i % 2 else "MSFT"
        px = 100.0 - i * 0.5 if sym == "AAPL" else 50.0
        evs.append(irisk(sym, ts - 1, px))
        cl = f"c{i}"
        evs.append(order(cl=cl, symbol=sym, ts=ts, qty=50, price=round(px, 2)))
        evs.append(fill(cl, symbol=sym, ts=ts + 1, qty=50, px=round(px, 2)))
        if i == 20:
            evs.append(command("account:A", "kill", ts=ts + 2))
        if i == 25:
            evs.append(command("account:A", "enable", ts=ts + 2))
    return evs


def test_same_input_gives_the_same_outputs() -> None:
    events = _stream()
    a = canonical(run(OrderRiskProcessor(), events))
    b = canonical(run(OrderRiskProcessor(), events))
    assert a == b
    types = {t[2]["type"] for t in a}
    assert {"RiskDecision", "AccountRisk", "TradingStateChanged", "MassCancel"} <= types


def test_snapshot_and_restore_continue_exactly() -> None:
    events = _stream()
    reference = OrderRiskProcessor()
    expected = canonical(run(reference, events))
    cut = len(events) // 2
    first = OrderRiskProcessor()
    out = run(first, events[:cut])
    dirty = first.dirty_keys()
    assert dirty == {"A"} and first.dirty_keys() == set()
    blob = first.snapshot("A")
    assert blob is not None
    second = OrderRiskProcessor()
    # tables are replicated: a new worker reads them again; then the account's snapshot
    for ev in events[:cut]:
        if second.key_of(ev) is None:
            second.process(ev)
    second.restore("A", blob)
    out += run(second, events[cut:])
    assert canonical(out) == expected


def test_evict_and_tombstone_restore_forget_the_account(proc: OrderRiskProcessor) -> None:
    proc.process(order(cl="c1"))
    assert proc.snapshot("A") is not None
    proc.evict(["A"])
    assert proc.snapshot("A") is None and "A" not in proc.dirty_keys()
    proc.process(order(cl="c2", account="B"))
    proc.restore("B", None)
    assert proc.snapshot("B") is None


def test_restore_refuses_something_that_is_not_an_account_state(
        proc: OrderRiskProcessor) -> None:
    import pickle

    with pytest.raises(ValueError, match="not AccountState v1"):
        proc.restore("A", pickle.dumps({"not": "state"}))


def test_snapshots_stay_small() -> None:
    p = OrderRiskProcessor()
    run(p, _stream())
    for i in range(3000):
        p.process(fill("zz", ts=100 * S + i, qty=1, exec_id=f"E{i}"))
    size = len(p.snapshot("A") or b"")
    assert size < 200_000, size


def test_output_owner_names_the_account_or_none(proc: OrderRiskProcessor) -> None:
    proc.process(order(cl="c1"))
    outs = list(proc.process(command("account:A")))
    outs += proc.process(command("instrument:AAPL", ts=2 * S))
    outs += proc.process(limit_config("firm:F", order_qty=(None, 1e6)))
    owners = {(o.value.type, proc.output_owner(o)) for o in outs}
    assert ("TradingStateChanged", "A") in owners and ("MassCancel", "A") in owners
    assert ("TradingStateChanged", None) in owners and ("LimitConfig", None) in owners


def test_a_command_delivered_twice_acts_once(proc: OrderRiskProcessor) -> None:
    """`streamrisk kill` publishes without idempotence (producers.kafka.command_producer): a
    retried copy carries the same event id and must change nothing."""
    proc.process(order(cl="c1"))
    kill = command("account:A", ts=2 * S)
    first = proc.process(kill)
    assert {o.value.type for o in first} >= {"TradingStateChanged", "MassCancel"}
    assert proc.process(kill) == []
    assert proc.accounts["A"].machine.state.value == "halted"


# --- property: the gate is what the decision says ---------------------------------------------


_sides = st.sampled_from(["buy", "sell"])


@st.composite
def _episodes(draw: st.DrawFn) -> list[Envelope]:
    """Random order flow for one account against random limits."""
    notional_hard = draw(st.floats(1_000, 200_000))
    gross_hard = draw(st.floats(5_000, 400_000))
    rate_hard = draw(st.integers(2, 20))
    events: list[Envelope] = [
        irisk("AAPL", 0, 100.0), irisk("MSFT", 0, 50.0),
        limit_config("account:A", parent="desk:D", order_notional=(None, notional_hard),
                     gross_exposure=(None, gross_hard), order_rate=(None, float(rate_hard)),
                     day_loss=(2_000.0, 6_000.0)),
    ]
    ts = S
    open_ids: list[str] = []
    for i in range(draw(st.integers(5, 40))):
        ts += draw(st.integers(1, 2 * S))
        kind = draw(st.sampled_from(["new", "new", "new", "fill", "cancel", "px", "kill"]))
        sym = draw(st.sampled_from(["AAPL", "MSFT"]))
        if kind == "new":
            cl = f"c{i}"
            ref = 100.0 if sym == "AAPL" else 50.0
            events.append(order(cl=cl, symbol=sym, side=draw(_sides), ts=ts,
                                qty=float(draw(st.integers(1, 3000))),
                                price=round(ref * draw(st.floats(0.9, 1.1)), 2)))
            open_ids.append(cl)
        elif kind == "fill" and open_ids:
            cl = draw(st.sampled_from(open_ids))
            events.append(fill(cl, symbol=sym, side=draw(_sides), ts=ts,
                               qty=float(draw(st.integers(1, 500))), px=100.0))
        elif kind == "cancel" and open_ids:
            events.append(cancel(draw(st.sampled_from(open_ids)), ts=ts))
        elif kind == "px":
            events.append(irisk(sym, ts, draw(st.floats(40.0, 120.0))))
        elif kind == "kill" and draw(st.booleans()):
            events.append(command("account:A", draw(st.sampled_from(["kill", "enable"])), ts=ts))
    return events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_episodes())
def test_no_denied_order_is_ever_accepted(events: list[Envelope]) -> None:
    p = OrderRiskProcessor()
    for ev in events:
        before_open = set(p.accounts["A"].book.open_orders) if "A" in p.accounts else set()
        state = p.accounts["A"].machine.state.value if "A" in p.accounts else "active"
        out = p.process(ev)
        for d in of_type(out, "RiskDecision"):
            # accept exactly when no check failed; a deny always says why
            assert (d.decision.value == "accept") == (not d.checks)
            assert (d.decision.value == "deny") == bool(d.reason_codes)
            assert sorted(d.reason_codes) == sorted({c.code for c in d.checks})
            open_now = set(p.accounts["A"].book.open_orders)
            if d.decision.value == "deny":
                assert d.cl_ord_id not in open_now - before_open
            else:
                assert state != "halted"
                assert d.cl_ord_id in open_now
                lim = p.limits.resolve("order_notional",
                                       p.limits.order_scopes("A", d.strategy, d.symbol),
                                       d.ts_event)
                ev_notional = ev.qty * ev.price  # type: ignore[attr-defined]
                assert lim.hard is None or ev_notional <= lim.hard * (1 + 1e-9)


# --- property: marks are the instrument prices as of each account event -----------------------


@st.composite
def _interleavings(draw: st.DrawFn) -> list[Envelope]:
    events: list[Envelope] = []
    for i in range(draw(st.integers(5, 60))):
        ts = draw(st.integers(1, 100)) * S  # table and orders out of order on purpose
        sym = draw(st.sampled_from(["AAPL", "MSFT", "IBM"]))
        kind = draw(st.sampled_from(["ir", "ir", "order", "fill"]))
        if kind == "ir":
            events.append(irisk(sym, ts, draw(st.floats(50.0, 150.0))))
        elif kind == "order":
            events.append(order(cl=f"c{i}", symbol=sym, ts=ts, qty=10, price=100.0,
                                side=draw(_sides)))
        else:
            events.append(fill(f"c{i}", symbol=sym, ts=ts, qty=10, px=100.0,
                               side=draw(_sides)))
    return events


@settings(max_examples=80, deadline=None)
@given(_interleavings())
def test_marks_are_instrument_prices_as_of_the_account_event(events: list[Envelope]) -> None:
    p = OrderRiskProcessor(OrderConfig(fail_closed_on_missing_reference=False))
    for ev in events:
        p.process(ev)
        if p.key_of(ev) is None:
            continue
        book = p.accounts["A"].book
        for symbol in book.symbols():
            ref = p.instrument_as_of(symbol, ev.ts_event)
            if ref is not None:
                assert book.marks[symbol] == ref.price, (symbol, ev.ts_event)
