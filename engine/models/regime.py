"""Calm/stressed regime from drift detection on standardised returns.

Returns are standardised by a slow EWMA volatility (the reference, lambda 0.995: a half-life
of about 140 steps), so |z| averages about 0.8 while volatility is as usual and rises when it
is not. While stressed the reference moves ten times slower (`lam_ref_stressed`), so a
lasting rise in volatility is not normalised away within a few dozen steps; a lasting new
level does become the reference eventually.

Two Page-Hinkley tests (river.drift.PageHinkley) watch |z|: one for an increase, one
for a decrease. A detection is the moment to re-decide: the regime becomes "stressed" if the
recent level (EW mean of |z|, about 20 steps) is above `stress_level`, "calm" if it is below
`calm_level`, and stays as it was in between (hysteresis); then both tests restart so they
learn the new level. A test alone would call "calm" whenever volatility eases a little
inside a stressed period; the level alone would flap on every burst. The regime is
"unknown" during the first `warmup` returns.

>>> import random
>>> from engine.features import MarketObs
>>> rng = random.Random(5)
>>> m = PageHinkleyRegime()
>>> seen = []
>>> for i in range(1200):
...     sd = 0.01 if i < 600 else 0.04          # volatility quadruples at step 600
...     m.learn_one(MarketObs(ts=i, kind="Bar", ret=rng.gauss(0, sd)))
...     seen.append(m.forecast().regime)
>>> seen[100], seen[599], seen[700]
('calm', 'calm', 'stressed')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from river import drift

from engine.features import MarketObs
from engine.models.base import Explanation, Forecaster
from engine.models.ewma_vol import EwmaVol

Regime = Literal["calm", "stressed", "unknown"]


@dataclass(frozen=True, slots=True)
class RegimeScore:
    regime: Regime
    level: float
    """EW mean of |z| (about 0.8 when volatility is as usual)."""
    drift: bool
    """A drift test fired on the last learned return."""
    sigma_ref: float
    """The slow reference volatility per step."""


class PageHinkleyRegime(Forecaster[RegimeScore]):
    name = "regime"

    def __init__(self, lam_ref: float = 0.995, lam_ref_stressed: float = 0.9995,
                 threshold: float = 25.0, delta: float = 0.1,
                 min_instances: int = 30, warmup: int = 30, clip_z: float = 6.0,
                 stress_level: float = 1.2, calm_level: float = 1.0,
                 prior_sigma: float = 0.015, seed: int = 0) -> None:
        super().__init__(seed)
        self.ref = EwmaVol(lam=lam_ref, warmup=warmup, prior_sigma=prior_sigma, seed=seed)
        self.lam_ref = lam_ref
        self.lam_ref_stressed = lam_ref_stressed
        self.threshold = threshold
        self.delta = delta
        self.min_instances = min_instances
        self.warmup = warmup
        self.clip_z = clip_z
        self.stress_level = stress_level
        self.calm_level = calm_level
        self.regime: Regime = "unknown"
        self.level = 0.8
        self.drift = False
        self.changes = 0
        self._up, self._down = self._detectors()

    def _detectors(self) -> tuple[drift.PageHinkley, drift.PageHinkley]:
        def make(mode: str) -> drift.PageHinkley:
            return drift.PageHinkley(min_instances=self.min_instances, delta=self.delta,
                                     threshold=self.threshold, mode=mode)

        return make("up"), make("down")

    def forecast(self) -> RegimeScore:
        return RegimeScore(self.regime, self.level, self.drift, self.ref.sigma)

    def learn_one(self, x: MarketObs) -> None:
        if x.ret is None:
            return
        self.drift = False
        if self.ref.warm:
            z = min(abs(x.ret) / self.ref.sigma, self.clip_z)
            self.level += 0.05 * (z - self.level)
            self._up.update(z)
            self._down.update(z)
            up, down = self._up.drift_detected, self._down.drift_detected
            if up or down:
                self.drift = True
                new = self.regime
                if self.level > self.stress_level:
                    new = "stressed"
                elif self.level < self.calm_level:
                    new = "calm"
                if new != self.regime and self.regime != "unknown":
                    self.changes += 1
                self.regime = new
                self._up, self._down = self._detectors()
        self.ref.lam = self.lam_ref_stressed if self.regime == "stressed" else self.lam_ref
        self.ref.learn_one(x)
        if self.regime == "unknown" and self.ref.n >= self.warmup:
            self.regime = "calm"

    def explain(self, x: MarketObs) -> Explanation:
        return [("abs_z_level", self.level, 1.0), ("sigma_ref", self.ref.sigma, 0.0)]
