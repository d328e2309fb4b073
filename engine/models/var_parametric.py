"""Parametric VaR/ES: zero-mean normal with EWMA volatility (RiskMetrics).

>>> from engine.features import MarketObs
>>> m = ParametricVar(warmup=1, prior_sigma=0.01)
>>> m.learn_one(MarketObs(ts=1, kind="Bar", ret=-0.01))
>>> f = m.forecast()
>>> round(f.var_99, 5), round(f.es_975, 5)    # 1 - exp(-2.326 * 0.01), ES multiplier 2.338
(0.02299, 0.02311)
"""

from __future__ import annotations

from engine.features import MarketObs
from engine.models.base import Explanation, Forecaster, VarForecast
from engine.models.ewma_vol import EwmaVol


class ParametricVar(Forecaster[VarForecast]):
    """Normal VaR 95/99 and ES 97.5 scaled by the EWMA volatility forecast."""

    name = "parametric"

    def __init__(self, lam: float = 0.94, warmup: int = 20, prior_sigma: float = 0.015,
                 seed: int = 0) -> None:
        super().__init__(seed)
        self.vol = EwmaVol(lam=lam, warmup=warmup, prior_sigma=prior_sigma, seed=seed)

    def forecast(self) -> VarForecast:
        return VarForecast.normal(self.vol.sigma)

    def learn_one(self, x: MarketObs) -> None:
        self.vol.learn_one(x)

    def explain(self, x: MarketObs) -> Explanation:
        return [("sigma", self.vol.sigma, 1.0)]
