"""Per-instrument features from market events: returns, spread, volume and participation,
trade rate, Amihud illiquidity, news sentiment, and the facts alerts need (crossed quotes,
feed gaps, trading-phase changes).

One `InstrumentFeatures` per instrument turns each event into a `MarketObs`, the single input
every model adapter sees. Returns are log returns of one price series (bar close, quote mid
or trade price; see `FeatureConfig.return_source`) and are *time-aware*: a return over an
elapsed time dt is divided by sqrt(dt / step), so returns of irregular ticks are all "per
nominal step" and one EWMA variance describes them. Bars count one step each by default.

>>> from schemas.market import Trade
>>> f = InstrumentFeatures()
>>> t = lambda i, px: Trade(event_id=f"t{i}", ts_event=i * 10**9, ts_init=0, source="s",
...                         symbol="X", price=px, qty=100.0)
>>> f.update(t(1, 100.0)).ret is None       # first price: nothing to compare with
True
>>> round(f.update(t(2, 101.0)).ret, 6)     # log(101/100) over one step
0.00995
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from engine.market_config import FeatureConfig
from schemas.common import Envelope
from schemas.market import (
    Bar,
    BookTop,
    InstrumentPhase,
    InstrumentStatus,
    NewsSentiment,
    Quote,
    Trade,
)

NS = 1_000_000_000
DAY_NS = 86_400 * NS
# The finest series wins: quote mids (no bid-ask bounce) over trades over bars.
_PRIORITY = {"bar": 1, "trade": 2, "mid": 3}

QuoteState = Literal["normal", "locked", "crossed"]


@dataclass(frozen=True, slots=True)
class MarketObs:
    """What the models see for one market event. `features` is read-only by convention.

    `ret` is the log return per nominal step (None when the event moves no price of the
    return series); `dt_ratio` is the elapsed time over the nominal step, clipped, that
    `ret` was scaled by (1.0 without a return).
    """

    ts: int
    kind: str
    ret: float | None = None
    raw_ret: float | None = None
    dt_ratio: float = 1.0
    features: dict[str, float] = field(default_factory=dict)
    sentiment: float = 0.0
    tick_ret: float | None = None
    """The smallest price move of the series as a return (half a tick for mids): below it
    no statistic of returns can resolve anything."""
    # Facts for alert rules (not model inputs).
    quote_state: QuoteState | None = None
    gap_steps: float | None = None
    news: float | None = None
    news_jump: float | None = None
    phase_change: tuple[str, str] | None = None


class InstrumentFeatures:
    """Feature state of one instrument. `update(event)` is the only mutator.

    Everything is bounded: a few dozen floats plus at most `step_learn_n` inter-arrival
    times while the nominal step is being learned.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.cfg = config or FeatureConfig()
        self.source: str | None = (None if self.cfg.return_source == "auto"
                                   else self.cfg.return_source)
        self.step_s: float | None = self.cfg.nominal_step_s
        self._step_sample: list[float] = []
        self._ref_px: float | None = None  # previous price of the return series
        self._ref_ts = 0
        self._last_ts: int | None = None  # any event, for gap detection
        self.mark: float | None = None
        self.min_move: float | None = None  # smallest non-zero move seen of the series
        self.last_trade_px: float | None = None
        self.last_return = 0.0
        self.events_seen = 0
        # Quotes.
        self.bid: float | None = None
        self.ask: float | None = None
        self.spread_bps: float | None = None
        self.quote_state: QuoteState | None = None
        # Volume, liquidity.
        self._day = -1
        self.day_volume = 0.0
        self.adv_est: float | None = None
        self._ew_absret: float | None = None
        self._ew_dvol: float | None = None
        self._last_trade_ts: int | None = None
        self._trades_seen = False
        self._ew_trade_dt: float | None = None
        # News.
        self.sentiment_level: float | None = None
        self._recency = 0.0
        # Reference data.
        self.phase: str = InstrumentPhase.TRADING.value
        self.tick_size: float | None = None
        self.lot_size: float | None = None
        self.min_qty: float | None = None
        self.max_qty: float | None = None
        self.ref_price: float | None = None
        self.adv_ref: float | None = None

    # --- read-outs -----------------------------------------------------------------------

    @property
    def price(self) -> float | None:
        """Best current price: the return series, else any price seen, else the reference."""
        return self.mark if self.mark is not None else self.ref_price

    @property
    def adv(self) -> float | None:
        return self.adv_ref if self.adv_ref else self.adv_est

    @property
    def participation(self) -> float | None:
        """Volume traded so far today over ADV."""
        adv = self.adv
        return self.day_volume / adv if adv else None

    @property
    def amihud(self) -> float | None:
        """EW mean |return| over EW mean traded notional, per million of notional."""
        if self._ew_absret is None or not self._ew_dvol:
            return None
        value = self._ew_absret / self._ew_dvol * 1e6
        return value if math.isfinite(value) else None

    @property
    def trade_rate(self) -> float | None:
        """Trades per second (inverse of the EW mean inter-trade time)."""
        return 1.0 / self._ew_trade_dt if self._ew_trade_dt else None

    @property
    def sentiment(self) -> float | None:
        """Running news sentiment, faded by the returns seen since the last item."""
        if self.sentiment_level is None:
            return None
        return self.sentiment_level * self._recency

    @property
    def tick_return(self) -> float | None:
        """One minimal price move as a return: half a tick for mids (a one-tick change of
        one side), a tick otherwise; learned from the data without reference data."""
        px = self.mark
        if px is None:
            return None
        if self.tick_size:
            return (0.5 if self.source == "mid" else 1.0) * self.tick_size / px
        return self.min_move / px if self.min_move else None

    @property
    def tradable(self) -> bool:
        return self.phase == InstrumentPhase.TRADING.value

    # --- update --------------------------------------------------------------------------

    def update(self, event: Envelope) -> MarketObs:
        """Fold one market event into the state and describe it for the models."""
        self.events_seen += 1
        ts = event.ts_event
        gap = self._gap(ts)
        if isinstance(event, Quote):
            obs = self._quote(event, event.bid, event.ask, event.bid_size, event.ask_size, gap)
        elif isinstance(event, BookTop):
            obs = self._book(event, gap)
        elif isinstance(event, Trade):
            obs = self._trade(event, gap)
        elif isinstance(event, Bar):
            obs = self._bar(event, gap)
        elif isinstance(event, NewsSentiment):
            obs = self._news(event, gap)
        elif isinstance(event, InstrumentStatus):
            obs = self._status(event, gap)
        else:
            obs = MarketObs(ts=ts, kind=event.type, gap_steps=gap, sentiment=self._effect())
        self._last_ts = ts if self._last_ts is None else max(self._last_ts, ts)
        return obs

    def _gap(self, ts: int) -> float | None:
        if self._last_ts is None or not self.step_s:
            return None
        steps = (ts - self._last_ts) / NS / self.step_s
        return steps if steps > self.cfg.gap_steps else None

    def _effect(self) -> float:
        return self.sentiment or 0.0

    def _price_return(self, kind: str, px: float, ts: int,
                      time_aware: bool) -> tuple[float | None, float | None, float]:
        """Return (ret per step, raw log return, dt ratio) of a new price of series `kind`."""
        if self.cfg.return_source == "auto" and (
                self.source is None or _PRIORITY[kind] > _PRIORITY[self.source]):
            # A better series appeared: start it fresh (never mix two series in one return).
            self.source = kind
            self._ref_px = None
        if kind != self.source:
            return None, None, 1.0
        self.mark = px
        if self._ref_px is None:
            self._ref_px, self._ref_ts = px, ts
            return None, None, 1.0
        dt_s = (ts - self._ref_ts) / NS
        if dt_s <= 0:
            # Same timestamp (a burst) or out of order: keep the reference price, so the next
            # return spans both moves and no variance is lost or over-scaled.
            return None, None, 1.0
        self._learn_step(dt_s)
        move = abs(px - self._ref_px)
        if move > 1e-9 * px and (self.min_move is None or move < self.min_move):
            self.min_move = move
        # Difference of logs: a ratio of two extreme (valid) prices could overflow.
        raw = math.log(px) - math.log(self._ref_px)
        self._ref_px, self._ref_ts = px, ts
        ratio = 1.0
        if time_aware and self.step_s:
            ratio = min(max(dt_s / self.step_s, self.cfg.dt_ratio_min), self.cfg.dt_ratio_max)
        ret = raw / math.sqrt(ratio)
        self.last_return = ret
        if self.sentiment_level is not None:
            self._recency *= self.cfg.sentiment_decay
        return ret, raw, ratio

    def _learn_step(self, dt_s: float) -> None:
        if self.step_s is not None:
            return
        self._step_sample.append(dt_s)
        if len(self._step_sample) >= self.cfg.step_learn_n:
            s = sorted(self._step_sample)
            self.step_s = s[len(s) // 2]
            self._step_sample = []

    def _volume(self, ts: int, qty: float, px: float, absret: float | None) -> None:
        day = ts // DAY_NS
        if day != self._day:
            if self._day >= 0 and self.day_volume > 0:
                a = self.cfg.adv_days_alpha
                self.adv_est = (self.day_volume if self.adv_est is None
                                else (1 - a) * self.adv_est + a * self.day_volume)
            self._day = day
            self.day_volume = 0.0
        self.day_volume += qty
        if absret is None:
            return
        dvol = qty * px
        if not math.isfinite(dvol):
            return
        a = self.cfg.liquidity_alpha
        if self._ew_absret is None or self._ew_dvol is None:
            self._ew_absret, self._ew_dvol = absret, dvol
        else:
            self._ew_absret += a * (absret - self._ew_absret)
            self._ew_dvol += a * (dvol - self._ew_dvol)

    # --- per event type --------------------------------------------------------------------

    def _quote(self, event: Envelope, bid: float | None, ask: float | None, bid_size: float,
               ask_size: float, gap: float | None) -> MarketObs:
        feats: dict[str, float] = {}
        ret = raw = None
        ratio = 1.0
        state: QuoteState | None = None
        if bid is not None and ask is not None:
            self.bid, self.ask = bid, ask
            if bid > ask:
                state = "crossed"
                self.spread_bps = None
            else:
                state = "locked" if bid == ask else "normal"
                mid = 0.5 * bid + 0.5 * ask
                self.spread_bps = (ask - bid) / mid * 1e4
                if self.spread_bps > 0:
                    feats["log_spread"] = math.log(self.spread_bps)
                # A crossed book has no meaningful mid: it moves no price (the alert says why).
                ret, raw, ratio = self._price_return("mid", mid, event.ts_event, True)
                if ret is not None:
                    feats["ret"] = ret
            self.quote_state = state
        if bid_size + ask_size > 0:
            feats["imbalance"] = (bid_size - ask_size) / (bid_size + ask_size)
        return MarketObs(ts=event.ts_event, kind=event.type, ret=ret, raw_ret=raw,
                         dt_ratio=ratio, features=feats, sentiment=self._effect(),
                         tick_ret=self.tick_return if ret is not None else None,
                         quote_state=state, gap_steps=gap)

    def _book(self, event: BookTop, gap: float | None) -> MarketObs:
        bid = event.bids[0].price if event.bids else None
        ask = event.asks[0].price if event.asks else None
        bid_size = sum(level.size for level in event.bids)
        ask_size = sum(level.size for level in event.asks)
        return self._quote(event, bid, ask, bid_size, ask_size, gap)

    def _trade(self, event: Trade, gap: float | None) -> MarketObs:
        ts, px = event.ts_event, event.price
        feats: dict[str, float] = {"log_qty": math.log(event.qty)}
        self._trades_seen = True
        absret = (abs(math.log(px) - math.log(self.last_trade_px))
                  if self.last_trade_px is not None else None)
        self.last_trade_px = px
        self._volume(ts, event.qty, px, absret)
        if self._last_trade_ts is not None and ts > self._last_trade_ts:
            dt = (ts - self._last_trade_ts) / NS
            a = self.cfg.liquidity_alpha
            self._ew_trade_dt = dt if self._ew_trade_dt is None else (
                self._ew_trade_dt + a * (dt - self._ew_trade_dt))
        if self._last_trade_ts is None or ts > self._last_trade_ts:
            self._last_trade_ts = ts
        if self._ew_trade_dt and self.step_s:
            feats["log_rate"] = math.log(self.step_s / self._ew_trade_dt)
        if self.mark is None:
            self.mark = px
        ret, raw, ratio = self._price_return("trade", px, ts, True)
        if ret is not None:
            feats["ret"] = ret
        return MarketObs(ts=ts, kind=event.type, ret=ret, raw_ret=raw, dt_ratio=ratio,
                         features=feats, sentiment=self._effect(), gap_steps=gap,
                         tick_ret=self.tick_return if ret is not None else None)

    def _bar(self, event: Bar, gap: float | None) -> MarketObs:
        ts = event.ts_event
        feats: dict[str, float] = {"range": math.log(event.high) - math.log(event.low),
                                   "log_volume": math.log1p(event.volume)}
        ret, raw, ratio = self._price_return("bar", event.close, ts, self.cfg.bars_time_aware)
        if not self._trades_seen:
            # Bars summarise the trades: count their volume only when trades do not come too.
            self._volume(ts, event.volume, event.close, abs(raw) if raw is not None else None)
        if ret is not None:
            feats["ret"] = ret
        if self.mark is None:
            self.mark = event.close
        return MarketObs(ts=ts, kind=event.type, ret=ret, raw_ret=raw, dt_ratio=ratio,
                         features=feats, sentiment=self._effect(), gap_steps=gap,
                         tick_ret=self.tick_return if ret is not None else None)

    def _news(self, event: NewsSentiment, gap: float | None) -> MarketObs:
        score = event.sentiment * event.relevance
        prev = self.sentiment
        a = self.cfg.sentiment_alpha
        self.sentiment_level = score if prev is None else (1 - a) * prev + a * score
        self._recency = 1.0
        return MarketObs(ts=event.ts_event, kind=event.type, sentiment=self._effect(),
                         news=score, news_jump=score - (prev or 0.0), gap_steps=gap)

    def _status(self, event: InstrumentStatus, gap: float | None) -> MarketObs:
        old = self.phase
        self.phase = event.status.value
        for name in ("tick_size", "lot_size", "min_qty", "max_qty", "ref_price"):
            value = getattr(event, name)
            if value is not None:
                setattr(self, name, value)
        if event.adv is not None:
            self.adv_ref = event.adv
        change = (old, self.phase) if old != self.phase else None
        return MarketObs(ts=event.ts_event, kind=event.type, sentiment=self._effect(),
                         phase_change=change, gap_steps=gap)
