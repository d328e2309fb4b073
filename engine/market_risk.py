"""The market risk processor: per-instrument models over the `market` topic.

For every market event of an instrument (key = symbol):

1. features: `engine.features.InstrumentFeatures` turns the event into a `MarketObs`;
2. score first: every model scores the observation with the state from before it (the
   VaR/ES each method forecast for this very return, the anomaly score of this event, the
   tail probability predicted for this return, the regime before it);
3. validate: the return meets the forecasts made for it (exceedances of every method, the
   rolling and since-start backtests, the tail predictor's progressive metrics);
4. learn: every model folds the observation in (not while the feed is stale: a frozen feed
   would teach the models that nothing moves);
5. publish: an InstrumentRisk whose VaR/ES are the forecasts for the *next* return, alerts
   for what crossed a threshold, and ModelHealth every `var.health_every` backtested
   returns per method and whenever a method's rolling zone changes.

A red zone of the primary method (with at least `var.zone_min_obs` rolling observations)
raises a model alert and switches the instrument to its most conservative method (largest
VaR 99 at each event) until the primary is green again.

Determinism: only event times and the configured seed drive anything; output ids derive
from the input's id and the rule (`engine.envelope.output_envelope`). Snapshots pickle the
instrument's whole state, tagged with a format version.

>>> from schemas.market import Quote
>>> proc = MarketRiskProcessor()
>>> def quote(i, bid, ask):
...     return Quote(event_id=f"q{i}", ts_event=10**18 + i, ts_init=0, source="doc",
...                  symbol="ACME", bid=bid, ask=ask, bid_size=5, ask_size=5)
>>> [o.value.type for o in proc.process(quote(1, 100.0, 100.1))]
['InstrumentRisk']
>>> [(o.topic, getattr(o.value, "reason_code", "")) for o in proc.process(quote(2, 100.2, 100.1))]
[('risk.alerts', 'CROSSED_QUOTE'), ('risk.instruments', '')]
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.config_sections import from_section
from engine.envelope import output_envelope
from engine.features import InstrumentFeatures, MarketObs
from engine.market_config import MarketRiskConfig
from engine.models.anomaly import AnomalyScore, RobustZScoreAnomaly
from engine.models.base import Forecaster, VarForecast, loss_fraction
from engine.models.ewma_vol import EwmaVol
from engine.models.regime import PageHinkleyRegime, RegimeScore
from engine.models.tail import TailRiskPredictor
from engine.models.var_fhs import FilteredHistoricalVar
from engine.models.var_parametric import ParametricVar
from engine.models.var_quantile import OnlineQuantileVar
from engine.processor import Output
from engine.var_backtest import ExceedanceTracker, kupiec_pof
from schemas.common import Envelope, Severity
from schemas.market import MarketEvent
from schemas.outputs import (
    FeatureContribution,
    InstrumentRisk,
    ModelHealth,
    RiskAlert,
    VarFigures,
    Zone,
)

WORKER = "market-worker"
SNAPSHOT_FORMAT = "market-risk/1"
TRADING_DAYS = 252
SESSION_S = 6.5 * 3600
_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_ZONE_RANK = {Zone.GREEN: 0, Zone.YELLOW: 1, Zone.RED: 2}
_HALT_PHASES = {"halted", "restricted"}


class SnapshotMismatch(ValueError):
    """A snapshot written by another format of this processor: rebuild the key by replay."""


def instrument_seed(seed: int, symbol: str) -> int:
    """A per-instrument seed that does not depend on Python's salted hash()."""
    digest = hashlib.blake2b(f"{seed}\x1f{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def annualised(sigma: float, step_s: float | None) -> float:
    """Volatility per step as an annual figure: steps of a day or more count trading days,
    shorter steps count trading-session seconds."""
    if not step_s:
        return sigma * math.sqrt(TRADING_DAYS)
    if step_s >= 43_200:
        return sigma * math.sqrt(TRADING_DAYS * 86_400 / step_s)
    return sigma * math.sqrt(TRADING_DAYS * SESSION_S / step_s)


@dataclass
class MethodHealth:
    """Validation state of one VaR method of one instrument."""

    tracker: ExceedanceTracker
    n95: int = 0
    hits95: int = 0
    zone: Zone = Zone.GREEN
    regime_changes_seen: int = 0


@dataclass
class InstrumentState:
    """Everything the processor knows about one instrument (pickled as its snapshot)."""

    symbol: str
    seed: int
    features: InstrumentFeatures
    vol: EwmaVol
    var: dict[str, Forecaster[VarForecast]]
    anomaly: RobustZScoreAnomaly
    regime: PageHinkleyRegime
    tail: TailRiskPredictor
    health: dict[str, MethodHealth]
    fallback: bool = False
    fallback_switches: int = 0
    stale: bool = False
    vol_spike: bool = False
    vol_limit: bool = False
    var_limit: bool = False
    spread_limit: bool = False
    quote_state: str | None = None
    last_alert: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    backtested: int = 0
    # Forecasts for the next return, refreshed whenever the models learn a return: they are
    # what each method's score_one gives for that return, and what the snapshot publishes.
    next_var: dict[str, VarForecast] = field(default_factory=dict)
    next_figures: dict[str, VarFigures] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, object]:
        # The forecasts are the models' own, so a snapshot leaves them out (six objects of
        # about seventy, pickled at every snapshot) and loading recomputes them.
        state = self.__dict__.copy()
        del state["next_var"], state["next_figures"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        refresh_forecasts(self)


def refresh_forecasts(st: InstrumentState) -> None:
    st.next_var = {m: model.forecast() for m, model in st.var.items()}
    # Built once per forecast, not per event (frozen models, shared by the snapshots).
    st.next_figures = {m: VarFigures(var_95=v.var_95, var_99=v.var_99, es_975=v.es_975)
                       for m, v in st.next_var.items()}


@dataclass(frozen=True, slots=True)
class ReturnTrace:
    """One backtested return and the forecasts it was judged against (for reports)."""

    symbol: str
    ts: int
    ret: float
    loss: float
    sigma: float
    chosen: str
    forecasts: dict[str, VarForecast]
    hits: dict[str, bool]


class MarketRiskProcessor:
    """Per-instrument volatility, VaR/ES, anomaly, regime and tail-risk models with built-in
    VaR validation; implements `engine.processor.Processor` for the `market` topic."""

    name = WORKER
    input_topic = "market"

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> MarketRiskProcessor:
        """With the `[market]` section of the settings (ValueError with one line when a
        field is wrong)."""
        return cls(from_section(MarketRiskConfig, settings.market, "market"), **kwargs)

    def __init__(self, config: MarketRiskConfig | None = None, *, source: str = WORKER,
                 trace: Callable[[ReturnTrace], None] | None = None) -> None:
        """`trace`, when given, is called with every backtested return (in-process reports
        such as `streamrisk evaluate`); it sees the numbers and changes nothing."""
        self.config = config or MarketRiskConfig()
        self.source = source
        self.trace = trace
        self._states: dict[str, InstrumentState] = {}
        self._dirty: set[str] = set()
        self._prior_sigma = self.config.vol.prior_annual_vol / math.sqrt(TRADING_DAYS)

    # --- Processor protocol --------------------------------------------------------------

    def key_of(self, event: Envelope) -> str | None:
        return event.symbol if isinstance(event, MarketEvent) else None

    def dirty_keys(self) -> set[str]:
        keys, self._dirty = self._dirty, set()
        return keys

    def snapshot(self, key: str) -> bytes | None:
        state = self._states.get(key)
        if state is None:
            return None
        return pickle.dumps((SNAPSHOT_FORMAT, state), protocol=5)

    def restore(self, key: str, data: bytes | None) -> None:
        if data is None:
            self._states.pop(key, None)
            return
        obj = pickle.loads(data)
        if not (isinstance(obj, tuple) and len(obj) == 2 and obj[0] == SNAPSHOT_FORMAT
                and isinstance(obj[1], InstrumentState)):
            raise SnapshotMismatch(f"snapshot of {key!r} is not a {SNAPSHOT_FORMAT} state")
        state: InstrumentState = obj[1]
        # Feature bookkeeping follows the running config; model parameters (decays, windows)
        # are part of the models' state and change only for new instruments or on a replay.
        state.features.cfg = self.config.features
        self._states[key] = state

    def evict(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._states.pop(key, None)
            self._dirty.discard(key)

    # --- read access (evaluate, tests) ---------------------------------------------------------

    def symbols(self) -> list[str]:
        return sorted(self._states)

    def state(self, key: str) -> InstrumentState | None:
        return self._states.get(key)

    def model_id(self, symbol: str, method: str) -> str:
        return f"{self.name}/{method}/{symbol}"

    # --- per event -------------------------------------------------------------------------

    def _new_state(self, symbol: str) -> InstrumentState:
        cfg, prior = self.config, self._prior_sigma
        seed = instrument_seed(cfg.seed, symbol)
        v = cfg.vol
        builders = {
            "parametric": lambda: ParametricVar(lam=v.lam, warmup=v.warmup_returns,
                                                prior_sigma=prior, seed=seed),
            "fhs": lambda: FilteredHistoricalVar(window=cfg.var.fhs_window,
                                                 min_obs=cfg.var.fhs_min_obs, lam=v.lam,
                                                 warmup=v.warmup_returns, prior_sigma=prior,
                                                 seed=seed),
            "quantile": lambda: OnlineQuantileVar(min_obs=cfg.var.fhs_min_obs,
                                                  prior_sigma=prior, seed=seed),
        }
        p = 1.0 - cfg.var.backtest_level
        a, r, t = cfg.anomaly, cfg.regime, cfg.tail
        st = InstrumentState(
            symbol=symbol, seed=seed,
            features=InstrumentFeatures(cfg.features),
            vol=EwmaVol(lam=v.lam, warmup=v.warmup_returns, prior_sigma=prior, seed=seed),
            var={m: builders[m]() for m in cfg.var.methods},
            anomaly=RobustZScoreAnomaly(alphas=a.alphas, clip=a.clip, warmup=a.warmup,
                                        stale_after=a.stale_after, flat_after=a.flat_after,
                                        top_features=a.top_features, exclude=a.exclude,
                                        seed=seed),
            regime=PageHinkleyRegime(lam_ref=r.lam_ref, lam_ref_stressed=r.lam_ref_stressed,
                                     threshold=r.threshold, delta=r.delta,
                                     min_instances=r.min_instances, warmup=r.warmup,
                                     clip_z=r.clip_z, stress_level=r.stress_level,
                                     calm_level=r.calm_level, prior_sigma=prior, seed=seed),
            tail=TailRiskPredictor(k=t.k, lr=t.lr, l2=t.l2, intercept_init=t.intercept_init,
                                   lam=v.lam, warmup=v.warmup_returns, prior_sigma=prior,
                                   seed=seed),
            health={m: MethodHealth(ExceedanceTracker(p, cfg.var.backtest_window))
                    for m in cfg.var.methods},
        )
        refresh_forecasts(st)
        return st

    def process(self, event: Envelope) -> Sequence[Output]:
        if not isinstance(event, MarketEvent):
            return []
        symbol = event.symbol
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = self._new_state(symbol)
        self._dirty.add(symbol)
        return _Step(self, st, event).run()


class _Step:
    """The work for one event of one instrument (kept apart so `process` reads as a list)."""

    def __init__(self, proc: MarketRiskProcessor, st: InstrumentState, event: MarketEvent):
        self.proc = proc
        self.cfg = proc.config
        self.st = st
        self.event = event
        self.out: list[Output] = []
        self.alerts: list[Output] = []
        self.health: list[Output] = []

    # --- helpers ---------------------------------------------------------------------------

    def alert(self, code: str, severity: Severity, observed: float, threshold: float,
              message: str, features: Sequence[tuple[str, float, float]] = (), *,
              cooldown: bool = True, entity_kind: str = "instrument", entity: str | None = None,
              model: str | None = None) -> None:
        st, event = self.st, self.event
        seen = st.features.events_seen
        rank = _SEVERITY_RANK[severity]
        last = st.last_alert.get(code)
        a = self.cfg.alerts
        if (cooldown and last is not None and rank <= last[1]
                and (seen - last[0] < a.cooldown_events
                     or event.ts_event - last[2] < a.cooldown_s * 1e9)):
            return
        st.last_alert[code] = (seen, rank, event.ts_event)
        self.alerts.append(Output(RiskAlert.TOPIC, st.symbol, RiskAlert(
            **output_envelope(event, f"ALERT:{code}", self.proc.source),
            reason_code=code, severity=severity, entity=entity or st.symbol,
            entity_kind=entity_kind,  # type: ignore[arg-type]
            observed=_finite(observed), threshold=_finite(threshold), message=message[:1000],
            features=[FeatureContribution(name=n, value=_finite(v), contribution=_finite(c))
                      for n, v, c in features],
            model=model, cause_event_id=event.event_id)))

    # --- the pipeline ---------------------------------------------------------------------

    def run(self) -> list[Output]:
        st = self.st
        obs = st.features.update(self.event)
        # 1. score first: anomaly of this event, regime before it, and (in validate) the
        #    forecasts every method made for this return before seeing it.
        anomaly = (st.anomaly.score_one(obs) if obs.features
                   else AnomalyScore(0.0, st.anomaly.stale))
        stale = anomaly.stale
        learn_return = obs.ret is not None and not stale
        regime_before = st.regime.score_one(obs) if learn_return else None
        if learn_return:
            self.validate(obs)
        # 2. then learn
        if obs.features:
            st.anomaly.learn_one(obs)
        if learn_return:
            st.vol.learn_one(obs)
            for model in st.var.values():
                model.learn_one(obs)
            st.regime.learn_one(obs)
            refresh_forecasts(st)
        if learn_return or obs.ret is None:
            st.tail.learn_one(obs)  # news between returns refreshes its sentiment inputs
        # 3. alerts on what changed, the snapshot with forecasts for the next return
        regime = st.regime.forecast()
        self.event_alerts(obs, anomaly, stale)
        if regime_before is not None:
            self.state_alerts(st.next_var, regime, regime_before)
        risk = self.instrument_risk(obs, anomaly, stale, regime)
        out = self.alerts
        if risk is not None:
            out.append(risk)
        out.extend(self.health)
        return out

    def validate(self, obs: MarketObs) -> None:
        """The return meets every forecast made for it; alerts on jumps and exceedances."""
        st, cfg = self.st, self.cfg
        assert obs.ret is not None
        if not st.vol.warm:
            return
        sigma = st.vol.sigma
        ret = obs.ret
        loss = loss_fraction(ret)
        # A jump is judged against at least one minimal price move: on a coarse tick grid
        # the EWMA sigma can sit far below a single tick.
        scale = max(sigma, obs.tick_ret or 0.0)
        z = ret / scale if scale > 0 else 0.0
        level99 = cfg.var.backtest_level == 0.99
        forecasts = st.next_var  # == each model's score_one(obs): made before this return
        chosen = self.choose(forecasts)
        st.backtested += 1
        hits: dict[str, bool] = {}
        for method, fc in forecasts.items():
            h = st.health[method]
            hits[method] = hit = loss > (fc.var_99 if level99 else fc.var_95)
            h.tracker.update(hit)
            h.n95 += 1
            h.hits95 += loss > fc.var_95
            zone = h.tracker.rolling_zone()
            n = h.tracker.total_counts()[0]
            if zone != h.zone or n % cfg.var.health_every == 0:
                self.publish_health(method, zone)
            self.zone_switch(method, zone)
            h.zone = zone
        if st.backtested % cfg.var.health_every == 0:
            self.publish_tail_health()
        if self.proc.trace is not None:
            self.proc.trace(ReturnTrace(st.symbol, obs.ts, ret, loss, sigma, chosen, forecasts,
                                        hits))
        a = cfg.alerts
        if abs(z) >= a.jump_z:
            self.alert("PRICE_JUMP", Severity.CRITICAL, z, a.jump_z,
                       f"{st.symbol} moved {ret:+.2%} in one step: {z:+.1f} forecast sigmas",
                       [("ret", ret, 1.0), ("sigma", sigma, 0.0),
                        ("tick_ret", obs.tick_ret or 0.0, 0.0)])
        chosen_fc = forecasts[chosen]
        limit = chosen_fc.var_99 * a.var_exceedance_mult
        if a.var_exceedance and loss > limit:
            self.alert("VAR_EXCEEDANCE", Severity.WARNING, loss, limit,
                       f"{st.symbol} lost {loss:.2%}, {loss / chosen_fc.var_99:.1f}x its VaR 99 "
                       f"of {chosen_fc.var_99:.2%} ({chosen})",
                       [("loss", loss, 1.0), ("var_99", chosen_fc.var_99, 0.0),
                        ("es_975", chosen_fc.es_975, 0.0)], model=chosen)

    def zone_switch(self, method: str, zone: Zone) -> None:
        st, cfg = self.st, self.cfg
        if method != cfg.var.primary or not cfg.var.fallback:
            return
        h = st.health[method]
        n, x = h.tracker.rolling_counts()
        mid = self.proc.model_id(st.symbol, method)
        if zone == Zone.RED and not st.fallback and n >= cfg.var.zone_min_obs:
            st.fallback = True
            st.fallback_switches += 1
            self.alert("VAR_MODEL_RED", Severity.CRITICAL, x, float(n),
                       f"{method} VaR of {st.symbol} is in the red zone ({x} exceptions in "
                       f"{n}); using the most conservative method until it is green",
                       [("exceptions", x, 1.0), ("observations", n, 0.0)],
                       cooldown=False, entity_kind="model", entity=mid, model=method)
        elif zone == Zone.GREEN and st.fallback:
            st.fallback = False
            self.alert("VAR_MODEL_GREEN", Severity.INFO, x, float(n),
                       f"{method} VaR of {st.symbol} is green again ({x} exceptions in {n})",
                       [("exceptions", x, 1.0), ("observations", n, 0.0)],
                       cooldown=False, entity_kind="model", entity=mid, model=method)

    def choose(self, forecasts: dict[str, VarForecast]) -> str:
        if not self.st.fallback:
            return self.cfg.var.primary
        # Most conservative: the largest VaR 99 now (first listed method wins a tie).
        return max(forecasts, key=lambda m: forecasts[m].var_99)

    def event_alerts(self, obs: MarketObs, anomaly: AnomalyScore, stale: bool) -> None:
        st, a = self.st, self.cfg.alerts
        sym = st.symbol
        if stale != st.stale:
            if stale:
                self.alert("STALE_FEED", Severity.WARNING, 1.0, 0.0,
                           f"{sym}: the feed repeats itself or the price has not moved; "
                           "models frozen, anomaly scoring paused", cooldown=False)
            else:
                self.alert("FEED_RESUMED", Severity.INFO, 0.0, 0.0,
                           f"{sym}: the feed moves again", cooldown=False)
            st.stale = stale
        if obs.gap_steps is not None:
            self.alert("FEED_GAP", Severity.WARNING, obs.gap_steps,
                       self.cfg.features.gap_steps,
                       f"{sym}: no event for {obs.gap_steps:.0f} nominal steps")
        if obs.quote_state is not None:
            if obs.quote_state != st.quote_state and obs.quote_state != "normal":
                crossed = obs.quote_state == "crossed"
                bid, ask = st.features.bid or 0.0, st.features.ask or 0.0
                self.alert("CROSSED_QUOTE" if crossed else "LOCKED_QUOTE",
                           Severity.CRITICAL if crossed else Severity.WARNING, bid - ask, 0.0,
                           f"{sym}: quote {'crossed' if crossed else 'locked'}, bid {bid} "
                           f"ask {ask}", [("bid", bid, 0.5), ("ask", ask, 0.5)],
                           cooldown=False)
            st.quote_state = obs.quote_state
        if a.spread_bps_limit is not None and obs.quote_state is not None:
            spread = st.features.spread_bps
            wide = spread is not None and spread >= a.spread_bps_limit
            if wide and not st.spread_limit:
                assert spread is not None
                self.alert("SPREAD_LIMIT", Severity.WARNING, spread, a.spread_bps_limit,
                           f"{sym}: spread {spread:.1f} bps", [("spread_bps", spread, 1.0)],
                           cooldown=False)
            st.spread_limit = wide
        if not stale and anomaly.score >= a.anomaly_threshold:
            top = anomaly.top
            total = sum(z for _, _, z in top) or 1.0
            names = ", ".join(f"{n} {z:.1f}σ" for n, _, z in top)
            self.alert("MARKET_ANOMALY",
                       Severity.CRITICAL if anomaly.score >= a.anomaly_critical
                       else Severity.WARNING, anomaly.score, a.anomaly_threshold,
                       f"{sym}: unusual {obs.kind.lower()} ({names})",
                       [(n, v, z / total) for n, v, z in top], model="anomaly")
        if obs.news is not None:
            shock = abs(obs.news) >= a.sentiment_shock
            jump = obs.news_jump is not None and abs(obs.news_jump) >= a.sentiment_jump
            if shock or jump:
                sev = Severity.CRITICAL if abs(obs.news) >= 0.9 else Severity.WARNING
                self.alert("SENTIMENT_SHOCK", sev, obs.news,
                           math.copysign(a.sentiment_shock, obs.news),
                           f"{sym}: news sentiment {obs.news:+.2f} "
                           f"(change {obs.news_jump or 0.0:+.2f})",
                           [("sentiment", obs.news, 1.0),
                            ("change", obs.news_jump or 0.0, 0.0)])
        if obs.phase_change is not None:
            old, new = obs.phase_change
            halted = new in _HALT_PHASES
            self.alert("TRADING_PHASE", Severity.WARNING if halted else Severity.INFO,
                       1.0 if halted else 0.0, 0.0, f"{sym}: {old} -> {new}", cooldown=False)

    def state_alerts(self, forecasts: dict[str, VarForecast], regime: RegimeScore,
                     before: RegimeScore) -> None:
        st, a = self.st, self.cfg.alerts
        sym = st.symbol
        if not st.vol.warm:
            return
        sigma = st.vol.sigma
        if regime.regime != before.regime and before.regime != "unknown":
            stressed = regime.regime == "stressed"
            self.alert("REGIME_CHANGE", Severity.WARNING if stressed else Severity.INFO,
                       regime.level,
                       self.cfg.regime.stress_level if stressed else self.cfg.regime.calm_level,
                       f"{sym}: regime {before.regime} -> {regime.regime}",
                       [("abs_z_level", regime.level, 1.0), ("sigma", sigma, 0.0),
                        ("sigma_ref", regime.sigma_ref, 0.0)], cooldown=False, model="regime")
        ratio = sigma / regime.sigma_ref if regime.sigma_ref > 0 else 1.0
        if ratio >= a.vol_ratio and not st.vol_spike:
            st.vol_spike = True
            self.alert("VOL_SPIKE",
                       Severity.CRITICAL if ratio >= 2 * a.vol_ratio else Severity.WARNING,
                       ratio, a.vol_ratio,
                       f"{sym}: volatility {ratio:.1f}x its reference",
                       [("sigma", sigma, 1.0), ("sigma_ref", regime.sigma_ref, 0.0)])
        elif ratio < 0.8 * a.vol_ratio:
            st.vol_spike = False  # hysteresis: re-arm only once clearly back down
        if a.vol_limit_annual is not None:
            annual = annualised(sigma, st.features.step_s)
            over = annual >= a.vol_limit_annual
            if over and not st.vol_limit:
                self.alert("VOL_LIMIT", Severity.WARNING, annual, a.vol_limit_annual,
                           f"{sym}: annualised volatility {annual:.0%}",
                           [("sigma", sigma, 1.0)], cooldown=False)
            st.vol_limit = over
        if a.var99_limit is not None:
            chosen = forecasts[self.choose(forecasts)]
            over = chosen.var_99 >= a.var99_limit
            if over and not st.var_limit:
                self.alert("VAR_LIMIT", Severity.WARNING, chosen.var_99, a.var99_limit,
                           f"{sym}: VaR 99 {chosen.var_99:.2%} over the limit",
                           [("var_99", chosen.var_99, 1.0), ("sigma", chosen.sigma, 0.0)],
                           cooldown=False)
            st.var_limit = over

    def publish_health(self, method: str, zone: Zone) -> None:
        st = self.st
        h = st.health[method]
        metrics: dict[str, float] = {"var95_observations": float(h.n95),
                                     "var95_exceedances": float(h.hits95)}
        if h.n95:
            metrics["var95_rate"] = h.hits95 / h.n95
            metrics["var95_kupiec_p"] = kupiec_pof(h.n95, h.hits95, 0.05)[1]
        metrics["fallback_switches"] = float(st.fallback_switches)
        drift = st.regime.changes > h.regime_changes_seen
        h.regime_changes_seen = st.regime.changes
        mid = self.proc.model_id(st.symbol, method)
        self.health.append(Output(ModelHealth.TOPIC, mid, ModelHealth(
            **output_envelope(self.event, f"HEALTH:{method}", self.proc.source),
            model_id=mid, entity=st.symbol, method=method, rolling=h.tracker.rolling(),
            since_start=h.tracker.since_start(), metrics=metrics, drift=drift,
            fallback_active=st.fallback and method == self.cfg.var.primary)))

    def publish_tail_health(self) -> None:
        st = self.st
        mid = self.proc.model_id(st.symbol, "tail")
        metrics = {k: _finite(v) for k, v in st.tail.metrics().items()}
        self.health.append(Output(ModelHealth.TOPIC, mid, ModelHealth(
            **output_envelope(self.event, "HEALTH:tail", self.proc.source),
            model_id=mid, entity=st.symbol, method="tail", metrics=metrics)))

    def instrument_risk(self, obs: MarketObs, anomaly: AnomalyScore, stale: bool,
                        regime: RegimeScore) -> Output | None:
        st = self.st
        f = st.features
        price = f.price
        if price is None:
            return None  # nothing to value yet (news or a status without a reference price)
        chosen = self.choose(st.next_var)
        fc = st.next_var[chosen]
        return Output(InstrumentRisk.TOPIC, st.symbol, InstrumentRisk(
            **output_envelope(self.event, "RISK", self.proc.source),
            symbol=st.symbol, price=price,
            last_return=obs.ret if obs.ret is not None else f.last_return,
            vol=st.vol.sigma, var_95=fc.var_95, var_99=fc.var_99, es_975=fc.es_975,
            var_method=chosen, methods=dict(st.next_figures),
            anomaly_score=min(1.0, max(0.0, anomaly.score)), regime=regime.regime,
            tail_prob=min(1.0, max(0.0, st.tail.forecast().prob)),
            spread_bps=f.spread_bps, amihud=f.amihud, participation=f.participation,
            adv=f.adv, stale=stale, tradable=f.tradable, status=f.phase,
            tick_size=f.tick_size, lot_size=f.lot_size, min_qty=f.min_qty,
            max_qty=f.max_qty, sentiment=f.sentiment, events_seen=f.events_seen))


def _finite(x: float) -> float:
    """Alert numbers must be finite (the schema rejects inf/nan): clamp the rare overflow."""
    if math.isfinite(x):
        return x
    return 0.0 if math.isnan(x) else math.copysign(1e308, x)
