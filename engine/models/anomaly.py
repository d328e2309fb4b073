"""Anomaly score on market features: an ensemble of robust z-scores, with stale-feed
detection.

Each feature (log spread, book imbalance, log trade size, log trade rate, bar range, log
volume, and the return unless excluded) gets exponentially weighted robust location and
scale estimates at a few speeds (the ensemble members). An outlier (beyond `clip` scales)
moves the location by the bound at most and leaves the scale alone, so a burst cannot hide
itself by inflating the scale; sizes, rates, spreads and ranges only count when *high*.
A feature's z-score is the mean |z| over members; the event's score is one minus
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
from collections.abc import Iterable
from dataclasses import dataclass

from engine.features import MarketObs
from engine.models.base import Explanation, ModelAdapter

# mean |x - median| of a normal is sigma * sqrt(2 / pi): scale the EW mean absolute deviation
# back to a standard deviation.
_MAD_TO_SIGMA = math.sqrt(math.pi / 2)
_SQRT2 = math.sqrt(2.0)
# Features describing timing change even when the feed repeats itself.
_TIMING_FEATURES = frozenset({"log_rate"})
# Smallest scale each feature is judged on. Prices, sizes and spreads live on grids (ticks,
# lots): when most values sit on one or two grid points the robust scale collapses and one
# grid step looks like a ten-sigma event. A 15% change of a log size or spread, or one
# minimal price move for a return (obs.tick_ret), is never unusual by itself.
DEFAULT_SCALE_FLOORS: dict[str, float] = {
    "log_spread": 0.15, "log_qty": 0.15, "log_volume": 0.15, "imbalance": 0.05,
    "log_rate": 0.05, "range": 0.0,
}
# Features whose low side is no risk signal (a quiet market, a tight spread, small prints):
# only values above the usual count, so the end of a burst is not an anomaly of its own.
DEFAULT_UPPER_ONLY = frozenset({"log_spread", "log_qty", "log_volume", "log_rate", "range"})


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

    def z(self, x: float, floor: float, upper_only: bool) -> float:
        total = 0.0
        for loc, dev in zip(self.loc, self.dev, strict=True):
            scale = dev * _MAD_TO_SIGMA
            # Relative floor too: a (nearly) constant feature must not make tiny moves infinite.
            low = max(floor, 1e-9 * (loc if loc > 1.0 else -loc if loc < -1.0 else 1.0))
            d = x - loc if upper_only else abs(x - loc)
            if d > 0:
                total += d / (scale if scale > low else low)
        return total / len(self.loc)

    def update(self, x: float, alphas: tuple[float, ...], clip: float, warmup: int,
               floor: float) -> None:
        self.n += 1
        n = self.n
        if n == 1:
            self.loc = [x] * len(alphas)
            return
        for i, alpha in enumerate(alphas):
            a = max(alpha, 1.0 / n)  # plain averages while warming up
            r = x - self.loc[i]
            if n > warmup:
                bound = clip * max(self.dev[i] * _MAD_TO_SIGMA, floor)
                if r > bound or r < -bound:
                    # An outlier nudges the location by the bound at most and leaves the
                    # scale alone: otherwise a burst would inflate the scale within seconds
                    # and hide itself. A lasting shift is still learned, at a bounded pace.
                    self.loc[i] += a * (bound if r > 0 else -bound)
                    continue
            self.loc[i] += a * r
            self.dev[i] += a * (abs(r) - self.dev[i])


class RobustZScoreAnomaly(ModelAdapter[AnomalyScore]):
    name = "anomaly"
    target_blind = False  # it scores the event's own features, return included

    def __init__(self, alphas: tuple[float, ...] = (0.02, 0.005), clip: float = 3.0,
                 warmup: int = 30, stale_after: int = 20, flat_after: int = 100,
                 top_features: int = 3, scale_floors: dict[str, float] | None = None,
                 upper_only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                 seed: int = 0) -> None:
        super().__init__(seed)
        if not alphas or any(not 0 < a <= 1 for a in alphas):
            raise ValueError(f"alphas must be in (0, 1], got {alphas}")
        self.alphas = tuple(alphas)
        self.clip = clip
        self.warmup = warmup
        self.stale_after = stale_after
        self.flat_after = flat_after
        self.top_features = top_features
        self.scale_floors = dict(DEFAULT_SCALE_FLOORS if scale_floors is None else scale_floors)
        self.upper_only = frozenset(DEFAULT_UPPER_ONLY if upper_only is None else upper_only)
        self.exclude = frozenset(exclude)
        self._features: dict[str, _Feature] = {}
        self._last: dict[str, dict[str, float]] = {}  # last feature vector per event kind
        self._repeats: dict[str, int] = {}
        self._frozen: set[str] = set()  # kinds whose repeats reached stale_after
        self._flat = 0

    # --- staleness -------------------------------------------------------------------------

    @staticmethod
    def _signature(x: MarketObs) -> dict[str, float]:
        feats = x.features
        if _TIMING_FEATURES.isdisjoint(feats):
            return feats  # observations' features are read-only: no copy needed
        return {k: v for k, v in feats.items() if k not in _TIMING_FEATURES}

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
        frozen = self._frozen
        return len(frozen) > (kind in frozen)

    @property
    def stale(self) -> bool:
        return self._flat >= self.flat_after or bool(self._frozen)

    # --- scoring ---------------------------------------------------------------------------

    def _floor(self, name: str, x: MarketObs) -> float:
        if name == "ret":
            return 0.5 * x.tick_ret if x.tick_ret else 0.0
        return self.scale_floors.get(name, 0.0)

    def _zscores(self, x: MarketObs) -> list[tuple[str, float, float]]:
        out = []
        for name, value in x.features.items():
            f = self._features.get(name)
            if f is None or f.n < self.warmup:
                continue
            out.append((name, value, f.z(value, self._floor(name, x), name in self.upper_only)))
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
        top = tuple(zs[:self.top_features])
        return AnomalyScore(score, False, top, max_z)

    def learn_one(self, x: MarketObs) -> None:
        repeats, flat = self._counts_after(x)
        self._repeats[x.kind] = repeats
        if repeats >= self.stale_after:
            self._frozen.add(x.kind)
        else:
            self._frozen.discard(x.kind)
        self._last[x.kind] = self._signature(x)
        self._flat = flat
        if self._stale(repeats, flat, x.kind):
            return  # a frozen feed must not teach the model that "constant" is normal
        for name, value in x.features.items():
            if name in self.exclude:
                continue
            f = self._features.get(name)
            if f is None:
                f = self._features[name] = _Feature(len(self.alphas))
            f.update(value, self.alphas, self.clip, self.warmup, self._floor(name, x))

    def explain(self, x: MarketObs) -> Explanation:
        """Top features with their share of the summed |z| as contribution."""
        zs = self._zscores(x)[:self.top_features]
        total = sum(z for _, _, z in zs) or 1.0
        return [(name, value, z / total) for name, value, z in zs]
