"""Event models: every type round-trips through the codec, and invalid input is refused with
a one-line message that names the field (property tests over generated valid events)."""

from __future__ import annotations

import base64
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import DecodeError, decode, encode, from_object, to_object
from schemas.common import INT64_MAX, Envelope, Severity, Side, TradingState
from schemas.control import StateCommand
from schemas.market import Bar, InstrumentPhase, MarketEvent
from schemas.orders import ExecType, OrderEvent, OrdType, TimeInForce
from schemas.outputs import BreachLevel, Decision, Zone
from schemas.registry import EVENT_TYPES

# --- valid field values -------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)
POSITIVE = st.floats(min_value=0, exclude_min=True, allow_infinity=False)
NON_NEG = st.floats(min_value=0, allow_infinity=False)
FRACTION = st.floats(min_value=0, max_value=1)
NANOS = st.integers(min_value=0, max_value=INT64_MAX)
COUNT = st.integers(min_value=0, max_value=INT64_MAX)
TEXT = st.text(max_size=40)
IDENT = st.text(min_size=1, max_size=128)
SYMBOL = st.from_regex(r"[A-Za-z0-9._:/\-]{1,64}", fullmatch=True)
SCOPE = st.builds(lambda kind, ident: f"{kind}:{ident}",
                  st.sampled_from(["firm", "desk", "account", "strategy", "instrument"]),
                  st.from_regex(r"[A-Za-z0-9_./\-][A-Za-z0-9_./:\-]{0,30}", fullmatch=True))
CODE = st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def model(cls: type[Envelope] | None = None, fix: Any = None, /,
          **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Keyword strategies -> a validated model (or a plain dict for nested models when `cls`
    is None). `fix` repairs cross-field rules (a Bar's high above its low...)."""
    base = st.fixed_dictionaries(fields)
    if fix is not None:
        base = base.map(fix)
    return base if cls is None else base.map(cls.model_validate)


ENVELOPE = {"event_id": IDENT, "ts_event": NANOS, "ts_init": NANOS, "source": IDENT,
            "seq": COUNT, "schema_version": st.integers(1, 5)}


def event(type_name: str, fix: Any = None, **fields: st.SearchStrategy[Any]
          ) -> st.SearchStrategy[Envelope]:
    return model(EVENT_TYPES[type_name], fix, **ENVELOPE, **fields)


def _bar(d: dict[str, Any]) -> dict[str, Any]:
    low, a, b, high = sorted(d.pop("prices"))
    return {**d, "low": low, "open": a, "close": b, "high": high}


def _book(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "bids": sorted(d["bids"], key=lambda lv: -lv["price"]),
            "asks": sorted(d["asks"], key=lambda lv: lv["price"])}


def _min_max(d: dict[str, Any]) -> dict[str, Any]:
    if d["min_qty"] is not None and d["max_qty"] is not None and d["min_qty"] > d["max_qty"]:
        d = {**d, "min_qty": d["max_qty"], "max_qty": d["min_qty"]}
    return d


def _limit_price(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "price": d["price"] or 1.0} if d["ord_type"] is OrdType.LIMIT else d


def _fill(d: dict[str, Any]) -> dict[str, Any]:
    if d["exec_type"] in (ExecType.FILL, ExecType.PARTIAL_FILL):
        return {**d, "last_px": d["last_px"] or 1.0, "last_qty": max(d["last_qty"], 1.0),
                "cum_qty": max(d["cum_qty"], d["last_qty"], 1.0)}
    return d


def _levels(d: dict[str, Any]) -> dict[str, Any]:
    soft, hard = d["soft"], d["hard"]
    return {"soft": min(soft, hard), "hard": max(soft, hard)} if None not in (soft, hard) else d


LEVEL = model(None, _levels, soft=opt(NON_NEG), hard=opt(NON_NEG))
LIMITS = st.dictionaries(st.sampled_from(["gross", "net", "var_95", "drawdown"]), LEVEL,
                         max_size=4)
BACKTEST = model(None, None, observations=COUNT, exceedances=COUNT, expected_rate=FRACTION,
                 kupiec_lr=NON_NEG, kupiec_p=FRACTION, christoffersen_ind_lr=NON_NEG,
                 christoffersen_ind_p=FRACTION, christoffersen_cc_lr=NON_NEG,
                 christoffersen_cc_p=FRACTION, zone=st.sampled_from(Zone))
PRICED_ORDER = {"account": IDENT, "symbol": SYMBOL, "side": st.sampled_from(Side),
                "ord_type": st.sampled_from(OrdType), "price": opt(POSITIVE), "qty": POSITIVE,
                "strategy": IDENT, "cl_ord_id": IDENT}

STRATEGIES: dict[str, st.SearchStrategy[Envelope]] = {
    "Trade": event("Trade", symbol=SYMBOL, price=POSITIVE, qty=POSITIVE,
                   aggressor=opt(st.sampled_from(Side)), trade_id=opt(TEXT), venue=opt(TEXT)),
    "Quote": event("Quote", symbol=SYMBOL, bid=POSITIVE, ask=POSITIVE, bid_size=NON_NEG,
                   ask_size=NON_NEG, venue=opt(TEXT)),
    "Bar": event("Bar", _bar, symbol=SYMBOL, prices=st.lists(POSITIVE, min_size=4, max_size=4),
                 volume=NON_NEG, interval_s=POSITIVE),
    "BookTop": event("BookTop", _book, symbol=SYMBOL,
                     bids=st.lists(model(None, price=POSITIVE, size=POSITIVE), max_size=5),
                     asks=st.lists(model(None, price=POSITIVE, size=POSITIVE), max_size=5)),
    "InstrumentStatus": event(
        "InstrumentStatus", _min_max, symbol=SYMBOL, status=st.sampled_from(InstrumentPhase),
        tick_size=opt(POSITIVE), lot_size=opt(POSITIVE), min_qty=opt(POSITIVE),
        max_qty=opt(POSITIVE), ref_price=opt(POSITIVE), adv=opt(NON_NEG),
        currency=st.from_regex(r"[A-Z]{3}", fullmatch=True), sector=opt(TEXT)),
    "NewsSentiment": event("NewsSentiment", symbol=SYMBOL,
                           sentiment=st.floats(min_value=-1, max_value=1), relevance=FRACTION,
                           headline=opt(st.text(max_size=500)), provider=opt(TEXT)),
    "OrderNew": event("OrderNew", _limit_price, **PRICED_ORDER,
                      time_in_force=st.sampled_from(TimeInForce)),
    "OrderReplace": event("OrderReplace", _limit_price, **PRICED_ORDER, orig_cl_ord_id=IDENT),
    "OrderCancel": event("OrderCancel", account=IDENT, cl_ord_id=IDENT, orig_cl_ord_id=IDENT,
                         symbol=SYMBOL),
    "ExecutionReport": event(
        "ExecutionReport", _fill, account=IDENT, cl_ord_id=IDENT, exec_id=IDENT,
        exec_type=st.sampled_from(ExecType), symbol=SYMBOL, side=st.sampled_from(Side),
        last_px=opt(POSITIVE), last_qty=NON_NEG, leaves_qty=NON_NEG, cum_qty=NON_NEG,
        avg_px=opt(POSITIVE), counterparty=opt(IDENT), text=opt(st.text(max_size=500))),
    "MassCancel": event("MassCancel", account=IDENT, scope=SCOPE, symbol=opt(SYMBOL),
                        reason=st.text(min_size=1, max_size=500), requested_by=IDENT),
    "RiskAlert": event(
        "RiskAlert", reason_code=CODE, severity=st.sampled_from(Severity), entity=IDENT,
        entity_kind=st.sampled_from(["instrument", "account", "model", "worker", "scope"]),
        observed=FINITE, threshold=FINITE, message=st.text(max_size=1000),
        features=st.lists(model(None, name=TEXT, value=FINITE, contribution=FINITE),
                          max_size=3),
        model=opt(TEXT), cause_event_id=IDENT),
    "RiskDecision": event(
        "RiskDecision", account=IDENT, strategy=IDENT, symbol=SYMBOL, cl_ord_id=IDENT,
        order_event_id=IDENT, decision=st.sampled_from(Decision),
        reason_codes=st.lists(CODE, max_size=3),
        checks=st.lists(model(None, code=CODE, observed=opt(FINITE), limit=opt(FINITE),
                              message=TEXT), max_size=3),
        warnings=st.lists(model(None, code=CODE, message=TEXT), max_size=2),
        trading_state=st.sampled_from(TradingState), decision_latency_ns=COUNT),
    "LimitBreach": event("LimitBreach", account=IDENT, scope=SCOPE, metric=IDENT,
                         level=st.sampled_from(BreachLevel), observed=FINITE, limit=FINITE,
                         message=st.text(max_size=1000)),
    "InstrumentRisk": event(
        "InstrumentRisk", symbol=SYMBOL, price=POSITIVE, last_return=FINITE, vol=NON_NEG,
        var_95=NON_NEG, var_99=NON_NEG, es_975=NON_NEG, var_method=TEXT,
        methods=st.dictionaries(TEXT, model(None, var_95=NON_NEG, var_99=NON_NEG,
                                            es_975=NON_NEG), max_size=3),
        anomaly_score=FRACTION, regime=st.sampled_from(["calm", "stressed", "unknown"]),
        tail_prob=FRACTION, spread_bps=opt(NON_NEG), amihud=opt(NON_NEG),
        participation=opt(NON_NEG), adv=opt(NON_NEG), stale=st.booleans(),
        tradable=st.booleans(), status=TEXT, tick_size=opt(FINITE), lot_size=opt(FINITE),
        min_qty=opt(FINITE), max_qty=opt(FINITE), sentiment=opt(FINITE), events_seen=COUNT),
    "AccountRisk": event(
        "AccountRisk", account=IDENT, desk=opt(IDENT), firm=opt(IDENT),
        trading_state=st.sampled_from(TradingState),
        positions=st.lists(model(None, symbol=SYMBOL, qty=FINITE, avg_cost=FINITE, mark=FINITE,
                                 market_value=FINITE, unrealized_pnl=FINITE,
                                 realized_pnl=FINITE), max_size=3),
        realized_pnl=FINITE, unrealized_pnl=FINITE, day_pnl=FINITE, gross_exposure=NON_NEG,
        net_exposure=FINITE, long_exposure=NON_NEG, short_exposure=NON_NEG, leverage=NON_NEG,
        hhi=FRACTION, largest_share=FRACTION, drawdown_intraday=NON_NEG,
        drawdown_trailing=NON_NEG, var_95=NON_NEG, es_975=NON_NEG,
        open_order_notional=NON_NEG, counterparty_exposure=st.dictionaries(TEXT, FINITE,
                                                                           max_size=3),
        time_to_liquidate_days=NON_NEG, liquidity_adjusted_var=NON_NEG, anomaly_score=FRACTION),
    "ScopeContribution": event(
        "ScopeContribution", scope=SCOPE, account=IDENT,
        trading_state=st.sampled_from(TradingState), realized_pnl=FINITE,
        unrealized_pnl=FINITE, day_pnl=FINITE, gross_exposure=NON_NEG, net_exposure=FINITE,
        long_exposure=NON_NEG, short_exposure=NON_NEG, var_95=NON_NEG, es_975=NON_NEG,
        open_order_notional=NON_NEG),
    "ScopeRisk": event(
        "ScopeRisk", scope=SCOPE, accounts=st.integers(0, 10_000),
        trading_state=st.sampled_from(TradingState), state_cause=st.text(max_size=500),
        realized_pnl=FINITE, unrealized_pnl=FINITE, day_pnl=FINITE, gross_exposure=NON_NEG,
        net_exposure=FINITE, long_exposure=NON_NEG, short_exposure=NON_NEG, var_95=NON_NEG,
        es_975=NON_NEG, open_order_notional=NON_NEG, drawdown_intraday=NON_NEG,
        drawdown_trailing=NON_NEG, accounts_reducing=st.integers(0, 10_000),
        accounts_halted=st.integers(0, 10_000)),
    "TradingStateChanged": event(
        "TradingStateChanged", scope=SCOPE, from_state=st.sampled_from(TradingState),
        to_state=st.sampled_from(TradingState), cause=st.text(min_size=1, max_size=500),
        metric=opt(TEXT), observed=opt(FINITE), threshold=opt(FINITE), actor=opt(IDENT)),
    "ModelHealth": event(
        "ModelHealth", model_id=IDENT, entity=IDENT, method=TEXT, rolling=opt(BACKTEST),
        since_start=opt(BACKTEST), metrics=st.dictionaries(TEXT, FINITE, max_size=3),
        drift=st.booleans(), fallback_active=st.booleans()),
    "DeadLetter": event(
        "DeadLetter", original_topic=TEXT, original_partition=st.integers(-1, 2**31),
        original_offset=st.integers(-1, INT64_MAX), original_key=opt(TEXT),
        original_value_b64=st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
        error_kind=st.sampled_from(["too_large", "undecodable", "invalid", "unknown_type",
                                    "duplicate", "out_of_order", "unauthorized",
                                    "processing_error"]),
        reason=st.text(max_size=2000), worker=IDENT),
    "LimitConfig": event(
        "LimitConfig", scope=SCOPE, parent=opt(SCOPE), limits=LIMITS,
        risk_appetite=st.floats(min_value=0, max_value=10, exclude_min=True),
        override=opt(model(None, limits=LIMITS, approver=IDENT, expires_ts=NANOS,
                           reason=st.text(min_size=1, max_size=500))),
        changed_by=IDENT, reason=st.text(max_size=500), deleted=st.booleans()),
    "TradingStateCommand": event(
        "TradingStateCommand", scope=SCOPE, command=st.sampled_from(StateCommand),
        issued_by=IDENT, reason=st.text(min_size=1, max_size=500)),
}

TYPES = sorted(EVENT_TYPES)
ANY_EVENT = st.one_of([STRATEGIES[name] for name in TYPES])


def test_every_event_type_has_a_strategy() -> None:
    assert sorted(STRATEGIES) == TYPES


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", TYPES)
@settings(max_examples=30)
@given(data=st.data())
def test_round_trip(type_name: str, data: st.DataObject) -> None:
    original = data.draw(STRATEGIES[type_name])
    assert original.type == type_name
    assert decode(encode(original)) == original
    assert from_object(to_object(original)) == original


# --- rejections ----------------------------------------------------------------------------


def _refused(obj: dict[str, Any], *fragments: str) -> str:
    """`obj` is refused as `invalid` with a one-line reason holding every fragment."""
    with pytest.raises(DecodeError) as info:
        from_object(obj)
    error = info.value
    assert error.kind == "invalid"
    assert "\n" not in error.reason and "errors.pydantic.dev" not in error.reason
    for fragment in fragments:
        assert fragment in error.reason, (fragment, error.reason)
    return error.reason


def _required(cls: type[Envelope]) -> list[str]:
    return [n for n, f in cls.model_fields.items() if f.is_required() and n != "type"]


@settings(max_examples=100)
@given(original=ANY_EVENT, data=st.data())
def test_missing_required_field_is_named(original: Envelope, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(_required(type(original))))
    obj = to_object(original)
    del obj[field]
    _refused(obj, original.type, field, "Field required")


@settings(max_examples=60)
@given(original=ANY_EVENT, extra=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
def test_extra_field_is_named(original: Envelope, extra: str) -> None:
    obj = to_object(original)
    if extra in obj or extra in type(original).model_fields:
        return
    obj[extra] = 1
    _refused(obj, extra, "Extra inputs are not permitted")


@settings(max_examples=100)
@given(original=ANY_EVENT, data=st.data(),
       bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_numbers_are_refused(original: Envelope, data: st.DataObject,
                                        bad: float) -> None:
    obj = to_object(original)
    floats = [k for k, v in obj.items() if isinstance(v, float)]
    if not floats:
        return
    field = data.draw(st.sampled_from(floats))
    _refused({**obj, field: bad}, field, "finite number")


@settings(max_examples=20)
@given(health=STRATEGIES["ModelHealth"], bad=st.sampled_from([math.nan, math.inf]))
def test_non_finite_numbers_inside_nested_values_are_refused(health: Envelope,
                                                             bad: float) -> None:
    _refused({**to_object(health), "metrics": {"mae": bad}}, "metrics.mae", "finite number")
    book = {"type": "BookTop", "event_id": "e", "ts_event": 1, "ts_init": 1, "source": "t",
            "symbol": "X", "bids": [{"price": bad, "size": 1}], "asks": []}
    _refused(book, "bids.0.price", "finite number")


def test_json_nan_literal_is_undecodable() -> None:
    # Python's json module writes NaN; JSON has no such token, so it never reaches a model.
    raw = (b'{"type":"Trade","event_id":"e","ts_event":1,"ts_init":1,"source":"s",'
           b'"symbol":"X","price":NaN,"qty":1}')
    with pytest.raises(DecodeError) as info:
        decode(raw)
    assert info.value.kind == "undecodable"


POSITIVE_FIELDS = {"Trade": ["price", "qty"], "Quote": ["bid", "ask"],
                   "OrderNew": ["qty"], "OrderReplace": ["qty"],
                   "InstrumentRisk": ["price"]}


@pytest.mark.parametrize("type_name", sorted(POSITIVE_FIELDS))
@settings(max_examples=30)
@given(data=st.data(), bad=st.floats(max_value=0, allow_nan=False, allow_infinity=False))
def test_non_positive_prices_and_sizes_are_refused(type_name: str, data: st.DataObject,
                                                   bad: float) -> None:
    obj = to_object(data.draw(STRATEGIES[type_name]))
    field = data.draw(st.sampled_from(POSITIVE_FIELDS[type_name]))
    _refused({**obj, field: bad}, field, "greater than 0")


@settings(max_examples=40)
@given(original=STRATEGIES["Quote"], bad=st.floats(max_value=-1e-300, allow_nan=False,
                                                   allow_infinity=False))
def test_negative_sizes_are_refused(original: Envelope, bad: float) -> None:
    _refused({**to_object(original), "bid_size": bad}, "bid_size", "greater than or equal to 0")


ENUM_FIELDS = {"Trade": "aggressor", "OrderNew": "side", "OrderReplace": "ord_type",
               "ExecutionReport": "exec_type", "RiskAlert": "severity",
               "TradingStateChanged": "to_state", "InstrumentStatus": "status",
               "TradingStateCommand": "command", "RiskDecision": "decision"}


@pytest.mark.parametrize("type_name", sorted(ENUM_FIELDS))
@settings(max_examples=25)
@given(data=st.data(), bad=st.text(max_size=12))
def test_unknown_enum_values_are_refused(type_name: str, data: st.DataObject,
                                         bad: str) -> None:
    field = ENUM_FIELDS[type_name]
    cls = EVENT_TYPES[type_name]
    annotation = str(cls.model_fields[field].annotation)
    obj = to_object(data.draw(STRATEGIES[type_name]))
    valid = {m.value for e in (Side, OrdType, ExecType, Severity, TradingState,
                               InstrumentPhase, StateCommand, Decision)
             if e.__name__ in annotation for m in e}
    if bad in valid:
        return
    _refused({**obj, field: bad}, field, "Input should be")


BAD_SCOPES = ["account", "account:", "team:ACC-1", "ACCOUNT:ACC-1", "account: ACC-1",
              "account:ACC 1", ":ACC-1", "account::x", ""]


SCOPED = st.one_of([STRATEGIES[t] for t in ("MassCancel", "LimitConfig", "TradingStateCommand",
                                            "TradingStateChanged", "LimitBreach")])


@pytest.mark.parametrize("scope", BAD_SCOPES)
@settings(max_examples=10)
@given(original=SCOPED)
def test_bad_scope_strings_are_refused(scope: str, original: Envelope) -> None:
    _refused({**to_object(original), "scope": scope}, "scope", "KIND:ID")


@settings(max_examples=60)
@given(original=STRATEGIES["Bar"], gap=st.floats(min_value=1e-6, max_value=1e6))
def test_bar_with_high_below_low_is_refused(original: Envelope, gap: float) -> None:
    assert isinstance(original, Bar)
    obj = {**to_object(original), "high": original.low / (1 + gap)}
    if obj["high"] <= 0 or obj["high"] >= original.low:
        return
    _refused(obj, "Bar", "high")


@settings(max_examples=20)
@given(order=STRATEGIES["OrderNew"])
def test_limit_order_without_price_is_refused(order: Envelope) -> None:
    obj = {**to_object(order), "ord_type": "limit"}
    obj.pop("price", None)
    _refused(obj, "limit order needs a price")


def test_fill_without_price_is_refused() -> None:
    fill = {"type": "ExecutionReport", "event_id": "e", "ts_event": 1, "ts_init": 1,
            "source": "v", "account": "A", "cl_ord_id": "c", "exec_id": "x",
            "exec_type": "fill", "symbol": "X", "side": "buy", "leaves_qty": 0, "cum_qty": 5,
            "last_qty": 5}
    _refused(fill, "last_px")


@settings(max_examples=20)
@given(trade=STRATEGIES["Trade"], over=st.integers(min_value=1, max_value=2**70))
def test_timestamps_beyond_int64_are_refused_not_unencodable(trade: Envelope,
                                                              over: int) -> None:
    _refused({**to_object(trade), "ts_event": INT64_MAX + over}, "ts_event",
             "less than or equal")


@settings(max_examples=20)
@given(trade=STRATEGIES["Trade"], order=STRATEGIES["OrderCancel"])
def test_market_and_order_events_are_keyed_as_the_catalogue_says(trade: Envelope,
                                                                  order: Envelope) -> None:
    assert isinstance(trade, MarketEvent) and trade.key == trade.symbol
    assert isinstance(order, OrderEvent) and order.key == order.account
