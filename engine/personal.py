"""Personal thresholds: a per-account River model of the account's normal order flow.

Each order is described by five features and compared with the account's own history
(exponentially weighted mean and variance from `river.stats`, so the model follows a client
whose style changes slowly):

* `size`: log order quantity;
* `size_adv`: log of the quantity as a fraction of average daily volume;
* `price_vol`: distance of the limit price from the reference, in volatility units;
* `rate`: how fast orders come, -log(seconds since the previous order);
* `cancel_ratio`: recent share of cancels among the account's order messages.

Only the unusual direction counts (bigger, farther, faster, more cancels). The score is
`z^2 / (z^2 + z0^2)` of the largest one-sided z-score `z` (`z0` = the threshold), so it lies in
[0, 1) and an order is unusual, after a warm-up, when its score passes 0.5. As everywhere in
the engine the model scores an order before it learns from it.

The model also suggests personal limits (a high quantile of the account's own sizes times a
headroom). A suggestion is ALWAYS clipped to the hard cap that applies: a model can make a
limit tighter for a client, never looser.

>>> from engine.order_config import PersonalConfig
>>> model = OrderFlowModel(PersonalConfig(warmup=10))
>>> for i in range(50):
...     f = model.features(qty=100 + i % 7, notional=1e4, adv=1e6, price_distance_vol=0.5,
...                        ts=i * 10**9)
...     model.learn_one(f, ts=i * 10**9)
>>> normal = model.score_one(model.features(qty=103, notional=1e4, adv=1e6,
...                                         price_distance_vol=0.5, ts=50 * 10**9))
>>> fat = model.score_one(model.features(qty=100_000, notional=1e7, adv=1e6,
...                                      price_distance_vol=0.5, ts=50 * 10**9))
>>> normal.unusual, fat.unusual, fat.top[0][0]
(False, True, 'size')
>>> model.suggest_limit("order_qty", hard_cap=200.0) <= 200.0
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from river import stats

from engine.order_config import PersonalConfig

FEATURES = ("size", "size_adv", "price_vol", "rate", "cancel_ratio")
# A z-score needs a spread; these floors stop a client with identical orders from making
# every small variation look infinitely unusual.
_STD_FLOOR = {"size": 0.25, "size_adv": 0.25, "price_vol": 0.5, "rate": 0.5,
              "cancel_ratio": 0.05}


@dataclass(frozen=True, slots=True)
class PersonalScore:
    score: float
    max_z: float
    unusual: bool
    top: tuple[tuple[str, float, float], ...]
    """(feature, value, z) of the features that pushed the score, largest z first."""


@dataclass
class _Stat:
    mean: stats.EWMean
    var: stats.EWVar


@dataclass
class OrderFlowModel:
    config: PersonalConfig
    n: int = 0
    last_ts: int | None = None
    score_ewma: float = 0.0
    _stats: dict[str, _Stat] = field(default_factory=dict)
    _qty_q: stats.Quantile | None = None
    _notional_q: stats.Quantile | None = None
    _cancels: stats.EWMean | None = None

    def __post_init__(self) -> None:
        f = self.config.fading_factor
        self._stats = {name: _Stat(stats.EWMean(f), stats.EWVar(f)) for name in FEATURES}
        self._qty_q = stats.Quantile(self.config.quantile)
        self._notional_q = stats.Quantile(self.config.quantile)
        self._cancels = stats.EWMean(self.config.cancel_alpha)

    def features(self, *, qty: float, notional: float, adv: float | None,
                 price_distance_vol: float | None, ts: int) -> dict[str, float]:
        """Feature values of an order at event time `ts` (absent ones are left out)."""
        out = {"size": math.log(qty), "notional": notional, "qty": qty}
        if adv:
            out["size_adv"] = math.log(qty / adv)
        if price_distance_vol is not None:
            out["price_vol"] = price_distance_vol
        if self.last_ts is not None:
            dt = max(ts - self.last_ts, 0) / 1e9
            out["rate"] = -math.log(max(dt, 1e-4))
        assert self._cancels is not None
        if self.n:
            out["cancel_ratio"] = self._cancels.get()
        return out

    def score_one(self, features: dict[str, float]) -> PersonalScore:
        """How unusual an order is for this account (before learning from it)."""
        zs: list[tuple[str, float, float]] = []
        for name in FEATURES:
            value = features.get(name)
            if value is None:
                continue
            stat = self._stats[name]
            std = max(math.sqrt(max(stat.var.get(), 0.0)), _STD_FLOOR[name])
            z = (value - stat.mean.get()) / std
            if z > 0:
                zs.append((name, value, z))
        zs.sort(key=lambda item: (-item[2], item[0]))
        max_z = zs[0][2] if zs else 0.0
        warm = self.n >= self.config.warmup
        z0 = self.config.z_threshold
        score = max_z * max_z / (max_z * max_z + z0 * z0) if warm else 0.0
        return PersonalScore(score, max_z, warm and max_z > z0, tuple(zs[:3]) if warm else ())

    def learn_one(self, features: dict[str, float], ts: int) -> None:
        """Learn from an order's features; also counts it for the cancel ratio."""
        for name in FEATURES:
            value = features.get(name)
            if value is not None:
                stat = self._stats[name]
                stat.mean.update(value)
                stat.var.update(value)
        assert self._qty_q is not None and self._notional_q is not None
        assert self._cancels is not None
        if "qty" in features:
            self._qty_q.update(features["qty"])
        if "notional" in features:
            self._notional_q.update(features["notional"])
        self._cancels.update(0.0)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        self.n += 1

    def learn_cancel(self) -> None:
        assert self._cancels is not None
        self._cancels.update(1.0)

    def observe_score(self, score: float) -> float:
        """Smooth per-order scores into the account's anomaly score (drives the state)."""
        alpha = self.config.score_alpha
        self.score_ewma = alpha * score + (1 - alpha) * self.score_ewma
        return self.score_ewma

    @property
    def cancel_ratio(self) -> float:
        assert self._cancels is not None
        return self._cancels.get() if self.n else 0.0

    def suggest_limit(self, metric: str, hard_cap: float | None) -> float | None:
        """The model's personal limit for `order_qty` or `order_notional`, never looser than
        `hard_cap`; None before the warm-up or for a metric the model does not size."""
        if self.n < self.config.warmup:
            return None
        q = {"order_qty": self._qty_q, "order_notional": self._notional_q}.get(metric)
        if q is None:
            return None
        value = q.get()
        if value is None:
            return None
        suggestion = float(value) * self.config.headroom
        return suggestion if hard_cap is None else min(suggestion, hard_cap)
