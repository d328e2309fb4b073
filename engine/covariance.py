"""EWMA covariance across instruments and the account VaR/ES built on it.

Instrument snapshots arrive at irregular times, so returns are synchronised on event-time
buckets: each bucket's return of an instrument is the log change of its last price from the
previous bucket's close (zero when it did not trade). The covariance is the RiskMetrics
zero-mean EWMA of those bucket returns. Only correlations are taken from it: each
instrument's size of loss comes from its own current VaR/ES forecast, and the account figure
aggregates them with the correlation matrix (the variance-covariance aggregation):

    VaR_account = sqrt(v' R v),  v_i = exposure_i * var_i

Unknown or under-sampled correlations get no diversification credit (the sum of |v_i|).

The covariance keeps a few versions by bucket close time, so an order at event time T reads
the matrix as of T even when the instrument table has already moved past T.

>>> cov = EwmaCovariance(lam=0.9, bucket_ns=10, min_obs=2)
>>> for t, (a, b) in enumerate([(100, 50), (101, 50.5), (100, 50), (102, 51), (101, 50.4)]):
...     cov.update("A", a, t * 10)
...     cov.update("B", b, t * 10)
>>> cov.update("A", 101, 60)  # opens a new bucket, closing the previous one
>>> corr = cov.correlation(["A", "B"])
>>> bool(corr[0, 1] > 0.9)
True
>>> round(portfolio_var([1000.0, -1000.0], [0.02, 0.02], corr), 2) < 40.0
True
>>> portfolio_var([1000.0, -1000.0], [0.02, 0.02], None)
40.0
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Version:
    close_ts: int
    cov: np.ndarray
    buckets: int
    first: list[int]


@dataclass
class EwmaCovariance:
    lam: float = 0.94
    bucket_ns: int = 60_000_000_000
    min_obs: int = 20
    versions: int = 4
    _index: dict[str, int] = field(default_factory=dict)
    _first: list[int] = field(default_factory=list)
    _cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    _buckets: int = 0
    _bucket: int | None = None
    _open: dict[str, float] = field(default_factory=dict)
    _close: dict[str, float] = field(default_factory=dict)
    _history: deque[_Version] = field(default_factory=deque)

    def update(self, symbol: str, price: float, ts: int) -> None:
        """Record the latest price of `symbol` at event time `ts`."""
        bucket = ts // self.bucket_ns
        if self._bucket is None:
            self._bucket = bucket
        elif bucket > self._bucket:
            self._roll()
            self._bucket = bucket
        # a late price (older bucket) counts in the open bucket: nothing is rewritten
        self._open[symbol] = price

    def _register(self, symbol: str) -> int:
        idx = len(self._index)
        self._index[symbol] = idx
        # registered while closing bucket n+1, whose return it lacks: its first is bucket n+2
        self._first.append(self._buckets + 2)
        grown = np.zeros((idx + 1, idx + 1))
        grown[:idx, :idx] = self._cov
        self._cov = grown
        return idx

    def _roll(self) -> None:
        returns: list[tuple[int, float]] = []
        for symbol in sorted(self._open):  # sorted: registration order must not depend on
            price = self._open[symbol]      # dict order of arrivals within a bucket
            prev = self._close.get(symbol)
            idx = self._index.get(symbol)
            if idx is None:
                idx = self._register(symbol)
            if prev is not None and prev > 0 and price > 0:
                returns.append((idx, math.log(price / prev)))
            self._close[symbol] = price
        self._open.clear()
        r = np.zeros(len(self._index))
        for idx, value in returns:
            r[idx] = value
        self._cov *= self.lam
        self._cov += (1.0 - self.lam) * np.outer(r, r)
        self._buckets += 1
        assert self._bucket is not None
        self._history.append(_Version((self._bucket + 1) * self.bucket_ns, self._cov.copy(),
                                      self._buckets, list(self._first)))
        while len(self._history) > self.versions:
            self._history.popleft()

    @property
    def observations(self) -> int:
        """Buckets folded into the covariance so far."""
        return self._buckets

    def _version_at(self, ts: int | None) -> _Version | None:
        if not self._history:
            return None
        if ts is None:
            return self._history[-1]
        chosen = None
        for version in self._history:
            if version.close_ts <= ts:
                chosen = version
        # older than every retained version: the oldest one is the best we have
        return chosen if chosen is not None else self._history[0]

    def correlation(self, symbols: Sequence[str], ts: int | None = None) -> np.ndarray | None:
        """Correlation matrix of `symbols` as of event time `ts` (latest when None), or None
        when any pair has fewer than `min_obs` buckets or an instrument never moved."""
        version = self._version_at(ts)
        if version is None:
            return None
        idx = []
        for symbol in symbols:
            i = self._index.get(symbol)
            if i is None or i >= version.cov.shape[0]:
                return None
            if version.buckets - version.first[i] + 1 < self.min_obs:
                return None
            idx.append(i)
        sub = version.cov[np.ix_(idx, idx)]
        d = np.sqrt(np.diag(sub))
        if np.any(d <= 0):
            return None
        corr: np.ndarray = np.clip(sub / np.outer(d, d), -1.0, 1.0)
        np.fill_diagonal(corr, 1.0)
        return corr


def portfolio_var(exposures: Sequence[float] | np.ndarray, fractions: Sequence[float] | np.ndarray,
                  corr: np.ndarray | None) -> float:
    """Account VaR (or ES) in currency from signed exposures and per-instrument loss fractions.

    Without a correlation matrix: the undiversified sum of |exposure * fraction|.
    """
    v = np.asarray(exposures, dtype=float) * np.asarray(fractions, dtype=float)
    if v.size == 0:
        return 0.0
    if corr is None:
        return float(np.abs(v).sum())
    q = float(v @ corr @ v)
    return math.sqrt(q) if q > 0 else 0.0


def liquidity(qtys: Sequence[float], advs: Sequence[float | None],
              exposures: Sequence[float], spreads_bps: Sequence[float | None],
              participation: float) -> tuple[float, float]:
    """Time to liquidate (days, the slowest position at `participation` of ADV) and the
    exogenous liquidity cost (half the spread on every position, Bangia et al.).

    A position whose ADV is unknown counts as one day to liquidate.

    >>> liquidity([1000.0], [10000.0], [50000.0], [10.0], 0.1)
    (1.0, 25.0)
    """
    days = 0.0
    cost = 0.0
    for qty, adv, exposure, spread in zip(qtys, advs, exposures, spreads_bps, strict=True):
        if qty == 0:
            continue
        days = max(days, abs(qty) / (participation * adv) if adv else 1.0)
        if spread:
            cost += abs(exposure) * spread / 1e4 / 2.0
    return days, cost
