"""The market risk processor: determinism, snapshot/restore mid-stream, score-before-learn
(VaR published before the return it is tested on), alerts (crossed quotes, stale feed,
flash crash, red-zone fallback...), VaR figures, bad-but-valid inputs, and the S&P 500 daily
series out of the red zone."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from engine.envelope import comparable
from engine.market_config import MarketRiskConfig
from engine.market_risk import WORKER, MarketRiskProcessor, SnapshotMismatch
from engine.models.base import loss_fraction
from engine.processor import Output, Processor
from producers.csv_input import CsvMapping, read_csv_events
from producers.simulator import SimConfig, Simulation
from schemas.codec import decode, encode
from schemas.common import Envelope, Severity
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
from schemas.outputs import InstrumentRisk, ModelHealth, RiskAlert, Zone

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
SP500 = Path(__file__).parent / "data" / "sp500"


def sim_events(seconds: float = 240.0, instruments: int = 3, seed: int = 5,
               scenarios: tuple[str, ...] = ()) -> tuple[list[Envelope], list[Any]]:
    sim = Simulation(SimConfig(seed=seed, instruments=instruments, accounts=0,
                               duration_s=seconds, scenarios=scenarios))
    events = [e.event for e in sim if e.topic == "market"]
    return events, sim.labels()


EVENTS, _ = sim_events()


def run(proc: MarketRiskProcessor, events: Iterable[Envelope]) -> list[Output]:
    out: list[Output] = []
    for event in events:
        out.extend(proc.process(event))
    return out


def comparable_outputs(outputs: list[Output]) -> list[Any]:
    return [(o.topic, o.key, comparable(o.value.model_dump(mode="json"))) for o in outputs]


def alerts(outputs: list[Output], code: str | None = None) -> list[RiskAlert]:
    return [o.value for o in outputs if isinstance(o.value, RiskAlert)
            and (code is None or o.value.reason_code == code)]


def risks(outputs: list[Output], symbol: str | None = None) -> list[InstrumentRisk]:
    return [o.value for o in outputs if isinstance(o.value, InstrumentRisk)
            and (symbol is None or o.value.symbol == symbol)]


_n = 0


def env(ts: int, symbol: str = "X") -> dict[str, Any]:
    global _n
    _n += 1
    return {"event_id": f"m{_n}", "ts_event": ts, "ts_init": 0, "source": "test",
            "seq": _n, "symbol": symbol}


def bars(returns: list[float], symbol: str = "X", start: float = 100.0) -> list[Bar]:
    out, px = [], start
    for i, r in enumerate(returns):
        new = px * math.exp(r)
        out.append(Bar(**env(T0 + i * 86_400 * NS, symbol), open=px, high=max(px, new),
                       low=min(px, new), close=new, volume=1000.0 + i, interval_s=86_400))
        px = new
    return out


# --- protocol, determinism, snapshots -----------------------------------------------------


def test_is_a_processor_for_the_market_topic() -> None:
    proc = MarketRiskProcessor()
    assert isinstance(proc, Processor)
    assert proc.name == WORKER == "market-worker" and proc.input_topic == "market"
    assert proc.key_of(EVENTS[0]) == EVENTS[0].symbol  # type: ignore[attr-defined]
    assert proc.process(RiskAlert(event_id="x", ts_event=1, ts_init=1, source="s",
                                  reason_code="X", severity=Severity.INFO, entity="e",
                                  entity_kind="instrument", observed=0, threshold=0,
                                  message="", cause_event_id="c")) == []


def test_same_input_same_outputs() -> None:
    a = comparable_outputs(run(MarketRiskProcessor(), EVENTS))
    b = comparable_outputs(run(MarketRiskProcessor(), EVENTS))
    assert a == b
    assert len(a) >= len(EVENTS) * 0.9


def test_every_output_derives_its_envelope_from_its_input() -> None:
    proc = MarketRiskProcessor()
    ids: list[str] = []
    for event in EVENTS[:3000]:
        for out in proc.process(event):
            assert out.value.ts_event == event.ts_event and out.value.seq == event.seq
            assert out.value.source == WORKER
            ids.append(out.value.event_id)
            if isinstance(out.value, RiskAlert):
                assert out.value.cause_event_id == event.event_id
    assert len(set(ids)) == len(ids)  # one id per (input, rule): never two outputs alike


def test_snapshot_restore_mid_stream_matches_an_uninterrupted_run() -> None:
    cut = len(EVENTS) // 2
    whole = run(MarketRiskProcessor(), EVENTS)
    first = MarketRiskProcessor()
    head = run(first, EVENTS[:cut])
    dirty = first.dirty_keys()
    assert dirty == set(first.symbols()) and first.dirty_keys() == set()
    snapshots = {key: first.snapshot(key) for key in dirty}
    assert all(s is not None and len(s) < 200_000 for s in snapshots.values())
    second = MarketRiskProcessor()
    for key, data in snapshots.items():
        second.restore(key, data)
    tail = run(second, EVENTS[cut:])
    assert comparable_outputs(head + tail) == comparable_outputs(whole)


def test_restore_none_evict_and_bad_snapshots() -> None:
    proc = MarketRiskProcessor()
    run(proc, EVENTS[:500])
    key = proc.symbols()[0]
    assert proc.snapshot("NOPE") is None
    proc.evict([key])
    assert key not in proc.symbols() and proc.snapshot(key) is None
    with pytest.raises(SnapshotMismatch):
        proc.restore(key, __import__("pickle").dumps(("other-format/9", {})))
    other = proc.symbols()[0]
    proc.restore(other, None)
    assert other not in proc.symbols()


# --- score first, then learn ---------------------------------------------------------------


def test_var_is_published_before_the_return_it_is_tested_on() -> None:
    rng = random.Random(3)
    rets = [rng.gauss(0, 0.01) * (3 if 300 < i < 400 else 1) for i in range(900)]
    proc = MarketRiskProcessor()
    outs = run(proc, bars(rets))
    published = risks(outs)
    assert len(published) == len(rets)
    warm = MarketRiskConfig().vol.warmup_returns
    # Exceedances recomputed from the outputs: the return of bar t against the VaR that
    # was published with bar t-1. They match the processor's own backtest exactly.
    for method, health in proc.state("X").health.items():  # type: ignore[union-attr]
        hits = [loss_fraction(published[t].last_return) > published[t - 1].methods[method].var_99
                for t in range(warm + 1, len(published))]
        n, x = health.tracker.total_counts()
        assert (n, x) == (len(hits), sum(hits))
        assert 0 < x < n * 0.05


def test_forecast_does_not_move_until_the_next_return() -> None:
    proc = MarketRiskProcessor()
    outs = run(proc, EVENTS[:2000])
    last = risks(outs)[-1]
    sym = last.symbol
    news = NewsSentiment(**env(last.ts_event + 1, sym), sentiment=0.1, relevance=0.2)
    after = risks(list(proc.process(news)))[0]
    assert (after.var_99, after.methods, after.vol) == (last.var_99, last.methods, last.vol)


# --- figures -------------------------------------------------------------------------------


def test_var_figures_positive_and_ordered() -> None:
    outs = run(MarketRiskProcessor(), EVENTS)
    published = risks(outs)
    assert published
    for r in published:
        assert 0.0 < r.var_95 <= r.var_99 <= 1.0 and r.es_975 > 0
        assert r.vol > 0 and 0.0 <= r.anomaly_score <= 1.0 and 0.0 <= r.tail_prob <= 1.0
        assert set(r.methods) == {"parametric", "fhs", "quantile"}
        for m in r.methods.values():
            assert 0.0 < m.var_95 <= m.var_99
            assert m.es_975 >= m.var_95
        # Normal ES 97.5 is just above VaR 99 (2.338 vs 2.326 sigmas).
        p = r.methods["parametric"]
        assert p.var_99 <= p.es_975 <= p.var_99 * 1.01
        assert (r.var_95, r.var_99, r.es_975) == (r.methods[r.var_method].var_95,
                                                   r.methods[r.var_method].var_99,
                                                   r.methods[r.var_method].es_975)
    assert {r.regime for r in published[-50:]} <= {"calm", "stressed"}


def test_outputs_survive_the_codec() -> None:
    for out in run(MarketRiskProcessor(), EVENTS[:1500]):
        assert decode(encode(out.value)) == out.value


# --- alerts --------------------------------------------------------------------------------


def test_crossed_and_locked_quotes_alert_once_per_episode() -> None:
    proc = MarketRiskProcessor()
    evs: list[Envelope] = [Quote(**env(T0), bid=99.9, ask=100.1, bid_size=5, ask_size=5)]
    evs += [Quote(**env(T0 + i * NS), bid=100.2, ask=100.1, bid_size=5, ask_size=5 + i)
            for i in range(1, 5)]
    evs += [Quote(**env(T0 + 6 * NS), bid=100.0, ask=100.1, bid_size=5, ask_size=5),
            Quote(**env(T0 + 7 * NS), bid=100.1, ask=100.1, bid_size=5, ask_size=5)]
    outs = run(proc, evs)
    crossed = alerts(outs, "CROSSED_QUOTE")
    assert len(crossed) == 1 and crossed[0].severity == "critical"
    assert crossed[0].observed == pytest.approx(0.1) and crossed[0].cause_event_id == "m" + \
        evs[1].event_id[1:]
    assert {f.name for f in crossed[0].features} == {"bid", "ask"}
    assert len(alerts(outs, "LOCKED_QUOTE")) == 1
    # The crossed quotes moved no price.
    assert {r.price for r in risks(outs)[:5]} == {100.0}


def test_stale_feed_alerts_freezes_models_and_resumes() -> None:
    proc = MarketRiskProcessor()
    rng = random.Random(1)
    evs: list[Envelope] = []
    mid = 100.0
    for i in range(200):
        mid *= math.exp(rng.gauss(0, 0.0005))
        evs.append(Quote(**env(T0 + i * NS), bid=round(mid - 0.02, 2), ask=round(mid + 0.02, 2),
                         bid_size=rng.randint(1, 9), ask_size=rng.randint(1, 9)))
    frozen = evs[-1]
    evs += [Quote(**env(T0 + (200 + i) * NS), bid=frozen.bid, ask=frozen.ask,  # type: ignore
                  bid_size=frozen.bid_size, ask_size=frozen.ask_size)  # type: ignore
            for i in range(60)]
    outs = run(proc, evs[:215])  # stale after 10 repeats of the frozen quote
    st = proc.state("X")
    assert st is not None and st.stale
    frozen_vol = (st.vol.variance, st.vol.n, st.tail.n)
    outs += run(proc, evs[215:])
    assert (st.vol.variance, st.vol.n, st.tail.n) == frozen_vol  # models learn nothing
    stale = alerts(outs, "STALE_FEED")
    assert len(stale) == 1 and stale[0].severity == "warning"
    assert risks(outs)[-1].stale and risks(outs)[-1].anomaly_score == 0.0
    assert not alerts(outs, "MARKET_ANOMALY")
    resumed = run(proc, [Quote(**env(T0 + 261 * NS), bid=frozen.bid + 0.01,  # type: ignore
                               ask=frozen.ask + 0.01, bid_size=3, ask_size=4)])  # type: ignore
    assert [a.reason_code for a in alerts(resumed)] == ["FEED_RESUMED"]
    assert not risks(resumed)[0].stale


def test_constant_price_series_is_stale_not_anomalous() -> None:
    proc = MarketRiskProcessor()
    evs = [Trade(**env(T0 + i * NS), price=50.0, qty=100.0 + (i % 7)) for i in range(400)]
    outs = run(proc, evs)
    assert len(alerts(outs, "STALE_FEED")) == 1
    assert not alerts(outs, "MARKET_ANOMALY") and not alerts(outs, "PRICE_JUMP")
    assert risks(outs)[-1].stale


@pytest.mark.parametrize("scenario,codes", [
    ("flash-crash", {"PRICE_JUMP"}),
    ("crossed-quotes", {"CROSSED_QUOTE"}),
    ("stale-feed", {"STALE_FEED"}),
    ("news-shock", {"SENTIMENT_SHOCK"}),
    ("spread-blowout", {"MARKET_ANOMALY"}),
])
def test_labelled_scenario_is_detected_inside_its_window(scenario: str, codes: set[str]) -> None:
    events, labels = sim_events(seconds=300, instruments=2, seed=11, scenarios=(scenario,))
    (label,) = labels
    outs = run(MarketRiskProcessor(), events)
    inside = [a for a in alerts(outs) if a.entity == label.entity
              and label.start_ts <= a.ts_event <= label.end_ts]
    assert codes <= {a.reason_code for a in inside}, Counter(a.reason_code for a in inside)
    if scenario == "flash-crash":
        jump = next(a for a in inside if a.reason_code == "PRICE_JUMP")
        assert jump.observed < -6 and jump.severity == "critical"
        assert jump.features[0].name == "ret"


def test_sentiment_shock_and_trading_phase_alerts() -> None:
    proc = MarketRiskProcessor()
    evs: list[Envelope] = [
        InstrumentStatus(**env(T0), status=InstrumentPhase.TRADING, ref_price=20.0, adv=1e6),
        NewsSentiment(**env(T0 + 1), sentiment=-0.95, relevance=1.0, headline="fraud probe"),
        NewsSentiment(**env(T0 + 2), sentiment=0.1, relevance=0.5),
        InstrumentStatus(**env(T0 + 3), status=InstrumentPhase.HALTED),
    ]
    outs = run(proc, evs)
    shock = alerts(outs, "SENTIMENT_SHOCK")
    assert len(shock) == 1 and shock[0].severity == "critical"
    assert shock[0].observed == pytest.approx(-0.95)
    phase = alerts(outs, "TRADING_PHASE")
    assert len(phase) == 1 and phase[0].severity == "warning"
    last = risks(outs)[-1]
    assert not last.tradable and last.status == "halted" and last.price == 20.0
    assert last.sentiment is not None and last.sentiment < 0


def test_red_zone_switches_to_the_most_conservative_method_until_green() -> None:
    cfg = MarketRiskConfig.model_validate({"var": {"primary": "parametric",
                                                   "health_every": 100}})
    rng = random.Random(9)
    # Calm, then a spell where every 8th day is a 6-sigma loss (parametric under-covers and
    # turns red), then calm again for long enough to clear the rolling window.
    rets = []
    for i in range(1400):
        shock = 300 <= i < 600 and i % 8 == 0
        rets.append(-0.06 if shock else rng.gauss(0, 0.01))
    proc = MarketRiskProcessor(cfg)
    outs = run(proc, bars(rets))
    red, green = alerts(outs, "VAR_MODEL_RED"), alerts(outs, "VAR_MODEL_GREEN")
    assert len(red) >= 1 and len(green) >= 1
    assert red[0].entity_kind == "model" and red[0].entity == "market-worker/parametric/X"
    assert red[0].ts_event < green[-1].ts_event
    published = risks(outs)
    during = [r for r in published if red[0].ts_event <= r.ts_event < green[0].ts_event]
    assert during and all(r.var_99 == max(m.var_99 for m in r.methods.values())
                          for r in during)
    assert published[-1].var_method == "parametric"
    health = [o.value for o in outs if isinstance(o.value, ModelHealth)]
    assert any(h.fallback_active for h in health if h.method == "parametric")
    assert any(h.rolling is not None and h.rolling.zone == Zone.RED for h in health)


def test_model_health_cadence_and_content() -> None:
    cfg = MarketRiskConfig.model_validate({"var": {"health_every": 50}})
    rng = random.Random(4)
    proc = MarketRiskProcessor(cfg)
    outs = run(proc, bars([rng.gauss(0, 0.01) for _ in range(321)]))
    health_out = [o for o in outs if isinstance(o.value, ModelHealth)]
    health = [o.value for o in health_out if isinstance(o.value, ModelHealth)]
    by_method = Counter(h.method for h in health)
    # 300 backtested returns (the first 21 warm up): every 50 per method, plus zone changes.
    for method in ("parametric", "fhs", "quantile"):
        assert by_method[method] >= 6
    assert by_method["tail"] == 6
    h = next(h for h in health if h.method == "fhs")
    assert h.model_id == "market-worker/fhs/X" and h.entity == "X"
    assert all(o.key == v.model_id for o, v in zip(health_out, health, strict=True))
    assert h.since_start is not None and h.since_start.expected_rate == pytest.approx(0.01)
    assert "var95_rate" in h.metrics
    tail = next(h for h in health if h.method == "tail")
    assert {"log_loss", "brier", "n"} <= set(tail.metrics)


# --- bad but valid input --------------------------------------------------------------------


def test_bad_but_valid_inputs_are_handled() -> None:
    proc = MarketRiskProcessor()
    evs: list[Envelope] = [
        NewsSentiment(**env(T0), sentiment=-0.2),  # before any price
        InstrumentStatus(**env(T0 + 1), status=InstrumentPhase.TRADING),  # no reference data
        BookTop(**env(T0 + 2), bids=[], asks=[]),
        BookTop(**env(T0 + 3), bids=[PriceLevel(price=10.0, size=1)], asks=[]),
        Trade(**env(T0 + 4), price=1e-300, qty=1e300),
        Trade(**env(T0 + 4), price=1e300, qty=1e-300),  # same timestamp
        Trade(**env(T0 - 10 * NS), price=5.0, qty=1.0),  # out of order
        Quote(**env(T0 + 5), bid=1e300, ask=1e300, bid_size=0, ask_size=0),  # locked, empty
        Bar(**env(T0 + 6), open=1.0, high=1.0, low=1.0, close=1.0, volume=0.0),
    ]
    evs += [Trade(**env(T0 + (10 + i) * NS), price=[1e-300, 1e300][i % 2], qty=1.0)
            for i in range(60)]
    outs = run(proc, evs)
    for out in outs:
        assert decode(encode(out.value)) == out.value
    published = risks(outs)
    assert published and all(math.isfinite(r.var_99) and r.var_99 <= 1.0 for r in published)


# --- real data: S&P 500 daily closes -------------------------------------------------------


def sp500_events() -> list[Envelope]:
    events: list[Envelope] = []
    columns = {c: c for c in ("open", "high", "low", "close", "volume")} | {"ts": "date"}
    for path in sorted(SP500.glob("*.csv")):
        mapping = CsvMapping(kind="bar", columns=columns, symbol=path.stem)
        rows = list(read_csv_events(path, mapping))
        assert all(isinstance(e, Envelope) for e in rows), "every CSV row must load"
        events.extend(e for e in rows if isinstance(e, Envelope))
    return events


def test_sp500_daily_primary_var_is_never_red() -> None:
    events = sp500_events()
    assert len({e.symbol for e in events}) == 10  # type: ignore[attr-defined]
    proc = MarketRiskProcessor()
    run(proc, events)
    primary = MarketRiskConfig().var.primary
    for symbol in proc.symbols():
        st = proc.state(symbol)
        assert st is not None
        since_start = st.health[primary].tracker.since_start()
        assert since_start.observations > 1200
        assert since_start.zone != Zone.RED, (symbol, since_start)
        # Never red over any rolling 250-day window either: the fallback never engaged.
        assert st.fallback_switches == 0, symbol
        # Coverage close to 1%: within Kupiec's acceptance at 1%.
        assert since_start.kupiec_p > 0.01, (symbol, since_start)
