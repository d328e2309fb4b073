"""EWMA volatility (RiskMetrics), time-aware for irregular ticks.

Returns arrive normalised per nominal step (`MarketObs.ret`); a return that spanned
`dt_ratio` steps carries that many steps of information, so the previous variance decays by
lambda ** dt_ratio instead of lambda. For regular data (dt_ratio = 1) this is exactly
RiskMetrics: var' = lambda * var + (1 - lambda) * r**2.

Until `warmup` returns are seen the variance is their plain mean square (RiskMetrics'
usual start), and before the first non-zero return it is the prior.

>>> from engine.features import MarketObs
>>> vol = EwmaVol(lam=0.94, warmup=1, prior_sigma=0.01)
>>> vol.forecast().sigma
0.01
>>> vol.learn_one(MarketObs(ts=1, kind="Bar", ret=0.02))
>>> round(vol.forecast().sigma, 6)    # first non-zero return replaces the prior
0.02
>>> vol.learn_one(MarketObs(ts=2, kind="Bar", ret=0.0))
>>> round(vol.forecast().variance, 8) == round(0.94 * 0.02 ** 2, 8)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.features import MarketObs
from engine.models.base import Explanation, Forecaster

VARIANCE_FLOOR = 1e-20


@dataclass(frozen=True, slots=True)
class VolForecast:
    """Volatility per nominal step for the next return."""

    variance: float
    warm: bool

    @property
    def sigma(self) -> float:
        return math.sqrt(self.variance)


class EwmaVol(Forecaster[VolForecast]):
    """Time-aware EWMA variance of per-step log returns."""

    name = "ewma_vol"

    def __init__(self, lam: float = 0.94, warmup: int = 20, prior_sigma: float = 0.015,
                 seed: int = 0) -> None:
        super().__init__(seed)
        if not 0 < lam < 1:
            raise ValueError(f"lambda must be in (0, 1), got {lam}")
        self.lam = lam
        self.warmup = max(1, warmup)
        self.n = 0
        self._sum_sq = 0.0
        self.variance = prior_sigma * prior_sigma

    @property
    def warm(self) -> bool:
        return self.n >= self.warmup

    def forecast(self) -> VolForecast:
        return VolForecast(self.variance, self.warm)

    @property
    def sigma(self) -> float:
        return math.sqrt(self.variance)

    def learn_one(self, x: MarketObs) -> None:
        r = x.ret
        if r is None:
            return
        self.n += 1
        sq = r * r
        if self.n <= self.warmup:
            self._sum_sq += sq
            if self._sum_sq > 0:
                self.variance = self._sum_sq / self.n
            return
        w = self.lam ** x.dt_ratio if x.dt_ratio != 1.0 else self.lam
        # Floor: a long run of zero returns must not underflow to a zero (or denormal) vol.
        self.variance = max(w * self.variance + (1.0 - w) * sq, VARIANCE_FLOOR)

    def explain(self, x: MarketObs) -> Explanation:
        return [("sigma", self.sigma, 1.0)]
