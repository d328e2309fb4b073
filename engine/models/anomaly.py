"""Anomaly score on market features: an ensemble of robust z-scores, with stale-feed
detection.

Each feature (return, log spread, book imbalance, log trade size, log trade rate, bar range,
log volume...) gets exponentially weighted robust location and scale estimates at a few
speeds (the ensemble members); updates are winsorised at `clip` scales so one outlier barely
moves them. A feature's z-score is the mean |z| over members; the event's score is one minus
the Bonferroni-corrected two-sided normal tail probability of its most extreme feature:

    score = 1 - min(1, d * erfc(max_j |z_j| / sqrt(2)))

so it lies in [0, 1] and a threshold reads as a false-alarm rate per event (0.999: about
one in a thousand events of a well-behaved feed).

Stale feeds: a constant price or a feed repeating itself makes every robust scale collapse,
which would turn the next tiny change into a huge z. So the model counts consecutive
identical feature vectors per event kind and consecutive zero returns; past `stale_after` /
`flat_after` it scores 0, flags `stale` instead, and stops learning until the feed moves.

>>> from engine.features import MarketObs
>>> m = RobustZScoreAnomaly(warmup=5)
>>> for i in range(50):
...     m.learn_one(MarketObs(ts=i, kind="Quote", features={"log_spread": 1.0 + 0.01 * (i % 5)}))
>>> m.score_one(MarketObs(ts=50, kind="Quote", features={"log_spread": 1.02})).score < 0.5
True
>>> m.score_one(MarketObs(ts=51, kind="Quote", features={"log_spread": 3.0})).score > 0.999
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.features import MarketObs
from engine.models.base import Explanation, ModelAdapter

# mean |x - median| of a normal is sigma * sqrt(2 / pi): scale the EW mean absolute deviation
# back to a standard deviation.
_MAD_TO_SIGMA = math.sqrt(math.pi / 2)
_SQRT2 = math.sqrt(2.0)
# Features describing timing change even when the feed repeats itself.
_TIMING_FEATURES = frozenset({"log_rate"})


@dataclass(frozen=True, slots=True)
class AnomalyScore:
    score: float
    stale: bool
    top: tuple[tuple[str, float, float], ...] = ()
    """(feature, value, robust z) of the most unusual features, largest |z| first."""
    max_z: float = 0.0


class _Feature:
    """Robust EW location/scale of one feature at several speeds."""

    __slots__ = ("dev", "loc", "n")

    def __init__(self, members: int) -> None:
        self.n = 0
        self.loc = [0.0] * members
        self.dev = [0.0] * members

    def z(self, x: float) -> float:
        total = 0.0
        for loc, dev in zip(self.loc, self.dev, strict=True):
            # Relative floor: a (nearly) constant feature must not make tiny moves infinite.
            scale = max(dev * _MAD_TO_SIGMA, 1e-9 * max(abs(loc), 1.0))
            total += abs(x - loc) / scale
        return total / len(self.loc)

    def update(self, x: float, alphas: tuple[float, ...], clip: float, warmup: int) -> None:
        self.n += 1
        n = self.n
        if n == 1:
            self.loc = [x] * len(alphas)
            return
        for i, alpha in enumerate(alphas):
            a = max(alpha, 1.0 / n)  # plain averages while warming up
            r = x - self.loc[i]
            if n > warmup:
                bound = clip * self.dev[i] * _MAD_TO_SIGMA
                r = min(max(r, -bound), bound)
            self.loc[i] += a * r
            self.dev[i] += a * (abs(r) - self.dev[i])


class RobustZScoreAnomaly(ModelAdapter[AnomalyScore]):
    name = "anomaly"
    target_blind = False  # it scores the event's own features, return included

    def __init__(self, alphas: tuple[float, ...] = (0.05, 0.01), clip: float = 3.0,
                 warmup: int = 30, stale_after: int = 20, flat_after: int = 100,
                 top_features: int = 3, seed: int = 0) -> None:
        super().__init__(seed)
        if not alphas or any(not 0 < a <= 1 for a in alphas):
            raise ValueError(f"alphas must be in (0, 1], got {alphas}")
        self.alphas = tuple(alphas)
        self.clip = clip
        self.warmup = warmup
        self.stale_after = stale_after
        self.flat_after = flat_after
        self.top_features = top_features
        self._features: dict[str, _Feature] = {}
        self._last: dict[str, dict[str, float]] = {}  # last feature vector per event kind
        self._repeats: dict[str, int] = {}
        self._flat = 0

    # --- staleness -------------------------------------------------------------------------

    @staticmethod
    def _signature(x: MarketObs) -> dict[str, float]:
        return {k: v for k, v in x.features.items() if k not in _TIMING_FEATURES}

    def _counts_after(self, x: MarketObs) -> tuple[int, int]:
        """Repeat count of x's kind and the zero-return run, as they would be after x."""
        sig = self._signature(x)
        repeats = self._repeats.get(x.kind, 0) + 1 if sig and sig == self._last.get(x.kind) \
            else 1
        flat = self._flat
        if x.ret is not None:
            flat = flat + 1 if x.ret == 0.0 else 0
        return repeats, flat

    def _stale(self, repeats: int, flat: int, kind: str) -> bool:
        if repeats >= self.stale_after or flat >= self.flat_after:
            return True
        # Another kind of event of this instrument still frozen keeps the feed stale.
        return any(r >= self.stale_after for k, r in self._repeats.items() if k != kind)

    @property
    def stale(self) -> bool:
        return (self._flat >= self.flat_after
                or any(r >= self.stale_after for r in self._repeats.values()))

    # --- scoring ---------------------------------------------------------------------------

    def _zscores(self, x: MarketObs) -> list[tuple[str, float, float]]:
        out = []
        for name, value in x.features.items():
            f = self._features.get(name)
            if f is None or f.n < self.warmup:
                continue
            out.append((name, value, f.z(value)))
        out.sort(key=lambda t: (-t[2], t[0]))
        return out

    def score_one(self, x: MarketObs) -> AnomalyScore:
        repeats, flat = self._counts_after(x)
        if self._stale(repeats, flat, x.kind):
            return AnomalyScore(0.0, True)
        zs = self._zscores(x)
        if not zs:
            return AnomalyScore(0.0, False)
        max_z = zs[0][2]
        p = len(zs) * math.erfc(max_z / _SQRT2)
        score = 1.0 - min(1.0, p)
        top = tuple((name, value, round(z, 6)) for name, value, z in zs[:self.top_features])
        return AnomalyScore(score, False, top, max_z)

    def learn_one(self, x: MarketObs) -> None:
        repeats, flat = self._counts_after(x)
        self._repeats[x.kind] = repeats
        self._last[x.kind] = self._signature(x)
        self._flat = flat
        if self._stale(repeats, flat, x.kind):
            return  # a frozen feed must not teach the model that "constant" is normal
        for name, value in x.features.items():
            f = self._features.get(name)
            if f is None:
                f = self._features[name] = _Feature(len(self.alphas))
            f.update(value, self.alphas, self.clip, self.warmup)

    def explain(self, x: MarketObs) -> Explanation:
        """Top features with their share of the summed |z| as contribution."""
        zs = self._zscores(x)[:self.top_features]
        total = sum(z for _, _, z in zs) or 1.0
        return [(name, value, z / total) for name, value, z in zs]
