"""The pre-trade gate: every check of DESIGN.md section 7 as a small pure function.

Each check looks at one `GateInput` (the order, the instrument's reference data as of the
order's event time, the account book, effective limits, rate counts, the trading state) and
returns a `Finding` (a `CheckResult` with its reason code and the numbers, and whether it is
hard) or None when the order passes. `evaluate` runs them all, so a denial lists every
failed check; an order is accepted exactly when no hard check failed. Soft-level hits are
warnings that never deny.

Limit checks only deny an order that makes its measure grow: an order that cannot raise an
exposure is never stopped by that exposure's limit, even when the account is already over it
(so clients can always trade out of a breach).

>>> from engine.accounts import AccountBook
>>> from engine.limits import EffectiveLimit
>>> from engine.order_config import OrderConfig
>>> from schemas.common import Side
>>> order = OrderView("ACC", "s1", "AAPL", Side.BUY, qty=1000, price=100.0, cl_ord_id="c1", ts=0)
>>> g = GateInput(order, ref=None, book=AccountBook("ACC"), config=OrderConfig(),
...               limit=lambda metric, group: EffectiveLimit(hard=50_000.0, hard_source="default"))
>>> check_order_notional(g).result.message
'order notional 100000 above the hard limit 50000 (default)'
>>> result = evaluate(g)
>>> result.accepted, result.reason_codes[:2]
(False, ['MISSING_REFERENCE_DATA', 'MAX_ORDER_NOTIONAL'])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from engine.accounts import EPS, AccountBook, Exposure, OpenOrder
from engine.limits import NO_LIMIT, EffectiveLimit, Group
from engine.order_config import OrderConfig
from schemas.common import Side, TradingState
from schemas.orders import OrdType
from schemas.outputs import CheckResult, InstrumentRisk

INSTRUMENT_NOT_TRADABLE: Final = "INSTRUMENT_NOT_TRADABLE"
RESTRICTED: Final = "RESTRICTED"
PRICE_PRECISION: Final = "PRICE_PRECISION"
SIZE_PRECISION: Final = "SIZE_PRECISION"
MIN_QTY: Final = "MIN_QTY"
MAX_QTY: Final = "MAX_QTY"
MAX_ORDER_NOTIONAL: Final = "MAX_ORDER_NOTIONAL"
PRICE_COLLAR: Final = "PRICE_COLLAR"
ADV_PARTICIPATION: Final = "ADV_PARTICIPATION"
DUPLICATE_ORDER: Final = "DUPLICATE_ORDER"
RATE_THROTTLE: Final = "RATE_THROTTLE"
POSITION_LIMIT: Final = "POSITION_LIMIT"
CREDIT_LIMIT: Final = "CREDIT_LIMIT"
SELF_CROSS: Final = "SELF_CROSS"
TRADING_STATE: Final = "TRADING_STATE"
MISSING_REFERENCE_DATA: Final = "MISSING_REFERENCE_DATA"
REFERENCE_HISTORY_EXPIRED: Final = "REFERENCE_HISTORY_EXPIRED"
PERSONAL_THRESHOLD: Final = "PERSONAL_THRESHOLD"

REASON_CODES: tuple[str, ...] = (
    MISSING_REFERENCE_DATA, INSTRUMENT_NOT_TRADABLE, RESTRICTED, PRICE_PRECISION,
    SIZE_PRECISION, MIN_QTY, MAX_QTY, MAX_ORDER_NOTIONAL, PRICE_COLLAR, ADV_PARTICIPATION,
    DUPLICATE_ORDER, RATE_THROTTLE, POSITION_LIMIT, CREDIT_LIMIT, SELF_CROSS, TRADING_STATE,
    PERSONAL_THRESHOLD, REFERENCE_HISTORY_EXPIRED,
)

_REL_TOL = 1e-9


@dataclass(slots=True)
class OrderView:
    """What the gate needs of an OrderNew or OrderReplace."""

    account: str
    strategy: str
    symbol: str
    side: Side
    qty: float
    price: float | None
    cl_ord_id: str
    ts: int
    ord_type: OrdType = OrdType.LIMIT
    replaces: OpenOrder | None = None
    """The open order an OrderReplace replaces (its leaves stop counting)."""


class Finding(NamedTuple):
    result: CheckResult
    hard: bool
    metric: str | None = None
    source: str | None = None
    """Scope the limit came from ("default" for configured defaults)."""


LimitLookup = Callable[[str, Group], EffectiveLimit]


@dataclass(slots=True)
class GateInput:
    order: OrderView
    ref: InstrumentRisk | None
    book: AccountBook
    config: OrderConfig
    limit: LimitLookup = field(default=lambda metric, group: NO_LIMIT)
    trading_state: TradingState = TradingState.ACTIVE
    state_scope: str = ""
    state_cause: str = ""
    account_messages: int = 0
    """Order messages of the account in the throttle window, this one included."""
    strategy_messages: int = 0
    duplicate_of: str | None = None
    """cl_ord_id of an accepted order with the same content inside the duplicate window."""
    personal_qty: float | None = None
    personal_notional: float | None = None
    exposure: Exposure | None = None
    """The account's worst-case exposure at current marks, when the caller has it already."""
    ref_kept_since: int | None = None
    """With no `ref`: event time of the oldest instrument risk still kept for the symbol when
    older versions were dropped (`engine.asof.AsOfTable.kept_since`), else None."""

    # derived once, used by several checks
    _px: float | None = None

    @property
    def ref_price(self) -> float | None:
        return self.ref.price if self.ref is not None else None

    @property
    def px(self) -> float | None:
        """Price for notional: the limit price, or the reference price for a market order."""
        if self._px is None:
            self._px = self.order.price if self.order.price is not None else self.ref_price
        return self._px

    @property
    def notional(self) -> float | None:
        px = self.px
        return None if px is None else self.order.qty * px

    def stale_reference(self) -> bool:
        ref = self.ref
        if ref is None:
            return False
        if ref.stale:
            return True
        age = self.config.max_reference_age_ns
        return age is not None and self.order.ts - ref.ts_event > age


@dataclass
class GateResult:
    failures: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    account_change: ExposureChange | None = None
    """The account's worst-case exposure before and after the order (None: no price)."""

    @property
    def accepted(self) -> bool:
        return not self.failures

    @property
    def reason_codes(self) -> list[str]:
        """Codes of the failed checks, each once, in check order."""
        return list(dict.fromkeys(f.result.code for f in self.failures))


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def limit_finding(code: str, metric: str, what: str, observed: float, lim: EffectiveLimit,
                  before: float | None = None) -> Finding | None:
    """Compare a measure with its effective limit; None when within it or not growing."""
    if lim.empty or (before is not None and observed <= before + EPS):
        return None
    if lim.hard is not None and observed > lim.hard * (1 + _REL_TOL) + EPS:
        return Finding(CheckResult(code=code, observed=observed, limit=lim.hard,
                                   message=f"{what} {_fmt(observed)} above the hard limit "
                                           f"{_fmt(lim.hard)} ({lim.hard_source})"),
                       True, metric, lim.hard_source)
    if lim.soft is not None and observed > lim.soft * (1 + _REL_TOL) + EPS:
        return Finding(CheckResult(code=code, observed=observed, limit=lim.soft,
                                   message=f"{what} {_fmt(observed)} above the soft limit "
                                           f"{_fmt(lim.soft)} ({lim.soft_source}): warning"),
                       False, metric, lim.soft_source)
    return None


def _hard(code: str, message: str, observed: float | None = None,
          limit: float | None = None) -> Finding:
    return Finding(CheckResult(code=code, observed=observed, limit=limit, message=message), True)


# --- reference data -------------------------------------------------------------------------


def check_reference(g: GateInput) -> Finding | None:
    """No instrument risk as of the order's time: none had been published yet
    (MISSING_REFERENCE_DATA), or the versions valid then are no longer kept because the order
    is older than the retained history (REFERENCE_HISTORY_EXPIRED, with how much older)."""
    if g.ref is not None:
        return None
    hard = g.config.fail_closed_on_missing_reference
    tail = "" if hard else ": failing open (warning)"
    o, kept = g.order, g.ref_kept_since
    if kept is not None and o.ts < kept:
        gap = (kept - o.ts) / 1e9
        horizon = g.config.instrument_history_ns
        window = (f"{horizon / 1e9:.6g} s or {g.config.instrument_history} versions"
                  if horizon is not None else f"{g.config.instrument_history} versions")
        return Finding(CheckResult(
            code=REFERENCE_HISTORY_EXPIRED, observed=gap, limit=0.0,
            message=f"order at {o.ts} is {gap:.6g} s older than the oldest instrument risk "
                    f"kept for {o.symbol} (at {kept}; history kept: {window}): the versions "
                    f"valid at its time were dropped" + tail), hard)
    message = f"no instrument risk for {o.symbol} as of the order's event time"
    return Finding(CheckResult(code=MISSING_REFERENCE_DATA, message=message + tail), hard)


def check_tradable(g: GateInput) -> Finding | None:
    ref = g.ref
    if ref is None:
        return None
    if not ref.tradable or ref.status.lower() in g.config.not_tradable_statuses:
        return _hard(INSTRUMENT_NOT_TRADABLE,
                     f"{g.order.symbol} is not tradable (status {ref.status!r})")
    return None


def check_restricted(g: GateInput) -> Finding | None:
    o = g.order
    status = g.ref.status.lower() if g.ref is not None else ""
    if o.symbol in g.config.restricted_symbols or status in g.config.restricted_statuses:
        return _hard(RESTRICTED, f"{o.symbol} is on the restricted list")
    if o.side is Side.SELL and status in g.config.short_sale_restricted_statuses:
        pos = g.book.positions.get(o.symbol)
        long_qty = pos.qty if pos is not None else 0.0
        open_sells = g.book.open_sell.get(o.symbol, 0.0) - _replaced(o, Side.SELL, o.symbol)
        if open_sells + o.qty > long_qty + EPS:
            return _hard(RESTRICTED, f"{o.symbol} is short-sale restricted and this sell would "
                         "open or increase a short position",
                         observed=open_sells + o.qty, limit=max(long_qty, 0.0))
    return None


def _off_grid(value: float, step: float) -> bool:
    ratio = value / step
    return abs(ratio - round(ratio)) > 1e-6 * max(1.0, abs(ratio))


def check_price_precision(g: GateInput) -> Finding | None:
    tick = g.ref.tick_size if g.ref is not None else None
    price = g.order.price
    if tick and price is not None and _off_grid(price, tick):
        return _hard(PRICE_PRECISION, f"price {_fmt(price)} is not a multiple of the tick size "
                     f"{_fmt(tick)}", observed=price, limit=tick)
    return None


def check_size_precision(g: GateInput) -> Finding | None:
    lot = g.ref.lot_size if g.ref is not None else None
    if lot and _off_grid(g.order.qty, lot):
        return _hard(SIZE_PRECISION, f"quantity {_fmt(g.order.qty)} is not a multiple of the lot "
                     f"size {_fmt(lot)}", observed=g.order.qty, limit=lot)
    return None


def check_min_qty(g: GateInput) -> Finding | None:
    low = g.ref.min_qty if g.ref is not None else None
    if low is not None and g.order.qty < low - EPS:
        return _hard(MIN_QTY, f"quantity {_fmt(g.order.qty)} below the minimum {_fmt(low)}",
                     observed=g.order.qty, limit=low)
    return None


def check_max_qty(g: GateInput) -> Finding | None:
    high = g.ref.max_qty if g.ref is not None else None
    if high is not None and g.order.qty > high + EPS:
        return _hard(MAX_QTY, f"quantity {_fmt(g.order.qty)} above the instrument maximum "
                     f"{_fmt(high)}", observed=g.order.qty, limit=high)
    return limit_finding(MAX_QTY, "order_qty", "order quantity", g.order.qty,
                         g.limit("order_qty", "order"))


def check_order_notional(g: GateInput) -> Finding | None:
    notional = g.notional
    if notional is None:
        return None
    return limit_finding(MAX_ORDER_NOTIONAL, "order_notional", "order notional", notional,
                         g.limit("order_notional", "order"))


def collar_band(ref_price: float, config: OrderConfig) -> float:
    """Tier band (currency) around a reference price, LULD style.

    >>> round(collar_band(100.0, OrderConfig()), 6), round(collar_band(0.5, OrderConfig()), 6)
    (5.0, 0.15)
    """
    tier = None
    for candidate in config.collar_tiers:
        if ref_price >= candidate.min_price and (tier is None
                                                 or candidate.min_price >= tier.min_price):
            tier = candidate
    if tier is None:
        return math.inf
    band = tier.pct * ref_price
    return min(band, tier.abs_cap) if tier.abs_cap is not None else band


def check_price_collar(g: GateInput) -> Finding | None:
    """Tier band (LULD-like) around the reference price."""
    ref, price = g.ref_price, g.order.price
    if ref is None or price is None:
        return None
    band = collar_band(ref, g.config)
    distance = abs(price - ref)
    if distance > band * (1 + _REL_TOL):
        return _hard(PRICE_COLLAR, f"price {_fmt(price)} is {_fmt(distance / ref * 100)}% from "
                     f"the reference {_fmt(ref)}, outside the {_fmt(band / ref * 100)}% band",
                     observed=distance / ref, limit=band / ref)
    return None


def check_price_collar_vol(g: GateInput) -> Finding | None:
    """Band in units of the instrument's current volatility."""
    units = g.config.collar_vol_units
    ref, price = g.ref_price, g.order.price
    if units is None or ref is None or price is None or g.ref is None:
        return None
    vol = max(g.ref.vol, g.config.collar_min_vol)
    distance_vol = abs(price - ref) / (vol * ref)
    if distance_vol > units * (1 + _REL_TOL):
        return _hard(PRICE_COLLAR, f"price {_fmt(price)} is {_fmt(distance_vol)} volatility units "
                     f"from the reference {_fmt(ref)} (limit {_fmt(units)})",
                     observed=distance_vol, limit=units)
    return None


def check_adv(g: GateInput) -> Finding | None:
    adv = g.ref.adv if g.ref is not None else None
    if not adv:
        return None
    return limit_finding(ADV_PARTICIPATION, "adv_participation", "share of daily volume",
                         g.order.qty / adv, g.limit("adv_participation", "order"))


def check_duplicate(g: GateInput) -> Finding | None:
    o = g.order
    if o.cl_ord_id in g.book.open_orders and (o.replaces is None
                                              or o.replaces.cl_ord_id != o.cl_ord_id):
        return _hard(DUPLICATE_ORDER, f"cl_ord_id {o.cl_ord_id} is already an open order")
    if g.duplicate_of is not None:
        window = g.config.duplicate_window_ns / 1e9
        return _hard(DUPLICATE_ORDER, f"same content as order {g.duplicate_of} within "
                     f"{_fmt(window)} s", limit=window)
    return None


def check_rate(g: GateInput) -> Sequence[Finding]:
    """Message rate per account and per strategy (messages per second over the window)."""
    window_s = g.config.throttle_window_ns / 1e9
    out = []
    for count, group, what in ((g.account_messages, "account", "account"),
                               (g.strategy_messages, "strategy", "strategy")):
        lim = g.limit("order_rate", group)  # type: ignore[arg-type]
        if lim.empty or not count:
            continue
        found = limit_finding(RATE_THROTTLE, "order_rate", f"{what} order rate (per s)",
                              count / window_s, lim)
        if found is not None:
            out.append(found)
    return out


# --- exposure -------------------------------------------------------------------------------


def _replaced(o: OrderView, side: Side, symbol: str) -> float:
    r = o.replaces
    return r.qty if r is not None and r.side is side and r.symbol == symbol else 0.0


def _order_deltas(o: OrderView, strategy: str | None = None) -> dict[str, tuple[float, float]]:
    """(extra open buys, extra open sells) per symbol if the order is accepted; with
    `strategy`, as seen by that strategy (a replaced order of another strategy is not its)."""
    deltas: dict[str, tuple[float, float]] = {}
    if o.replaces is not None and (strategy is None or o.replaces.strategy == strategy):
        r = o.replaces
        b, s = deltas.get(r.symbol, (0.0, 0.0))
        deltas[r.symbol] = (b - r.qty, s) if r.side is Side.BUY else (b, s - r.qty)
    b, s = deltas.get(o.symbol, (0.0, 0.0))
    deltas[o.symbol] = (b + o.qty, s) if o.side is Side.BUY else (b, s + o.qty)
    return deltas


def _price(g: GateInput, symbol: str) -> float:
    if symbol == g.order.symbol and g.px is not None:
        return g.ref_price if g.ref_price is not None else g.px
    return g.book.price(symbol)


class ExposureChange(NamedTuple):
    before: Exposure
    after: Exposure


def _terms(q: float, buys: float, sells: float, px: float
           ) -> tuple[float, float, float, float, float]:
    hi = q + buys
    lo = q - sells  # lo <= hi, so max(|hi|, |lo|) is max(hi, -lo)
    return (hi * px if hi > 0 else 0.0, -lo * px if lo < 0 else 0.0,
            (hi if hi > -lo else -lo) * px, hi * px, lo * px)


def _change(base: Exposure, items: list[tuple[float, float, float, float, float, float, float]]
            ) -> ExposureChange:
    """Before/after exposure from a base total and (q, B, S, mark, px, dB, dS) per symbol:
    the symbol's terms at its mark leave the total, its terms at the order's price enter."""
    bl, bs, bg, bh, bo = base.long, base.short, base.gross, base.net_hi, base.net_lo
    al, as_, ag, ah, ao = bl, bs, bg, bh, bo
    for q, buys, sells, mark, px, db, ds in items:
        ol, os_, og, oh, oo = _terms(q, buys, sells, mark)
        nl, ns, ng, nh, no = _terms(q, buys, sells, px)
        xl, xs, xg, xh, xo = _terms(q, max(0.0, buys + db), max(0.0, sells + ds), px)
        bl, bs, bg, bh, bo = bl + nl - ol, bs + ns - os_, bg + ng - og, bh + nh - oh, bo + no - oo
        al, as_, ag, ah, ao = al + xl - ol, as_ + xs - os_, ag + xg - og, ah + xh - oh, ao + xo - oo
    return ExposureChange(Exposure(bl, bs, bg, bh, bo), Exposure(al, as_, ag, ah, ao))


def account_exposure_change(g: GateInput) -> ExposureChange:
    book = g.book
    base = g.exposure if g.exposure is not None else book.exposure()
    items = []
    for symbol, (db, ds) in _order_deltas(g.order).items():
        px = _price(g, symbol)
        pos = book.positions.get(symbol)
        items.append((pos.qty if pos is not None else 0.0, book.open_buy.get(symbol, 0.0),
                      book.open_sell.get(symbol, 0.0), book.price(symbol, px), px, db, ds))
    return _change(base, items)


def strategy_exposure_change(g: GateInput) -> ExposureChange:
    book, o = g.book, g.order
    items = []
    for symbol, (db, ds) in _order_deltas(o, o.strategy).items():
        px = _price(g, symbol)
        key = (o.strategy, symbol)
        items.append((book.strategy_qty.get(key, 0.0), book.strategy_open_buy.get(key, 0.0),
                      book.strategy_open_sell.get(key, 0.0), book.price(symbol, px), px, db, ds))
    return _change(book.strategy_exposure(o.strategy), items)


def instrument_exposure_change(g: GateInput) -> ExposureChange:
    o, book = g.order, g.book
    db, ds = _order_deltas(o)[o.symbol]
    px = _price(g, o.symbol)
    pos = book.positions.get(o.symbol)
    q = pos.qty if pos is not None else 0.0
    # from an empty base: a zero mark makes the symbol's "old" terms zero
    return _change(Exposure(), [(q, book.open_buy.get(o.symbol, 0.0),
                                 book.open_sell.get(o.symbol, 0.0), 0.0, px, db, ds)])


_POSITION_MEASURES = (("position_long", "long exposure", "long"),
                      ("position_short", "short exposure", "short"),
                      ("gross_exposure", "gross exposure", "gross"),
                      ("net_exposure", "net exposure", "net"))


def check_positions(g: GateInput, group: Group,
                    exposure_change: Callable[[GateInput], ExposureChange]) -> list[Finding]:
    """Long, short, gross and net worst-case exposure (open orders included) of one group.
    `exposure_change` is called only when the group has a position limit: most groups have
    none, and working out their change was a good part of the gate's time."""
    limited = [(metric, what, attr, lim) for metric, what, attr in _POSITION_MEASURES
               if not (lim := g.limit(metric, group)).empty]
    if not limited:
        return []
    change = exposure_change(g)
    out = []
    for metric, what, attr, lim in limited:
        found = limit_finding(POSITION_LIMIT, metric, f"{group} {what}",
                              getattr(change.after, attr), lim, getattr(change.before, attr))
        if found is not None:
            out.append(found)
    return out


def check_credit(g: GateInput, change: ExposureChange) -> Finding | None:
    lim = g.limit("credit", "account")
    if lim.empty:
        return None
    losses = max(0.0, -g.book.total_pnl())
    before = change.before.long + change.before.short + losses
    after = change.after.long + change.after.short + losses
    return limit_finding(CREDIT_LIMIT, "credit", "credit used", after, lim, before)


def check_self_cross(g: GateInput) -> Finding | None:
    o = g.order
    opposite = Side.SELL if o.side is Side.BUY else Side.BUY
    if not (g.book.open_sell if o.side is Side.BUY else g.book.open_buy).get(o.symbol):
        return None
    replaced = o.replaces.cl_ord_id if o.replaces is not None else None
    for resting in g.book.orders_by_symbol.get(o.symbol, {}).values():
        # A resting order without a price is one known only from an execution report (a
        # drop copy: ExecutionReport carries no limit price); a market order does not rest.
        # Its price is unknown, so it is not taken to cross: denying every opposite order
        # on a guess would block the account's flow for as long as it rests.
        if resting.side is not opposite or resting.cl_ord_id == replaced \
                or resting.price is None:
            continue
        if o.price is None or (
                o.price >= resting.price if o.side is Side.BUY else o.price <= resting.price):
            # a market order (no price) crosses anything: name it rather than print None
            mine = "market order would" if o.price is None else "would"
            return _hard(SELF_CROSS, f"{mine} trade against own resting {opposite.value} "
                         f"{resting.cl_ord_id} at {resting.price}", observed=o.price,
                         limit=resting.price)
    return None


def is_reducing(book: AccountBook, o: OrderView) -> bool:
    """Whether an order can only shrink its position, even if every open order on its side
    fills: a buy needs a short at least as large as all open buys, a sell likewise.

    >>> book = AccountBook("A")
    >>> _ = book.apply_fill("X", Side.BUY, 100, 1.0)
    >>> is_reducing(book, OrderView("A", "s", "X", Side.SELL, 60, 1.0, "c", 0))
    True
    >>> is_reducing(book, OrderView("A", "s", "X", Side.SELL, 160, 1.0, "c", 0))
    False
    """
    pos = book.positions.get(o.symbol)
    q = pos.qty if pos is not None else 0.0
    if o.side is Side.BUY:
        committed = book.open_buy.get(o.symbol, 0.0) - _replaced(o, Side.BUY, o.symbol) + o.qty
        return q < -EPS and committed <= -q + EPS
    committed = book.open_sell.get(o.symbol, 0.0) - _replaced(o, Side.SELL, o.symbol) + o.qty
    return q > EPS and committed <= q + EPS


def check_trading_state(g: GateInput) -> Finding | None:
    state, scope, cause = g.trading_state, g.state_scope, g.state_cause
    if state is TradingState.ACTIVE and g.stale_reference():
        state, scope, cause = (TradingState.REDUCING, f"instrument:{g.order.symbol}",
                                   "stale reference data")
    if state is TradingState.HALTED:
        return _hard(TRADING_STATE, f"{scope} is halted ({cause}): only cancels are accepted")
    if state is TradingState.REDUCING and not is_reducing(g.book, g.order):
        return _hard(TRADING_STATE, f"{scope} is reducing ({cause}): only orders that reduce "
                     "a position are accepted")
    return None


def check_personal(g: GateInput) -> list[Finding]:
    """The account's model-suggested limits (already clipped to the hard caps)."""
    hard = g.config.personal.action == "deny"
    out = []
    for value, limit, what in ((g.order.qty, g.personal_qty, "quantity"),
                               (g.notional, g.personal_notional, "notional")):
        if limit is not None and value is not None and value > limit * (1 + _REL_TOL):
            out.append(Finding(CheckResult(
                code=PERSONAL_THRESHOLD, observed=value, limit=limit,
                message=f"order {what} {_fmt(value)} above this account's personal threshold "
                        f"{_fmt(limit)}" + ("" if hard else ": warning")), hard))
    return out


def evaluate(g: GateInput) -> GateResult:
    """Run every check; the result lists every failure and every warning."""
    result = GateResult()
    findings: list[Finding | None] = [
        check_reference(g), check_tradable(g), check_restricted(g), check_price_precision(g),
        check_size_precision(g), check_min_qty(g), check_max_qty(g), check_order_notional(g),
        check_price_collar(g), check_price_collar_vol(g), check_adv(g), check_duplicate(g),
    ]
    findings.extend(check_rate(g))
    if g.px is not None:
        account = result.account_change = account_exposure_change(g)
        findings.extend(check_positions(g, "account", lambda _: account))
        findings.extend(check_positions(g, "strategy", strategy_exposure_change))
        findings.extend(check_positions(g, "instrument", instrument_exposure_change))
        findings.append(check_credit(g, account))
    findings.append(check_self_cross(g))
    findings.append(check_trading_state(g))
    findings.extend(check_personal(g))
    for found in findings:
        if found is not None:
            (result.failures if found.hard else result.warnings).append(found)
    return result
