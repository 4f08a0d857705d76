"""How many humans a panel is worth (anthology.metrics.worth): the curve against scipy by hand, random
panels of m humans worth about m, monotonicity, the grid's ends and the interpolation rule. Its place
in the evaluation table is tested in test_evaluate.py."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from anthology.metrics import (
    WorthCurve,
    compare,
    human_lower_bound,
    worth_curve,
    worth_n_humans,
    worth_sizes,
)

QUESTIONS, OPTIONS = 6, 4
CUTS = np.array([-0.8, 0.1, 0.9])


def population(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 6)`` four-point answers cut from one latent trait plus noise (correlated questions)."""
    score = 0.8 * rng.normal(size=(n, 1)) + rng.normal(size=(n, QUESTIONS))
    return 1 + (score[..., None] > CUTS).sum(axis=-1)


@pytest.fixture(scope="module")
def surveyed():
    """1,500 humans of the population and their curve (100 draws)."""
    rng = np.random.default_rng(7)
    humans = population(rng, 1500)
    return rng, humans, worth_curve(humans, OPTIONS, n_draws=100, seed=0)


def test_grid_is_geometric_up_to_the_number_of_humans():
    assert worth_sizes(2537).tolist() == [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 2537]
    assert worth_sizes(40).tolist() == [5, 10, 20, 40]
    assert worth_sizes(50).tolist() == [5, 10, 20, 50]
    assert worth_sizes(3).tolist() == [3]


def test_curve_matches_scipy_by_hand():
    """The documented draws redone by hand: per draw, a resample of the humans with their weights,
    and ``sizes[-1]`` humans drawn in proportion to weight (sorted uniforms against the cumulative
    weights), each in the panels from a size given in random order; scipy's WD per question over the
    answers given, averaged over the questions."""
    rng = np.random.default_rng(3)
    n, q, k, draws, seed = 30, 3, np.array([4, 5, 3]), 6, 11
    answers = np.column_stack([rng.integers(1, kk + 1, n) for kk in k])
    answers[rng.random((n, q)) < 0.15] = 0
    weights = rng.uniform(0.2, 3.0, n)
    curve = worth_curve(answers, k, weights, n_draws=draws, seed=seed)
    assert curve.sizes.tolist() == [5, 10, 20, 30]

    reference_seed, panel_seed = np.random.default_rng(seed).spawn(2)
    expected = np.empty((draws, len(curve.sizes)))
    for r, (ref_stream, panel_stream) in enumerate(
        zip(reference_seed.spawn(draws), panel_seed.spawn(draws), strict=True)
    ):
        reference = ref_stream.integers(0, n, size=n)
        cumulative = np.cumsum(weights)
        drawn = np.searchsorted(cumulative, np.sort(panel_stream.random(30)) * cumulative[-1], side="right")
        first = panel_stream.permutation([0] * 5 + [1] * 5 + [2] * 10 + [3] * 10)  # sizes 5, 10, 20, 30
        for s in range(len(curve.sizes)):
            members = drawn[first <= s]
            assert len(members) == curve.sizes[s]
            distances = []
            for j in range(q):
                ref = reference[answers[reference, j] > 0]
                panel = members[answers[members, j] > 0]
                if len(ref) and len(panel):
                    distances.append(
                        scipy.stats.wasserstein_distance(
                            answers[panel, j], answers[ref, j], v_weights=weights[ref]
                        )
                    )
            expected[r, s] = np.mean(distances)
    np.testing.assert_allclose(curve.wd_raw_per_draw, expected, atol=1e-12)
    np.testing.assert_allclose(curve.wd_raw, expected.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(curve.low, np.quantile(expected, 0.025, axis=0), atol=1e-12)
    np.testing.assert_allclose(curve.high, np.quantile(expected, 0.975, axis=0), atol=1e-12)
    again = worth_curve(answers, k, weights, n_draws=draws, seed=seed)
    np.testing.assert_array_equal(again.wd_raw_per_draw, curve.wd_raw_per_draw)
    other = worth_curve(answers, k, weights, n_draws=draws, seed=seed + 1)
    assert not np.array_equal(other.wd_raw_per_draw, curve.wd_raw_per_draw)


def test_a_panel_of_m_random_humans_is_worth_about_m(surveyed):
    """Panels of m new respondents from the humans' population (a perfect simulator with m
    personas), compared with the humans as a method's panel is, read as worth about m."""
    rng, humans, curve = surveyed
    for m in (20, 200):
        worths = [
            worth_n_humans(curve, compare(humans, population(rng, m), OPTIONS).wd_raw) for _ in range(15)
        ]
        estimates = np.array([w.estimate for w in worths])
        assert 0.75 * m < np.median(estimates) < 1.33 * m, (m, estimates)
        assert sum(w.low <= m <= w.high for w in worths) >= 13, m


def test_the_curve_falls_with_the_panel_size_and_worth_with_the_wd(surveyed):
    _, humans, curve = surveyed
    assert (np.diff(curve.wd_raw) < 0).all()
    assert (curve.low < curve.wd_raw).all() and (curve.wd_raw < curve.high).all()
    # WD falls about as 1/sqrt(m) until the humans' own noise (the resample of 1,500) flattens it.
    assert curve.wd_raw[0] / curve.wd_raw[2] == pytest.approx(2.0, rel=0.15)  # m = 5 against 20
    wds = np.linspace(curve.wd_raw[-1] * 1.01, curve.wd_raw[0] * 0.99, 25)
    worths = [worth_n_humans(curve, wd) for wd in wds]
    estimates = np.array([w.estimate for w in worths])
    assert (np.diff(estimates) < 0).all()
    assert all(w.low <= w.estimate <= w.high and not (w.below or w.above) for w in worths)
    # The split-half (two halves of n/2, noise 4/n) reads as about n/3 (noise 1/m + 1/n).
    split = human_lower_bound(humans, OPTIONS, n_splits=50, seed=0).wd_raw
    assert worth_n_humans(curve, split).estimate == pytest.approx(len(humans) / 3, rel=0.3)


def test_beyond_the_grid_is_its_end_with_a_flag(surveyed):
    _, humans, curve = surveyed
    worse = worth_n_humans(curve, curve.high[0] * 2)
    assert worse.below and not worse.above
    assert worse.estimate == worse.low == worse.high == 5
    better = worth_n_humans(curve, 0.0)
    assert better.above and not better.below
    assert better.estimate == better.low == better.high == len(humans)
    undefined = worth_n_humans(curve, float("nan"))
    assert np.isnan([undefined.estimate, undefined.low, undefined.high]).all()
    assert not (undefined.below or undefined.above)


def test_sizes_are_read_off_in_log_wd_against_log_size():
    """On a curve that is exactly c / sqrt(m), interpolating log WD in log m is exact between grid
    points; a non-increasing envelope is read where the curve rises."""
    sizes = np.array([5, 10, 20, 50, 100])
    exact = 1.3 / np.sqrt(sizes)
    curve = WorthCurve(sizes, exact, exact * 0.8, exact * 1.25, exact[None], 100, 1, 0.95)
    for m in (7.0, 33.0, 80.0):
        worth = worth_n_humans(curve, 1.3 / np.sqrt(m))
        assert worth.estimate == pytest.approx(m, rel=1e-12)
        # the band is the curve scaled: its edges cross where c * 0.8 / sqrt(low) = c / sqrt(m)
        assert worth.low == pytest.approx(max(0.64 * m, 5), rel=1e-12)
        assert worth.high == pytest.approx(min(1.5625 * m, 100), rel=1e-12)
    bumpy = WorthCurve(sizes, np.array([0.5, 0.3, 0.35, 0.2, 0.1]), exact, exact, exact[None], 100, 1, 0.95)
    assert worth_n_humans(bumpy, 0.32).estimate < 20  # the first crossing, between 5 and 10


def test_bad_arguments_are_value_errors():
    answers = np.ones((10, 2), dtype=int)
    with pytest.raises(ValueError, match="sizes must be increasing"):
        worth_curve(answers, 3, sizes=[10, 5])
    with pytest.raises(ValueError, match="sum to zero"):
        worth_curve(answers, 3, np.zeros(10))
    with pytest.raises(ValueError, match="n_draws"):
        worth_curve(answers, 3, n_draws=0)
