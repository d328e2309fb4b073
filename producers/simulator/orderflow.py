"""Order-flow simulator: accounts running strategies against the simulated market, and a
venue that acknowledges, fills, cancels, replaces and rejects their orders.

Accounts (`ACC-1` ... `ACC-M`) cycle through four strategies: `mm` (market maker quoting
both sides and replacing as the touch moves), `momo` (momentum, aggressive IOC orders on a
fast/slow trend signal), `meanrev` (passive orders against deviations from a slow average)
and `rogue` (bursty, aggressive, sometimes malformed orders). Each account clears through a
few counterparties, named on every fill so credit exposure can be measured.

Within a step of length dt, resting orders are filled in the first half (against the book as
it stood at the step's start), and new commands (from strategies and scenarios) are executed
in the second half in time order, so every order's events are consistent in event time.

ExecutionReports name the order they change: an ack or fill carries the order's id, CANCELED
carries the canceled order's id, REPLACED carries the new id (the OrderReplace names the old
one), and a rejected cancel or replace carries the request's id and leaves the original order
as it was. The venue rejects orders off the tick grid or lot size, outside [min_qty, max_qty],
priced more than 10% from the mid, or beyond 50 orders per second per account.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from producers.simulator.market import Instrument, MarketSimulator, Pending
from schemas.common import Side
from schemas.orders import (
    ExecType,
    ExecutionReport,
    OrderCancel,
    OrderNew,
    OrderReplace,
    OrdType,
    TimeInForce,
)

SOURCE_OMS = "sim-oms"
SOURCE_VENUE = "sim-venue"
STRATEGIES = ("mm", "momo", "meanrev", "rogue")
COUNTERPARTIES = ("CP-ATLAS", "CP-BOREAL", "CP-CIRRUS", "CP-DELTA", "CP-EMBER")
THROTTLE_PER_S = 50
COLLAR = 0.10
_DONE_KEPT = 50_000  # finished orders remembered to answer late cancels


@dataclass
class Order:
    cl_ord_id: str
    account: str
    symbol: str
    side: Side
    qty: float
    price: float | None
    strategy: str
    tif: TimeInForce = TimeInForce.DAY
    origin: str = "strategy"  # "strategy" orders move the strategy's inventory, scenarios not
    created: int = 0
    cum: float = 0.0
    notional: float = 0.0

    @property
    def leaves(self) -> float:
        return max(0.0, self.qty - self.cum)

    @property
    def avg_px(self) -> float | None:
        return self.notional / self.cum if self.cum > 0 else None


@dataclass
class Account:
    id: str
    strategy: str
    symbols: list[str]
    counterparties: list[str]
    cp_cumulative: list[float]  # cumulative weights of the counterparties
    base_qty: dict[str, float]
    inventory: dict[str, float] = field(default_factory=dict)  # from strategy orders only
    fast: dict[str, float] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)
    open: dict[str, Order] = field(default_factory=dict)
    recent: deque[int] = field(default_factory=deque)  # order times, for the venue throttle
    next_id: int = 0


@dataclass
class _Command:
    ts: int
    kind: str  # new | cancel | replace
    account: str
    order: Order | None = None  # the new order (new, replace)
    request_id: str = ""
    orig: str = ""  # the order a cancel or replace targets
    symbol: str = ""


def make_accounts(m: int, instruments: list[Instrument],
                  rng: np.random.Generator) -> list[Account]:
    """`m` accounts cycling through the strategies, each trading a few instruments."""
    out = []
    n = len(instruments)
    for k in range(m):
        strategy = STRATEGIES[k % len(STRATEGIES)]
        wanted = {"mm": 2, "momo": 3, "meanrev": 2, "rogue": 3}[strategy]
        picks = sorted(rng.choice(n, size=min(wanted, n), replace=False).tolist()) if n else []
        symbols = [instruments[i].symbol for i in picks]
        n_cp = int(rng.integers(2, 4))
        cps = [COUNTERPARTIES[i] for i in sorted(
            rng.choice(len(COUNTERPARTIES), size=n_cp, replace=False).tolist())]
        weights = np.cumsum(rng.dirichlet(np.ones(n_cp))).tolist()
        base = {instruments[i].symbol: instruments[i].lots(
            instruments[i].adv * float(rng.uniform(1e-4, 4e-4))) for i in picks}
        out.append(Account(f"ACC-{k + 1}", strategy, symbols, cps, weights, base))
    return out


def _on_grid(value: float, step: float) -> bool:
    ratio = value / step
    return abs(ratio - round(ratio)) < 1e-6


class OrderFlowSimulator:
    """Accounts, their strategies and the venue (see module docs)."""

    def __init__(self, accounts: list[Account], market: MarketSimulator,
                 rng: np.random.Generator, tag: str) -> None:
        self.accounts = accounts
        self.by_id = {a.id: a for a in accounts}
        self.market = market
        self.rng = rng
        self.tag = tag
        self.dt_ns = market.dt_ns
        self.commands: list[_Command] = []
        self.done: OrderedDict[str, Order] = OrderedDict()
        self.out: list[Pending] = []
        self.exec_seq = 0

    # --- the order-entry API (strategies and scenarios) ----------------------------------

    def command_time(self, t0: int) -> int:
        """A random time in the second half of the step starting at `t0`."""
        return t0 + self._uniform_int(self.dt_ns // 2, self.dt_ns - 2_000_000)

    def new_order(self, ts: int, account: str, symbol: str, side: Side, qty: float,
                  price: float | None, *, tif: TimeInForce = TimeInForce.DAY,
                  origin: str = "scenario") -> str:
        acc = self.by_id[account]
        order = Order(self._next_id(acc), account, symbol, side, qty, price, acc.strategy,
                      tif, origin, ts)
        self.commands.append(_Command(ts, "new", account, order))
        return order.cl_ord_id

    def cancel(self, ts: int, account: str, cl_ord_id: str, symbol: str) -> None:
        acc = self.by_id[account]
        self.commands.append(_Command(ts, "cancel", account, None, self._next_id(acc),
                                      cl_ord_id, symbol))

    def replace(self, ts: int, order: Order, price: float, qty: float) -> None:
        acc = self.by_id[order.account]
        new = Order(self._next_id(acc), order.account, order.symbol, order.side, qty, price,
                    order.strategy, order.tif, order.origin, order.created)
        self.commands.append(_Command(ts, "replace", order.account, new, new.cl_ord_id,
                                      order.cl_ord_id, order.symbol))

    def _uniform_int(self, low: int, high: int) -> int:
        """An integer in [low, high): Generator.integers costs ~10x more per call."""
        return low + int(float(self.rng.random()) * (high - low))

    def _next_id(self, acc: Account) -> str:
        acc.next_id += 1
        return f"{self.tag}-{acc.id}-{acc.next_id}"

    # --- one step ------------------------------------------------------------------------

    def passive_fills(self, t0: int) -> None:
        """Fill resting orders against the book as it stood at `t0` (first half of the step)."""
        rng = self.rng
        for acc in self.accounts:
            for order in list(acc.open.values()):
                if order.price is None:
                    continue
                book = self.market.book(order.symbol)
                ins = self.market.instrument(order.symbol)
                buy = order.side is Side.BUY
                through = order.price >= book.ask if buy else order.price <= book.bid
                at_touch = order.price >= book.bid if buy else order.price <= book.ask
                if through:
                    qty = order.leaves
                elif at_touch and rng.random() < 1 - math.exp(-ins.trade_rate
                                                                * self.market.dt_s * 0.3):
                    qty = min(order.leaves, ins.lots(ins.trade_lots * ins.lot_size
                                                     * float(rng.uniform(0.5, 2.0))))
                else:
                    continue
                ts = t0 + self._uniform_int(1, self.dt_ns // 2)
                self._fill(acc, order, ts, qty, order.price)

    def strategies(self, t0: int) -> None:
        """Every account's strategy decides on the book at `t0` and queues its commands."""
        for acc in self.accounts:
            for sym in acc.symbols:
                mid = math.log(self.market.book(sym).mid)
                acc.fast[sym] = 0.7 * acc.fast.get(sym, mid) + 0.3 * mid
                acc.slow[sym] = 0.97 * acc.slow.get(sym, mid) + 0.03 * mid
            getattr(self, f"_{acc.strategy}")(acc, t0)

    def execute(self) -> list[Pending]:
        """Run the queued commands in time order and return every event of the step."""
        commands, self.commands = sorted(self.commands, key=lambda c: c.ts), []
        for cmd in commands:
            acc = self.by_id[cmd.account]
            if cmd.kind == "new":
                assert cmd.order is not None
                self._new(acc, cmd.order, cmd.ts)
            elif cmd.kind == "cancel":
                self._cancel(acc, cmd, cmd.ts)
            else:
                self._replace(acc, cmd, cmd.ts)
        out, self.out = self.out, []
        return out

    # --- strategies ----------------------------------------------------------------------

    def _qty(self, acc: Account, sym: str, mult: float = 1.0) -> float:
        # Vary sizes so normal flow rarely repeats an order's exact content.
        ins = self.market.instrument(sym)
        return ins.lots(acc.base_qty[sym] * mult * float(self.rng.uniform(0.7, 1.3)))

    def _mine(self, acc: Account, sym: str, side: Side) -> list[Order]:
        return [o for o in acc.open.values()
                if o.symbol == sym and o.side is side and o.origin == "strategy"]

    def _mm(self, acc: Account, t0: int) -> None:
        for sym in acc.symbols:
            if self.rng.random() > 0.3:
                continue
            book = self.market.book(sym)
            inv, cap = acc.inventory.get(sym, 0.0), acc.base_qty[sym] * 8
            for side, px in ((Side.BUY, book.bid), (Side.SELL, book.ask)):
                mine = self._mine(acc, sym, side)
                if (inv >= cap) if side is Side.BUY else (inv <= -cap):
                    for order in mine:
                        self.cancel(self.command_time(t0), acc.id, order.cl_ord_id, sym)
                elif not mine:
                    self.new_order(self.command_time(t0), acc.id, sym, side,
                                   self._qty(acc, sym), px, origin="strategy")
                elif mine[0].price != px:
                    order = mine[0]
                    self.replace(self.command_time(t0), order, px,
                                 order.cum + self._qty(acc, sym))

    def _momo(self, acc: Account, t0: int) -> None:
        for sym in acc.symbols:
            if self.rng.random() > 0.15:
                continue
            ins, book = self.market.instrument(sym), self.market.book(sym)
            signal = (acc.fast[sym] - acc.slow[sym]) / (3 * self.market.step_sigma(sym))
            inv, cap = acc.inventory.get(sym, 0.0), acc.base_qty[sym] * 6
            tick = ins.tick_size
            if signal > 1 and inv < cap:
                self.new_order(self.command_time(t0), acc.id, sym, Side.BUY, self._qty(acc, sym),
                               ins.snap(book.ask + tick), tif=TimeInForce.IOC, origin="strategy")
            elif signal < -1 and inv > -cap:
                self.new_order(self.command_time(t0), acc.id, sym, Side.SELL,
                               self._qty(acc, sym), ins.snap(book.bid - tick),
                               tif=TimeInForce.IOC, origin="strategy")
            elif inv and signal * inv < 0 and abs(signal) > 0.3:
                self._flatten(acc, sym, inv, t0)

    def _meanrev(self, acc: Account, t0: int) -> None:
        for sym in acc.symbols:
            for order in self._mine(acc, sym, Side.BUY) + self._mine(acc, sym, Side.SELL):
                if t0 - order.created > 30 * 1_000_000_000:
                    self.cancel(self.command_time(t0), acc.id, order.cl_ord_id, sym)
            if self.rng.random() > 0.15:
                continue
            book = self.market.book(sym)
            dev = (math.log(book.mid) - acc.slow[sym]) / (self.market.step_sigma(sym) * 6)
            inv, cap = acc.inventory.get(sym, 0.0), acc.base_qty[sym] * 6
            if dev < -1.0 and inv < cap and not self._mine(acc, sym, Side.BUY):
                self.new_order(self.command_time(t0), acc.id, sym, Side.BUY, self._qty(acc, sym),
                               book.bid, origin="strategy")
            elif dev > 1.0 and inv > -cap and not self._mine(acc, sym, Side.SELL):
                self.new_order(self.command_time(t0), acc.id, sym, Side.SELL,
                               self._qty(acc, sym), book.ask, origin="strategy")
            elif inv and abs(dev) < 0.3:
                self._flatten(acc, sym, inv, t0)

    def _rogue(self, acc: Account, t0: int) -> None:
        rng = self.rng
        for order in list(acc.open.values()):
            if rng.random() < 0.1:
                self.cancel(self.command_time(t0), acc.id, order.cl_ord_id, order.symbol)
        if rng.random() > 0.04 or not acc.symbols:
            return
        for _ in range(int(rng.integers(3, 9))):
            sym = acc.symbols[int(rng.integers(len(acc.symbols)))]
            ins, book = self.market.instrument(sym), self.market.book(sym)
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            qty = self._qty(acc, sym, float(rng.uniform(1, 3)))
            ts = self.command_time(t0)
            u = rng.random()
            if u < 0.03:  # a price off the tick grid: the venue rejects it
                self.new_order(ts, acc.id, sym, side, qty, round(book.mid + ins.tick_size / 3, 6),
                               origin="strategy")
            elif u < 0.05:  # far outside the venue collar
                px = ins.snap(book.mid * (0.85 if side is Side.BUY else 1.15))
                self.new_order(ts, acc.id, sym, side, qty, px, origin="strategy")
            elif u < 0.25:  # a passive order that it will probably cancel soon
                px = book.bid if side is Side.BUY else book.ask
                self.new_order(ts, acc.id, sym, side, qty, px, origin="strategy")
            else:
                px = ins.snap(book.ask + 2 * ins.tick_size if side is Side.BUY
                              else book.bid - 2 * ins.tick_size)
                self.new_order(ts, acc.id, sym, side, qty, px, tif=TimeInForce.IOC,
                               origin="strategy")

    def _flatten(self, acc: Account, sym: str, inv: float, t0: int) -> None:
        ins, book = self.market.instrument(sym), self.market.book(sym)
        side = Side.SELL if inv > 0 else Side.BUY
        qty = min(abs(inv), ins.max_qty)
        px = ins.snap(book.bid - ins.tick_size if side is Side.SELL else book.ask + ins.tick_size)
        self.new_order(self.command_time(t0), acc.id, sym, side, qty, px, tif=TimeInForce.IOC,
                       origin="strategy")

    # --- the venue -----------------------------------------------------------------------

    def _latency(self) -> int:
        return self._uniform_int(50_000, 400_000)

    def _emit(self, ts: int, cls: type, account: str, source: str, **fields: object) -> None:
        self.out.append(Pending(ts, "orders", account, source, cls,
                                {"account": account, **fields}))

    def _report(self, ts: int, order: Order, exec_type: ExecType, *, cl_ord_id: str | None = None,
                last_px: float | None = None, last_qty: float = 0.0,
                counterparty: str | None = None, text: str | None = None,
                leaves: float | None = None) -> None:
        self.exec_seq += 1
        self._emit(ts, ExecutionReport, order.account, SOURCE_VENUE,
                   cl_ord_id=cl_ord_id or order.cl_ord_id, exec_id=f"{self.tag}-E{self.exec_seq}",
                   exec_type=exec_type, symbol=order.symbol, side=order.side, last_px=last_px,
                   last_qty=last_qty, leaves_qty=order.leaves if leaves is None else leaves,
                   cum_qty=order.cum, avg_px=order.avg_px, counterparty=counterparty, text=text)

    def _check(self, acc: Account, order: Order, ts: int) -> str | None:
        ins, book = self.market.instrument(order.symbol), self.market.book(order.symbol)
        while acc.recent and acc.recent[0] <= ts - 1_000_000_000:
            acc.recent.popleft()
        acc.recent.append(ts)
        if len(acc.recent) > THROTTLE_PER_S:
            return f"throttled: more than {THROTTLE_PER_S} orders per second"
        if not ins.min_qty <= order.qty <= ins.max_qty:
            return f"qty {order.qty:g} outside [{ins.min_qty:g}, {ins.max_qty:g}]"
        if not _on_grid(order.qty, ins.lot_size):
            return f"qty {order.qty:g} is not a multiple of the lot size {ins.lot_size:g}"
        if order.price is not None:
            if not _on_grid(order.price, ins.tick_size):
                return f"price {order.price} is not on the {ins.tick_size:g} tick grid"
            if abs(order.price / book.mid - 1) > COLLAR:
                return f"price {order.price} is more than {COLLAR:.0%} from the market"
        return None

    def _order_fields(self, order: Order) -> dict[str, object]:
        return {"symbol": order.symbol, "side": order.side, "price": order.price,
                "qty": order.qty, "strategy": order.strategy, "cl_ord_id": order.cl_ord_id,
                "ord_type": OrdType.LIMIT if order.price is not None else OrdType.MARKET}

    def _new(self, acc: Account, order: Order, ts: int) -> None:
        self._emit(ts, OrderNew, acc.id, SOURCE_OMS, time_in_force=order.tif,
                   **self._order_fields(order))
        ts += self._latency()
        reason = self._check(acc, order, ts)
        if reason:
            self._report(ts, order, ExecType.REJECTED, text=reason, leaves=0.0)
            self._remember(order)
            return
        acc.open[order.cl_ord_id] = order
        self._report(ts, order, ExecType.NEW)
        self._cross(acc, order, ts + 1_000)

    def _cancel(self, acc: Account, cmd: _Command, ts: int) -> None:
        self._emit(ts, OrderCancel, acc.id, SOURCE_OMS, cl_ord_id=cmd.request_id,
                   orig_cl_ord_id=cmd.orig, symbol=cmd.symbol)
        ts += self._latency()
        order = acc.open.pop(cmd.orig, None)
        if order is not None:
            self._report(ts, order, ExecType.CANCELED, leaves=0.0,
                         text=f"canceled on request {cmd.request_id}")
            self._remember(order)
            return
        known = self.done.get(cmd.orig)
        if known is not None:
            self._report(ts, known, ExecType.REJECTED, cl_ord_id=cmd.request_id, leaves=0.0,
                         text=f"cancel rejected: {cmd.orig} is not open")

    def _replace(self, acc: Account, cmd: _Command, ts: int) -> None:
        new = cmd.order
        assert new is not None
        self._emit(ts, OrderReplace, acc.id, SOURCE_OMS, orig_cl_ord_id=cmd.orig,
                   **self._order_fields(new))
        ts += self._latency()
        old = acc.open.get(cmd.orig)
        reason = None if old is not None else f"replace rejected: {cmd.orig} is not open"
        if old is not None:
            new.cum, new.notional = old.cum, old.notional
            if new.qty <= old.cum:
                reason = f"replace rejected: qty {new.qty:g} is not above the filled {old.cum:g}"
            else:
                reason = self._check(acc, new, ts)
        if reason or old is None:
            self._report(ts, new, ExecType.REJECTED, text=reason, leaves=0.0)
            return
        del acc.open[old.cl_ord_id]
        self._remember(old)
        acc.open[new.cl_ord_id] = new
        self._report(ts, new, ExecType.REPLACED)
        self._cross(acc, new, ts + 1_000)

    def _cross(self, acc: Account, order: Order, ts: int) -> None:
        """Fill a marketable order against the displayed opposite side."""
        book = self.market.book(order.symbol)
        ins = self.market.instrument(order.symbol)
        buy = order.side is Side.BUY
        touch = book.ask if buy else book.bid
        if order.price is None or (order.price >= touch if buy else order.price <= touch):
            size = book.ask_size if buy else book.bid_size
            qty = min(order.leaves, ins.lots(size * float(self.rng.uniform(0.5, 1.5))))
            self._fill(acc, order, ts, qty, touch)
            ts += 1_000
        if order.leaves > 0 and (order.tif is TimeInForce.IOC or order.price is None):
            acc.open.pop(order.cl_ord_id, None)
            self._report(ts, order, ExecType.CANCELED, leaves=0.0, text="IOC remainder canceled")
            self._remember(order)

    def _fill(self, acc: Account, order: Order, ts: int, qty: float, price: float) -> None:
        order.cum += qty
        order.notional += qty * price
        if order.origin == "strategy":  # scenario fills never steer the strategy
            signed = qty if order.side is Side.BUY else -qty
            acc.inventory[order.symbol] = acc.inventory.get(order.symbol, 0.0) + signed
        done = order.leaves <= 0
        pick = bisect.bisect_right(acc.cp_cumulative, float(self.rng.random()))
        cp = acc.counterparties[min(pick, len(acc.counterparties) - 1)]
        self._report(ts, order, ExecType.FILL if done else ExecType.PARTIAL_FILL,
                     last_px=price, last_qty=qty, counterparty=cp)
        if done:
            acc.open.pop(order.cl_ord_id, None)
            self._remember(order)

    def _remember(self, order: Order) -> None:
        self.done[order.cl_ord_id] = order
        if len(self.done) > _DONE_KEPT:
            self.done.popitem(last=False)
