"""Labelled scenarios: anomalies injected into the simulated market and order flow.

Each scenario acts on one entity (an instrument or an account) during a window of simulated
time and is recorded as a Label, so a risk engine's detections can be scored. A scenario
only changes what happens inside its window: market scenarios through per-step Effects on
their instrument (drift, volatility, activity, spread, crossed or stale quotes), order-flow
scenarios by sending orders for their account through the simulated venue.

>>> sorted(SCENARIOS)[:3]
['concentration', 'crossed-quotes', 'duplicate-orders']
>>> SCENARIOS["fat-finger"].target
'account'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from producers.simulator.labels import Label
from producers.simulator.market import NS, Effects, MarketSimulator
from producers.simulator.orderflow import OrderFlowSimulator
from schemas.common import Side


@dataclass
class StepContext:
    """What a scenario may touch during one step."""

    t0: int
    market: MarketSimulator
    flow: OrderFlowSimulator | None
    effects: dict[str, Effects] = field(default_factory=dict)

    def effect(self, symbol: str) -> Effects:
        return self.effects.setdefault(symbol, Effects())

    @property
    def dt_s(self) -> float:
        return self.market.dt_s

    @property
    def orders(self) -> OrderFlowSimulator:
        assert self.flow is not None, "order-flow scenarios need accounts"
        return self.flow


class Scenario:
    """Base class: a window [start_ns, end_ns) of steps acting on `entity`."""

    name: ClassVar[str]
    description: ClassVar[str]
    target: ClassVar[str]  # "instrument" or "account"
    nominal_s: ClassVar[float]  # preferred window length
    min_s: ClassVar[float]  # shortest window that still shows the pattern
    extra_events: ClassVar[int] = 0  # about how many events it adds (to plan --events runs)

    def __init__(self, entity: str, start_ns: int, end_ns: int, rng: np.random.Generator,
                 symbol: str | None = None) -> None:
        self.entity = entity
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.rng = rng
        self.symbol = symbol or entity  # the instrument the scenario trades or moves

    @property
    def label(self) -> Label:
        return Label(self.name, self.entity, self.start_ns, self.end_ns)

    @property
    def length_s(self) -> float:
        return (self.end_ns - self.start_ns) / NS

    def elapsed_s(self, ctx: StepContext) -> float:
        return (ctx.t0 - self.start_ns) / NS

    def steps(self, ctx: StepContext, seconds: float) -> int:
        return max(1, round(seconds / ctx.dt_s))

    def is_first(self, ctx: StepContext) -> bool:
        return ctx.t0 == self.start_ns

    def is_last(self, ctx: StepContext) -> bool:
        return ctx.t0 + ctx.market.dt_ns >= self.end_ns

    def every(self, ctx: StepContext, seconds: float) -> bool:
        """True on the first step and then once every `seconds`."""
        return round(self.elapsed_s(ctx) / ctx.dt_s) % self.steps(ctx, seconds) == 0

    def send_order(self, ctx: StepContext, side: Side, qty: float, price: float) -> str:
        """A limit order for the scenario's account and instrument, at a command time in
        this step; its cl_ord_id."""
        flow = ctx.orders
        return flow.new_order(flow.command_time(ctx.t0), self.entity, self.symbol, side, qty,
                              price)

    def on_step(self, ctx: StepContext) -> None:
        raise NotImplementedError


# --- market scenarios ----------------------------------------------------------------------


class FlashCrash(Scenario):
    name = "flash-crash"
    description = "price drops 5-8% within seconds on heavy volume, then partly recovers"
    target = "instrument"
    nominal_s, min_s = 45.0, 16.0
    extra_events = 300

    def on_step(self, ctx: StepContext) -> None:
        if self.is_first(ctx):
            self.depth = float(self.rng.uniform(0.05, 0.08))
            self.recovery = float(self.rng.uniform(0.4, 0.7))
        drop_s, hold_s = min(6.0, self.length_s * 0.2), min(4.0, self.length_s * 0.1)
        rec_s = self.length_s - drop_s - hold_s
        t, e = self.elapsed_s(ctx), ctx.effect(self.symbol)
        if t < drop_s:
            e.drift = -self.depth / self.steps(ctx, drop_s)
            e.trade_mult, e.size_mult, e.spread_mult, e.vol_mult = 6.0, 2.0, 4.0, 2.0
        elif t < drop_s + hold_s:
            e.trade_mult, e.spread_mult, e.vol_mult = 3.0, 3.0, 2.0
        else:
            e.drift = self.depth * self.recovery / self.steps(ctx, rec_s)
            e.trade_mult, e.spread_mult = 2.0, 2.0


class PriceSpike(Scenario):
    name = "price-spike"
    description = "the price jumps 3-6% in one step, holds briefly and mostly reverts"
    target = "instrument"
    nominal_s, min_s = 12.0, 4.0

    def on_step(self, ctx: StepContext) -> None:
        e = ctx.effect(self.symbol)
        if self.is_first(ctx):
            self.move = float(self.rng.uniform(0.03, 0.06)) * (1 if self.rng.random() < 0.5
                                                                else -1)
            e.drift, e.trade_mult = self.move, 3.0
            return
        hold_s = self.length_s * 0.3
        if self.elapsed_s(ctx) >= hold_s:
            e.drift = -0.8 * self.move / self.steps(ctx, self.length_s - hold_s)


class StaleFeed(Scenario):
    name = "stale-feed"
    description = "the feed repeats the same quote and prints no trades while the market moves"
    target = "instrument"
    nominal_s, min_s = 90.0, 20.0

    def on_step(self, ctx: StepContext) -> None:
        ctx.effect(self.symbol).stale = True


class VolumeBurst(Scenario):
    name = "volume-burst"
    description = "trading activity jumps to about 12x normal, with larger prints"
    target = "instrument"
    nominal_s, min_s = 30.0, 10.0
    extra_events = 650

    def on_step(self, ctx: StepContext) -> None:
        e = ctx.effect(self.symbol)
        e.trade_mult, e.size_mult = 12.0, 3.0


class SpreadBlowout(Scenario):
    name = "spread-blowout"
    description = "the bid-ask spread widens 12-25x while liquidity dries up"
    target = "instrument"
    nominal_s, min_s = 30.0, 10.0

    def on_step(self, ctx: StepContext) -> None:
        if self.is_first(ctx):
            self.mult = float(self.rng.uniform(12, 25))
        e = ctx.effect(self.symbol)
        e.spread_mult, e.trade_mult = self.mult, 0.3


class CrossedQuotes(Scenario):
    name = "crossed-quotes"
    description = "quotes arrive crossed (bid above ask) from a broken feed"
    target = "instrument"
    nominal_s, min_s = 8.0, 3.0

    def on_step(self, ctx: StepContext) -> None:
        ctx.effect(self.symbol).crossed = True


class NewsShock(Scenario):
    name = "news-shock"
    description = "strongly negative news, then a 3-5% sell-off with volatility tripled"
    target = "instrument"
    nominal_s, min_s = 60.0, 20.0
    extra_events = 500

    def on_step(self, ctx: StepContext) -> None:
        e = ctx.effect(self.symbol)
        if self.is_first(ctx):
            sentiment = -float(self.rng.uniform(0.8, 0.95))
            ctx.market.queue_news(ctx.t0 + 1_000, self.symbol, sentiment, 1.0,
                                  f"{self.symbol}: regulator opens fraud investigation")
            ctx.market.add_drift(self.symbol, -float(self.rng.uniform(0.03, 0.05)),
                                 self.steps(ctx, min(10.0, self.length_s / 3)))
        e.vol_mult, e.trade_mult, e.spread_mult = 3.0, 4.0, 2.0


# --- order-flow scenarios ------------------------------------------------------------------


class FatFinger(Scenario):
    name = "fat-finger"
    description = "one order 60-100x the account's normal size, marketable, then cancelled"
    target = "account"
    nominal_s, min_s = 2.0, 1.0

    def on_step(self, ctx: StepContext) -> None:
        flow = ctx.orders
        if self.is_first(ctx):
            acc = flow.by_id[self.entity]
            ins, book = ctx.market.instrument(self.symbol), ctx.market.book(self.symbol)
            qty = min(ins.max_qty, ins.lots(acc.base_qty[self.symbol]
                                            * float(self.rng.uniform(60, 100))))
            buy = self.rng.random() < 0.5
            price = ins.snap(book.ask + 2 * ins.tick_size if buy else book.bid - 2 * ins.tick_size)
            self.cl_ord_id = self.send_order(ctx, Side.BUY if buy else Side.SELL, qty, price)
        elif self.is_last(ctx) and self.cl_ord_id in flow.by_id[self.entity].open:
            flow.cancel(flow.command_time(ctx.t0), self.entity, self.cl_ord_id, self.symbol)


class RunawayAlgo(Scenario):
    name = "runaway-algo"
    description = "one account's strategy fires about 300 orders within a few seconds"
    target = "account"
    nominal_s, min_s = 4.0, 2.0
    extra_events = 850
    total_orders: ClassVar[int] = 300

    def on_step(self, ctx: StepContext) -> None:
        flow, rng = ctx.orders, self.rng
        acc = flow.by_id[self.entity]
        if self.is_first(ctx):
            self.sent: list[str] = []
        per_step = math.ceil(self.total_orders / self.steps(ctx, self.length_s))
        for _ in range(min(per_step, self.total_orders - len(self.sent))):
            sym = acc.symbols[int(rng.integers(len(acc.symbols)))]
            ins, book = ctx.market.instrument(sym), ctx.market.book(sym)
            buy = rng.random() < 0.5
            away = int(rng.integers(0, 4)) * ins.tick_size
            price = ins.snap(book.bid - away if buy else book.ask + away)
            qty = ins.lots(acc.base_qty[sym] * float(rng.uniform(0.7, 1.3)))
            ts = flow.command_time(ctx.t0)
            cl_ord_id = flow.new_order(ts, self.entity, sym, Side.BUY if buy else Side.SELL,
                                       qty, price)
            self.sent.append(cl_ord_id)
            if rng.random() < 0.4:
                flow.cancel(min(ts + int(rng.integers(5, 60)) * 1_000_000,
                                ctx.t0 + ctx.market.dt_ns - 1_000_000), self.entity, cl_ord_id,
                            sym)
        if self.is_last(ctx):
            for cl_ord_id in self.sent:
                order = acc.open.get(cl_ord_id)
                if order is not None:
                    flow.cancel(flow.command_time(ctx.t0), self.entity, cl_ord_id, order.symbol)


class DuplicateOrders(Scenario):
    name = "duplicate-orders"
    description = "the same order (symbol, side, price, qty) is sent 6-10 times within seconds"
    target = "account"
    nominal_s, min_s = 3.0, 1.0

    def on_step(self, ctx: StepContext) -> None:
        flow = ctx.orders
        acc = flow.by_id[self.entity]
        steps = self.steps(ctx, self.length_s)
        index = round(self.elapsed_s(ctx) / ctx.dt_s)
        if self.is_first(ctx):
            ins, book = ctx.market.instrument(self.symbol), ctx.market.book(self.symbol)
            self.buy = self.rng.random() < 0.5
            # Passive, a few ticks away, so the copies rest rather than fill.
            self.price = ins.snap(book.bid - 2 * ins.tick_size if self.buy
                                  else book.ask + 2 * ins.tick_size)
            self.qty = ins.lots(acc.base_qty[self.symbol])
            self.copies = int(self.rng.integers(6, 11))
            self.sent: list[str] = []
        due = math.ceil(self.copies * (index + 1) / steps) - len(self.sent)
        for _ in range(max(0, due)):
            self.sent.append(self.send_order(ctx, Side.BUY if self.buy else Side.SELL,
                                             self.qty, self.price))
        if self.is_last(ctx):
            for cl_ord_id in self.sent:
                if cl_ord_id in acc.open:
                    flow.cancel(flow.command_time(ctx.t0) + 1_000_000, self.entity, cl_ord_id,
                                self.symbol)


class LossSpiral(Scenario):
    name = "loss-spiral"
    description = "an account keeps buying a falling instrument: its losses grow steadily"
    target = "account"
    nominal_s, min_s = 150.0, 30.0

    def on_step(self, ctx: StepContext) -> None:
        flow = ctx.orders
        acc = flow.by_id[self.entity]
        ins, book = ctx.market.instrument(self.symbol), ctx.market.book(self.symbol)
        if self.is_first(ctx):
            self.bought = 0.0
            ctx.market.add_drift(self.symbol, -float(self.rng.uniform(0.04, 0.06)),
                                 self.steps(ctx, self.length_s))
        # Orders priced through the touch and left to rest: what the book cannot fill now
        # fills on the next step, so the account really gets the size it asks for.
        if self.every(ctx, 20.0) and self.bought > 0:  # cutting some at a loss
            qty = ins.lots(self.bought * 0.3)
            self.bought -= qty
            self.send_order(ctx, Side.SELL, qty, ins.snap(book.bid - ins.tick_size))
        elif self.every(ctx, 3.0):  # averaging down
            qty = ins.lots(acc.base_qty[self.symbol] * float(self.rng.uniform(2, 4)))
            self.bought += qty
            self.send_order(ctx, Side.BUY, qty, ins.snap(book.ask + ins.tick_size))


class Concentration(Scenario):
    name = "concentration"
    description = "an account piles into one instrument with repeated large buys"
    target = "account"
    nominal_s, min_s = 150.0, 30.0

    def on_step(self, ctx: StepContext) -> None:
        if not self.every(ctx, 3.0):
            return
        flow = ctx.orders
        acc = flow.by_id[self.entity]
        ins, book = ctx.market.instrument(self.symbol), ctx.market.book(self.symbol)
        qty = ins.lots(acc.base_qty[self.symbol] * float(self.rng.uniform(4, 8)))
        # Priced through the ask and left to rest: what the book cannot fill now fills next.
        self.send_order(ctx, Side.BUY, qty, ins.snap(book.ask + ins.tick_size))


_ALL: tuple[type[Scenario], ...] = (
    FlashCrash, PriceSpike, StaleFeed, VolumeBurst, SpreadBlowout, CrossedQuotes, NewsShock,
    FatFinger, RunawayAlgo, DuplicateOrders, LossSpiral, Concentration)

SCENARIOS: dict[str, type[Scenario]] = {cls.name: cls for cls in _ALL}

# The strategy whose account a scenario picks first, when there is one.
PREFERRED_STRATEGY = {"runaway-algo": "rogue", "loss-spiral": "momo",
                      "concentration": "meanrev", "fat-finger": "mm",
                      "duplicate-orders": "meanrev"}


def describe_scenarios() -> list[tuple[str, str, str]]:
    """(name, target, one-line description) of every scenario, in catalogue order."""
    return [(cls.name, cls.target, cls.description) for cls in _ALL]
