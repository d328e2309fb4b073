"""The desk/firm aggregation stage without a broker: sums, ordering, breaches, states,
commands, snapshots and determinism."""

from __future__ import annotations

import doctest
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.scope_risk
from engine.driver import input_topic_of
from engine.envelope import comparable
from engine.processor import Output, TableProcessor
from engine.scope_risk import DAY_NS, ScopeConfig, ScopeRiskProcessor
from schemas.codec import to_object
from schemas.common import Envelope, TradingState
from schemas.control import (
    LimitConfig,
    LimitLevel,
    LimitOverride,
    StateCommand,
    TradingStateCommand,
)
from schemas.outputs import SCOPE_FIGURES, ScopeContribution
from schemas.settings import Settings

S = 1_000_000_000
_ids = itertools.count()


def contribution(account: str, ts: int, scope: str = "desk:D", *, loss: float = 0.0,
                 event_id: str | None = None, **figures: Any) -> ScopeContribution:
    """An account's figures for `scope`; `loss` sets a realized day loss of that size."""
    if loss:
        figures.setdefault("day_pnl", -loss)
        figures.setdefault("realized_pnl", -loss)
    return ScopeContribution(event_id=event_id or f"c{next(_ids)}", ts_event=ts, ts_init=0,
                             source="order-worker", scope=scope, account=account, **figures)


def limits(scope: str = "desk:D", ts: int = 0, parent: str | None = None,
           override: LimitOverride | None = None,
           **levels: tuple[float | None, float | None]) -> LimitConfig:
    return LimitConfig(event_id=f"l{next(_ids)}", ts_event=ts, ts_init=0, source="ops",
                       scope=scope, parent=parent, changed_by="alice", override=override,
                       limits={m: LimitLevel(soft=s, hard=h) for m, (s, h) in levels.items()})


def command(what: str, scope: str = "desk:D", ts: int = S, by: str = "ops") -> TradingStateCommand:
    return TradingStateCommand(event_id=f"k{next(_ids)}", ts_event=ts, ts_init=0, source="cli",
                               scope=scope, command=StateCommand(what), issued_by=by,
                               reason="desk review")


def of_type(outputs: Iterable[Output], type_name: str) -> list[Any]:
    return [o.value for o in outputs if o.value.type == type_name]


def last_risk(outputs: Sequence[Output]) -> Any:
    risks = of_type(outputs, "ScopeRisk")
    assert risks, f"no ScopeRisk in {[o.value.type for o in outputs]}"
    return risks[-1]


def run(p: ScopeRiskProcessor, events: Iterable[Envelope]) -> list[Output]:
    out: list[Output] = []
    for ev in events:
        out += p.apply_table(ev.TOPIC, ev) if ev.TOPIC != "risk.scope-accounts" else p.process(ev)
    return out


def canonical(outputs: Iterable[Output]) -> list[tuple[str, str, Any]]:
    return [(o.topic, o.key, comparable(to_object(o.value))) for o in outputs]


@pytest.fixture
def desk() -> ScopeRiskProcessor:
    """A processor with desk:D limited on day loss: soft 100, hard 200."""
    p = ScopeRiskProcessor()
    p.apply_table("risk.limits", limits(day_loss=(100.0, 200.0)))
    return p


def test_docstring_examples_run() -> None:
    result = doctest.testmod(engine.scope_risk)
    assert result.attempted > 0 and result.failed == 0


def test_implements_the_table_processor_protocol() -> None:
    p = ScopeRiskProcessor.from_settings(Settings())
    assert isinstance(p, TableProcessor)
    assert input_topic_of(p) == "risk.scope-accounts"
    assert p.key_of(contribution("A1", S)) == "desk:D"
    assert p.key_of(command("kill")) is None


def test_aggregate_sums_the_latest_contribution_of_each_account() -> None:
    p = ScopeRiskProcessor()
    run(p, [contribution("A1", S, gross_exposure=1000.0, net_exposure=-200.0, var_95=10.0,
                         es_975=12.0, day_pnl=-5.0, realized_pnl=-5.0, unrealized_pnl=2.0,
                         long_exposure=400.0, short_exposure=600.0, open_order_notional=50.0),
            contribution("A2", 2 * S, gross_exposure=500.0, net_exposure=500.0, var_95=4.0,
                         es_975=5.0, day_pnl=3.0, unrealized_pnl=3.0, long_exposure=500.0,
                         trading_state=TradingState.REDUCING)])
    risk = last_risk(p.process(contribution("A1", 3 * S, gross_exposure=700.0, var_95=7.0,
                                            es_975=9.0, day_pnl=-1.0, realized_pnl=-1.0,
                                            long_exposure=700.0, net_exposure=700.0,
                                            trading_state=TradingState.HALTED)))
    assert (risk.accounts, risk.gross_exposure, risk.net_exposure) == (2, 1200.0, 1200.0)
    assert (risk.var_95, risk.es_975) == (11.0, 14.0)  # summed: undiversified upper bound
    assert (risk.day_pnl, risk.realized_pnl, risk.unrealized_pnl) == (2.0, -1.0, 3.0)
    assert (risk.long_exposure, risk.short_exposure, risk.open_order_notional) == (1200.0, 0, 0)
    assert (risk.accounts_reducing, risk.accounts_halted) == (1, 1)
    assert risk.scope == "desk:D" and risk.trading_state is TradingState.ACTIVE


def test_an_older_or_repeated_contribution_changes_nothing(desk: ScopeRiskProcessor) -> None:
    newer = contribution("A1", 5 * S, loss=50.0)
    run(desk, [newer])
    assert desk.process(contribution("A1", 4 * S, loss=150.0)) == []  # older: ignored
    assert desk.process(newer) == []  # the same one again: ignored
    risk = last_risk(desk.process(contribution("A2", 6 * S, loss=10.0)))
    assert risk.day_pnl == -60.0 and risk.accounts == 2


def test_at_equal_event_time_the_later_arrival_wins(desk: ScopeRiskProcessor) -> None:
    run(desk, [contribution("A1", S, loss=10.0)])
    assert last_risk(desk.process(contribution("A1", S, loss=30.0))).day_pnl == -30.0


def test_desk_day_loss_drives_reducing_then_halted_and_only_enable_leaves_it(
        desk: ScopeRiskProcessor) -> None:
    out = run(desk, [contribution("A1", S, loss=60.0), contribution("A2", 2 * S, loss=60.0)])
    (reducing,) = of_type(out, "TradingStateChanged")
    assert (reducing.from_state, reducing.to_state) == (TradingState.ACTIVE,
                                                        TradingState.REDUCING)
    assert (reducing.metric, reducing.observed, reducing.threshold) == ("day_loss", 120.0, 100.0)
    assert reducing.source == "scope-worker" and reducing.scope == "desk:D"
    assert last_risk(out).trading_state is TradingState.REDUCING
    assert "day_loss" in last_risk(out).state_cause

    out = list(desk.process(contribution("A1", 3 * S, loss=150.0)))
    (halted,) = of_type(out, "TradingStateChanged")
    assert (halted.from_state, halted.to_state) == (TradingState.REDUCING, TradingState.HALTED)
    # losses recovered: still halted, nothing moves by itself
    out = run(desk, [contribution("A1", 4 * S), contribution("A2", 5 * S)])
    assert of_type(out, "TradingStateChanged") == []
    assert last_risk(out).trading_state is TradingState.HALTED and last_risk(out).day_pnl == 0

    out = list(desk.apply_table("risk.control", command("enable", ts=6 * S, by="carol")))
    (enabled,) = of_type(out, "TradingStateChanged")
    assert (enabled.to_state, enabled.actor) == (TradingState.ACTIVE, "carol")
    assert last_risk(out).trading_state is TradingState.ACTIVE


def test_reducing_recovers_by_itself_under_the_soft_level(desk: ScopeRiskProcessor) -> None:
    run(desk, [contribution("A1", S, loss=120.0)])
    out = desk.process(contribution("A1", 2 * S, loss=20.0))
    (recovered,) = of_type(out, "TradingStateChanged")
    assert recovered.to_state is TradingState.ACTIVE and recovered.cause.startswith("recovered")
    stuck = ScopeRiskProcessor(ScopeConfig(auto_recover=False))
    stuck.apply_table("risk.limits", limits(day_loss=(100.0, 200.0)))
    run(stuck, [contribution("A1", S, loss=120.0)])
    assert last_risk(stuck.process(contribution("A1", 2 * S, loss=20.0))).trading_state \
        is TradingState.REDUCING


def test_breaches_rise_once_per_level_and_rearm_below_soft(desk: ScopeRiskProcessor) -> None:
    soft = of_type(run(desk, [contribution("A1", S, loss=60.0),
                              contribution("A2", 2 * S, loss=60.0)]), "LimitBreach")
    assert [(b.account, b.scope, b.metric, b.level.value, b.observed, b.limit) for b in soft] \
        == [("A2", "desk:D", "day_loss", "soft", 120.0, 100.0)]
    assert of_type(desk.process(contribution("A2", 3 * S, loss=70.0)), "LimitBreach") == []
    hard = of_type(desk.process(contribution("A1", 4 * S, loss=140.0)), "LimitBreach")
    assert [(b.account, b.level.value, b.limit) for b in hard] == [("A1", "hard", 200.0)]
    assert of_type(desk.process(contribution("A1", 5 * S, loss=40.0)), "LimitBreach") == []
    run(desk, [contribution("A1", 6 * S), contribution("A2", 7 * S)])  # back under: re-armed
    again = of_type(desk.process(contribution("A2", 8 * S, loss=110.0)), "LimitBreach")
    assert [(b.level.value, b.observed) for b in again] == [("soft", 110.0)]


def test_every_state_driver_has_its_limit() -> None:
    p = ScopeRiskProcessor()
    p.apply_table("risk.limits", limits(var_95=(10.0, 20.0), gross_exposure=(None, 1000.0),
                                        drawdown_trailing=(5.0, None)))
    out = run(p, [contribution("A1", S, var_95=15.0, gross_exposure=500.0, realized_pnl=10.0),
                  contribution("A2", 2 * S, gross_exposure=600.0, realized_pnl=-10.0)])
    breaches = {(b.metric, b.level.value) for b in of_type(out, "LimitBreach")}
    assert breaches == {("var_95", "soft"), ("gross_exposure", "hard"),
                        ("drawdown_trailing", "soft")}
    assert last_risk(out).drawdown_trailing == 10.0 and last_risk(out).trading_state \
        is TradingState.HALTED


def test_an_override_applies_until_it_expires_in_event_time() -> None:
    p = ScopeRiskProcessor()
    override = LimitOverride(limits={"day_loss": LimitLevel(soft=500.0, hard=900.0)},
                             approver="bob", expires_ts=10 * S, reason="volatile open")
    p.apply_table("risk.limits", limits(day_loss=(100.0, 200.0), override=override))
    assert of_type(p.process(contribution("A1", S, loss=150.0)), "LimitBreach") == []
    late = of_type(p.process(contribution("A1", 11 * S, loss=150.0)), "LimitBreach")
    assert [(b.level.value, b.limit) for b in late] == [("soft", 100.0)]


def test_a_new_trading_day_drops_yesterdays_pnl_and_resets_the_intraday_peak(
        desk: ScopeRiskProcessor) -> None:
    run(desk, [contribution("A1", S, realized_pnl=50.0, day_pnl=50.0),
               contribution("A2", 2 * S, loss=30.0)])
    today = last_risk(desk.process(contribution("A2", DAY_NS + S, loss=10.0)))
    assert today.day_pnl == -10.0  # A1 has not traded today
    assert today.realized_pnl == 40.0  # positions and PnL to date still count
    assert today.drawdown_intraday == 10.0  # today's peak is 0, not yesterday's 20


def test_a_kill_halts_a_held_scope_at_once(desk: ScopeRiskProcessor) -> None:
    run(desk, [contribution("A1", S)])
    kill = command("kill", ts=2 * S, by="dana")
    out = desk.apply_table("risk.control", kill)
    (changed,) = of_type(out, "TradingStateChanged")
    assert (changed.to_state, changed.actor, changed.ts_event) == (TradingState.HALTED, "dana",
                                                                  2 * S)
    assert "kill switch by dana" in changed.cause
    assert all(desk.output_owner(o) == "desk:D" for o in out)
    assert desk.apply_table("risk.control", kill) == []  # the same command again
    assert desk.apply_table("risk.control", command("enable", ts=S)) == []  # older
    assert desk.scopes["desk:D"].machine.state is TradingState.HALTED


def test_commands_without_issuer_or_for_other_scopes_are_ignored(
        desk: ScopeRiskProcessor) -> None:
    run(desk, [contribution("A1", S)])
    blank = command("kill", ts=2 * S).model_copy(update={"issued_by": "  "})
    assert desk.apply_table("risk.control", blank) == []
    assert desk.apply_table("risk.control", command("kill", scope="account:A1")) == []
    assert desk.apply_table("risk.orders", command("kill")) == []  # not a table of ours
    assert desk.scopes["desk:D"].machine.state is TradingState.ACTIVE
    assert desk.commands == {}


def test_a_command_for_a_scope_not_seen_yet_applies_with_its_first_contribution() -> None:
    first, second = ScopeRiskProcessor(), ScopeRiskProcessor()
    kill = command("kill", scope="firm:F", ts=S)
    assert first.apply_table("risk.control", kill) == []  # nobody holds firm:F yet
    out = first.process(contribution("A1", 2 * S, scope="firm:F"))
    (changed,) = of_type(out, "TradingStateChanged")
    assert changed.to_state is TradingState.HALTED and changed.ts_event == S
    assert last_risk(out).trading_state is TradingState.HALTED
    # derived from the command: the same event whoever applies it and whenever
    run(second, [contribution("A1", S // 2, scope="firm:F")])
    (again,) = of_type(second.apply_table("risk.control", kill), "TradingStateChanged")
    assert again.event_id == changed.event_id
    assert of_type(first.process(contribution("A1", 3 * S, scope="firm:F")),
                   "TradingStateChanged") == []  # applied once


def test_only_desk_and_firm_scopes_are_aggregated() -> None:
    with pytest.raises(ValueError, match="not a desk or firm"):
        ScopeRiskProcessor().process(contribution("A1", S, scope="account:A1"))


def test_output_owner_is_the_scope_for_every_output(desk: ScopeRiskProcessor) -> None:
    out = run(desk, [contribution("A1", S, loss=250.0)])
    assert {o.value.type for o in out} == {"LimitBreach", "TradingStateChanged", "ScopeRisk"}
    assert {desk.output_owner(o) for o in out} == {"desk:D"}
    breach = of_type(out, "LimitBreach")[0]
    assert [o.key for o in out if o.value is breach] == ["A1"]  # risk.breaches: by account


def _stream() -> list[Envelope]:
    events: list[Envelope] = [limits(day_loss=(100.0, 200.0), drawdown_intraday=(80.0, None)),
                              limits("firm:F", gross_exposure=(5000.0, 9000.0))]
    for i in range(40):
        account = f"A{i % 4}"
        pnl = 30.0 * math.sin(i / 3) - (i % 7) * 5
        for scope in ("desk:D", "firm:F"):
            events.append(contribution(account, (i + 1) * S, scope, day_pnl=pnl,
                                       realized_pnl=pnl, gross_exposure=1000.0 + 100 * i,
                                       var_95=3.0 + i % 5))
        if i == 25:
            events.append(command("kill", "desk:D", (i + 1) * S))
        if i == 31:
            events.append(command("enable", "desk:D", (i + 1) * S))
    return events


def test_same_input_gives_the_same_outputs() -> None:
    events = _stream()
    a, b = run(ScopeRiskProcessor(), events), run(ScopeRiskProcessor(), events)
    assert canonical(a) == canonical(b) and len(of_type(a, "TradingStateChanged")) >= 3


def test_snapshot_and_restore_mid_stream_continue_exactly() -> None:
    events = _stream()
    reference = canonical(run(ScopeRiskProcessor(), events))
    for cut in (5, 37, 60):
        first = ScopeRiskProcessor()
        out = run(first, events[:cut])
        dirty = first.dirty_keys()
        assert dirty <= {"desk:D", "firm:F"} and first.dirty_keys() == set()
        second = ScopeRiskProcessor()
        for key in sorted(dirty):
            second.restore(key, first.snapshot(key))
        for ev in events[:cut]:  # tables are read again from the beginning after a restart
            if ev.TOPIC != "risk.scope-accounts":
                second.apply_table(ev.TOPIC, ev)
        out += run(second, events[cut:])
        assert canonical(out) == reference, f"cut at {cut}"


def test_evict_restore_tombstone_and_refused_snapshots(desk: ScopeRiskProcessor) -> None:
    run(desk, [contribution("A1", S)])
    assert desk.snapshot("desk:X") is None
    data = desk.snapshot("desk:D")
    assert data is not None and len(data) < 2000
    desk.evict(["desk:D"])
    assert "desk:D" not in desk.scopes and desk.dirty_keys() == set()
    desk.restore("desk:D", data)
    assert desk.scopes["desk:D"].members.keys() == {"A1"}
    desk.restore("desk:D", None)
    assert "desk:D" not in desk.scopes
    import pickle

    with pytest.raises(ValueError, match="not ScopeAggregate v1"):
        desk.restore("desk:D", pickle.dumps({"scope": "desk:D"}))


def test_a_withdrawn_account_leaves_the_sums_and_an_older_contribution_cannot_return_it(
        desk: ScopeRiskProcessor) -> None:
    """A1 moved to another desk: desk:D sums A2 alone again, so its day loss is back under
    the soft level and it recovers; A1's contribution from before the move, arriving late,
    changes nothing; A1 contributing again later (moved back) counts once more."""
    run(desk, [contribution("A1", S, loss=80.0, gross_exposure=500.0),
               contribution("A2", 2 * S, loss=40.0, gross_exposure=300.0)])
    assert desk.scopes["desk:D"].machine.state is TradingState.REDUCING
    out = desk.process(contribution("A1", 3 * S, withdrawn=True, loss=999.0))
    risk = last_risk(out)
    assert (risk.accounts, risk.day_pnl, risk.gross_exposure) == (1, -40.0, 300.0)
    (recovered,) = of_type(out, "TradingStateChanged")
    assert recovered.to_state is TradingState.ACTIVE
    assert desk.process(contribution("A1", 2 * S, loss=500.0)) == []  # older than the move
    back = last_risk(desk.process(contribution("A1", 4 * S, loss=10.0, gross_exposure=100.0)))
    assert (back.accounts, back.day_pnl, back.gross_exposure) == (2, -50.0, 400.0)


def test_a_breach_caused_by_a_withdrawal_says_so(desk: ScopeRiskProcessor) -> None:
    """Removing a profitable account can raise the desk's loss: the breach names the
    account that left, and why."""
    run(desk, [contribution("A1", S, day_pnl=100.0, realized_pnl=100.0),
               contribution("A2", 2 * S, loss=150.0)])
    before = desk.scopes["desk:D"]
    drawdowns = (before.drawdown_intraday, before.drawdown_trailing)
    out = desk.process(contribution("A1", 3 * S, withdrawn=True))
    (breach,) = of_type(out, "LimitBreach")
    assert (breach.account, breach.metric, breach.observed) == ("A1", "day_loss", 150.0)
    assert "after A1 left the scope" in breach.message
    # leaving is no PnL move: A2's drawdowns stay what they were, not 100 more
    risk = last_risk(out)
    assert (risk.drawdown_intraday, risk.drawdown_trailing) == drawdowns == (150.0, 150.0)


def test_members_snapshotted_before_withdrawals_existed_still_load() -> None:
    from engine.scope_risk import Member

    old = Member.__new__(Member)
    old.__setstate__((S, "c1", TradingState.HALTED, (1.0,) * len(SCOPE_FIGURES)))
    assert old == Member(S, "c1", TradingState.HALTED, (1.0,) * len(SCOPE_FIGURES))
    assert old.withdrawn is False


# --- properties -----------------------------------------------------------------------------

_figure = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
_positive = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def _contributions(draw: st.DrawFn) -> list[ScopeContribution]:
    """Contributions of up to 5 accounts, several each at distinct event times, some of them
    withdrawals (the account moved away, perhaps back later), shuffled (an account's older
    contribution may arrive after its newer one)."""
    out = []
    for a in range(draw(st.integers(1, 5))):
        times = draw(st.lists(st.integers(1, 50), min_size=1, max_size=4, unique=True))
        for t in times:
            out.append(contribution(
                f"A{a}", t * S, withdrawn=draw(st.sampled_from([False, False, True])),
                realized_pnl=draw(_figure), unrealized_pnl=draw(_figure),
                day_pnl=draw(_figure), net_exposure=draw(_figure),
                gross_exposure=draw(_positive), var_95=draw(_positive), es_975=draw(_positive),
                long_exposure=draw(_positive), short_exposure=draw(_positive),
                open_order_notional=draw(_positive)))
    return draw(st.permutations(out))


@settings(max_examples=80, deadline=None)
@given(_contributions())
def test_the_aggregate_is_the_sum_of_each_accounts_latest_whatever_the_order(
        events: list[ScopeContribution]) -> None:
    p = ScopeRiskProcessor()
    risks = of_type(run(p, events), "ScopeRisk")
    latest: dict[str, ScopeContribution] = {}
    for ev in events:
        if ev.account not in latest or ev.ts_event > latest[ev.account].ts_event:
            latest[ev.account] = ev
    final = risks[-1]
    members = [c for c in latest.values() if not c.withdrawn]
    assert final.accounts == len(members)
    for name in SCOPE_FIGURES:
        expected = math.fsum(getattr(c, name) for c in members)
        signed = name in ("realized_pnl", "unrealized_pnl", "day_pnl", "net_exposure")
        # exactly the correctly rounded sum (fsum), not merely close to it
        assert getattr(final, name) == (expected if signed else max(0.0, expected)), name
    # the same set of latest contributions in any order gives the very same numbers
    again = ScopeRiskProcessor()
    by_account = [latest[a] for a in sorted(latest)]
    ordered = of_type(run(again, by_account), "ScopeRisk")
    assert [getattr(ordered[-1], n) for n in SCOPE_FIGURES] == [
        getattr(final, n) for n in SCOPE_FIGURES]


@st.composite
def _episodes(draw: st.DrawFn) -> list[Envelope]:
    events: list[Envelope] = [limits(day_loss=(draw(st.sampled_from([50.0, 100.0])), 200.0),
                                     var_95=(20.0, 40.0))]
    for i in range(draw(st.integers(1, 30))):
        ts = (i + 1) * S
        kind = draw(st.sampled_from(["c", "c", "c", "kill", "enable"]))
        if kind == "c":
            events.append(contribution(f"A{draw(st.integers(0, 2))}", ts,
                                       loss=draw(st.floats(0, 300)),
                                       var_95=draw(st.floats(0, 30))))
        else:
            events.append(command(kind, ts=ts))
    return events


@settings(max_examples=80, deadline=None)
@given(_episodes())
def test_no_transition_without_a_cause_and_every_snapshot_shows_the_machine(
        events: list[Envelope]) -> None:
    p = ScopeRiskProcessor()
    state = TradingState.ACTIVE
    for ev in events:
        for output in run(p, [ev]):
            value: Any = output.value
            if value.type == "TradingStateChanged":
                assert value.cause.strip() and value.from_state is state
                assert value.from_state is not value.to_state or value.actor is not None
                if value.to_state is TradingState.ACTIVE and value.actor is None:
                    assert state is TradingState.REDUCING  # HALTED is only left by a command
                state = value.to_state
            elif value.type == "ScopeRisk":
                assert value.trading_state is state
        assert p.scopes.get("desk:D") is None or p.scopes["desk:D"].machine.state is state
