"""VaR validation: exceedances, Kupiec POF, Christoffersen independence and conditional
coverage, and the Basel traffic-light zone, over a rolling window and since start.

Only `math` is used (chi-square with 1 and 2 degrees of freedom has closed-form tails), so
the statistics are cheap enough to run per instrument per event.

Known values (250 days at 99%, checked against scipy.stats):

>>> lr, p = kupiec_pof(250, 8, 0.01)
>>> round(lr, 3), round(p, 4)
(7.734, 0.0054)
>>> basel_zone(4, 250, 0.01), basel_zone(5, 250, 0.01), basel_zone(10, 250, 0.01)
(<Zone.GREEN: 'green'>, <Zone.YELLOW: 'yellow'>, <Zone.RED: 'red'>)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

from schemas.outputs import BacktestStats, Zone

# Basel: yellow from the exception count whose cumulative binomial probability reaches 95%,
# red from 99.99%. With 250 days at 99% these give the familiar 5 and 10.
YELLOW_CDF = 0.95
RED_CDF = 0.9999


def _xlogy(x: float, y: float) -> float:
    """x * log(y) with 0 * log(0) = 0."""
    return 0.0 if x == 0 else x * math.log(y)


def chi2_sf_1(x: float) -> float:
    """Upper tail of chi-square with 1 dof.

    >>> round(chi2_sf_1(3.841458820694124), 6)
    0.05
    """
    return math.erfc(math.sqrt(max(x, 0.0) / 2.0))


def chi2_sf_2(x: float) -> float:
    """Upper tail of chi-square with 2 dof.

    >>> round(chi2_sf_2(5.991464547107979), 6)
    0.05
    """
    return math.exp(-max(x, 0.0) / 2.0)


def kupiec_pof(n: int, x: int, p: float) -> tuple[float, float]:
    """Kupiec proportion-of-failures LR statistic and p-value: x exceedances in n days when
    the expected rate is p. (0, 1) when n is 0.

    >>> kupiec_pof(250, 2, 0.01)[0] < kupiec_pof(250, 0, 0.01)[0]
    True
    """
    if not 0 < p < 1:
        raise ValueError(f"expected rate must be in (0, 1), got {p}")
    if not 0 <= x <= n:
        raise ValueError(f"need 0 <= exceedances <= observations, got {x} of {n}")
    if n == 0:
        return 0.0, 1.0
    phat = x / n
    restricted = _xlogy(n - x, 1 - p) + _xlogy(x, p)
    free = _xlogy(n - x, 1 - phat) + _xlogy(x, phat)
    lr = max(0.0, -2.0 * (restricted - free))
    return lr, chi2_sf_1(lr)


@dataclass(frozen=True)
class Transitions:
    """Counts of consecutive pairs of hit indicators: n01 is a miss followed by a hit."""

    n00: int = 0
    n01: int = 0
    n10: int = 0
    n11: int = 0

    @classmethod
    def of(cls, hits: list[bool] | tuple[bool, ...]) -> Transitions:
        """
        >>> Transitions.of([False, True, True, False])
        Transitions(n00=0, n01=1, n10=1, n11=1)
        """
        counts = [0, 0, 0, 0]
        for a, b in pairwise(hits):
            counts[2 * a + b] += 1
        return cls(*counts)


def christoffersen_ind(t: Transitions) -> tuple[float, float]:
    """Christoffersen's independence LR and p-value (1 dof): does a hit make the next hit
    more likely? (0, 1) when there is nothing to compare.

    >>> lr, p = christoffersen_ind(Transitions(n00=240, n01=4, n10=3, n11=2))
    >>> round(lr, 3), p < 0.01
    (9.011, True)
    """
    n0, n1 = t.n00 + t.n01, t.n10 + t.n11
    total = n0 + n1
    hits = t.n01 + t.n11
    if total == 0 or hits in (0, total):
        return 0.0, 1.0
    pi = hits / total
    pi01 = t.n01 / n0 if n0 else 0.0
    pi11 = t.n11 / n1 if n1 else 0.0
    restricted = _xlogy(t.n00 + t.n10, 1 - pi) + _xlogy(hits, pi)
    free = (_xlogy(t.n00, 1 - pi01) + _xlogy(t.n01, pi01)
            + _xlogy(t.n10, 1 - pi11) + _xlogy(t.n11, pi11))
    lr = max(0.0, -2.0 * (restricted - free))
    return lr, chi2_sf_1(lr)


def christoffersen_cc(n: int, x: int, p: float, t: Transitions) -> tuple[float, float]:
    """Conditional coverage: LR_pof + LR_ind, chi-square with 2 dof.

    >>> lr, p = christoffersen_cc(250, 5, 0.01, Transitions(n00=240, n01=4, n10=3, n11=2))
    >>> round(lr, 3), round(p, 4)
    (10.968, 0.0042)
    """
    lr = kupiec_pof(n, x, p)[0] + christoffersen_ind(t)[0]
    return lr, chi2_sf_2(lr)


def binom_cdf(x: int, n: int, p: float) -> float:
    """P(X <= x) for X ~ Binomial(n, p), summed in log space.

    >>> round(binom_cdf(4, 250, 0.01), 4), round(binom_cdf(9, 250, 0.01), 4)
    (0.8922, 0.9997)
    """
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    lq, lp = math.log1p(-p), math.log(p)
    base = math.lgamma(n + 1)
    total = 0.0
    for k in range(x + 1):
        total += math.exp(base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp
                          + (n - k) * lq)
    return min(1.0, total)


@lru_cache(maxsize=4096)
def zone_thresholds(n: int, p: float) -> tuple[int, int]:
    """Smallest exception counts that are yellow and red for n observations at rate p.

    >>> zone_thresholds(250, 0.01)
    (5, 10)
    >>> zone_thresholds(500, 0.01)[0] > 5
    True
    """
    if n <= 0:
        return 1, 1
    yellow = red = -1
    lq, lp = math.log1p(-p), math.log(p)
    base = math.lgamma(n + 1)
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.exp(base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp
                        + (n - k) * lq)
        if yellow < 0 and cdf >= YELLOW_CDF:
            yellow = k
        if cdf >= RED_CDF:
            red = k
            break
    if yellow < 0:
        yellow = n
    if red < 0:
        red = n
    # With very few observations even one exception can reach 99.99%: never let a zone
    # start below one exception.
    return max(yellow, 1), max(red, yellow, 1)


def basel_zone(exceedances: int, n: int, p: float = 0.01) -> Zone:
    """Basel traffic light for `exceedances` in `n` observations, scaled to any n and p."""
    yellow, red = zone_thresholds(n, p)
    if exceedances >= red:
        return Zone.RED
    if exceedances >= yellow:
        return Zone.YELLOW
    return Zone.GREEN


def backtest_stats(n: int, x: int, p: float, t: Transitions) -> BacktestStats:
    """All coverage statistics for one window."""
    k_lr, k_p = kupiec_pof(n, x, p)
    i_lr, i_p = christoffersen_ind(t)
    c_lr = k_lr + i_lr
    return BacktestStats(
        observations=n, exceedances=x, expected_rate=p,
        kupiec_lr=k_lr, kupiec_p=min(1.0, k_p),
        christoffersen_ind_lr=i_lr, christoffersen_ind_p=min(1.0, i_p),
        christoffersen_cc_lr=c_lr, christoffersen_cc_p=min(1.0, chi2_sf_2(c_lr)),
        zone=basel_zone(x, n, p),
    )


def backtest(hits: list[bool] | tuple[bool, ...], p: float) -> BacktestStats:
    """Coverage statistics of a whole sequence of hit indicators.

    >>> s = backtest([False] * 245 + [True] * 5, 0.01)
    >>> (s.exceedances, s.zone.value, s.christoffersen_ind_p < 0.05)
    (5, 'yellow', True)
    """
    return backtest_stats(len(hits), sum(hits), p, Transitions.of(hits))


class ExceedanceTracker:
    """Hit indicators of one VaR level, over a rolling window and since start, O(1) per
    update and bounded memory (the window).

    >>> tr = ExceedanceTracker(p=0.01, window=3)
    >>> for hit in [True, False, False, True]:
    ...     tr.update(hit)
    >>> (tr.rolling_counts(), tr.total_counts())
    ((3, 1), (4, 2))
    """

    def __init__(self, p: float, window: int) -> None:
        if not 0 < p < 1:
            raise ValueError(f"expected rate must be in (0, 1), got {p}")
        self.p = p
        self.window = window
        self._bits: deque[bool] = deque()
        self._roll = [0, 0, 0, 0]  # n00, n01, n10, n11 inside the window
        self._roll_hits = 0
        self._all = [0, 0, 0, 0]
        self._all_n = 0
        self._all_hits = 0
        self._last: bool | None = None

    def __getstate__(self) -> dict[str, object]:
        # The window as bytes: a deque of bools pickles item by item, and every snapshot of
        # an instrument or account carries one window per VaR method.
        return {**self.__dict__, "_bits": bytes(self._bits)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bits = deque(map(bool, state["_bits"]))

    def update(self, hit: bool) -> None:
        hit = bool(hit)
        if self._last is not None:
            self._all[2 * self._last + hit] += 1
            self._roll[2 * self._last + hit] += 1
        self._last = hit
        self._all_n += 1
        self._all_hits += hit
        self._bits.append(hit)
        self._roll_hits += hit
        if len(self._bits) > self.window:
            old = self._bits.popleft()
            self._roll_hits -= old
            # The pair (old, new first) leaves the window with it.
            self._roll[2 * old + self._bits[0]] -= 1

    def rolling_counts(self) -> tuple[int, int]:
        return len(self._bits), self._roll_hits

    def total_counts(self) -> tuple[int, int]:
        return self._all_n, self._all_hits

    def rolling_zone(self) -> Zone:
        n, x = self.rolling_counts()
        return basel_zone(x, n, self.p)

    def rolling(self) -> BacktestStats:
        n, x = self.rolling_counts()
        return backtest_stats(n, x, self.p, Transitions(*self._roll))

    def since_start(self) -> BacktestStats:
        return backtest_stats(self._all_n, self._all_hits, self.p, Transitions(*self._all))
