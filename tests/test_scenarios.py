"""Every scenario is labelled, and the labelled window really holds the pattern a reasonable
risk engine would look for (and the pattern does not appear where nothing was injected)."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import pytest

from producers.simulator import SCENARIOS, Label, SimConfig, SimEvent, Simulation
from schemas.market import NewsSentiment, Quote, Trade
from schemas.orders import ExecType, ExecutionReport, OrderNew

NS = 1_000_000_000


@pytest.fixture(scope="module")
def run() -> tuple[list[SimEvent], dict[str, Label], Simulation]:
    sim = Simulation(SimConfig(seed=11, instruments=8, accounts=6, duration_s=600,
                               scenarios=tuple(SCENARIOS)))
    events = list(sim)
    labels = {label.scenario: label for label in sim.labels()}
    return events, labels, sim


def quotes(events: Iterable[SimEvent], symbol: str) -> list[Quote]:
    return [e.event for e in events if isinstance(e.event, Quote) and e.key == symbol]


def trades(events: Iterable[SimEvent], symbol: str) -> list[Trade]:
    return [e.event for e in events if isinstance(e.event, Trade) and e.key == symbol]


def mid_before(events: list[SimEvent], symbol: str, ts: int) -> float:
    q = [q for q in quotes(events, symbol) if q.ts_event < ts][-1]
    return (q.bid + q.ask) / 2


def inside(items: Iterable[Any], label: Label) -> list[Any]:
    return [x for x in items if label.contains(x.ts_event)]


def before(items: Iterable[Any], label: Label, seconds: float) -> list[Any]:
    return [x for x in items if label.start_ts - seconds * NS <= x.ts_event < label.start_ts]


def new_orders(events: Iterable[SimEvent], account: str) -> list[OrderNew]:
    return [e.event for e in events if isinstance(e.event, OrderNew) and e.key == account]


def test_every_scenario_is_labelled_once_on_a_real_entity(run: Any) -> None:
    events, labels, sim = run
    assert set(labels) == set(SCENARIOS)
    assert sim.not_injected() == []
    symbols = {e.key for e in events if e.topic == "market"}
    accounts = {e.key for e in events if e.topic == "orders"}
    for name, label in labels.items():
        assert label.entity in (symbols if SCENARIOS[name].target == "instrument" else accounts)
        assert events[0].event.ts_event < label.start_ts < label.end_ts <= events[-1].event.ts_event


def test_flash_crash_drops_several_sigma_within_seconds_then_partly_recovers(run: Any) -> None:
    events, labels, _ = run
    label = labels["flash-crash"]
    p0 = mid_before(events, label.entity, label.start_ts)
    window = inside(quotes(events, label.entity), label)
    mids = [(q.ts_event, (q.bid + q.ask) / 2) for q in window]
    low_ts, low = min(mids, key=lambda m: m[1])
    assert low <= p0 * 0.96
    assert low_ts - label.start_ts <= 12 * NS
    # 5-second moves before the crash set the scale: the drop is many times bigger.
    calm = before(quotes(events, label.entity), label, 180)
    buckets: dict[int, float] = {}
    for q in calm:
        buckets[q.ts_event // (5 * NS)] = math.log((q.bid + q.ask) / 2)
    moves = [b - a for a, b in pairwise(buckets.values())]
    assert abs(math.log(low / p0)) > 8 * statistics.pstdev(moves)
    last = mids[-1][1]
    assert low + 0.25 * (p0 - low) < last < p0


def test_price_spike_jumps_at_once_and_mostly_reverts(run: Any) -> None:
    events, labels, _ = run
    label = labels["price-spike"]
    p0 = mid_before(events, label.entity, label.start_ts)
    window = inside(quotes(events, label.entity), label)
    first_second = [q for q in window if q.ts_event < label.start_ts + NS]
    peak = max(abs(math.log((q.bid + q.ask) / 2 / p0)) for q in first_second)
    assert peak >= 0.025
    end = abs(math.log((window[-1].bid + window[-1].ask) / 2 / p0))
    assert end < peak / 2


def test_stale_feed_repeats_one_quote_and_prints_nothing(run: Any) -> None:
    events, labels, _ = run
    label = labels["stale-feed"]
    window = inside(quotes(events, label.entity), label)
    assert len(window) >= 20
    assert len({(q.bid, q.ask, q.bid_size, q.ask_size) for q in window}) == 1
    assert inside(trades(events, label.entity), label) == []
    assert len({(q.bid, q.ask) for q in before(quotes(events, label.entity), label, 60)}) > 2
    other = next(e.key for e in events if e.topic == "market" and e.key != label.entity)
    assert len({(q.bid, q.ask) for q in inside(quotes(events, other), label)}) > 2


def test_volume_burst_trades_many_times_the_normal_volume(run: Any) -> None:
    events, labels, _ = run
    label = labels["volume-burst"]
    length = (label.end_ts - label.start_ts) / NS
    during = sum(t.qty for t in inside(trades(events, label.entity), label)) / length
    normal = sum(t.qty for t in before(trades(events, label.entity), label, 120)) / 120
    assert during >= 8 * normal


def test_spread_blowout_widens_the_spread_many_times(run: Any) -> None:
    events, labels, _ = run
    label = labels["spread-blowout"]

    def rel(qs: list[Quote]) -> float:
        return statistics.median((q.ask - q.bid) / ((q.ask + q.bid) / 2) for q in qs)

    assert rel(inside(quotes(events, label.entity), label)) >= 8 * rel(
        before(quotes(events, label.entity), label, 120))


def test_crossed_quotes_only_inside_the_label(run: Any) -> None:
    events, labels, _ = run
    label = labels["crossed-quotes"]
    window = inside(quotes(events, label.entity), label)
    assert window and all(q.bid > q.ask for q in window)
    crossed = [e.event for e in events if isinstance(e.event, Quote) and e.event.bid >= e.event.ask]
    assert all(q.symbol == label.entity and label.contains(q.ts_event) for q in crossed)


def test_news_shock_is_very_negative_news_then_a_sell_off(run: Any) -> None:
    events, labels, _ = run
    label = labels["news-shock"]
    news = [e.event for e in events if isinstance(e.event, NewsSentiment)
            and e.key == label.entity and label.contains(e.event.ts_event)]
    assert news and min(n.sentiment for n in news) <= -0.8
    p0 = mid_before(events, label.entity, label.start_ts)
    after = [q for q in inside(quotes(events, label.entity), label)
             if q.ts_event >= label.start_ts + 15 * NS]
    assert (after[0].bid + after[0].ask) / 2 <= p0 * 0.98


def test_fat_finger_is_one_order_far_above_normal_size(run: Any) -> None:
    events, labels, _ = run
    label = labels["fat-finger"]
    orders = new_orders(events, label.entity)
    inside_orders = inside(orders, label)
    big = max(inside_orders, key=lambda o: o.qty)
    normal = statistics.median(o.qty for o in orders
                               if o.symbol == big.symbol and not label.contains(o.ts_event))
    assert big.qty >= 40 * normal
    assert sum(1 for o in inside_orders if o.qty >= 10 * normal) == 1


def test_runaway_algo_is_hundreds_of_orders_in_seconds(run: Any) -> None:
    events, labels, _ = run
    label = labels["runaway-algo"]
    assert label.end_ts - label.start_ts <= 5 * NS
    burst = inside(new_orders(events, label.entity), label)
    assert len(burst) >= 200 and len({o.strategy for o in burst}) == 1
    # Nowhere else does any account send even a fifth of that in 5 seconds.
    per_bucket = Counter((e.key, e.event.ts_event // (5 * NS)) for e in events
                         if isinstance(e.event, OrderNew) and not label.contains(e.event.ts_event))
    assert max(per_bucket.values()) < 40


def test_duplicate_orders_repeat_the_same_content_within_seconds(run: Any) -> None:
    events, labels, _ = run
    label = labels["duplicate-orders"]

    def content(o: OrderNew) -> tuple[Any, ...]:
        return (o.symbol, o.side, o.price, o.qty, o.strategy)

    groups = Counter(content(o) for o in inside(new_orders(events, label.entity), label))
    assert max(groups.values()) >= 6
    assert label.end_ts - label.start_ts <= 5 * NS


def _fills(events: Iterable[SimEvent], account: str) -> list[ExecutionReport]:
    return [e.event for e in events if isinstance(e.event, ExecutionReport) and e.key == account
            and e.event.exec_type in (ExecType.FILL, ExecType.PARTIAL_FILL)]


def test_loss_spiral_loses_money_steadily(run: Any) -> None:
    events, labels, _ = run
    label = labels["loss-spiral"]
    fills = inside(_fills(events, label.entity), label)
    symbol = Counter(f.symbol for f in fills).most_common(1)[0][0]
    fills = [f for f in fills if f.symbol == symbol]
    span = label.end_ts - label.start_ts
    pnl = []
    for k in range(1, 5):
        cut = label.start_ts + span * k // 4
        position = sum(f.last_qty * (1 if f.side == "buy" else -1) for f in fills
                       if f.ts_event <= cut)
        cash = -sum(f.last_qty * (f.last_px or 0) * (1 if f.side == "buy" else -1)
                    for f in fills if f.ts_event <= cut)
        pnl.append(cash + position * mid_before(events, symbol, cut))
    bought = sum(f.last_qty * (f.last_px or 0) for f in fills if f.side == "buy")
    assert all(b < a for a, b in pairwise(pnl)), pnl
    assert pnl[-1] < -0.005 * bought


def test_concentration_piles_into_one_instrument(run: Any) -> None:
    events, labels, _ = run
    label = labels["concentration"]
    bought: dict[str, float] = defaultdict(float)
    for f in inside(_fills(events, label.entity), label):
        bought[f.symbol] += f.last_qty * (f.last_px or 0) * (1 if f.side == "buy" else -1)
    symbol, notional = max(bought.items(), key=lambda kv: kv[1])
    assert notional >= 0.9 * sum(abs(v) for v in bought.values())
    normal = statistics.median(o.qty for o in new_orders(events, label.entity)
                               if o.symbol == symbol and not label.contains(o.ts_event))
    net_qty = notional / mid_before(events, symbol, label.end_ts)
    assert net_qty >= 50 * normal


def test_runs_bounded_by_event_count_still_fit_every_scenario() -> None:
    sim = Simulation(SimConfig(seed=3, instruments=6, accounts=4, events=12_000,
                               scenarios=tuple(SCENARIOS)))
    assert sum(1 for _ in sim) == 12_000
    assert sim.not_injected() == []
    assert {label.scenario for label in sim.labels()} == set(SCENARIOS)


def test_account_scenarios_need_accounts() -> None:
    with pytest.raises(ValueError, match="needs at least one account"):
        SimConfig(accounts=0, scenarios=("fat-finger",))
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        SimConfig(scenarios=("nope",))
