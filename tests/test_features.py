"""Per-instrument features: time-aware returns, the return series, spread and quote states,
volume and participation, Amihud, trade rate, sentiment, reference data, gaps."""

from __future__ import annotations

import math
from typing import Any

import pytest

from engine.features import NS, InstrumentFeatures
from engine.market_config import FeatureConfig
from schemas.market import (
    Bar,
    BookTop,
    InstrumentPhase,
    InstrumentStatus,
    NewsSentiment,
    PriceLevel,
    Quote,
    Trade,
)

DAY = 86_400 * NS
T0 = 1_700_000_000 * NS
_n = 0


def _env(ts: int) -> dict[str, Any]:
    global _n
    _n += 1
    return {"event_id": f"e{_n}", "ts_event": ts, "ts_init": 0, "source": "t", "symbol": "X"}


def trade(ts: int, price: float, qty: float = 100.0) -> Trade:
    return Trade(**_env(ts), price=price, qty=qty)


def quote(ts: int, bid: float, ask: float, bs: float = 10.0, asz: float = 10.0) -> Quote:
    return Quote(**_env(ts), bid=bid, ask=ask, bid_size=bs, ask_size=asz)


def bar(ts: int, close: float, volume: float = 1000.0, high: float | None = None,
        low: float | None = None) -> Bar:
    return Bar(**_env(ts), open=close, high=high or close, low=low or close, close=close,
               volume=volume, interval_s=86_400)


def test_time_aware_returns_scale_by_sqrt_of_elapsed_steps() -> None:
    f = InstrumentFeatures(FeatureConfig(nominal_step_s=1.0))
    f.update(trade(T0, 100.0))
    obs = f.update(trade(T0 + 4 * NS, 101.0))  # four steps elapsed
    assert obs.dt_ratio == 4.0
    assert obs.raw_ret == pytest.approx(math.log(1.01))
    assert obs.ret == pytest.approx(math.log(1.01) / 2.0)
    # Shorter than a step: not scaled up by default (microstructure noise dominates)...
    obs = f.update(trade(T0 + 4 * NS + NS // 4, 100.0))
    assert obs.dt_ratio == 1.0 and obs.ret == pytest.approx(math.log(100 / 101))
    # ...unless configured, and never past the clip.
    g = InstrumentFeatures(FeatureConfig(nominal_step_s=1.0, dt_ratio_min=0.25,
                                         dt_ratio_max=9.0))
    g.update(trade(T0, 100.0))
    assert g.update(trade(T0 + NS // 4, 101.0)).ret == pytest.approx(math.log(1.01) * 2)
    assert g.update(trade(T0 + 100 * NS, 101.0 * 1.01)).dt_ratio == 9.0


def test_nominal_step_is_learned_as_a_median_then_frozen() -> None:
    f = InstrumentFeatures(FeatureConfig(step_learn_n=5))
    ts, px = T0, 100.0
    f.update(trade(ts, px))
    for gap in (1, 3, 2, 50, 2):
        ts += gap * NS
        px += 0.01
        f.update(trade(ts, px))
    assert f.step_s == 2.0
    ts += 500 * NS
    f.update(trade(ts, px + 0.01))
    assert f.step_s == 2.0


def test_same_timestamp_burst_keeps_the_reference_price() -> None:
    f = InstrumentFeatures(FeatureConfig(nominal_step_s=1.0))
    f.update(trade(T0, 100.0))
    assert f.update(trade(T0, 102.0)).ret is None  # no time elapsed: no return
    assert f.mark == 102.0
    obs = f.update(trade(T0 + NS, 103.0))
    assert obs.raw_ret == pytest.approx(math.log(103 / 100))  # spans both moves
    # Out of order: no return, no crash.
    assert f.update(trade(T0 - 5 * NS, 99.0)).ret is None


def test_return_series_prefers_mids_and_never_mixes_series() -> None:
    f = InstrumentFeatures()
    f.update(trade(T0, 100.0))
    assert f.update(trade(T0 + NS, 100.5)).ret is not None
    assert f.source == "trade"
    first_quote = f.update(quote(T0 + 2 * NS, 100.0, 100.2))
    assert f.source == "mid" and first_quote.ret is None  # a new series starts fresh
    assert f.update(trade(T0 + 3 * NS, 110.0)).ret is None  # trades no longer move it
    obs = f.update(quote(T0 + 4 * NS, 100.2, 100.4))
    assert obs.raw_ret == pytest.approx(math.log(100.3 / 100.1))
    # A coarser series (bars) never takes over from a finer one.
    assert f.update(bar(T0 + 5 * NS, 120.0)).ret is None
    assert f.source == "mid"


def test_fixed_return_source() -> None:
    f = InstrumentFeatures(FeatureConfig(return_source="trade"))
    f.update(quote(T0, 100.0, 100.2))
    assert f.update(quote(T0 + NS, 100.2, 100.4)).ret is None
    f.update(trade(T0 + 2 * NS, 100.0))
    assert f.update(trade(T0 + 3 * NS, 101.0)).ret is not None


def test_quote_spread_locked_and_crossed() -> None:
    f = InstrumentFeatures()
    obs = f.update(quote(T0, 99.95, 100.05, bs=30, asz=10))
    assert f.spread_bps == pytest.approx(10.0)
    assert obs.quote_state == "normal"
    assert obs.features["log_spread"] == pytest.approx(math.log(10.0))
    assert obs.features["imbalance"] == pytest.approx(0.5)
    locked = f.update(quote(T0 + NS, 100.0, 100.0))
    assert locked.quote_state == "locked" and f.spread_bps == 0.0
    assert "log_spread" not in locked.features
    assert locked.ret is not None  # a locked book still has a mid
    crossed = f.update(quote(T0 + 2 * NS, 100.3, 100.1))
    assert crossed.quote_state == "crossed" and crossed.ret is None
    assert f.spread_bps is None and f.mark == 100.0  # a crossed book moves no price


def test_book_top_uses_best_levels_and_depth() -> None:
    f = InstrumentFeatures()
    book = BookTop(**_env(T0), bids=[PriceLevel(price=99.9, size=5),
                                     PriceLevel(price=99.8, size=15)],
                   asks=[PriceLevel(price=100.1, size=10)])
    obs = f.update(book)
    assert f.mark == pytest.approx(100.0)
    assert obs.features["imbalance"] == pytest.approx((20 - 10) / 30)
    one_sided = BookTop(**_env(T0 + NS), bids=[PriceLevel(price=99.9, size=5)], asks=[])
    obs = f.update(one_sided)
    assert obs.ret is None and obs.quote_state is None and f.mark == pytest.approx(100.0)


def test_volume_participation_and_adv() -> None:
    f = InstrumentFeatures(FeatureConfig(adv_days_alpha=0.5))
    f.update(trade(T0, 10.0, qty=300))
    assert f.participation is None  # no ADV known yet
    f.update(InstrumentStatus(**_env(T0 + 1), status=InstrumentPhase.TRADING, adv=1000.0))
    f.update(trade(T0 + 2, 10.0, qty=200))
    assert f.day_volume == 500 and f.participation == pytest.approx(0.5)
    # Without a reference ADV, finished days make the estimate.
    g = InstrumentFeatures(FeatureConfig(adv_days_alpha=0.5))
    day0 = (T0 // DAY) * DAY
    g.update(trade(day0 + NS, 10.0, qty=1000))
    g.update(trade(day0 + DAY + NS, 10.0, qty=100))  # next day: day 0 closes at 1000
    assert g.adv_est == 1000 and g.day_volume == 100
    g.update(trade(day0 + 2 * DAY + NS, 10.0, qty=50))
    assert g.adv_est == pytest.approx(550)
    assert g.participation == pytest.approx(50 / 550)


def test_amihud_and_trade_rate() -> None:
    f = InstrumentFeatures(FeatureConfig(liquidity_alpha=0.5, nominal_step_s=1.0))
    f.update(trade(T0, 100.0, qty=1000))
    assert f.amihud is None and f.trade_rate is None
    f.update(trade(T0 + 2 * NS, 101.0, qty=1000))
    # |log return| per million of notional traded.
    assert f.amihud == pytest.approx(math.log(1.01) / (101.0 * 1000) * 1e6)
    assert f.trade_rate == pytest.approx(0.5)
    obs = f.update(trade(T0 + 3 * NS, 101.0, qty=1000))
    assert f.trade_rate == pytest.approx(1 / 1.5)
    assert obs.features["log_rate"] == pytest.approx(math.log(1.0 / 1.5))


def test_bars_count_one_step_each_and_their_volume_only_without_trades() -> None:
    f = InstrumentFeatures()
    f.update(bar(T0, 100.0, volume=500))
    obs = f.update(bar(T0 + 3 * DAY, 102.0, volume=700, high=102.5, low=99.5))  # weekend
    assert obs.dt_ratio == 1.0 and obs.ret == pytest.approx(math.log(1.02))
    assert obs.features["range"] == pytest.approx(math.log(102.5 / 99.5))
    assert f.day_volume == 700
    g = InstrumentFeatures()
    g.update(trade(T0, 100.0, qty=10))
    g.update(bar(T0 + 1, 100.0, volume=10))  # the same volume, summarised
    assert g.day_volume == 10


def test_sentiment_level_decay_and_shock_facts() -> None:
    f = InstrumentFeatures(FeatureConfig(sentiment_alpha=0.5, sentiment_decay=0.5,
                                         nominal_step_s=1.0))
    assert f.sentiment is None
    f.update(trade(T0, 100.0))
    news = f.update(NewsSentiment(**_env(T0 + 1), sentiment=-0.8, relevance=0.5))
    assert news.news == pytest.approx(-0.4) and news.news_jump == pytest.approx(-0.4)
    assert f.sentiment == pytest.approx(-0.4)
    news = f.update(NewsSentiment(**_env(T0 + 2), sentiment=0.6))
    assert f.sentiment == pytest.approx(0.1)
    assert news.news_jump == pytest.approx(1.0)
    obs = f.update(trade(T0 + NS, 101.0))  # one return later the news effect halves
    assert obs.sentiment == pytest.approx(0.05)


def test_status_reference_data_and_phase_changes() -> None:
    f = InstrumentFeatures()
    assert f.price is None
    f.update(InstrumentStatus(**_env(T0), status=InstrumentPhase.TRADING, tick_size=0.01,
                              lot_size=100, ref_price=50.0, adv=1e6))
    assert f.price == 50.0 and f.tradable and f.tick_size == 0.01
    obs = f.update(InstrumentStatus(**_env(T0 + 1), status=InstrumentPhase.HALTED))
    assert obs.phase_change == ("trading", "halted") and not f.tradable
    assert f.tick_size == 0.01  # a status without reference data keeps the old values
    assert f.update(InstrumentStatus(**_env(T0 + 2), status=InstrumentPhase.HALTED)) \
        .phase_change is None


def test_tick_return_from_reference_data_or_observed_moves() -> None:
    f = InstrumentFeatures()
    f.update(quote(T0, 9.99, 10.01))
    f.update(quote(T0 + NS, 10.0, 10.02))
    assert f.tick_return == pytest.approx(0.01 / 10.01)  # smallest mid move seen
    f.update(InstrumentStatus(**_env(T0 + 2), status=InstrumentPhase.TRADING, tick_size=0.01))
    assert f.tick_return == pytest.approx(0.005 / 10.01)  # mids move by half ticks


def test_feed_gap_is_reported_on_the_next_event() -> None:
    f = InstrumentFeatures(FeatureConfig(nominal_step_s=1.0, gap_steps=30))
    f.update(trade(T0, 100.0))
    assert f.update(trade(T0 + 10 * NS, 100.1)).gap_steps is None
    obs = f.update(trade(T0 + 70 * NS, 100.2))
    assert obs.gap_steps == pytest.approx(60.0)


def test_extreme_valid_prices_do_not_overflow() -> None:
    f = InstrumentFeatures(FeatureConfig(nominal_step_s=1.0))
    f.update(trade(T0, 1e-300, qty=1e300))
    obs = f.update(trade(T0 + NS, 1e300, qty=1e300))
    assert obs.ret is not None and math.isfinite(obs.ret)
    assert all(math.isfinite(v) for v in obs.features.values())
    assert f.amihud is None or math.isfinite(f.amihud)
    obs = f.update(quote(T0 + 2 * NS, 1e300, 1.5e300))
    assert f.spread_bps is not None and math.isfinite(f.spread_bps)
