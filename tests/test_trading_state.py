"""The trading-state machine alone, then the scenarios it drives inside the processor:
loss spiral, runaway algorithm, kill switch and re-enable, scope kills, stale data."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.order_config import OrderConfig
from engine.order_risk import OrderRiskProcessor
from engine.processor import Output
from engine.trading_state import (
    RANK,
    CommandRejected,
    Reading,
    ScopeState,
    most_restrictive,
    validate_command,
)
from schemas.common import Envelope, TradingState
from schemas.outputs import ScopeContribution, ScopeRisk
from tests.test_order_risk import (
    S,
    command,
    decision,
    eid,
    fill,
    irisk,
    limit_config,
    of_type,
    order,
    run,
)

A, R, H = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def loss(value: float) -> list[Reading]:
    return [Reading("day_loss", value, reduce_at=100.0, halt_at=200.0),
            Reading("anomaly_score", 0.1, reduce_at=0.9)]


# --- the machine ------------------------------------------------------------------------------


def test_metrics_move_active_to_reducing_to_halted_with_causes() -> None:
    m = ScopeState("account:A")
    assert m.evaluate(loss(50.0), 1) is None
    up = m.evaluate(loss(150.0), 2)
    assert up is not None and (up.from_state, up.to_state, up.metric) == (A, R, "day_loss")
    assert (up.observed, up.threshold) == (150.0, 100.0) and "reduce level" in up.cause
    assert m.evaluate(loss(160.0), 3) is None  # still reducing: no event
    halt = m.evaluate(loss(250.0), 4)
    assert halt is not None and (halt.from_state, halt.to_state) == (R, H)
    assert m.evaluate(loss(0.0), 5) is None and m.state is H


def test_jump_straight_to_halted_and_worst_driver_wins() -> None:
    m = ScopeState("account:A")
    readings = [Reading("day_loss", 150.0, 100.0, 200.0), Reading("throttle_hits", 90.0, 5.0, 30.0)]
    tr = m.evaluate(readings, 1)
    assert tr is not None and tr.to_state is H and tr.metric == "throttle_hits"


def test_reducing_recovers_only_when_every_driver_is_back() -> None:
    m = ScopeState("account:A")
    m.evaluate(loss(150.0), 1)
    assert m.evaluate([Reading("day_loss", 50.0, 100.0, 200.0),
                       Reading("anomaly_score", 0.95, 0.9)], 2) is None
    back = m.evaluate(loss(50.0), 3)
    assert back is not None and back.to_state is A and "recovered" in back.cause
    sticky = ScopeState("account:B", auto_recover=False)
    sticky.evaluate(loss(150.0), 1)
    assert sticky.evaluate(loss(0.0), 2) is None and sticky.state is R


def test_kill_and_enable_commands() -> None:
    m = ScopeState("desk:D")
    kill = command("desk:D", "kill", ts=5, by="ops1", reason="runaway")
    tr = m.command(kill)
    assert tr is not None and (tr.to_state, tr.actor) == (H, "ops1") and "runaway" in tr.cause
    assert m.command(kill) is None  # the same command again
    older = command("desk:D", "enable", ts=4)
    assert m.command(older) is None and m.state is H  # older than the kill in force
    tr = m.command(command("desk:D", "enable", ts=6, by="ops2"))
    assert tr is not None and (tr.from_state, tr.to_state, tr.actor) == (H, A, "ops2")


def test_commands_without_an_issuer_are_rejected() -> None:
    blank = command("account:A", by=" ")
    assert "issued_by" in (validate_command(blank) or "")
    with pytest.raises(CommandRejected):
        ScopeState("account:A").command(blank)


def test_most_restrictive() -> None:
    assert most_restrictive([]) is A
    assert most_restrictive([A, H, R]) is H


_steps = st.one_of(
    st.tuples(st.just("reading"), st.floats(0.0, 400.0)),
    st.tuples(st.just("kill"), st.just(0.0)),
    st.tuples(st.just("enable"), st.just(0.0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_steps, max_size=40))
def test_never_leaves_halted_without_an_enable_command(steps: list[tuple[str, float]]) -> None:
    m = ScopeState("account:A")
    for i, (kind, value) in enumerate(steps):
        before = m.state
        if kind == "reading":
            m.evaluate(loss(value), i)
        else:
            m.command(command("account:A", kind, ts=i))
        if before is H and m.state is not H:
            assert kind == "enable"
        if kind == "kill":
            assert m.state is H
        if kind == "reading" and value > 200.0:
            assert m.state is H


def anomaly(score: float, stale: float = 0.0, recover: float | None = None) -> list[Reading]:
    return [Reading("stale_data", stale, reduce_at=0.5),
            Reading("anomaly_score", score, reduce_at=0.99, halt_at=None, recover_at=recover)]


def test_hysteresis_holds_reducing_until_calm_for_long_enough() -> None:
    plain, held = ScopeState("instrument:X"), ScopeState("instrument:X", min_reducing_ns=30 * S)
    scores = [0.995, 0.98, 0.995, 0.95, 0.992, 0.97]
    plain_moves = [plain.evaluate(anomaly(v), i * S) for i, v in enumerate(scores)]
    held_moves = [held.evaluate(anomaly(v, recover=0.9), i * S) for i, v in enumerate(scores)]
    assert sum(t is not None for t in plain_moves) == 6  # flips at every tick
    assert [t is not None for t in held_moves] == [True] + [False] * 5
    # calm (at or under 0.9) but not for long enough yet; then long enough but not calm
    assert held.evaluate(anomaly(0.9, recover=0.9), 20 * S) is None
    assert held.evaluate(anomaly(0.95, recover=0.9), 40 * S) is None
    # a driver without a recover level still needs to be under its reduce level
    assert held.evaluate(anomaly(0.5, stale=1.0, recover=0.9), 41 * S) is None
    back = held.evaluate(anomaly(0.9, recover=0.9), 42 * S)
    assert back is not None and back.to_state is A and "42 s reducing" in back.cause


_hover = st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0),
                            st.integers(0, 20 * S)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_hover, st.floats(0.0, 0.99), st.integers(0, 60 * S), st.booleans())
def test_hysteresis_never_adds_transitions_nor_loosens_the_state(
        steps: list[tuple[float, float, int]], recover: float, min_ns: int,
        can_halt: bool) -> None:
    halt = 0.999 if can_halt else None
    plain = ScopeState("instrument:X")
    held = ScopeState("instrument:X", min_reducing_ns=min_ns)
    moves = [0, 0]
    ts = 0
    for score, other, dt in steps:
        ts += dt
        readings = [Reading("anomaly_score", score, 0.99, halt),
                    Reading("spread", other, 0.8, None)]
        hyst = [Reading("anomaly_score", score, 0.99, halt, recover),
                Reading("spread", other, 0.8, None, min(recover, 0.8))]
        moves[0] += plain.evaluate(readings, ts) is not None
        moves[1] += held.evaluate(hyst, ts) is not None
        assert RANK[held.state] >= RANK[plain.state]
    assert moves[1] <= moves[0]


# --- in the processor -------------------------------------------------------------------------
# --- in the processor -------------------------------------------------------------------------


def spiral_limits() -> list[Envelope]:
    return [irisk("AAPL", 0, 100.0),
            limit_config("account:A", day_loss=(5_000.0, 12_000.0),
                         drawdown_trailing=(None, 1e9))]


def test_loss_spiral_goes_active_reducing_halted_then_only_cancels_pass() -> None:
    p = OrderRiskProcessor()
    run(p, spiral_limits())
    out: list[Output] = []
    ts, px = S, 100.0
    for i in range(12):
        ts += S
        cl = f"L{i}"
        out += p.process(order(cl=cl, ts=ts, qty=1000, price=round(px, 2)))
        out += p.process(fill(cl, ts=ts + 1, qty=1000, px=round(px, 2)))
        px *= 0.995
        p.process(irisk("AAPL", ts + 2, round(px, 2)))
    states = [(c.from_state, c.to_state) for c in of_type(out, "TradingStateChanged")]
    assert states == [(A, R), (R, H)]
    changes = of_type(out, "TradingStateChanged")
    assert changes[0].metric == "day_loss" and changes[1].metric == "day_loss"
    breaches = [(b.metric, b.level.value) for b in of_type(out, "LimitBreach")]
    assert ("day_loss", "soft") in breaches and ("day_loss", "hard") in breaches
    # halted: nothing new passes, not even an order that would reduce the position
    d = decision(p.process(order(side="sell", qty=100, ts=ts + S, price=round(px, 2))))
    assert d.decision.value == "deny" and d.reason_codes == ["TRADING_STATE"]
    assert d.trading_state is H
    # a cancel is no decision and always goes through
    p.process(order(cl="keep", ts=1, qty=1, price=99.0, account="B"))
    assert of_type(p.process(fill("nope", ts=ts + 2 * S, qty=1, exec_id="late")), "RiskDecision") \
        == []


def test_reducing_lets_only_exposure_reducing_orders_through() -> None:
    p = OrderRiskProcessor()
    run(p, [irisk("AAPL", 0, 100.0), limit_config("account:A", day_loss=(100.0, 1e9))])
    p.process(order(cl="c1", ts=S, qty=1000))
    p.process(fill("c1", ts=S + 1, qty=1000, px=100.0))
    p.process(irisk("AAPL", 2 * S, 99.0))  # 1,000 loss: above the reduce level
    out = p.process(order(side="buy", qty=10, ts=3 * S, price=99.0))
    assert decision(out).reason_codes == ["TRADING_STATE"]
    assert of_type(out, "TradingStateChanged")[0].to_state is R
    ok = decision(p.process(order(side="sell", qty=400, ts=4 * S, price=99.0)))
    assert ok.decision.value == "accept"
    too_much = decision(p.process(order(side="sell", qty=700, ts=5 * S, price=99.01)))
    assert too_much.reason_codes == ["TRADING_STATE"]  # 400 + 700 open sells > 1,000 long


def test_runaway_algorithm_is_throttled_then_halted() -> None:
    p = OrderRiskProcessor()
    run(p, [irisk("AAPL", 0, 100.0),
            limit_config("account:A", order_rate=(None, 5.0), throttle_hits=(3.0, 8.0))])
    out: list[Output] = []
    for i in range(30):
        out += p.process(order(ts=S + i * 10_000_000, qty=1 + i, price=100.0))
    decisions = of_type(out, "RiskDecision")
    assert [d.decision.value for d in decisions[:5]] == ["accept"] * 5
    assert "RATE_THROTTLE" in decisions[5].reason_codes
    assert [(c.to_state, c.metric) for c in of_type(out, "TradingStateChanged")] == \
        [(R, "throttle_hits"), (H, "throttle_hits")]
    # the halt pulled the runaway's resting orders
    cancels = of_type(out, "MassCancel")
    assert len(cancels) == 1 and cancels[0].requested_by == "order-worker"
    assert p.accounts["A"].book.open_orders == {}


def test_kill_switch_halts_and_mass_cancels_then_enable_reopens() -> None:
    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 0, 100.0))
    p.process(order(cl="c1", ts=S, price=99.0))
    p.process(order(cl="c2", ts=S, price=98.0, strategy="other"))
    out = p.process(command("account:A", "kill", ts=2 * S, by="risk-desk", reason="fat finger"))
    changed = of_type(out, "TradingStateChanged")
    assert [(c.scope, c.to_state, c.actor) for c in changed] == [("account:A", H, "risk-desk")]
    cancel = of_type(out, "MassCancel")
    assert [(m.account, m.scope, m.requested_by) for m in cancel] == \
        [("A", "account:A", "risk-desk")]
    assert p.accounts["A"].book.open_orders == {}
    assert decision(p.process(order(ts=3 * S))).reason_codes == ["TRADING_STATE"]
    out = p.process(command("account:A", "enable", ts=4 * S, by="risk-desk"))
    assert [(c.from_state, c.to_state) for c in of_type(out, "TradingStateChanged")] == [(H, A)]
    assert decision(p.process(order(ts=5 * S))).decision.value == "accept"


def test_command_without_issuer_is_rejected_with_an_alert() -> None:
    p = OrderRiskProcessor()
    p.process(order(cl="c1", ts=S))
    out = p.process(command("account:A", by=" "))
    assert [a.reason_code for a in of_type(out, "RiskAlert")] == ["COMMAND_REJECTED"]
    assert p.accounts["A"].machine.state is A


def test_desk_and_firm_kills_reach_their_accounts_only() -> None:
    p = OrderRiskProcessor()
    run(p, [irisk("AAPL", 0, 100.0), limit_config("account:A", parent="desk:D1"),
            limit_config("account:B", parent="desk:D2"), limit_config("desk:D1", parent="firm:F"),
            limit_config("desk:D2", parent="firm:F")])
    for account in ("A", "B", "C"):
        p.process(order(account=account, cl=f"{account}1", ts=S))
    out = p.process(command("desk:D1", ts=2 * S))
    assert [(m.account, m.scope) for m in of_type(out, "MassCancel")] == [("A", "desk:D1")]
    # the desk's transition is the aggregation stage's to publish; it applies here at once
    assert of_type(out, "TradingStateChanged") == []
    assert decision(p.process(order(account="A", ts=3 * S))).reason_codes == ["TRADING_STATE"]
    assert decision(p.process(order(account="B", ts=3 * S))).decision.value == "accept"
    out = p.process(command("firm:F", ts=4 * S))
    # B is under firm F; C has no firm at all, so a firm kill reaches it too (fail-safe)
    assert sorted(m.account for m in of_type(out, "MassCancel")) == ["B", "C"]
    for account in ("B", "C"):
        d = decision(p.process(order(account=account, ts=5 * S)))
        assert d.reason_codes == ["TRADING_STATE"] and "firm:F" in d.checks[0].message


def scope_risk(scope: str, state: TradingState, ts: int, cause: str = "desk day_loss") -> ScopeRisk:
    return ScopeRisk(event_id=eid("sr"), ts_event=ts, ts_init=0, source="scope-worker",
                     scope=scope, trading_state=state, state_cause=cause, accounts=2)


def _desks() -> OrderRiskProcessor:
    p = OrderRiskProcessor()
    run(p, [irisk("AAPL", 0, 100.0), limit_config("account:A", parent="desk:D1"),
            limit_config("account:B", parent="desk:D2"), limit_config("desk:D1", parent="firm:F"),
            limit_config("desk:D2", parent="firm:F")])
    return p


def test_every_account_snapshot_is_handed_to_its_desk_and_firm() -> None:
    p = _desks()
    p.process(order(cl="a1", ts=S, qty=100))
    out = p.process(fill("a1", ts=S + 1, qty=100))
    [snapshot] = of_type(out, "AccountRisk")
    contributions = [o for o in out if o.value.type == "ScopeContribution"]
    assert [(o.topic, o.key) for o in contributions] == \
        [("risk.scope-accounts", "desk:D1"), ("risk.scope-accounts", "firm:F")]
    for o in contributions:
        c = o.value
        assert isinstance(c, ScopeContribution)
        assert (c.scope, c.account, c.ts_event) == (o.key, "A", snapshot.ts_event)
        assert p.output_owner(o) == "A"  # per-account state: the account's owner publishes
        for name in ("trading_state", "realized_pnl", "unrealized_pnl", "day_pnl",
                     "gross_exposure", "net_exposure", "long_exposure", "short_exposure",
                     "var_95", "es_975", "open_order_notional"):
            assert getattr(c, name) == getattr(snapshot, name), name
    assert snapshot.gross_exposure > 0 and len({o.value.event_id for o in contributions}) == 2
    # an account with no desk or firm configured has nothing to hand over
    p.process(order(account="C", cl="c1", ts=S, qty=10))
    out = p.process(fill("c1", account="C", ts=S + 1, qty=10))
    assert of_type(out, "AccountRisk") and of_type(out, "ScopeContribution") == []


def test_a_desk_state_published_by_the_stage_gates_that_desk_only() -> None:
    p = _desks()
    p.process(order(cl="a1", ts=S, qty=100))
    p.process(fill("a1", ts=S + 1, qty=100))
    assert p.apply_table("risk.scopes", scope_risk("desk:D1", R, 2 * S)) == []
    d = decision(p.process(order(ts=3 * S, qty=10)))
    assert d.reason_codes == ["TRADING_STATE"] and d.trading_state is R
    assert "desk:D1" in d.checks[0].message and "desk day_loss" in d.checks[0].message
    reducing = order(ts=3 * S, side="sell", qty=10, price=101.0)
    assert decision(p.process(reducing)).decision.value == "accept"
    assert decision(p.process(order(account="B", ts=3 * S))).decision.value == "accept"
    # an older record (a late copy) does not undo the newer one; a newer one does
    p.process(scope_risk("desk:D1", A, S))
    assert decision(p.process(order(ts=4 * S, qty=10))).reason_codes == ["TRADING_STATE"]
    p.process(scope_risk("desk:D1", A, 5 * S))
    assert decision(p.process(order(ts=6 * S, qty=10))).decision.value == "accept"
    # a firm halt reaches every desk under it, and accounts with no firm (fail-safe)
    p.process(scope_risk("firm:F", H, 7 * S, cause="firm drawdown"))
    for account in ("A", "B", "C"):
        d = decision(p.process(order(account=account, ts=8 * S, side="sell", qty=1,
                                     price=101.0)))
        assert d.reason_codes == ["TRADING_STATE"] and "firm:F" in d.checks[0].message
    # ScopeRisk only counts for desks and firms, and only from risk.scopes
    q = _desks()
    q.process(scope_risk("account:A", H, S))
    assert q.apply_table("risk.limits", scope_risk("desk:D1", H, S)) == []
    assert decision(q.process(order(ts=2 * S))).decision.value == "accept"


def test_a_desk_halted_by_the_stage_cancels_its_accounts_orders() -> None:
    p = _desks()
    p.process(order(cl="a1", ts=S, price=99.0))
    p.process(order(account="B", cl="b1", ts=S, price=99.0))
    out = p.process(scope_risk("desk:D1", H, 2 * S, cause="day_loss above halt level"))
    assert [(m.account, m.scope, m.reason) for m in of_type(out, "MassCancel")] == \
        [("A", "desk:D1", "day_loss above halt level")]
    assert p.accounts["A"].book.open_orders == {} and list(p.accounts["B"].book.open_orders)
    assert of_type(p.process(scope_risk("desk:D1", H, 3 * S)), "MassCancel") == []


def test_a_desk_kill_applies_at_once_whatever_the_stage_says() -> None:
    p = _desks()
    p.process(scope_risk("desk:D1", A, S))
    p.process(order(cl="a1", ts=S, price=99.0))
    out = p.process(command("desk:D1", ts=2 * S))
    assert len(of_type(out, "MassCancel")) == 1 and of_type(out, "TradingStateChanged") == []
    # the stage has not seen the kill yet: its ACTIVE record does not reopen the desk
    p.process(scope_risk("desk:D1", A, 2 * S))
    assert decision(p.process(order(ts=3 * S))).reason_codes == ["TRADING_STATE"]
    # an enable reopens the local machine; the stage's record keeps gating until it agrees
    p.process(scope_risk("desk:D1", H, 4 * S, cause="kill switch by ops: test"))
    p.process(command("desk:D1", "enable", ts=5 * S))
    assert decision(p.process(order(ts=6 * S))).reason_codes == ["TRADING_STATE"]
    p.process(scope_risk("desk:D1", A, 6 * S))
    assert decision(p.process(order(ts=7 * S))).decision.value == "accept"


def test_instrument_kill_cancels_that_symbol_only() -> None:
    p = OrderRiskProcessor()
    run(p, [irisk("AAPL", 0, 100.0), irisk("MSFT", 0, 50.0)])
    p.process(order(cl="a1", ts=S))
    p.process(order(cl="m1", ts=S, symbol="MSFT", price=50.0))
    out = p.process(command("instrument:AAPL", ts=2 * S))
    assert [(m.account, m.symbol) for m in of_type(out, "MassCancel")] == [("A", "AAPL")]
    assert list(p.accounts["A"].book.open_orders) == ["m1"]
    assert decision(p.process(order(ts=3 * S, price=50.0, symbol="MSFT"))).decision.value == \
        "accept"


def test_a_kill_for_an_account_not_seen_yet_applies_on_its_first_order() -> None:
    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 0, 100.0))
    assert p.process(command("account:NEW", ts=S)) == []
    out = p.process(order(account="NEW", ts=2 * S))
    assert [(c.scope, c.to_state) for c in of_type(out, "TradingStateChanged")] == \
        [("account:NEW", H)]
    assert decision(out).reason_codes == ["TRADING_STATE"]


def test_strategy_kill_stops_only_that_strategy() -> None:
    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 0, 100.0))
    p.process(order(cl="m1", ts=S, strategy="momo"))
    p.process(order(cl="o1", ts=S, strategy="other", price=99.0))
    out = p.process(command("strategy:A/momo", ts=2 * S))
    assert [c.scope for c in of_type(out, "TradingStateChanged")] == ["strategy:A/momo"]
    assert list(p.accounts["A"].book.open_orders) == ["o1"]
    assert decision(p.process(order(ts=3 * S, strategy="momo", price=98.0))).reason_codes == \
        ["TRADING_STATE"]
    assert decision(p.process(order(ts=3 * S, strategy="other", price=97.0))).decision.value \
        == "accept"


def test_stale_instrument_data_moves_the_instrument_to_reducing() -> None:
    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 0, 100.0))
    p.process(order(cl="c1", ts=S, qty=100))
    p.process(fill("c1", ts=S + 1, qty=100))
    out = p.process(irisk("AAPL", 2 * S, 100.0, stale=True))
    assert [(c.scope, c.to_state, c.metric) for c in of_type(out, "TradingStateChanged")] == \
        [("instrument:AAPL", R, "stale_data")]
    assert decision(p.process(order(ts=3 * S, qty=10))).reason_codes == ["TRADING_STATE"]
    assert decision(p.process(order(ts=3 * S, side="sell", qty=10))).decision.value == "accept"
    # fresh data again: the instrument stays REDUCING for its minimum time, then recovers
    assert of_type(p.process(irisk("AAPL", 4 * S, 100.0)), "TradingStateChanged") == []
    out = p.process(irisk("AAPL", 7 * S, 100.0))
    assert [c.to_state for c in of_type(out, "TradingStateChanged")] == [A]


def test_an_instrument_hovering_at_its_anomaly_level_does_not_flap() -> None:
    p = OrderRiskProcessor()
    out = run(p, [irisk("AAPL", i * S, 100.0, anomaly_score=0.995 if i % 2 else 0.95)
                  for i in range(40)])
    changes = of_type(out, "TradingStateChanged")
    assert [(c.to_state, c.metric) for c in changes] == [(R, "anomaly_score")]
    back = p.process(irisk("AAPL", 40 * S, 100.0, anomaly_score=0.9))
    assert [c.to_state for c in of_type(back, "TradingStateChanged")] == [A]
    # without hysteresis (as before) every tick flips it
    q = OrderRiskProcessor(OrderConfig(instrument_anomaly_recover=None,
                                       instrument_min_reducing_ns=0))
    out = run(q, [irisk("AAPL", i * S, 100.0, anomaly_score=0.995 if i % 2 else 0.95)
                  for i in range(40)])
    assert len(of_type(out, "TradingStateChanged")) == 39
    with pytest.raises(ValueError, match="at or under"):
        OrderConfig(instrument_anomaly_recover=0.995)


_flow = st.lists(st.one_of(
    st.tuples(st.just("risk"), st.sampled_from([0.0, 0.5, 0.95, 0.995])),
    st.tuples(st.just("order"), st.tuples(st.sampled_from(["buy", "sell"]),
                                          st.integers(1, 300))),
    st.tuples(st.just("fill"), st.just(0)),
), max_size=40)


@settings(max_examples=100, deadline=None)
@given(_flow)
def test_a_reducing_instrument_never_lets_exposure_grow(steps: list[tuple[str, Any]]) -> None:
    from engine.pretrade import OrderView, is_reducing

    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 0, 100.0))
    ts, last = S, None
    for kind, arg in steps:
        ts += 2 * S
        if kind == "risk":
            p.process(irisk("AAPL", ts, 100.0, anomaly_score=arg))
        elif kind == "fill" and last is not None:
            p.process(fill(last.cl_ord_id, ts=ts, side=last.side.value, qty=last.qty,
                           exec_id=f"x-{last.cl_ord_id}"))
        elif kind == "order":
            side, qty = arg
            o = order(ts=ts, side=side, qty=qty, price=100.0 if side == "buy" else 100.5)
            st_ = p.accounts.get("A")
            view = OrderView("A", o.strategy, "AAPL", o.side, o.qty, o.price, o.cl_ord_id, ts)
            reducing = st_ is not None and is_reducing(st_.book, view)
            d = decision(p.process(o))
            if d.decision.value == "accept":
                last = o
                assert d.trading_state is not R or reducing


def test_scope_events_can_be_left_to_another_worker() -> None:
    p = OrderRiskProcessor(publish_scope_events=False)
    p.process(irisk("AAPL", 0, 100.0))
    p.process(order(cl="c1", ts=S))
    out = p.process(command("instrument:AAPL", ts=2 * S))
    assert of_type(out, "TradingStateChanged") == [] and len(of_type(out, "MassCancel")) == 1


def test_auto_halt_can_leave_orders_resting() -> None:
    p = OrderRiskProcessor(OrderConfig(cancel_on_halt=False))
    run(p, [irisk("AAPL", 0, 100.0),
            limit_config("account:A", order_rate=(None, 2.0), throttle_hits=(None, 1.0))])
    out = run(p, [order(ts=S + i, qty=1 + i) for i in range(6)])
    assert of_type(out, "MassCancel") == [] and p.accounts["A"].machine.state is H
