"""VaR validation statistics: known values, incremental tracker against the batch formulas,
and properties (p-values in [0, 1], LR >= 0, zones monotone in the exception count)."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.var_backtest import (
    ExceedanceTracker,
    Transitions,
    backtest,
    basel_zone,
    binom_cdf,
    chi2_sf_1,
    chi2_sf_2,
    christoffersen_cc,
    christoffersen_ind,
    kupiec_pof,
    zone_thresholds,
)
from schemas.outputs import Zone

ZONE_RANK = {Zone.GREEN: 0, Zone.YELLOW: 1, Zone.RED: 2}


# Reference numbers computed once with scipy.stats (binom.logpmf, chi2.sf), which is not a
# runtime dependency.
def test_kupiec_known_values() -> None:
    lr, p = kupiec_pof(250, 8, 0.01)
    assert lr == pytest.approx(7.733550724494531, rel=1e-12)
    assert p == pytest.approx(0.005420405194127766, rel=1e-9)
    # Exactly the expected count: no evidence against the model.
    lr, p = kupiec_pof(1000, 10, 0.01)
    assert lr == pytest.approx(0.0, abs=1e-9) and p == pytest.approx(1.0)
    # Zero exceedances in 250 days at 99%: LR = -2 * 250 * ln(0.99).
    assert kupiec_pof(250, 0, 0.01)[0] == pytest.approx(-500 * math.log(0.99))


def test_christoffersen_known_values() -> None:
    t = Transitions(n00=240, n01=4, n10=3, n11=2)
    lr, p = christoffersen_ind(t)
    assert lr == pytest.approx(9.01139482512103, rel=1e-12)
    assert p == pytest.approx(0.002683015851066963, rel=1e-9)
    lr, p = christoffersen_cc(250, 5, 0.01, t)
    assert lr == pytest.approx(10.968204613351652, rel=1e-12)
    assert p == pytest.approx(0.004152260863584667, rel=1e-9)
    # Hits that never follow each other carry no evidence of clustering here.
    assert christoffersen_ind(Transitions(n00=0, n01=0, n10=0, n11=0)) == (0.0, 1.0)


def test_chi_square_closed_forms() -> None:
    assert chi2_sf_1(3.841458820694124) == pytest.approx(0.05, abs=1e-12)
    assert chi2_sf_1(6.634896601021214) == pytest.approx(0.01, abs=1e-12)
    assert chi2_sf_2(5.991464547107979) == pytest.approx(0.05, abs=1e-12)
    assert chi2_sf_1(0.0) == 1.0 and chi2_sf_2(0.0) == 1.0


def test_basel_table_for_250_days() -> None:
    assert [basel_zone(x, 250).value for x in range(12)] == (
        ["green"] * 5 + ["yellow"] * 5 + ["red"] * 2)
    assert binom_cdf(4, 250, 0.01) == pytest.approx(0.8921876269036251, rel=1e-10)
    assert binom_cdf(9, 250, 0.01) == pytest.approx(0.9997498099312595, rel=1e-10)


def test_zone_scales_with_window_and_level() -> None:
    assert zone_thresholds(500, 0.01) == (9, 15)
    assert zone_thresholds(1000, 0.01) == (15, 24)
    assert zone_thresholds(250, 0.05) == (18, 27)
    # A short window never turns yellow or red with no exception at all.
    for n in (1, 5, 20):
        assert basel_zone(0, n, 0.01) == Zone.GREEN


def test_batch_backtest_matches_parts() -> None:
    hits = [False] * 100 + [True, True] + [False] * 147 + [True]
    s = backtest(hits, 0.01)
    assert (s.observations, s.exceedances) == (250, 3)
    assert s.kupiec_lr == pytest.approx(kupiec_pof(250, 3, 0.01)[0])
    t = Transitions.of(hits)
    assert (t.n00, t.n01, t.n10, t.n11) == (245, 2, 1, 1)
    assert s.christoffersen_cc_lr == pytest.approx(s.kupiec_lr + s.christoffersen_ind_lr)
    assert s.zone == Zone.GREEN


@pytest.mark.parametrize("window", [1, 7, 250])
def test_tracker_matches_batch_on_window_and_since_start(window: int) -> None:
    rng = random.Random(7)
    tracker = ExceedanceTracker(p=0.05, window=window)
    hits: list[bool] = []
    for _ in range(600):
        # Clustered hits, so the transition counts are not trivial.
        hit = rng.random() < (0.4 if hits and hits[-1] else 0.05)
        hits.append(hit)
        tracker.update(hit)
        if len(hits) % 37 == 0:
            assert tracker.rolling() == backtest(hits[-window:], 0.05)
            assert tracker.since_start() == backtest(hits, 0.05)
    assert tracker.rolling_zone() == backtest(hits[-window:], 0.05).zone


@given(hits=st.lists(st.booleans(), max_size=60), cut=st.integers(0, 60),
       window=st.integers(1, 20))
def test_tracker_pickled_anywhere_continues_like_the_original(hits: list[bool], cut: int,
                                                              window: int) -> None:
    original = ExceedanceTracker(p=0.05, window=window)
    for hit in hits[:cut]:
        original.update(hit)
    data = pickle.dumps(original)
    assert isinstance(original.__getstate__()["_bits"], bytes)  # the compact window
    copy = pickle.loads(data)
    for hit in hits[cut:]:
        original.update(hit)
        copy.update(hit)
    assert copy.rolling() == original.rolling()
    assert copy.since_start() == original.since_start()
    assert pickle.dumps(copy) == pickle.dumps(original)


def test_rejects_impossible_inputs() -> None:
    with pytest.raises(ValueError):
        kupiec_pof(10, 11, 0.01)
    with pytest.raises(ValueError):
        kupiec_pof(10, 1, 0.0)
    with pytest.raises(ValueError):
        ExceedanceTracker(p=1.5, window=10)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 2000), frac=st.floats(0, 1), p=st.floats(0.001, 0.5))
def test_kupiec_properties(n: int, frac: float, p: float) -> None:
    x = round(n * frac)
    lr, pv = kupiec_pof(n, x, p)
    assert lr >= 0 and math.isfinite(lr)
    assert 0.0 <= pv <= 1.0


@settings(max_examples=300, deadline=None)
@given(hits=st.lists(st.booleans(), max_size=400), p=st.floats(0.001, 0.5))
def test_backtest_properties(hits: list[bool], p: float) -> None:
    s = backtest(hits, p)
    for lr in (s.kupiec_lr, s.christoffersen_ind_lr, s.christoffersen_cc_lr):
        assert lr >= 0 and math.isfinite(lr)
    for pv in (s.kupiec_p, s.christoffersen_ind_p, s.christoffersen_cc_p):
        assert 0.0 <= pv <= 1.0
    assert s.christoffersen_cc_lr >= s.kupiec_lr - 1e-12


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), p=st.sampled_from([0.01, 0.025, 0.05]))
def test_zone_monotone_in_exceptions(n: int, p: float) -> None:
    ranks = [ZONE_RANK[basel_zone(x, n, p)] for x in range(0, min(n, 80) + 1)]
    assert ranks == sorted(ranks)
    yellow, red = zone_thresholds(n, p)
    assert 1 <= yellow <= red


@settings(max_examples=100, deadline=None)
@given(x=st.integers(0, 30), p=st.sampled_from([0.01, 0.05]))
def test_zone_never_worse_with_more_observations(x: int, p: float) -> None:
    # The same number of exceptions over a longer history is less alarming.
    ranks = [ZONE_RANK[basel_zone(x, n, p)] for n in range(max(x, 1), 1500, 50)]
    assert ranks == sorted(ranks, reverse=True)
