"""Parameters of the order risk worker (pre-trade gate, personal models, state machine).

Everything has a default a risk desk can start from; a deployment overrides what it needs.
Limits that operators change during the day (notional caps, loss limits...) are NOT here:
they come from `risk.limits` (see `engine.limits`). `default_limits` below is only the
floor used when no LimitConfig names a metric at all, so a fresh install is never unlimited.

>>> cfg = OrderConfig()
>>> cfg.fail_closed_on_missing_reference, cfg.default_limits["order_notional"].hard
(True, 5000000.0)
>>> OrderConfig(collar_vol_units=None).collar_vol_units is None
True
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.control import LimitLevel

SECOND_NS = 1_000_000_000
DAY_NS = 86_400 * SECOND_NS


class CollarTier(BaseModel):
    """A price collar band for reference prices at or above `min_price` (like LULD tiers).

    The band is `pct` of the reference price, capped at `abs_cap` (currency) when given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_price: Annotated[float, Field(ge=0)]
    pct: Annotated[float, Field(gt=0, le=10)]
    abs_cap: Annotated[float, Field(gt=0)] | None = None


# LULD tier 1 percentages (NMS stocks): 5% above $3, 20% from $0.75 to $3, and the lesser
# of $0.15 or 75% below $0.75.
LULD_TIER1: tuple[CollarTier, ...] = (
    CollarTier(min_price=0.0, pct=0.75, abs_cap=0.15),
    CollarTier(min_price=0.75, pct=0.20),
    CollarTier(min_price=3.0, pct=0.05),
)


def _level(soft: float | None, hard: float | None) -> LimitLevel:
    return LimitLevel(soft=soft, hard=hard)


DEFAULT_LIMITS: dict[str, LimitLevel] = {
    # per order
    "order_notional": _level(1_000_000.0, 5_000_000.0),
    "adv_participation": _level(0.05, 0.25),
    "order_rate": _level(50.0, 100.0),
    # exposure, worst case including open orders (currency)
    "gross_exposure": _level(20_000_000.0, 50_000_000.0),
    "credit": _level(40_000_000.0, 60_000_000.0),
    # leverage is monitored (breaches), not gated: above 1x of capital is worth a warning
    "leverage": _level(1.0, 3.0),
    # state drivers: soft -> REDUCING, hard -> HALTED. The hard level is twice the soft one,
    # so an account that keeps losing after it was told to reduce is halted before the
    # loss has doubled again (the simulator's loss-spiral crosses both within its window).
    "day_loss": _level(50_000.0, 100_000.0),
    "drawdown_trailing": _level(100_000.0, 250_000.0),
    "anomaly_score": _level(0.9, None),
    "throttle_hits": _level(20.0, 100.0),
}


class PersonalConfig(BaseModel):
    """The per-account order-flow model (`engine.personal`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    warmup: Annotated[int, Field(ge=1)] = 30
    fading_factor: Annotated[float, Field(gt=0, lt=1)] = 0.02
    z_threshold: Annotated[float, Field(gt=0)] = 4.0
    cancel_alpha: Annotated[float, Field(gt=0, le=1)] = 0.1
    score_alpha: Annotated[float, Field(gt=0, le=1)] = 0.2
    quantile: Annotated[float, Field(gt=0.5, lt=1)] = 0.99
    headroom: Annotated[float, Field(ge=1)] = 3.0
    action: Literal["warn", "deny"] = "deny"
    """An order above the account's personal threshold (`headroom` times its own 99% size
    quantile, never above the hard caps) is denied: a fat finger is tens of times the
    account's normal size, far beyond any limit that fits every account at once."""


class CovarianceConfig(BaseModel):
    """EWMA covariance across instruments (`engine.covariance`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lam: Annotated[float, Field(gt=0, lt=1)] = 0.94
    bucket_ns: Annotated[int, Field(gt=0)] = 60 * SECOND_NS
    min_obs: Annotated[int, Field(ge=1)] = 20
    versions: Annotated[int, Field(ge=1, le=64)] = 4


class OrderConfig(BaseModel):
    """Gate, state-machine and bookkeeping parameters. Times are event-time nanoseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # reference data
    fail_closed_on_missing_reference: bool = True
    max_reference_age_ns: Annotated[int, Field(gt=0)] | None = 300 * SECOND_NS
    not_tradable_statuses: tuple[str, ...] = ("halted", "closed", "suspended", "paused",
                                              "delisted")
    restricted_statuses: tuple[str, ...] = ("restricted",)
    short_sale_restricted_statuses: tuple[str, ...] = ("short_sale_restricted", "ssr")
    restricted_symbols: frozenset[str] = frozenset()
    instrument_history_ns: Annotated[int, Field(ge=0)] | None = 60 * SECOND_NS
    """Instrument risk kept per symbol, in event time before its newest version (plus the
    version valid at that point): an order older than that, e.g. from a partition lagging
    the others, is denied REFERENCE_HISTORY_EXPIRED. None: only `instrument_history` counts."""
    instrument_history: Annotated[int, Field(ge=1)] = 512
    """Memory cap on the versions kept per symbol (about 5 KB each)."""

    # price collar: tier band (LULD-like) and a band in units of current volatility
    collar_tiers: tuple[CollarTier, ...] = LULD_TIER1
    collar_vol_units: Annotated[float, Field(gt=0)] | None = 50.0
    collar_min_vol: Annotated[float, Field(ge=0)] = 0.0005

    # duplicates and throttles
    duplicate_window_ns: Annotated[int, Field(ge=0)] = SECOND_NS
    throttle_window_ns: Annotated[int, Field(gt=0)] = SECOND_NS
    throttle_hits_window_ns: Annotated[int, Field(gt=0)] = 60 * SECOND_NS

    # limits
    default_limits: dict[str, LimitLevel] = Field(default_factory=lambda: dict(DEFAULT_LIMITS))
    default_capital: Annotated[float, Field(gt=0)] = 10_000_000.0
    personal: PersonalConfig = Field(default_factory=PersonalConfig)

    # trading-state machine
    auto_recover: bool = True
    cancel_on_halt: bool = True
    instrument_anomaly_reduce: Annotated[float, Field(gt=0, le=1)] | None = 0.99
    instrument_anomaly_halt: Annotated[float, Field(gt=0, le=1)] | None = None
    instrument_anomaly_recover: Annotated[float, Field(ge=0, le=1)] | None = 0.9
    """Hysteresis: a REDUCING instrument recovers only once its anomaly score is at or under
    this (None: under the reduce level). The score hovers near 0.99 on busy instruments;
    without a gap they flipped REDUCING/ACTIVE every few ticks."""
    instrument_min_reducing_ns: Annotated[int, Field(ge=0)] = 5 * SECOND_NS
    """Least event time an instrument stays REDUCING (whatever the driver) before it may
    recover by itself. Every second of it blocks exposure-increasing orders, and isolated
    one-tick spikes to 0.99 are common in a quiet market: on `simulate --duration 600 --seed
    3` with every scenario, 5 s cut instrument transitions 542 -> 154 for +22% TRADING_STATE
    denials (30 s: 72 transitions, +86% denials; without scenarios 30 s took those denials
    from 7 to 404)."""
    stale_reduces_instrument: bool = True

    # account bookkeeping
    account_publish_interval_ns: Annotated[int, Field(ge=0)] = SECOND_NS
    day_offset_ns: int = 0
    liquidation_participation: Annotated[float, Field(gt=0, le=1)] = 0.1
    missing_var_fraction: Annotated[float, Field(ge=0, le=1)] = 0.1
    """VaR/ES fraction assumed for a position whose instrument has no risk snapshot yet."""
    covariance: CovarianceConfig = Field(default_factory=CovarianceConfig)
    exec_id_memory: Annotated[int, Field(ge=16)] = 8192
    order_id_memory: Annotated[int, Field(ge=16)] = 1024
    limit_audit_topic: str | None = "risk.limits"

    @model_validator(mode="after")
    def _recover_below_reduce(self) -> OrderConfig:
        reduce, recover = self.instrument_anomaly_reduce, self.instrument_anomaly_recover
        if reduce is not None and recover is not None and recover > reduce:
            raise ValueError(f"instrument_anomaly_recover {recover} is above "
                             f"instrument_anomaly_reduce {reduce}: it must be at or under it")
        return self

    def day_of(self, ts: int) -> int:
        """Trading day index of an event time (UTC days shifted by `day_offset_ns`).

        >>> OrderConfig().day_of(DAY_NS + 5)
        1
        """
        return (ts + self.day_offset_ns) // DAY_NS
