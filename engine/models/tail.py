"""Tail-risk predictor: the probability that the next |return| exceeds k volatilities, by
online logistic regression (river.linear_model.LogisticRegression), with progressive
validation computed on each prediction *before* its outcome is learned: log loss and Brier
score since start, and ROC AUC over the last `auc_window` predictions (river's exact
RollingROCAUC: its binned ROCAUC cannot rank the small probabilities of a rare event).

The features describing the state after return t are kept as pending inputs; when return
t+1 arrives its label (|r| > k * sigma forecast) is scored against the pending prediction,
learned, and the new pending inputs are built. News between two returns refreshes the
sentiment inputs of the pending prediction, so a shock in the news raises the forecast
before the next price moves.

Inputs (all scale-free): |z| of the last return, EW mean of |z|, log of fast over slow
volatility, negative and positive sentiment, and the last return's sign.

>>> import random
>>> from engine.features import MarketObs
>>> rng = random.Random(11)
>>> m = TailRiskPredictor(k=2.0)
>>> for i in range(3000):                      # bad news makes the next move wild
...     news = rng.random() < 0.05
...     if news:
...         m.learn_one(MarketObs(ts=i, kind="NewsSentiment", sentiment=-0.9))
...     sd = 0.05 if news else 0.01
...     m.learn_one(MarketObs(ts=i, kind="Bar", ret=rng.gauss(0, sd)))
>>> met = m.metrics()
>>> met["roc_auc"] > 0.75 and met["brier"] < met["base_rate"] and met["n"] > 2900
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from river import linear_model, metrics, optim

from engine.features import MarketObs
from engine.models.base import Explanation, Forecaster
from engine.models.ewma_vol import EwmaVol


@dataclass(frozen=True, slots=True)
class TailScore:
    prob: float
    """P(|next return| > k sigma)."""


class TailRiskPredictor(Forecaster[TailScore]):
    name = "tail"

    def __init__(self, k: float = 2.0, lr: float = 0.02, l2: float = 1e-4,
                 intercept_init: float = -3.0, lam: float = 0.94, lam_ref: float = 0.995,
                 warmup: int = 20, prior_sigma: float = 0.015, auc_window: int = 500,
                 seed: int = 0) -> None:
        super().__init__(seed)
        self.k = k
        self.vol = EwmaVol(lam=lam, warmup=warmup, prior_sigma=prior_sigma, seed=seed)
        self.ref = EwmaVol(lam=lam_ref, warmup=warmup, prior_sigma=prior_sigma, seed=seed)
        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(lr), l2=l2, intercept_init=intercept_init, intercept_lr=lr)
        self.log_loss = metrics.LogLoss()
        self.auc_window = auc_window
        self.roc_auc = metrics.RollingROCAUC(window_size=auc_window)
        self._brier_sum = 0.0
        self.n = 0
        self.positives = 0
        self._abs_z = 0.0
        self._level = 0.8
        self._sign = 0.0
        self._sentiment = 0.0
        self._x: dict[str, float] = self._inputs(0.0)
        self._p = self._predict(self._x)

    def __getstate__(self) -> dict[str, object]:
        # Snapshots hold the flushed AUC window, so their size does not depend on when the
        # buffer was last emptied (the flush changes no result).
        self.roc_auc.get()
        return self.__dict__.copy()

    def _inputs(self, sentiment: float) -> dict[str, float]:
        ratio = self.vol.sigma / self.ref.sigma if self.ref.sigma > 0 else 1.0
        return {
            "abs_z": self._abs_z,
            "abs_z_level": self._level,
            "log_vol_ratio": math.log(ratio) if ratio > 0 else 0.0,
            "neg_sentiment": max(0.0, -sentiment),
            "pos_sentiment": max(0.0, sentiment),
            "last_sign": self._sign,
        }

    def _predict(self, x: dict[str, float]) -> float:
        return float(self.model.predict_proba_one(x)[True])

    def forecast(self) -> TailScore:
        return TailScore(self._p)

    def learn_one(self, x: MarketObs) -> None:
        r = x.ret
        if r is None and x.sentiment == self._sentiment:
            return  # nothing the prediction depends on has changed
        self._sentiment = x.sentiment
        if r is not None:
            sigma = self.vol.sigma
            if self.vol.warm:
                # Progressive validation: the pending prediction meets its outcome, then learns.
                y = abs(r) > self.k * sigma
                p = min(max(self._p, 1e-12), 1 - 1e-12)
                self.log_loss.update(y, p)
                self.roc_auc.update(y, p)
                if self.n % self.auc_window == 0:
                    # river's RollingROCAUC buffers updates in Python until get() is called:
                    # flush it regularly or the buffer (and every snapshot) grows forever.
                    self.roc_auc.get()
                self._brier_sum += (p - y) ** 2
                self.n += 1
                self.positives += y
                self.model.learn_one(self._x, y)
            z = min(abs(r) / sigma, 10.0) if sigma > 0 else 0.0
            self._abs_z = z
            self._level += 0.05 * (z - self._level)
            self._sign = 1.0 if r > 0 else -1.0 if r < 0 else 0.0
            self.vol.learn_one(x)
            self.ref.learn_one(x)
        self._x = self._inputs(x.sentiment)
        self._p = self._predict(self._x)

    def metrics(self) -> dict[str, float]:
        """Progressive-validation metrics since start."""
        out: dict[str, float] = {"n": float(self.n), "positives": float(self.positives),
                                 "base_rate": self.positives / self.n if self.n else 0.0}
        if self.n:
            out["log_loss"] = float(self.log_loss.get())
            out["brier"] = self._brier_sum / self.n
        if 0 < self.positives < self.n:
            out["roc_auc"] = float(self.roc_auc.get())
        return out

    def explain(self, x: MarketObs) -> Explanation:
        """Linear contributions weight * input of the pending prediction."""
        w = self.model.weights
        parts = [(name, value, w.get(name, 0.0) * value) for name, value in self._x.items()]
        parts.sort(key=lambda t: (-abs(t[2]), t[0]))
        return parts
