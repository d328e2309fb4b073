"""Market simulator: correlated GARCH returns with calm/stressed regimes, jumps, news and an
intraday volume and spread profile, turned into quotes, trades and bars on a tick grid.

Time is simulated: the simulator advances in fixed steps of `dt_s` seconds from `start_ns`
and stamps every event inside its step, so a seed fixes every value. Per step:

1. the regime (one Markov chain for the whole market) may switch;
2. log-returns are drawn for all instruments at once: standard normals made correlated by
   the Cholesky factor of the regime's correlation matrix, scaled by each instrument's
   GARCH(1,1) variance, plus rare jumps, news drift and scenario drift;
3. each instrument emits a Poisson number of quotes (interpolating the mid across the step)
   and trades at the prevailing bid or ask, and a Bar at every bar boundary.

>>> import numpy as np
>>> sim = MarketSimulator(make_instruments(2, np.random.default_rng(1)),
...                       np.random.default_rng(2), start_ns=0)
>>> [p.fields["symbol"] for p in sim.reference_events()]
['ACME', 'BOLT']
>>> all(p.ts > 0 for p in sim.step(0, {}))
True
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np

from schemas.common import Envelope, Side
from schemas.market import Bar, InstrumentPhase, InstrumentStatus, NewsSentiment, Quote, Trade

SESSION_S = 23_400  # 09:30-16:00: the intraday profile repeats every session
NS = 1_000_000_000
SOURCE = "sim-feed"

_TICKERS = ("ACME", "BOLT", "CRUX", "DYNO", "EMBR", "FERO", "GLYF", "HALO", "IRIS", "JADE",
            "KRON", "LUMA", "MYRA", "NOVA", "ONYX", "PYRE", "QUBE", "RIVT", "SOLA", "TYRE",
            "UMBR", "VELA", "WISP", "XENO", "YARO", "ZEPH")
_SECTORS = ("tech", "financials", "energy", "health")

# Correlation of returns within / across sectors; stressed markets move together.
_RHO = {"calm": (0.55, 0.25), "stressed": (0.80, 0.55)}
_STRESS = {"vol": 2.5, "spread": 2.0, "trades": 1.6}
_GARCH_ALPHA, _GARCH_BETA = 0.04, 0.955  # persistence 0.995 per step: clusters last minutes


class Pending(NamedTuple):
    """An event before its envelope is complete: seq and event_id are set at emission."""

    ts: int
    topic: str
    key: str
    source: str
    cls: type[Envelope]
    fields: dict[str, Any]


@dataclass(frozen=True)
class Instrument:
    """Reference data and the parameters of one instrument's price process."""

    symbol: str
    sector: str
    ref_price: float
    tick_size: float
    lot_size: float
    min_qty: float
    max_qty: float
    adv: float
    daily_vol: float
    trade_rate: float  # trades per second at average intraday activity
    quote_rate: float  # quote updates per second
    spread_bps: float
    trade_lots: float  # mean trade size, in lots

    @property
    def decimals(self) -> int:
        return tick_decimals(self.tick_size)

    def snap(self, price: float) -> float:
        """The nearest price on the tick grid, never below one tick."""
        return snap_to_tick(price, self.tick_size)

    def lots(self, qty: float) -> float:
        """`qty` rounded to a whole number of lots, at least one lot."""
        return max(1, round(qty / self.lot_size)) * self.lot_size


@functools.lru_cache(maxsize=64)
def tick_decimals(tick: float) -> int:
    """Decimal places a price on this tick grid needs.

    >>> tick_decimals(0.01), tick_decimals(0.05), tick_decimals(1.0)
    (2, 2, 0)
    """
    return max(0, -int(Decimal(repr(tick)).normalize().as_tuple().exponent))


def snap_to_tick(price: float, tick: float) -> float:
    """Round to the nearest tick, keeping the float that prints with the tick's decimals.

    >>> snap_to_tick(101.2349, 0.01), snap_to_tick(0.001, 0.01)
    (101.23, 0.01)
    """
    ticks = max(1, round(price / tick))
    return round(ticks * tick, tick_decimals(tick))


def make_instruments(n: int, rng: np.random.Generator) -> list[Instrument]:
    """`n` instruments with plausible, seeded reference data."""
    out = []
    for i in range(n):
        price = math.exp(rng.uniform(math.log(12), math.log(400)))
        tick = 0.05 if price >= 300 else 0.01
        lot = 10.0 if price < 30 else 1.0
        trade_rate = float(rng.uniform(0.4, 1.6))
        trade_lots = max(1.0, round(float(rng.uniform(3_000, 15_000)) / price / lot))
        adv = round(trade_rate * SESSION_S * trade_lots * lot, -2)
        out.append(Instrument(
            symbol=_TICKERS[i] if i < len(_TICKERS) else f"SIM{i + 1:03d}",
            sector=_SECTORS[i % len(_SECTORS)],
            ref_price=snap_to_tick(price, tick), tick_size=tick, lot_size=lot,
            min_qty=lot, max_qty=max(lot, round(adv * 0.1 / lot) * lot), adv=adv,
            daily_vol=float(rng.uniform(0.012, 0.03)), trade_rate=trade_rate,
            quote_rate=float(rng.uniform(1.0, 2.5)), spread_bps=float(rng.uniform(2.0, 8.0)),
            trade_lots=trade_lots))
    return out


def volume_profile(frac: float) -> float:
    """Intraday activity multiplier (U-shaped, mean 1 over the session)."""
    return (0.6 + 1.6 * (2 * frac - 1) ** 2) / (0.6 + 1.6 / 3)


def spread_profile(frac: float) -> float:
    """Intraday spread multiplier: wide at the open, a little wider into the close."""
    return 1.0 + 1.5 * math.exp(-12 * frac) + 0.3 * math.exp(-12 * (1 - frac))


def _cholesky(instruments: list[Instrument], regime: str) -> np.ndarray:
    same, cross = _RHO[regime]
    sectors = [ins.sector for ins in instruments]
    corr = np.array([[1.0 if i == j else (same if a == b else cross)
                      for j, b in enumerate(sectors)] for i, a in enumerate(sectors)])
    return np.linalg.cholesky(corr)


@dataclass
class Effects:
    """What scenarios do to one instrument during one step (defaults: nothing)."""

    drift: float = 0.0  # log-return added this step
    vol_mult: float = 1.0
    trade_mult: float = 1.0
    size_mult: float = 1.0
    spread_mult: float = 1.0
    crossed: bool = False  # quotes with bid above ask
    stale: bool = False  # the feed repeats its last quote and prints no trades


@dataclass
class Book:
    """The last published top of book of an instrument."""

    bid: float
    ask: float
    bid_size: float
    ask_size: float

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2


@dataclass
class _BarAcc:
    open: float | None = None
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    volume: float = 0.0

    def add(self, price: float, qty: float) -> None:
        if self.open is None:
            self.open = self.high = self.low = price
        self.high, self.low = max(self.high, price), min(self.low, price)
        self.close = price
        self.volume += qty


@dataclass
class _Drift:
    index: int
    per_step: float
    steps: int


_NEWS_GOOD = ("{s} beats earnings estimates", "{s} wins large supply contract",
              "Analysts upgrade {s} to buy", "{s} raises full-year guidance")
_NEWS_BAD = ("{s} misses earnings estimates", "{s} faces product recall",
             "Analysts downgrade {s} to sell", "{s} cuts full-year guidance")


class MarketSimulator:
    """Prices, quotes, trades, bars and news for a set of instruments (see module docs)."""

    def __init__(self, instruments: list[Instrument], rng: np.random.Generator, *,
                 start_ns: int, dt_s: float = 0.5, bar_interval_s: float = 60.0,
                 news: bool = True) -> None:
        self.instruments = instruments
        self.index = {ins.symbol: i for i, ins in enumerate(instruments)}
        self.rng = rng
        self.start_ns = start_ns
        self.dt_s = dt_s
        self.dt_ns = int(dt_s * NS)
        self.bar_ns = int(bar_interval_s * NS)
        self.bar_interval_s = bar_interval_s
        self.news_enabled = news
        n = len(instruments)
        self.x = np.log([ins.ref_price for ins in instruments]) if n else np.zeros(0)
        self.base_var = np.array([ins.daily_vol ** 2 / SESSION_S * dt_s for ins in instruments])
        self.h = self.base_var.copy()
        self.quote_lam = np.array([ins.quote_rate * dt_s for ins in instruments])
        self.trade_lam = np.array([ins.trade_rate * dt_s for ins in instruments])
        self.omega = (1 - _GARCH_ALPHA - _GARCH_BETA) * self.base_var
        self.chol = {r: _cholesky(instruments, r) for r in _RHO} if n else {}
        self.stressed = False
        self.books: list[Book] = []
        for ins in instruments:
            half = max(1, round(ins.ref_price * ins.spread_bps * 1e-4 / ins.tick_size / 2))
            size = ins.lots(ins.trade_lots * ins.lot_size * 3)
            self.books.append(Book(ins.snap(ins.ref_price - half * ins.tick_size),
                                   ins.snap(ins.ref_price + half * ins.tick_size), size, size))
        self.last_trade = [ins.ref_price for ins in instruments]
        self.bars = [_BarAcc() for _ in instruments]
        self.drifts: list[_Drift] = []
        self.queued: list[Pending] = []  # news queued by scenarios for the next step

    # --- queries used by the order-flow simulator and the scenarios ----------------------

    def instrument(self, symbol: str) -> Instrument:
        return self.instruments[self.index[symbol]]

    def book(self, symbol: str) -> Book:
        return self.books[self.index[symbol]]

    def step_sigma(self, symbol: str) -> float:
        """Current GARCH volatility of one step's log-return."""
        return float(math.sqrt(self.h[self.index[symbol]]))

    def add_drift(self, symbol: str, total: float, steps: int) -> None:
        """Spread a log-price move of `total` evenly over the next `steps` steps."""
        self.drifts.append(_Drift(self.index[symbol], total / max(1, steps), max(1, steps)))

    def news(self, ts: int, symbol: str, sentiment: float, relevance: float,
             headline: str) -> Pending:
        return Pending(ts, "market", symbol, SOURCE, NewsSentiment, {
            "symbol": symbol, "sentiment": round(sentiment, 4), "relevance": round(relevance, 4),
            "headline": headline, "provider": "sim-news"})

    def queue_news(self, ts: int, symbol: str, sentiment: float, relevance: float,
                   headline: str) -> None:
        self.queued.append(self.news(ts, symbol, sentiment, relevance, headline))

    # --- events ---------------------------------------------------------------------------

    def reference_events(self) -> list[Pending]:
        """One InstrumentStatus per instrument with its reference data, at the start."""
        return [Pending(self.start_ns, "market", ins.symbol, SOURCE, InstrumentStatus, {
            "symbol": ins.symbol, "status": InstrumentPhase.TRADING, "tick_size": ins.tick_size,
            "lot_size": ins.lot_size, "min_qty": ins.min_qty, "max_qty": ins.max_qty,
            "ref_price": ins.ref_price, "adv": ins.adv, "sector": ins.sector})
            for ins in self.instruments]

    def step(self, t0: int, effects: dict[str, Effects]) -> list[Pending]:
        """Advance one step starting at `t0`; events are stamped in (t0, t0 + dt)."""
        out: list[Pending] = []
        if t0 > self.start_ns and (t0 - self.start_ns) % self.bar_ns == 0:
            out.extend(self._close_bars(t0))
        out.extend(self.queued)
        self.queued.clear()
        n = len(self.instruments)
        if n == 0:
            return out
        rng, dt = self.rng, self.dt_s
        if self.stressed:
            self.stressed = rng.random() >= dt / 240
        else:
            self.stressed = rng.random() < dt / 2400
        regime = "stressed" if self.stressed else "calm"
        no_effect = Effects()
        eff = [effects.get(ins.symbol, no_effect) for ins in self.instruments]
        vol_mult = np.array([e.vol_mult for e in eff]) * (_STRESS["vol"] if self.stressed else 1)
        z = self.chol[regime] @ rng.standard_normal(n)
        diffusive = np.sqrt(self.h) * z
        jumps = np.where(rng.random(n) < dt / 3600, rng.normal(0.0, 0.0025, n), 0.0)
        r = diffusive * vol_mult + jumps + np.array([e.drift for e in eff])
        for d in self.drifts:
            r[d.index] += d.per_step
            d.steps -= 1
        self.drifts = [d for d in self.drifts if d.steps > 0]
        self.h = self.omega + _GARCH_ALPHA * diffusive ** 2 + _GARCH_BETA * self.h
        prev_mid = np.exp(self.x)
        self.x = self.x + r
        new_mid = np.exp(self.x)
        frac = ((t0 - self.start_ns) / NS % SESSION_S) / SESSION_S
        vprof, sprof = volume_profile(frac), spread_profile(frac)
        if self.stressed:
            sprof *= _STRESS["spread"]
        zscores = (r / np.sqrt(self.h)).tolist()
        # Counts for every instrument in two draws: per-event scalar draws are the cost here.
        n_quotes = rng.poisson(self.quote_lam).tolist()
        trade_lam = self.trade_lam * vprof * np.array([e.trade_mult for e in eff])
        n_trades = rng.poisson(trade_lam * (_STRESS["trades"] if self.stressed else 1)).tolist()
        news = (rng.random(n) < dt / 1200).tolist() if self.news_enabled else [False] * n
        mids = zip(prev_mid.tolist(), new_mid.tolist(), strict=True)
        for i, (ins, (mid0, mid1)) in enumerate(zip(self.instruments, mids, strict=True)):
            out.extend(self._instrument_step(t0, i, ins, eff[i], mid0, mid1, zscores[i],
                                             n_quotes[i], n_trades[i], sprof))
            if news[i]:
                out.append(self._random_news(t0, i, ins))
        return out

    def _instrument_step(self, t0: int, i: int, ins: Instrument, eff: Effects, mid0: float,
                         mid1: float, zscore: float, n_quotes: int, n_trades: int,
                         spread_mult: float) -> list[Pending]:
        book = self.books[i]
        if n_quotes == 0 and abs(mid1 - mid0) > book.ask - book.bid:
            n_quotes = 1  # a move wider than the spread is always quoted
        if eff.stale:
            n_trades = 0
        count = n_quotes + n_trades
        if count == 0:
            return []
        rng = self.rng
        # Every random number this instrument needs in this step, in two draws (numpy's
        # per-call overhead, not the numbers, is what costs here).
        u = rng.random(3 * count).tolist()
        normals = rng.standard_normal(2 * count).tolist()
        offsets = sorted(1 + int(x * (self.dt_ns - 1)) for x in u[:count])
        is_quote = [False] * count
        for k in sorted(range(count), key=u[count:2 * count].__getitem__)[:n_quotes]:
            is_quote[k] = True  # the quotes' places among the step's events are random
        uniforms = u[2 * count:]
        out: list[Pending] = []
        quotes_done = 0
        buy_p = 0.5 + max(-0.3, min(0.3, 0.15 * zscore))
        trade_mu = math.log(ins.trade_lots)
        for k in range(count):
            ts = t0 + offsets[k]
            if is_quote[k]:
                quotes_done += 1
                if not eff.stale:
                    mid = mid0 + (mid1 - mid0) * quotes_done / n_quotes
                    book = self._quote(ins, mid, eff, spread_mult, uniforms[k],
                                       normals[2 * k], normals[2 * k + 1])
                    self.books[i] = book
                out.append(Pending(ts, "market", ins.symbol, SOURCE, Quote, {
                    "symbol": ins.symbol, "bid": book.bid, "ask": book.ask,
                    "bid_size": book.bid_size, "ask_size": book.ask_size}))
            else:
                buy = uniforms[k] < buy_p
                # While crossed, prints land between the broken quotes.
                price = ins.snap(book.mid) if eff.crossed else (book.ask if buy else book.bid)
                lots = max(1.0, round(math.exp(trade_mu + 0.8 * normals[2 * k])
                                      * eff.size_mult))
                qty = lots * ins.lot_size
                self.last_trade[i] = price
                self.bars[i].add(price, qty)
                out.append(Pending(ts, "market", ins.symbol, SOURCE, Trade, {
                    "symbol": ins.symbol, "price": price, "qty": qty,
                    "aggressor": Side.BUY if buy else Side.SELL}))
        return out

    def _quote(self, ins: Instrument, mid: float, eff: Effects, spread_mult: float, u: float,
               z_bid: float, z_ask: float) -> Book:
        tick = ins.tick_size
        ticks = mid * ins.spread_bps * 1e-4 * spread_mult * eff.spread_mult / tick
        size_mu = math.log(ins.trade_lots * 3)
        bid_size = max(1.0, round(math.exp(size_mu + 0.6 * z_bid))) * ins.lot_size
        ask_size = max(1.0, round(math.exp(size_mu + 0.6 * z_ask))) * ins.lot_size
        if eff.crossed:
            # A broken feed or a bad venue: bid above ask by one to three ticks.
            gap = 1 + int(u * 3)
            ask = ins.snap(mid - gap * tick / 2)
            return Book(ins.snap(ask + gap * tick), ask, bid_size, ask_size)
        spread = max(1, round(ticks)) + int(u < 0.2)  # some quotes a tick wider
        bid = snap_to_tick(math.floor((mid - spread * tick / 2) / tick + 1e-9) * tick, tick)
        return Book(bid, round(bid + spread * tick, ins.decimals), bid_size, ask_size)

    def _close_bars(self, ts: int) -> list[Pending]:
        out = []
        for i, ins in enumerate(self.instruments):
            acc = self.bars[i]
            if acc.open is None:  # no trade in the interval: a flat bar at the last print
                last = self.last_trade[i]
                acc = _BarAcc(last, last, last, last, 0.0)
            out.append(Pending(ts, "market", ins.symbol, SOURCE, Bar, {
                "symbol": ins.symbol, "open": acc.open, "high": acc.high, "low": acc.low,
                "close": acc.close, "volume": acc.volume, "interval_s": self.bar_interval_s}))
            self.bars[i] = _BarAcc()
        return out

    def _random_news(self, t0: int, i: int, ins: Instrument) -> Pending:
        rng = self.rng
        sentiment = float(np.clip(rng.normal(0.0, 0.4), -1.0, 1.0))
        relevance = float(rng.uniform(0.2, 1.0))
        templates = _NEWS_GOOD if sentiment >= 0 else _NEWS_BAD
        headline = templates[int(rng.integers(len(templates)))].format(s=ins.symbol)
        # Good or bad news moves the price a little over the next few seconds.
        self.drifts.append(_Drift(i, sentiment * relevance * 0.003 / 6, 6))
        return self.news(t0 + int(rng.integers(1, self.dt_ns)), ins.symbol, sentiment,
                         relevance, headline)

