"""The adapter protocol every per-instrument model follows, River style.

* `score_one(x)` is the model's output for observation `x` computed from the state *before*
  `x`: it never mutates the model and never returns an object that a later `learn_one` can
  change (scores are frozen dataclasses).
* `learn_one(x)` folds `x` into the state. The market processor always scores first, then
  learns, so nothing is ever evaluated on data it has already seen.
* `explain(x)` names the inputs that drove the score of `x`, as (name, value, contribution).
* State is the object itself: `snapshot()` pickles it and `restore(data)` rebuilds it; the
  state is bounded (fixed-size statistics, fixed windows) whatever the stream length.
* Every adapter takes a `seed`. The default stack happens to be deterministic without one;
  the seed is kept so randomised variants stay reproducible and snapshots carry it.

Forecasters (volatility, VaR, regime, tail risk) forecast the *next* return, so their
`score_one(x)` is `forecast()` and cannot depend on `x.ret`: they are target-blind by
construction, which the contract suite checks.
"""

from __future__ import annotations

import math
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from engine.features import MarketObs

S = TypeVar("S", covariant=True)
M = TypeVar("M", bound="ModelAdapter[object]")

Explanation = list[tuple[str, float, float]]

# Standard normal quantiles and the 97.5% expected-shortfall multiplier phi(z)/0.025.
Z_95 = 1.6448536269514722
Z_99 = 2.3263478740408408
Z_975 = 1.959963984540054
ES_975_NORMAL = math.exp(-0.5 * Z_975 * Z_975) / math.sqrt(2 * math.pi) / 0.025

SNAPSHOT_PROTOCOL = 5


@dataclass(frozen=True, slots=True)
class VarForecast:
    """One method's forecast for the next return: VaR 95/99 and ES 97.5 as positive
    fractions of price, and the volatility per step behind them."""

    var_95: float
    var_99: float
    es_975: float
    sigma: float

    @classmethod
    def from_log_quantiles(cls, q05: float, q01: float, es025: float,
                           sigma: float) -> VarForecast:
        """From lower quantiles of log returns (q05 at 5%, q01 at 1%) and the mean log
        return beyond the 2.5% quantile.

        >>> f = VarForecast.from_log_quantiles(-0.02, -0.03, -0.031, 0.012)
        >>> f.var_95 < f.var_99 < f.es_975
        True
        """
        # Quantiles estimated separately (P2 markers, on a tick grid) can cross by a hair:
        # keep the figures ordered, VaR 95 <= VaR 99 and VaR 95 <= ES 97.5.
        q01 = min(q01, q05)
        es025 = min(es025, q05)
        return cls(loss_fraction(q05), loss_fraction(q01), loss_fraction(es025), sigma)

    @classmethod
    def normal(cls, sigma: float) -> VarForecast:
        """Zero-mean normal forecast for a volatility per step."""
        return cls.from_log_quantiles(-Z_95 * sigma, -Z_99 * sigma, -ES_975_NORMAL * sigma,
                                      sigma)


class ModelAdapter(ABC, Generic[S]):
    """A per-instrument online model: score before learning, bounded picklable state."""

    name: ClassVar[str] = "model"
    target_blind: ClassVar[bool] = True
    """True when score_one(x) must not depend on x.ret (forecasts of that return)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abstractmethod
    def score_one(self, x: MarketObs) -> S:
        """Output for `x` from the state before `x`. Pure: never changes the model."""

    @abstractmethod
    def learn_one(self, x: MarketObs) -> None:
        """Update the state with `x`."""

    def explain(self, x: MarketObs) -> Explanation:
        """(name, value, contribution) of the inputs behind score_one(x), largest first."""
        return []

    def snapshot(self) -> bytes:
        return pickle.dumps(self, protocol=SNAPSHOT_PROTOCOL)

    @classmethod
    def restore(cls: type[M], data: bytes) -> M:
        obj = pickle.loads(data)
        if not isinstance(obj, cls):
            raise TypeError(f"snapshot holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj


class Forecaster(ModelAdapter[S]):
    """A model whose score is a forecast of the next return's distribution."""

    @abstractmethod
    def forecast(self) -> S:
        """Forecast for the next return given everything learned so far."""

    def score_one(self, x: MarketObs) -> S:
        # The forecast of x's return was fixed before x arrived: x itself is not consulted.
        return self.forecast()


def loss_fraction(log_return_quantile: float) -> float:
    """A lower quantile of log returns as a positive loss fraction of price (0 if not a loss).

    >>> round(loss_fraction(-0.02), 6)
    0.019801
    >>> loss_fraction(0.01)
    0.0
    """
    return max(0.0, -math.expm1(log_return_quantile))
