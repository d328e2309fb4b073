"""Filtered historical simulation: EWMA sigma times rolling empirical quantiles of the
standardised returns (Barone-Adesi, Hull-White style).

Each return is standardised by the volatility forecast made *before* it (z = r / sigma),
so the window holds genuine out-of-sample residuals; the forecast for the next return is
sigma_next * quantile(z). The fat tails come from the data, the volatility clustering
from the EWMA. Below `min_obs` residuals the normal quantiles stand in.

>>> import random
>>> from engine.features import MarketObs
>>> rng = random.Random(1)
>>> m = FilteredHistoricalVar(window=250, min_obs=50, warmup=10)
>>> for i in range(400):
...     m.learn_one(MarketObs(ts=i, kind="Bar", ret=rng.gauss(0, 0.01)))
>>> f = m.forecast()
>>> 0.005 < f.var_95 < f.var_99 < 0.04 and f.es_975 > f.var_95
True
"""

from __future__ import annotations

from engine.features import MarketObs
from engine.models.base import Explanation, Forecaster, VarForecast
from engine.models.ewma_vol import EwmaVol
from engine.models.window import SortedWindow


class FilteredHistoricalVar(Forecaster[VarForecast]):
    name = "fhs"

    def __init__(self, window: int = 500, min_obs: int = 50, lam: float = 0.94,
                 warmup: int = 20, prior_sigma: float = 0.015, seed: int = 0) -> None:
        super().__init__(seed)
        self.vol = EwmaVol(lam=lam, warmup=warmup, prior_sigma=prior_sigma, seed=seed)
        self.residuals = SortedWindow(window)
        self.min_obs = min_obs

    def forecast(self) -> VarForecast:
        sigma = self.vol.sigma
        w = self.residuals
        if len(w) < self.min_obs:
            return VarForecast.normal(sigma)
        return VarForecast.from_log_quantiles(sigma * w.quantile(0.05), sigma * w.quantile(0.01),
                                              sigma * w.tail_mean(0.025), sigma)

    def learn_one(self, x: MarketObs) -> None:
        if x.ret is None:
            return
        # Residuals only once the vol has a real estimate (not the prior), so the window
        # holds standardised returns and not artefacts of the start.
        if self.vol.warm:
            self.residuals.append(x.ret / self.vol.sigma)
        self.vol.learn_one(x)

    def explain(self, x: MarketObs) -> Explanation:
        w = self.residuals
        if len(w) < self.min_obs:
            return [("sigma", self.vol.sigma, 1.0)]
        return [("sigma", self.vol.sigma, 0.5), ("z_q01", w.quantile(0.01), 0.5)]
