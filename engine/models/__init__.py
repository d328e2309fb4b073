"""Per-instrument online models behind one adapter protocol (`engine.models.base`).

| module | adapter | score |
|---|---|---|
| ewma_vol | EwmaVol | volatility per step (RiskMetrics, time-aware) |
| var_parametric | ParametricVar | VaR 95/99, ES 97.5: normal x EWMA sigma |
| var_fhs | FilteredHistoricalVar | EWMA sigma x rolling quantiles of standardised returns |
| var_quantile | OnlineQuantileVar | P2 running quantiles of returns (river.stats.Quantile) |
| anomaly | RobustZScoreAnomaly | anomaly score in [0, 1], stale flag |
| regime | PageHinkleyRegime | calm / stressed (river.drift.PageHinkley) |
| tail | TailRiskPredictor | P(next abs return > k sigma) (river LogisticRegression) |
"""

from engine.models.anomaly import AnomalyScore, RobustZScoreAnomaly
from engine.models.base import Forecaster, ModelAdapter, VarForecast
from engine.models.ewma_vol import EwmaVol, VolForecast
from engine.models.regime import PageHinkleyRegime, RegimeScore
from engine.models.tail import TailRiskPredictor, TailScore
from engine.models.var_fhs import FilteredHistoricalVar
from engine.models.var_parametric import ParametricVar
from engine.models.var_quantile import OnlineQuantileVar

__all__ = [
    "AnomalyScore",
    "EwmaVol",
    "FilteredHistoricalVar",
    "Forecaster",
    "ModelAdapter",
    "OnlineQuantileVar",
    "PageHinkleyRegime",
    "ParametricVar",
    "RegimeScore",
    "RobustZScoreAnomaly",
    "TailRiskPredictor",
    "TailScore",
    "VarForecast",
    "VolForecast",
]
