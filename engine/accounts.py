"""Account state from orders and fills: positions, open orders, PnL, exposure, drawdown.

`AccountBook` is plain bookkeeping with no notion of limits: the pre-trade gate asks it for
worst-case exposures (positions plus every open order filling), the worker marks it with
instrument prices and reads `metrics()` for the AccountRisk snapshot.

Conventions:

* positions use average cost; realized PnL books when a position is reduced or flipped;
* unrealized PnL is `qty * (mark - avg_cost)`, marks are the latest instrument prices the
  worker gave the book (the price as of the event being processed);
* day PnL is total PnL minus total PnL at the first event of the trading day; intraday
  drawdown is the drop from today's day-PnL peak, trailing drawdown the drop from the
  all-time peak of total PnL (both in currency, sampled at the account's events);
* worst-case exposure of a symbol with position q, open buys B and open sells S at price p:
  long `max(0, q+B) p`, short `max(0, S-q) p`, gross `max(|q+B|, |q-S|) p`; the net
  exposure is the larger magnitude of `sum (q+B) p` and `sum (q-S) p`;
* credit used is long + short worst case plus every loss (`max(0, -total PnL)`): an order
  that can only reduce a position never uses more credit;
* counterparty exposure is the notional traded with each counterparty today.

>>> from schemas.common import Side
>>> book = AccountBook("ACC-1")
>>> book.apply_fill("AAPL", Side.BUY, 100, 10.0)
0.0
>>> book.apply_fill("AAPL", Side.SELL, 40, 12.0)
80.0
>>> book.mark("AAPL", 11.0)
>>> m = book.metrics(capital=1000.0)
>>> (book.positions["AAPL"].qty, m.realized_pnl, m.unrealized_pnl, m.gross_exposure)
(60.0, 80.0, 60.0, 660.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.common import Side

EPS = 1e-9


@dataclass(slots=True)
class OpenOrder:
    cl_ord_id: str
    symbol: str
    side: Side
    qty: float
    """Leaves quantity: what can still fill."""
    price: float | None
    strategy: str
    ts: int
    """Event time the order was submitted (a mass cancel only reaches orders up to its own)."""


@dataclass(slots=True)
class Position:
    symbol: str
    qty: float = 0.0
    avg_cost: float = 0.0
    realized: float = 0.0


@dataclass(frozen=True, slots=True)
class Exposure:
    """Worst-case exposures (currency) including open orders."""

    long: float = 0.0
    short: float = 0.0
    gross: float = 0.0
    net_hi: float = 0.0
    net_lo: float = 0.0

    @property
    def net(self) -> float:
        return max(abs(self.net_hi), abs(self.net_lo))

    def __add__(self, other: Exposure) -> Exposure:
        return Exposure(self.long + other.long, self.short + other.short,
                        self.gross + other.gross, self.net_hi + other.net_hi,
                        self.net_lo + other.net_lo)

    def __sub__(self, other: Exposure) -> Exposure:
        return Exposure(self.long - other.long, self.short - other.short,
                        self.gross - other.gross, self.net_hi - other.net_hi,
                        self.net_lo - other.net_lo)


def exposure_of(qty: float, open_buy: float, open_sell: float, price: float) -> Exposure:
    """Worst-case exposure of one symbol.

    >>> exposure_of(100, 50, 0, 2.0)
    Exposure(long=300.0, short=0.0, gross=300.0, net_hi=300.0, net_lo=200.0)
    """
    hi = qty + open_buy
    lo = qty - open_sell
    return Exposure(max(0.0, hi) * price, max(0.0, -lo) * price,
                    max(abs(hi), abs(lo)) * price, hi * price, lo * price)


@dataclass
class AccountMetrics:
    realized_pnl: float
    unrealized_pnl: float
    total_pnl: float
    day_pnl: float
    long_exposure: float
    short_exposure: float
    gross_exposure: float
    net_exposure: float
    leverage: float
    hhi: float
    largest_share: float
    drawdown_intraday: float
    drawdown_trailing: float
    open_order_notional: float
    counterparty_exposure: dict[str, float]


@dataclass
class AccountBook:
    account: str
    positions: dict[str, Position] = field(default_factory=dict)
    strategy_qty: dict[tuple[str, str], float] = field(default_factory=dict)
    open_orders: dict[str, OpenOrder] = field(default_factory=dict)
    orders_by_symbol: dict[str, dict[str, OpenOrder]] = field(default_factory=dict)
    priced_open_notional: float = 0.0
    """Running sum of qty * price over open limit orders (market orders are marked)."""
    unpriced_orders: int = 0
    open_buy: dict[str, float] = field(default_factory=dict)
    open_sell: dict[str, float] = field(default_factory=dict)
    strategy_open_buy: dict[tuple[str, str], float] = field(default_factory=dict)
    strategy_open_sell: dict[tuple[str, str], float] = field(default_factory=dict)
    strategy_symbols: dict[str, set[str]] = field(default_factory=dict)
    """Every symbol a strategy ever traded or quoted (so its exposure need not scan all)."""
    marks: dict[str, float] = field(default_factory=dict)
    realized_pnl: float = 0.0
    counterparty: dict[str, float] = field(default_factory=dict)
    day: int | None = None
    day_start_total: float = 0.0
    day_peak: float = 0.0
    peak_total: float = 0.0
    drawdown_intraday: float = 0.0
    drawdown_trailing: float = 0.0

    # --- open orders ------------------------------------------------------------------------

    def _open_delta(self, order: OpenOrder, sign: float) -> None:
        if order.price is not None:
            self.priced_open_notional = max(0.0, self.priced_open_notional
                                            + sign * order.qty * order.price)
        else:
            self.unpriced_orders += 1 if sign > 0 else -1
        if sign > 0:
            self.orders_by_symbol.setdefault(order.symbol, {})[order.cl_ord_id] = order
        else:
            same = self.orders_by_symbol.get(order.symbol)
            if same is not None:
                same.pop(order.cl_ord_id, None)
                if not same:
                    del self.orders_by_symbol[order.symbol]
        side_map = self.open_buy if order.side is Side.BUY else self.open_sell
        strat_map = self.strategy_open_buy if order.side is Side.BUY else self.strategy_open_sell
        left = side_map.get(order.symbol, 0.0) + sign * order.qty
        if left > EPS:
            side_map[order.symbol] = left
        else:
            side_map.pop(order.symbol, None)
        key = (order.strategy, order.symbol)
        self.strategy_symbols.setdefault(order.strategy, set()).add(order.symbol)
        left = strat_map.get(key, 0.0) + sign * order.qty
        if left > EPS:
            strat_map[key] = left
        else:
            strat_map.pop(key, None)

    def add_order(self, order: OpenOrder) -> None:
        old = self.open_orders.pop(order.cl_ord_id, None)
        if old is not None:
            self._open_delta(old, -1.0)
        self.open_orders[order.cl_ord_id] = order
        self._open_delta(order, 1.0)

    def remove_order(self, cl_ord_id: str) -> OpenOrder | None:
        order = self.open_orders.pop(cl_ord_id, None)
        if order is not None:
            self._open_delta(order, -1.0)
        return order

    def set_leaves(self, cl_ord_id: str, leaves: float) -> None:
        """The venue says `leaves` can still fill (0 closes the order)."""
        order = self.open_orders.get(cl_ord_id)
        if order is None:
            return
        self._open_delta(order, -1.0)
        if leaves <= EPS:
            del self.open_orders[cl_ord_id]
            return
        order.qty = leaves
        self._open_delta(order, 1.0)

    def open_orders_in(self, *, strategy: str | None = None, symbol: str | None = None,
                       up_to_ts: int | None = None) -> list[OpenOrder]:
        """Open orders matching every given filter, in cl_ord_id order."""
        pool = self.open_orders if symbol is None else self.orders_by_symbol.get(symbol, {})
        return [o for _, o in sorted(pool.items())
                if (strategy is None or o.strategy == strategy)
                and (symbol is None or o.symbol == symbol)
                and (up_to_ts is None or o.ts <= up_to_ts)]

    def symbols(self) -> set[str]:
        """Symbols with a position or an open order."""
        held = {s for s, p in self.positions.items() if abs(p.qty) > EPS}
        return held | self.open_buy.keys() | self.open_sell.keys()

    # --- fills and marks --------------------------------------------------------------------

    def apply_fill(self, symbol: str, side: Side, qty: float, price: float,
                   strategy: str = "default", counterparty: str | None = None) -> float:
        """Book a fill; returns the realized PnL it produced."""
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        signed = qty if side is Side.BUY else -qty
        q = pos.qty
        realized = 0.0
        if abs(q) <= EPS or (q > 0) == (signed > 0):
            new = q + signed
            pos.avg_cost = (pos.avg_cost * abs(q) + price * qty) / abs(new)
            pos.qty = new
        else:
            closing = min(abs(signed), abs(q))
            realized = closing * (price - pos.avg_cost) * (1.0 if q > 0 else -1.0)
            new = q + signed
            if abs(new) <= EPS:
                pos.qty, pos.avg_cost = 0.0, 0.0
            elif (new > 0) != (q > 0):
                pos.qty, pos.avg_cost = new, price
            else:
                pos.qty = new
        pos.realized += realized
        self.realized_pnl += realized
        key = (strategy, symbol)
        self.strategy_qty[key] = self.strategy_qty.get(key, 0.0) + signed
        self.strategy_symbols.setdefault(strategy, set()).add(symbol)
        if counterparty:
            self.counterparty[counterparty] = (self.counterparty.get(counterparty, 0.0)
                                               + qty * price)
        self.marks.setdefault(symbol, price)
        return realized

    def mark(self, symbol: str, price: float) -> None:
        self.marks[symbol] = price

    def price(self, symbol: str, fallback: float | None = None) -> float:
        """Mark of a symbol: the latest mark, else `fallback`, else the average cost."""
        mark = self.marks.get(symbol)
        if mark is not None:
            return mark
        if fallback is not None:
            return fallback
        pos = self.positions.get(symbol)
        return pos.avg_cost if pos is not None else 0.0

    def unrealized_pnl(self) -> float:
        return sum(p.qty * (self.price(s) - p.avg_cost)
                   for s, p in self.positions.items() if abs(p.qty) > EPS)

    def total_pnl(self) -> float:
        return self.realized_pnl + self.unrealized_pnl()

    def roll_day(self, day: int) -> bool:
        """Start trading day `day` if it is new; True when it was."""
        if self.day is not None and day <= self.day:
            return False
        self.day = day
        self.day_start_total = self.total_pnl()
        self.day_peak = 0.0
        self.drawdown_intraday = 0.0
        self.counterparty.clear()
        for symbol in [s for s, p in self.positions.items() if abs(p.qty) <= EPS]:
            del self.positions[symbol]
        return True

    def update_path(self) -> tuple[float, float]:
        """Sample the PnL path after marking: returns (total PnL, day PnL)."""
        total = self.total_pnl()
        day_pnl = total - self.day_start_total
        self.peak_total = max(self.peak_total, total)
        self.day_peak = max(self.day_peak, day_pnl)
        self.drawdown_trailing = self.peak_total - total
        self.drawdown_intraday = self.day_peak - day_pnl
        return total, day_pnl

    # --- exposure ---------------------------------------------------------------------------

    def symbol_exposure(self, symbol: str, price: float, *, add_buy: float = 0.0,
                        add_sell: float = 0.0) -> Exposure:
        pos = self.positions.get(symbol)
        q = pos.qty if pos is not None else 0.0
        return exposure_of(q, max(0.0, self.open_buy.get(symbol, 0.0) + add_buy),
                           max(0.0, self.open_sell.get(symbol, 0.0) + add_sell), price)

    def strategy_symbol_exposure(self, strategy: str, symbol: str, price: float, *,
                                 add_buy: float = 0.0, add_sell: float = 0.0) -> Exposure:
        key = (strategy, symbol)
        return exposure_of(self.strategy_qty.get(key, 0.0),
                           max(0.0, self.strategy_open_buy.get(key, 0.0) + add_buy),
                           max(0.0, self.strategy_open_sell.get(key, 0.0) + add_sell), price)

    def exposure(self) -> Exposure:
        """Worst-case exposure of the whole account at the current marks."""
        # plain float accumulation: this runs for every order, so no temporary objects
        long = short = gross = net_hi = net_lo = 0.0
        buys, sells, positions = self.open_buy, self.open_sell, self.positions
        for symbol in self.symbols():
            px = self.price(symbol)
            pos = positions.get(symbol)
            q = pos.qty if pos is not None else 0.0
            hi = q + buys.get(symbol, 0.0)
            lo = q - sells.get(symbol, 0.0)
            if hi > 0:
                long += hi * px
            if lo < 0:
                short -= lo * px
            gross += max(abs(hi), abs(lo)) * px
            net_hi += hi * px
            net_lo += lo * px
        return Exposure(long, short, gross, net_hi, net_lo)

    def strategy_exposure(self, strategy: str) -> Exposure:
        long = short = gross = net_hi = net_lo = 0.0
        for symbol in self.strategy_symbols.get(strategy, ()):
            key = (strategy, symbol)
            px = self.price(symbol)
            q = self.strategy_qty.get(key, 0.0)
            hi = q + self.strategy_open_buy.get(key, 0.0)
            lo = q - self.strategy_open_sell.get(key, 0.0)
            if hi > 0:
                long += hi * px
            if lo < 0:
                short -= lo * px
            gross += max(abs(hi), abs(lo)) * px
            net_hi += hi * px
            net_lo += lo * px
        return Exposure(long, short, gross, net_hi, net_lo)

    def open_order_notional(self) -> float:
        out = self.priced_open_notional
        if self.unpriced_orders > 0:
            for order in self.open_orders.values():
                if order.price is None:
                    out += order.qty * self.price(order.symbol)
        return out

    def credit_used(self, exposure: Exposure | None = None) -> float:
        exp = self.exposure() if exposure is None else exposure
        return exp.long + exp.short + max(0.0, -self.total_pnl())

    # --- snapshot ---------------------------------------------------------------------------

    def metrics(self, capital: float) -> AccountMetrics:
        """Current figures (positions only for long/short/gross/net, no open orders)."""
        realized = self.realized_pnl
        unrealized = 0.0
        long_exp = short_exp = net = 0.0
        values: list[float] = []
        for symbol, pos in self.positions.items():
            if abs(pos.qty) <= EPS:
                continue
            px = self.price(symbol)
            unrealized += pos.qty * (px - pos.avg_cost)
            mv = pos.qty * px
            net += mv
            if mv > 0:
                long_exp += mv
            else:
                short_exp -= mv
            values.append(abs(mv))
        gross = long_exp + short_exp
        total = realized + unrealized
        hhi = largest = 0.0
        if gross > 0:
            shares = [v / gross for v in values]
            hhi = sum(s * s for s in shares)
            largest = max(shares)
        equity = capital + total
        # a wiped-out account has equity <= 0: report a huge but finite leverage
        leverage = gross / max(equity, capital * 1e-6)
        return AccountMetrics(
            realized_pnl=realized, unrealized_pnl=unrealized, total_pnl=total,
            day_pnl=total - self.day_start_total, long_exposure=long_exp,
            short_exposure=short_exp, gross_exposure=gross, net_exposure=net,
            leverage=leverage, hhi=min(1.0, hhi), largest_share=min(1.0, largest),
            drawdown_intraday=self.drawdown_intraday, drawdown_trailing=self.drawdown_trailing,
            open_order_notional=self.open_order_notional(),
            counterparty_exposure=dict(sorted(self.counterparty.items())))

    def signed_positions(self, symbols: Iterable[str] | None = None) -> list[tuple[str, float]]:
        """(symbol, quantity) of every non-flat position, sorted by symbol."""
        chosen = self.positions if symbols is None else {s: self.positions[s] for s in symbols
                                                           if s in self.positions}
        return sorted((s, p.qty) for s, p in chosen.items() if abs(p.qty) > EPS)
