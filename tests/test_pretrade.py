"""Every pre-trade check on its own, then the gate as a whole and its properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.accounts import AccountBook, OpenOrder
from engine.limits import NO_LIMIT, EffectiveLimit
from engine.order_config import CollarTier, OrderConfig
from engine.pretrade import (
    Finding,
    GateInput,
    OrderView,
    account_exposure_change,
    check_adv,
    check_credit,
    check_duplicate,
    check_max_qty,
    check_min_qty,
    check_order_notional,
    check_personal,
    check_positions,
    check_price_collar,
    check_price_collar_vol,
    check_price_precision,
    check_rate,
    check_reference,
    check_restricted,
    check_self_cross,
    check_size_precision,
    check_tradable,
    check_trading_state,
    collar_band,
    evaluate,
    instrument_exposure_change,
    is_reducing,
    strategy_exposure_change,
)
from schemas.common import Side, TradingState
from schemas.orders import OrdType
from tests.test_order_risk import S, irisk

CFG = OrderConfig()


def limits(**levels: tuple[float | None, float | None]) -> Any:
    def lookup(metric: str, group: str) -> EffectiveLimit:
        if metric in levels:
            soft, hard = levels[metric]
            return EffectiveLimit(soft, hard, "account:A" if soft is not None else None,
                                  "account:A" if hard is not None else None)
        return NO_LIMIT
    return lookup


def view(side: str = "buy", qty: float = 100, price: float | None = 100.0, symbol: str = "AAPL",
         strategy: str = "s1", cl: str = "new", ts: int = S,
         replaces: OpenOrder | None = None) -> OrderView:
    return OrderView("A", strategy, symbol, Side(side), qty, price, cl, ts,
                     OrdType.LIMIT if price is not None else OrdType.MARKET, replaces)


def gate(o: OrderView | None = None, *, ref: Any = "default", book: AccountBook | None = None,
         config: OrderConfig = CFG, lim: Any = None, **kw: Any) -> GateInput:
    return GateInput(o or view(), irisk("AAPL", 0, 100.0) if ref == "default" else ref,
                     book or AccountBook("A"), config, lim or limits(), **kw)


def book_with(qty: float = 0.0, symbol: str = "AAPL", px: float = 100.0,
              strategy: str = "s1") -> AccountBook:
    book = AccountBook("A")
    if qty:
        book.apply_fill(symbol, Side.BUY if qty > 0 else Side.SELL, abs(qty), px, strategy)
    book.mark(symbol, px)
    return book


def must(found: Finding | None) -> Finding:
    assert found is not None
    return found


def code(found: Any) -> str | None:
    return None if found is None else found.result.code


# --- reference data ---------------------------------------------------------------------------


def test_missing_reference_is_hard_or_a_warning() -> None:
    assert check_reference(gate()) is None
    assert must(check_reference(gate(ref=None))).hard
    soft = must(check_reference(gate(ref=None, config=OrderConfig(
        fail_closed_on_missing_reference=False))))
    assert soft.result.code == "MISSING_REFERENCE_DATA" and not soft.hard
    # older than the history kept: its own code, with how much older
    expired = must(check_reference(gate(view(ts=10 * S), ref=None, ref_kept_since=12 * S)))
    assert expired.hard and expired.result.code == "REFERENCE_HISTORY_EXPIRED"
    assert expired.result.observed == 2.0 and "2 s older" in expired.result.message
    assert "60 s or 512 versions" in expired.result.message
    # a kept history that starts before the order is not the reason: nothing at its time
    assert code(check_reference(gate(view(ts=13 * S), ref=None, ref_kept_since=12 * S))) == \
        "MISSING_REFERENCE_DATA"


@pytest.mark.parametrize("kw", [{"tradable": False}, {"status": "halted"},
                                {"status": "Closed"}])
def test_instrument_not_tradable(kw: dict[str, Any]) -> None:
    assert code(check_tradable(gate(ref=irisk(**kw)))) == "INSTRUMENT_NOT_TRADABLE"
    assert check_tradable(gate()) is None


def test_restricted_list_status_and_short_sale_restriction() -> None:
    assert code(check_restricted(gate(config=OrderConfig(
        restricted_symbols=frozenset({"AAPL"}))))) == "RESTRICTED"
    assert code(check_restricted(gate(ref=irisk(status="restricted")))) == "RESTRICTED"
    ssr = irisk(status="short_sale_restricted")
    assert check_restricted(gate(view("sell", 50), ref=ssr, book=book_with(100))) is None
    hit = must(check_restricted(gate(view("sell", 150), ref=ssr, book=book_with(100))))
    assert code(hit) == "RESTRICTED" and hit.result.observed == 150
    assert check_restricted(gate(view("buy", 150), ref=ssr)) is None


def test_price_and_size_precision() -> None:
    assert check_price_precision(gate(view(price=100.01))) is None
    hit = must(check_price_precision(gate(view(price=100.005))))
    assert code(hit) == "PRICE_PRECISION" and hit.result.limit == 0.01
    assert check_price_precision(gate(view(price=None))) is None
    assert check_size_precision(gate(ref=irisk(lot_size=100.0), o=view(qty=300))) is None
    assert code(check_size_precision(gate(ref=irisk(lot_size=100.0), o=view(qty=250)))) \
        == "SIZE_PRECISION"


def test_min_and_max_quantity_from_reference_and_limits() -> None:
    ref = irisk(min_qty=10.0, max_qty=1000.0)
    assert code(check_min_qty(gate(view(qty=5), ref=ref))) == "MIN_QTY"
    assert check_min_qty(gate(view(qty=10), ref=ref)) is None
    assert code(check_max_qty(gate(view(qty=1001), ref=ref))) == "MAX_QTY"
    hit = must(check_max_qty(gate(view(qty=600), lim=limits(order_qty=(100.0, 500.0)))))
    assert hit.hard and hit.result.limit == 500.0
    warn = must(check_max_qty(gate(view(qty=200), lim=limits(order_qty=(100.0, 500.0)))))
    assert not warn.hard and warn.result.limit == 100.0


def test_max_order_notional_hard_and_soft() -> None:
    lim = limits(order_notional=(5_000.0, 20_000.0))
    assert check_order_notional(gate(view(qty=10), lim=lim)) is None
    soft = must(check_order_notional(gate(view(qty=100), lim=lim)))
    assert soft is not None and not soft.hard
    hard = must(check_order_notional(gate(view(qty=300), lim=lim)))
    assert hard.hard and (hard.result.observed, hard.result.limit) == (30_000.0, 20_000.0)
    assert "account:A" in hard.result.message


def test_collar_tiers_are_like_luld() -> None:
    assert collar_band(100.0, CFG) == pytest.approx(5.0)
    assert collar_band(2.0, CFG) == pytest.approx(0.4)
    assert collar_band(0.5, CFG) == pytest.approx(0.15)
    custom = OrderConfig(collar_tiers=(CollarTier(min_price=0, pct=0.1),))
    assert collar_band(100.0, custom) == pytest.approx(10.0)


def test_price_collar_in_tiers_and_in_volatility_units() -> None:
    assert check_price_collar(gate(view(price=104.99))) is None
    hit = must(check_price_collar(gate(view(price=106.0))))
    assert code(hit) == "PRICE_COLLAR" and hit.result.observed == pytest.approx(0.06)
    # vol 0.01 per step, 50 units = 50%: the tier binds first; with a calm instrument the
    # volatility band is the tighter one
    calm = irisk(vol=0.0005)
    hit = must(check_price_collar_vol(gate(view(price=103.0), ref=calm)))
    assert code(hit) == "PRICE_COLLAR" and hit.result.observed == pytest.approx(60.0)
    assert check_price_collar_vol(gate(view(price=102.0), ref=calm)) is None
    assert check_price_collar_vol(gate(view(price=None))) is None


def test_adv_participation() -> None:
    lim = limits(adv_participation=(0.01, 0.05))
    assert check_adv(gate(view(qty=5_000), lim=lim)) is None
    assert not must(check_adv(gate(view(qty=20_000), lim=lim))).hard
    assert must(check_adv(gate(view(qty=60_000), lim=lim))).hard
    assert check_adv(gate(view(qty=60_000), ref=irisk(adv=None), lim=lim)) is None


def test_duplicate_content_and_duplicate_id() -> None:
    assert code(check_duplicate(gate(duplicate_of="c7"))) == "DUPLICATE_ORDER"
    book = book_with()
    book.add_order(OpenOrder("new", "AAPL", Side.BUY, 10, 99.0, "s1", 0))
    assert code(check_duplicate(gate(book=book))) == "DUPLICATE_ORDER"
    assert check_duplicate(gate()) is None


def test_rate_throttle_per_account_and_strategy() -> None:
    lim = limits(order_rate=(5.0, 10.0))
    assert check_rate(gate(lim=lim, account_messages=3, strategy_messages=3)) == []
    found = check_rate(gate(lim=lim, account_messages=11, strategy_messages=7))
    assert [(f.result.code, f.hard) for f in found] == [("RATE_THROTTLE", True),
                                                       ("RATE_THROTTLE", False)]


# --- exposure ---------------------------------------------------------------------------------


def test_position_limits_count_open_orders() -> None:
    book = book_with(100)
    book.add_order(OpenOrder("o1", "AAPL", Side.BUY, 100, 100.0, "s1", 0))
    g = gate(view(qty=100), book=book, lim=limits(position_long=(None, 25_000.0)))
    change = account_exposure_change(g)
    assert (change.before.long, change.after.long) == (20_000.0, 30_000.0)
    hits = check_positions(g, "account", lambda _: change)
    assert [h.result.code for h in hits] == ["POSITION_LIMIT"] and hits[0].metric == \
        "position_long"
    # a sell never raises the long exposure, even over the limit
    g = gate(view("sell", 100), book=book, lim=limits(position_long=(None, 5_000.0)))
    assert check_positions(g, "account", account_exposure_change) == []


def test_short_gross_net_and_group_measures() -> None:
    book = book_with(-100, strategy="s2")
    lim = limits(position_short=(None, 15_000.0), gross_exposure=(None, 15_000.0),
                 net_exposure=(None, 15_000.0))
    g = gate(view("sell", 100), book=book, lim=lim)
    metrics = {h.metric for h in check_positions(g, "account", account_exposure_change)}
    assert metrics == {"position_short", "gross_exposure", "net_exposure"}
    # strategy s1 holds nothing: its own measures stay under the limit
    assert check_positions(g, "strategy", strategy_exposure_change) == []
    inst = instrument_exposure_change(g)
    assert inst.after.short == pytest.approx(20_000.0)


@pytest.mark.parametrize("group", ["account", "strategy", "instrument"])
def test_a_position_limit_of_one_group_alone_is_checked_by_the_gate(group: str) -> None:
    """The gate works a group's exposure change out only when that group has a position
    limit: one on the strategy or the instrument alone must still bind."""
    def only(metric: str, asked: str) -> EffectiveLimit:
        if (metric, asked) == ("gross_exposure", group):
            return EffectiveLimit(None, 15_000.0, None, f"{group}:X")
        return NO_LIMIT

    result = evaluate(gate(view(qty=200), book=book_with(0), lim=only))
    assert [(f.result.code, f.metric) for f in result.failures] == [
        ("POSITION_LIMIT", "gross_exposure")]
    assert group in result.failures[0].result.message
    assert evaluate(gate(view(qty=100), book=book_with(0), lim=only)).accepted


def test_replace_swaps_the_old_order_out() -> None:
    book = book_with()
    old = OpenOrder("o1", "AAPL", Side.BUY, 100, 100.0, "s1", 0)
    book.add_order(old)
    g = gate(view(qty=120, cl="o2", replaces=old), book=book)
    change = account_exposure_change(g)
    assert (change.before.long, change.after.long) == (10_000.0, 12_000.0)


def test_credit_includes_open_orders_and_losses() -> None:
    book = book_with(100, px=100.0)
    book.mark("AAPL", 80.0)  # 2,000 loss
    book.add_order(OpenOrder("o1", "MSFT", Side.SELL, 10, 50.0, "s1", 0))
    book.mark("MSFT", 50.0)
    ref = irisk(price=80.0)
    g = gate(view(qty=10), ref=ref, book=book, lim=limits(credit=(None, 11_000.0)))
    change = account_exposure_change(g)
    hit = must(check_credit(g, change))
    # (100 held + 10 bought) at 80, the MSFT sell 10 at 50, the 2,000 loss
    assert hit is not None and hit.result.observed == pytest.approx(8800 + 500 + 2000)
    reducing = gate(view("sell", 50), ref=ref, book=book, lim=limits(credit=(None, 1.0)))
    assert check_credit(reducing, account_exposure_change(reducing)) is None


def test_self_cross_against_own_resting_orders() -> None:
    book = book_with()
    book.add_order(OpenOrder("s", "AAPL", Side.SELL, 10, 100.5, "s9", 0))
    assert check_self_cross(gate(view(price=100.4), book=book)) is None
    hit = must(check_self_cross(gate(view(price=100.5), book=book)))
    assert code(hit) == "SELF_CROSS" and hit.result.limit == 100.5
    assert hit.result.message == "would trade against own resting sell s at 100.5"
    market = must(check_self_cross(gate(view(price=None), book=book)))
    assert code(market) == "SELF_CROSS"
    assert market.result.message == "market order would trade against own resting sell s at 100.5"
    # a resting order without a price is known only from an execution report (the gate never
    # saw its limit): its price is unknown, so it crosses nothing, even a market order
    book.add_order(OpenOrder("m", "AAPL", Side.BUY, 10, None, "s9", 0))
    assert check_self_cross(gate(view("sell", price=101.0), book=book)) is None
    assert check_self_cross(gate(view("sell", price=None), book=book)) is None
    book.add_order(OpenOrder("b", "AAPL", Side.BUY, 10, 101.5, "s9", 0))
    priced = must(check_self_cross(gate(view("sell", price=101.0), book=book)))
    assert priced.result.message == "would trade against own resting buy b at 101.5"
    book.remove_order("m")
    book.remove_order("b")
    old = book.open_orders["s"]
    assert check_self_cross(gate(view("sell", price=99.0, replaces=old), book=book)) is None


def test_trading_state_gate() -> None:
    book = book_with(100)
    halted = gate(view("sell", 10), book=book, trading_state=TradingState.HALTED,
                  state_scope="account:A", state_cause="kill")
    assert code(check_trading_state(halted)) == "TRADING_STATE"
    def reducing(o: OrderView) -> GateInput:
        return gate(o, book=book, trading_state=TradingState.REDUCING, state_scope="account:A")

    assert check_trading_state(reducing(view("sell", 100))) is None
    assert code(check_trading_state(reducing(view("sell", 101)))) == "TRADING_STATE"
    assert code(check_trading_state(reducing(view("buy", 1)))) == "TRADING_STATE"


def test_stale_reference_acts_as_reducing_for_the_order() -> None:
    book = book_with(100)
    stale = irisk(stale=True)
    assert code(check_trading_state(gate(view("buy", 10), ref=stale, book=book))) == \
        "TRADING_STATE"
    assert check_trading_state(gate(view("sell", 10), ref=stale, book=book)) is None
    old = irisk(ts=0)
    late = view("buy", 10, ts=CFG.max_reference_age_ns + 1)  # type: ignore[operator]
    assert code(check_trading_state(gate(late, ref=old, book=book))) == "TRADING_STATE"


def test_personal_threshold_warns_or_denies() -> None:
    warn_cfg = OrderConfig.model_validate({"personal": {"action": "warn"}})
    warn = check_personal(gate(view(qty=500), config=warn_cfg, personal_qty=200.0))
    assert [(f.result.code, f.hard) for f in warn] == [("PERSONAL_THRESHOLD", False)]
    deny_cfg = OrderConfig.model_validate({"personal": {"action": "deny"}})
    deny = check_personal(gate(view(qty=500), config=deny_cfg, personal_notional=1_000.0))
    assert [f.hard for f in deny] == [True]


def test_evaluate_lists_every_failure_and_keeps_warnings_apart() -> None:
    lim = limits(order_notional=(100.0, 1e9), order_qty=(None, 10.0))
    result = evaluate(gate(view(qty=20, price=100.005), lim=lim, duplicate_of="c1"))
    assert not result.accepted
    assert result.reason_codes == ["PRICE_PRECISION", "MAX_QTY", "DUPLICATE_ORDER"]
    assert [w.result.code for w in result.warnings] == ["MAX_ORDER_NOTIONAL"]
    ok = evaluate(gate(view(qty=5), lim=lim))
    assert ok.accepted and [w.result.code for w in ok.warnings] == ["MAX_ORDER_NOTIONAL"]


# --- properties -------------------------------------------------------------------------------


@st.composite
def _books(draw: st.DrawFn) -> AccountBook:
    book = AccountBook("A")
    for symbol in ("AAPL", "MSFT"):
        qty = draw(st.integers(-2000, 2000))
        if qty:
            book.apply_fill(symbol, Side.BUY if qty > 0 else Side.SELL, abs(qty), 100.0,
                            draw(st.sampled_from(["s1", "s2"])))
        book.mark(symbol, draw(st.floats(50.0, 150.0)))
    for i in range(draw(st.integers(0, 4))):
        book.add_order(OpenOrder(f"o{i}", draw(st.sampled_from(["AAPL", "MSFT"])),
                                 draw(st.sampled_from(list(Side))),
                                 float(draw(st.integers(1, 1000))),
                                 draw(st.floats(90.0, 110.0)), "s1", 0))
    return book


_levels = st.one_of(st.none(), st.floats(0.0, 300_000.0))


@st.composite
def _limit_maps(draw: st.DrawFn) -> dict[str, tuple[float | None, float | None]]:
    out = {}
    for metric in ("order_notional", "order_qty", "position_long", "position_short",
                   "gross_exposure", "net_exposure", "credit", "adv_participation"):
        hard = draw(_levels)
        soft = draw(st.one_of(st.none(), st.floats(0.0, hard))) if hard is not None else None
        out[metric] = (soft, hard)
    return out


_orders = st.builds(
    lambda side, qty, price, sym: view(side, float(qty), price, sym),
    st.sampled_from(["buy", "sell"]), st.integers(1, 5000),
    st.one_of(st.none(), st.floats(90.0, 110.0).map(lambda x: round(x, 2))),
    st.sampled_from(["AAPL", "MSFT"]))


@settings(max_examples=300, deadline=None)
@given(_orders, _books(), _limit_maps(), st.sampled_from(list(TradingState)))
def test_accept_iff_no_hard_check_fails(o: OrderView, book: AccountBook,
                                        lim: dict[str, Any], state: TradingState) -> None:
    g = gate(o, ref=irisk(o.symbol, 0, 100.0), book=book, lim=limits(**lim),
             trading_state=state, state_scope="account:A")
    result = evaluate(g)
    assert result.accepted == (not result.failures)
    assert all(f.hard for f in result.failures) and not any(f.hard for f in result.warnings)
    if not result.accepted:
        return
    # independent oracle: an accepted order breaks no hard limit it makes worse
    px = o.price if o.price is not None else 100.0
    notional_hard = lim["order_notional"][1]
    assert notional_hard is None or o.qty * px <= notional_hard * (1 + 1e-9) + 1e-9
    qty_hard = lim["order_qty"][1]
    assert qty_hard is None or o.qty <= qty_hard + 1e-9
    change = account_exposure_change(g)
    for metric, attr in (("position_long", "long"), ("position_short", "short"),
                         ("gross_exposure", "gross"), ("net_exposure", "net")):
        hard = lim[metric][1]
        after, before = getattr(change.after, attr), getattr(change.before, attr)
        assert hard is None or after <= hard * (1 + 1e-9) + 1e-6 or after <= before + 1e-6
    assert state is not TradingState.HALTED


@settings(max_examples=300, deadline=None)
@given(_orders, _books())
def test_reducing_never_lets_exposure_grow(o: OrderView, book: AccountBook) -> None:
    g = gate(o, ref=irisk(o.symbol, 0, 100.0), book=book, trading_state=TradingState.REDUCING,
             state_scope="account:A")
    result = evaluate(g)
    if not result.accepted:
        return
    assert is_reducing(book, o)
    change = account_exposure_change(g)
    assert change.after.gross <= change.before.gross + 1e-6
    assert change.after.long <= change.before.long + 1e-6
    assert change.after.short <= change.before.short + 1e-6
    # even if every open order on the order's side fills, the position only shrinks
    pos = book.positions.get(o.symbol)
    q = pos.qty if pos is not None else 0.0
    side_open = book.open_buy if o.side is Side.BUY else book.open_sell
    worst = q + (side_open.get(o.symbol, 0.0) + o.qty) * (1 if o.side is Side.BUY else -1)
    assert abs(worst) <= abs(q) + 1e-9 and worst * q >= -1e-9
