"""Thresholds and model parameters of the market risk worker, with desk-sensible defaults.

Everything is scale-free where it can be (ratios, z-scores, counts of events) so the same
defaults work for daily bars and for tick data; the few absolute numbers (prior volatility,
limits) are annualised or fractions of price.

>>> cfg = MarketRiskConfig()
>>> (cfg.vol.lam, cfg.var.primary, cfg.var.backtest_window)
(0.94, 'fhs', 250)
>>> MarketRiskConfig.model_validate({"var": {"primary": "parametric"}}).var.primary
'parametric'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

VarMethod = Literal["parametric", "fhs", "quantile"]
ALL_VAR_METHODS: tuple[VarMethod, ...] = ("parametric", "fhs", "quantile")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureConfig(_Section):
    """How prices become returns, and the bookkeeping features around them."""

    return_source: Literal["auto", "bar", "mid", "trade"] = Field(
        default="auto",
        description="Price series the returns come from. auto: the finest one seen so far, "
                    "quote/book mid > trade price > bar close (mids avoid bid-ask bounce).")
    nominal_step_s: float | None = Field(
        default=None, gt=0,
        description="Nominal time step of a return. None: the median of the first "
                    "step_learn_n inter-arrival times of the return source, then frozen.")
    step_learn_n: int = Field(default=32, ge=1, le=10_000)
    bars_time_aware: bool = Field(
        default=False,
        description="Scale bar returns by elapsed time. Off: one bar is one step, so "
                    "weekends and holidays do not shrink daily returns.")
    dt_ratio_min: float = Field(
        default=1.0, gt=0,
        description="Lower clip of elapsed/nominal. 1: a return over less than one step is "
                    "not scaled up (below a step, microstructure noise, not diffusion, "
                    "drives price changes).")
    dt_ratio_max: float = Field(default=100.0, gt=0)
    gap_steps: float = Field(default=30.0, gt=1,
                             description="A silence longer than this many nominal steps is "
                                         "reported as a feed gap when the next event arrives.")
    sentiment_alpha: float = Field(default=0.3, gt=0, le=1,
                                   description="EW weight of a new news item's sentiment.")
    sentiment_decay: float = Field(default=0.97, gt=0, le=1,
                                   description="Per-return decay of the news effect.")
    liquidity_alpha: float = Field(default=0.05, gt=0, le=1,
                                   description="EW weight of Amihud and trade-rate updates.")
    adv_days_alpha: float = Field(default=0.05, gt=0, le=1,
                                  description="EW weight of a finished day in the ADV estimate "
                                              "used when no InstrumentStatus gives one.")


class VolConfig(_Section):
    """EWMA volatility (RiskMetrics), time-aware for irregular ticks."""

    lam: float = Field(default=0.94, gt=0, lt=1, description="Decay per nominal step.")
    warmup_returns: int = Field(default=20, ge=1,
                                description="Equal-weight variance before the EWMA takes over; "
                                            "these returns are not backtested.")
    prior_annual_vol: float = Field(default=0.25, gt=0,
                                    description="Prior before any return, annualised.")


class VarConfig(_Section):
    """VaR/ES methods, their validation and the fallback rule."""

    methods: tuple[VarMethod, ...] = ALL_VAR_METHODS
    primary: VarMethod = "fhs"
    fhs_window: int = Field(default=500, ge=20, le=20_000,
                            description="Standardised returns kept for filtered HS.")
    fhs_min_obs: int = Field(default=50, ge=10,
                             description="Below this many residuals FHS uses normal quantiles.")
    backtest_level: float = Field(default=0.99,
                                  description="VaR level the zone and coverage tests judge: "
                                              "0.99 (Basel) or 0.95.")
    backtest_window: int = Field(default=250, ge=20, le=100_000)
    zone_min_obs: int = Field(default=100, ge=1,
                              description="Rolling observations needed before a red zone may "
                                          "switch the instrument to its fallback.")
    health_every: int = Field(default=250, ge=1,
                              description="Publish ModelHealth every N backtested returns "
                                          "(and whenever a rolling zone changes).")
    fallback: bool = Field(default=True,
                           description="Red zone of the primary: use the most conservative "
                                       "method (largest VaR 99) until the primary is green.")

    @model_validator(mode="after")
    def _check(self) -> VarConfig:
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError("var.methods must list distinct methods")
        if self.backtest_level not in (0.99, 0.95):
            raise ValueError(f"var.backtest_level must be 0.99 or 0.95, got {self.backtest_level}")
        if self.primary not in self.methods:
            raise ValueError(f"var.primary {self.primary!r} is not in var.methods")
        return self


class AnomalyConfig(_Section):
    """Robust z-score ensemble over market features, with stale-feed detection."""

    alphas: tuple[float, ...] = Field(default=(0.02, 0.005),
                                      description="EW weights of the ensemble members.")
    clip: float = Field(default=3.0, gt=0, description="Winsorise updates at clip x scale.")
    warmup: int = Field(default=30, ge=2,
                        description="Observations of a feature before it is scored.")
    stale_after: int = Field(default=10, ge=2,
                             description="Identical consecutive feature vectors => stale.")
    flat_after: int = Field(default=200, ge=2,
                            description="Consecutive zero returns => stale (constant series).")
    top_features: int = Field(default=3, ge=1, le=10)
    exclude: tuple[str, ...] = Field(
        default=("ret",),
        description="Features the anomaly model ignores. Returns by default: they have their "
                    "own vol-adjusted rules (PRICE_JUMP, VaR, VOL_SPIKE, regime), while a "
                    "robust scale of raw returns mistakes every volatility cluster for news.")


class RegimeConfig(_Section):
    """Calm/stressed from Page-Hinkley tests on returns standardised by a slow vol."""

    lam_ref: float = Field(default=0.995, gt=0, lt=1,
                           description="Decay of the reference (slow) volatility.")
    threshold: float = Field(default=25.0, gt=0, description="Page-Hinkley lambda.")
    delta: float = Field(default=0.1, ge=0, description="Page-Hinkley tolerance.")
    min_instances: int = Field(default=30, ge=1)
    warmup: int = Field(default=30, ge=1, description="Returns before any regime is called.")
    clip_z: float = Field(default=6.0, gt=0)
    lam_ref_stressed: float = Field(default=0.9995, gt=0, lt=1,
                                    description="Slower reference while stressed.")
    stress_level: float = Field(default=1.2, gt=0,
                                description="EW mean |z| above which a detection calls "
                                            "stressed (0.8 is usual volatility).")
    calm_level: float = Field(default=1.0, gt=0,
                              description="EW mean |z| below which a detection calls calm.")


class TailConfig(_Section):
    """Probability that the next |return| exceeds k sigma (online logistic regression)."""

    k: float = Field(default=2.0, gt=0)
    lr: float = Field(default=0.02, gt=0, description="SGD learning rate.")
    l2: float = Field(default=1e-4, ge=0)
    intercept_init: float = Field(default=-3.0, description="Logit of the prior tail rate.")


class AlertConfig(_Section):
    """When an alert fires and how loud it is."""

    anomaly_threshold: float = Field(default=0.99999, gt=0, lt=1,
                                     description="About one false alarm per 100k events "
                                                 "of a well-behaved feed.")
    anomaly_critical: float = Field(default=0.999999, gt=0, lt=1)
    jump_z: float = Field(default=6.0, gt=0,
                          description="|return| above jump_z forecast sigmas: PRICE_JUMP.")
    vol_ratio: float = Field(default=2.0, gt=1,
                             description="EWMA vol over the slow reference vol: VOL_SPIKE.")
    vol_limit_annual: float | None = Field(default=None, gt=0,
                                           description="Absolute annualised vol limit.")
    var99_limit: float | None = Field(default=None, gt=0,
                                      description="VaR 99 above this fraction: VAR_LIMIT.")
    var_exceedance: bool = Field(default=True,
                                 description="Alert when a loss is beyond var_exceedance_mult "
                                             "times its VaR 99 (every exceedance is counted "
                                             "in ModelHealth; 1% of returns exceed VaR 99 "
                                             "by design, too many to alert on).")
    var_exceedance_mult: float = Field(default=2.0, ge=1)
    sentiment_shock: float = Field(default=0.75, gt=0, le=1,
                                   description="|relevance x sentiment| at or above this.")
    sentiment_jump: float = Field(default=1.0, gt=0, le=2,
                                  description="Change from the running sentiment level.")
    spread_bps_limit: float | None = Field(default=None, gt=0,
                                           description="Absolute spread limit (bps).")
    cooldown_events: int = Field(default=20, ge=0,
                                 description="Same reason on one instrument at most once per "
                                             "N market events and cooldown_s seconds of "
                                             "event time, unless it gets more severe.")
    cooldown_s: float = Field(default=5.0, ge=0)


class MarketRiskConfig(_Section):
    """Everything the market risk processor needs; JSON/YAML friendly."""

    seed: int = 42
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    vol: VolConfig = Field(default_factory=VolConfig)
    var: VarConfig = Field(default_factory=VarConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    regime: RegimeConfig = Field(default_factory=RegimeConfig)
    tail: TailConfig = Field(default_factory=TailConfig)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
