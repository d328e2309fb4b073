"""Online quantile VaR: P2 running quantiles (river.stats.Quantile) of the per-step returns
themselves, with ES 97.5 as the running mean of the returns beyond the 2.5% quantile.

It is the unconditional benchmark of the three methods: no volatility scaling, so it is
slow to follow a regime change, which the backtests show (clustered exceedances). Until
`min_obs` returns are seen it uses a normal with the running standard deviation.

>>> import random
>>> from engine.features import MarketObs
>>> rng = random.Random(3)
>>> m = OnlineQuantileVar(min_obs=50)
>>> for i in range(2000):
...     m.learn_one(MarketObs(ts=i, kind="Bar", ret=rng.gauss(0, 0.01)))
>>> f = m.forecast()
>>> abs(f.var_99 - 0.0230) < 0.003 and f.var_95 < f.var_99 <= f.es_975 + 0.002
True
"""

from __future__ import annotations

import math

from river import stats

from engine.features import MarketObs
from engine.models.base import Explanation, Forecaster, VarForecast


def _value(q: stats.Quantile) -> float:
    value = q.get()
    return 0.0 if value is None else float(value)


class OnlineQuantileVar(Forecaster[VarForecast]):
    name = "quantile"

    def __init__(self, min_obs: int = 50, prior_sigma: float = 0.015, seed: int = 0) -> None:
        super().__init__(seed)
        self.min_obs = min_obs
        self.prior_sigma = prior_sigma
        self.q05 = stats.Quantile(0.05)
        self.q01 = stats.Quantile(0.01)
        self.q025 = stats.Quantile(0.025)
        self.shortfall = stats.Mean()
        self.var = stats.Var()

    @property
    def n(self) -> int:
        return int(self.var.mean.n)

    def _sigma(self) -> float:
        v = self.var.get() if self.n >= 2 else 0.0
        return math.sqrt(v) if v > 0 else self.prior_sigma

    def forecast(self) -> VarForecast:
        sigma = self._sigma()
        if self.n < self.min_obs:
            return VarForecast.normal(sigma)
        q025 = _value(self.q025)
        es = self.shortfall.get() if self.shortfall.n else q025
        return VarForecast.from_log_quantiles(_value(self.q05), _value(self.q01),
                                              min(es, q025), sigma)

    def learn_one(self, x: MarketObs) -> None:
        r = x.ret
        if r is None:
            return
        # The shortfall is judged against the quantile estimated before r, like a backtest.
        if self.n >= self.min_obs and r < _value(self.q025):
            self.shortfall.update(r)
        self.q05.update(r)
        self.q01.update(r)
        self.q025.update(r)
        self.var.update(r)

    def explain(self, x: MarketObs) -> Explanation:
        return [("q01", _value(self.q01), 1.0)]
