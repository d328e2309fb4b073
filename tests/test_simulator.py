"""The simulator without Kafka: determinism, ordering, reference data, tick grid, order-flow
consistency, and the statistical shape of the market (correlation, clustering, regimes)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from consumers.cli.app import main
from producers.simulator import SimConfig, SimEvent, Simulation, read_labels, simulate
from producers.simulator.market import MarketSimulator, make_instruments
from schemas.codec import decode, encode
from schemas.market import Bar, InstrumentStatus, Quote, Trade
from schemas.orders import ExecType, ExecutionReport, OrderCancel, OrderNew, OrderReplace
from schemas.recording import read_recording


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return list(simulate(SimConfig(seed=4, instruments=6, accounts=8, duration_s=300)))


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    args = ["simulate", "--duration", "60", "--instruments", "4", "--accounts", "4",
            "--scenario", "crossed-quotes", "--scenario", "fat-finger"]
    for name, seed in (("a.jsonl", "9"), ("b.jsonl", "9"), ("c.jsonl", "10"), ("d.zst", "9")):
        assert main([*args, "--seed", seed, "--out", str(tmp_path / name)]) == 0
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    assert a == b and a != c
    assert [m.to_json() for m in read_recording(tmp_path / "d.zst")] == a.splitlines()


def test_cli_writes_labels_and_lists_scenarios(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out, labels = tmp_path / "sim.jsonl.gz", tmp_path / "labels.jsonl"
    assert main(["simulate", "--events", "6000", "--seed", "1", "--scenario", "stale-feed",
                 "--scenario", "runaway-algo", "--out", str(out), "--labels", str(labels)]) == 0
    assert sum(1 for _ in read_recording(out)) == 6000
    assert [lb.scenario for lb in read_labels(labels)] == ["stale-feed", "runaway-algo"]
    assert main(["simulate", "--scenario", "list"]) == 0
    listing = capsys.readouterr().out
    for name in ("flash-crash", "price-spike", "stale-feed", "volume-burst", "spread-blowout",
                 "crossed-quotes", "news-shock", "fat-finger", "runaway-algo",
                 "duplicate-orders", "loss-spiral", "concentration"):
        assert name in listing
    assert main(["simulate", "--scenario", "nope", "--out", str(out)]) == 1
    assert "unknown scenario 'nope'" in capsys.readouterr().err


def test_stream_is_ordered_with_per_source_sequences_and_unique_ids(
        events: list[SimEvent]) -> None:
    times = [e.event.ts_event for e in events]
    assert times == sorted(times)
    assert all(e.event.ts_init == e.event.ts_event for e in events)
    seqs: dict[str, list[int]] = defaultdict(list)
    for e in events:
        seqs[e.event.source].append(e.event.seq)
    assert set(seqs) == {"sim-feed", "sim-oms", "sim-venue"}
    assert all(s == list(range(len(s))) for s in seqs.values())
    assert len({e.event.event_id for e in events}) == len(events)
    for e in events[::97]:  # every event is valid and keyed by its entity
        assert decode(encode(e.event)) == e.event
        assert e.key == e.event.key  # type: ignore[attr-defined]
        assert e.topic == e.event.TOPIC


def test_reference_data_comes_first_and_prices_sit_on_the_tick_grid(
        events: list[SimEvent]) -> None:
    statuses = [e.event for e in events[:6]]
    assert all(isinstance(s, InstrumentStatus) for s in statuses)
    ref = {s.symbol: s for s in statuses if isinstance(s, InstrumentStatus)}
    for s in ref.values():
        assert None not in (s.tick_size, s.lot_size, s.min_qty, s.max_qty, s.ref_price, s.adv)

    def on_tick(price: float, tick: float) -> bool:
        return abs(price / tick - round(price / tick)) < 1e-6

    for e in events:
        ev = e.event
        if isinstance(ev, Quote | Trade | Bar):
            tick = ref[ev.symbol].tick_size
            assert tick is not None
            prices = ((ev.bid, ev.ask) if isinstance(ev, Quote) else (ev.price,)
                      if isinstance(ev, Trade) else (ev.open, ev.high, ev.low, ev.close))
            assert all(on_tick(p, tick) for p in prices), ev
    bars = [e.event for e in events if isinstance(e.event, Bar)]
    assert len(bars) == 6 * 4 and all(b.interval_s == 60 for b in bars)


def test_order_flow_is_consistent(events: list[SimEvent]) -> None:
    orders: dict[str, OrderNew | OrderReplace] = {}
    requests: set[str] = set()
    kinds: Counter[str] = Counter()
    strategies = set()
    for e in events:
        ev = e.event
        if isinstance(ev, OrderNew | OrderReplace):
            orders[ev.cl_ord_id] = ev
            strategies.add(ev.strategy)
        elif isinstance(ev, OrderCancel):
            requests.add(ev.cl_ord_id)
            assert ev.orig_cl_ord_id in orders
        elif isinstance(ev, ExecutionReport):
            kinds[ev.exec_type] += 1
            assert ev.cl_ord_id in orders or ev.cl_ord_id in requests
            order = orders.get(ev.cl_ord_id)
            if ev.exec_type in (ExecType.FILL, ExecType.PARTIAL_FILL):
                assert order is not None and ev.cum_qty <= order.qty + 1e-9
                assert ev.counterparty and ev.counterparty.startswith("CP-")
                assert (ev.leaves_qty == 0) == (ev.exec_type == ExecType.FILL)
            else:
                assert ev.counterparty is None
            if ev.exec_type == ExecType.REJECTED:
                assert ev.text
    assert set(kinds) == set(ExecType) - {ExecType.EXPIRED}
    assert strategies == {"mm", "momo", "meanrev", "rogue"}


def test_runs_stop_at_the_event_count_or_the_simulated_duration() -> None:
    short = [e.event for e in simulate(seed=2, instruments=3, accounts=2, events=300)]
    config = SimConfig(seed=2, instruments=3, accounts=2, duration_s=30)
    long = [e.event for e in simulate(config)]
    assert len(short) == 300 and short == long[:300]  # without scenarios: a prefix
    assert config.start_ns + 29 * 10**9 < long[-1].ts_event < config.start_ns + 30 * 10**9
    sim = Simulation(config)
    next(iter(sim))
    with pytest.raises(RuntimeError, match="runs once"):
        next(iter(sim))


def test_returns_are_correlated_clustered_and_switch_regimes() -> None:
    instruments = make_instruments(5, np.random.default_rng(1))
    market = MarketSimulator(instruments, np.random.default_rng(101), start_ns=0, news=False)
    log_prices, stressed = [], []
    for k in range(6000):
        market.step(k * market.dt_ns, {})
        log_prices.append(market.x.copy())
        stressed.append(market.stressed)
    x = np.array(log_prices).T
    returns = np.diff(x, axis=1)
    corr = np.corrcoef(np.diff(x[:, ::30], axis=1))
    sectors = [ins.sector for ins in instruments]
    assert sectors[0] == sectors[4] and len(set(sectors[:4])) == 4
    cross = [corr[i, j] for i in range(4) for j in range(i + 1, 4)]
    assert corr[0, 4] > 0.45 and 0.1 < np.mean(cross) < corr[0, 4] - 0.15

    def lag1_rank_corr(r: np.ndarray) -> float:
        ranks = np.argsort(np.argsort(np.abs(r)))  # ranks: one jump cannot dominate
        return float(np.corrcoef(ranks[:-1], ranks[1:])[0, 1])

    # Volatility clusters: |r| is autocorrelated, unlike the same returns shuffled.
    clustered = [lag1_rank_corr(r) for r in returns]
    shuffled = [lag1_rank_corr(np.random.default_rng(0).permutation(r)) for r in returns]
    assert min(clustered) > 0.08 and max(abs(c) for c in shuffled) < 0.03
    # Both regimes occur and the stressed one is the more volatile.
    mask = np.array(stressed[1:])
    assert 0 < mask.mean() < 0.5
    assert all(np.median(np.abs(returns[i, mask])) > 1.5 * np.median(np.abs(returns[i, ~mask]))
               for i in range(5))


def test_intraday_profile_is_busier_and_wider_at_the_open() -> None:
    def session_slice(offset_s: int) -> tuple[int, float]:
        instruments = make_instruments(3, np.random.default_rng(1))
        market = MarketSimulator(instruments, np.random.default_rng(2), start_ns=0, news=False)
        trades, spreads = 0, []
        for k in range(600):
            for p in market.step(offset_s * 10**9 + k * market.dt_ns, {}):
                if p.cls is Trade:
                    trades += 1
                elif p.cls is Quote:
                    spreads.append((p.fields["ask"] - p.fields["bid"]) / p.fields["ask"])
        return trades, float(np.mean(spreads))

    open_trades, open_spread = session_slice(0)
    noon_trades, noon_spread = session_slice(11_700)
    assert open_trades > 2 * noon_trades
    assert open_spread > 1.5 * noon_spread
