"""The evaluation metrics (anthology.metrics) against scipy, pingouin and hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from anthology.metrics import (
    MISSING,
    answer_distributions,
    answers_from_frame,
    bootstrap,
    compare,
    correlation_matrix,
    cronbach_alpha,
    cronbach_alpha_weighted,
    expected_distributions,
    frobenius_distance,
    human_lower_bound,
    individual_agreement,
    metrics_table,
    per_question_table,
    subgroup_breakdown,
    subgroup_table,
    wasserstein_distances,
    weighted_pearson,
)

pingouin = pytest.importorskip("pingouin")

SEEDS = [0, 1, 2, 3, 4]
TOL = 1e-9


def latent_answers(rng: np.random.Generator, n: int, n_options: np.ndarray, shift: float = 0.0, missing=0.05):
    """Correlated ordinal answers (one latent trait), with some answers MISSING."""
    q = len(n_options)
    score = rng.normal(size=(n, 1)) * rng.uniform(0.4, 1.0, size=(1, q)) + rng.normal(size=(n, q)) + shift
    answers = np.empty((n, q), dtype=np.int64)
    for j, k in enumerate(n_options):
        cuts = np.linspace(-1.2, 1.2, k - 1)
        answers[:, j] = 1 + (score[:, j, None] > cuts).sum(axis=1)
    answers[rng.random((n, q)) < missing] = MISSING
    return answers


def random_case(seed: int, n_humans: int = 300, n_personas: int = 200):
    rng = np.random.default_rng(seed)
    n_options = rng.integers(2, 8, size=rng.integers(2, 7))
    humans = latent_answers(rng, n_humans, n_options)
    personas = latent_answers(rng, n_personas, n_options, shift=0.4, missing=0.02)
    weights = rng.lognormal(sigma=0.7, size=n_humans)
    return n_options, humans, personas, weights


# -- distributions and Wasserstein ------------------------------------------------------------------------


def test_answer_distribution_by_hand():
    answers = np.array([[1], [2], [MISSING], [2]])
    dist = answer_distributions(answers, 3, weights=[1.0, 2.0, 5.0, 1.0])
    np.testing.assert_allclose(dist, [[0.25, 0.75, 0.0]])
    # NaN marks missing in float input; nobody answering gives a NaN row
    dist = answer_distributions(np.array([[np.nan, 1.0], [np.nan, 2.0]]), [3, 2])
    assert np.isnan(dist[0]).all()
    np.testing.assert_allclose(dist[1], [0.5, 0.5, 0.0])


def test_wasserstein_hand_case():
    result = wasserstein_distances([[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]], 3)
    assert result.per_question_raw[0] == pytest.approx(2.0)
    assert result.per_question_normalized[0] == pytest.approx(1.0)
    assert (result.mean_raw, result.mean_normalized) == pytest.approx((2.0, 1.0))
    # the same from individual answers
    c = compare(np.ones((5, 1), dtype=int), np.full((7, 1), 3), 3)
    assert (c.wd_raw, c.wd_normalized) == pytest.approx((2.0, 1.0))
    # [.5, .5, 0, 0] vs [0, 0, .5, .5] on K=4: every half unit of mass moves 2 positions
    result = wasserstein_distances([[0.5, 0.5, 0, 0]], [[0, 0, 0.5, 0.5]], 4)
    assert result.per_question_raw[0] == pytest.approx(2.0)
    assert result.per_question_normalized[0] == pytest.approx(2.0 / 3.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_wasserstein_matches_scipy(seed):
    n_options, humans, personas, weights = random_case(seed)
    persona_weights = np.random.default_rng(seed + 100).random(len(personas))
    for p_weights in (None, persona_weights):
        c = compare(humans, personas, n_options, human_weights=weights, persona_weights=p_weights)
        expected = []
        for j, k in enumerate(n_options):
            h = humans[:, j] != MISSING
            p = personas[:, j] != MISSING
            ref = wasserstein_distance(
                u_values=humans[h, j],
                v_values=personas[p, j],
                u_weights=weights[h],
                v_weights=None if p_weights is None else p_weights[p],
            )
            assert c.wd_per_question_raw[j] == pytest.approx(ref, abs=TOL)
            assert c.wd_per_question_normalized[j] == pytest.approx(ref / (k - 1), abs=TOL)
            expected.append(ref)
        assert c.wd_raw == pytest.approx(np.mean(expected), abs=TOL)
        assert c.wd_normalized == pytest.approx(np.mean(np.array(expected) / (n_options - 1)), abs=TOL)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_wasserstein_from_distributions_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n_options = np.array([3, 5, 7])
    p = np.zeros((3, 7))
    q = np.zeros((3, 7))
    for j, k in enumerate(n_options):
        p[j, :k] = rng.dirichlet(np.ones(k))
        q[j, :k] = rng.dirichlet(np.ones(k))
    result = wasserstein_distances(p, q, n_options)
    for j, k in enumerate(n_options):
        positions = np.arange(1, k + 1)
        ref = wasserstein_distance(positions, positions, u_weights=p[j, :k], v_weights=q[j, :k])
        assert result.per_question_raw[j] == pytest.approx(ref, abs=TOL)


def test_expected_distributions_average_member_distributions():
    probs = np.array(
        [
            [[0.2, 0.8, 0.0]],
            [[0.6, 0.2, 0.2]],
            [[np.nan, np.nan, np.nan]],  # no answer: left out
        ]
    )
    np.testing.assert_allclose(expected_distributions(probs, 3), [[0.4, 0.5, 0.1]])
    np.testing.assert_allclose(expected_distributions(probs, 3, weights=[3, 1, 9]), [[0.3, 0.65, 0.05]])
    with pytest.raises(ValueError, match="sum to 1"):
        expected_distributions(np.array([[[0.5, 0.1, 0.0]]]), 3)


# -- correlations ---------------------------------------------------------------------------------------


def test_weighted_pearson_by_hand():
    x = np.array([[1.0, 2.0, 5.0], [2.0, 1.0, 4.0], [3.0, 4.0, 1.0], [4.0, 3.0, 3.0], [5.0, 5.0, 2.0]])
    w = np.array([1.0, 2.0, 0.5, 3.0, 1.5])
    m = (w[:, None] * x).sum(axis=0) / w.sum()
    expected = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            cov = (w * (x[:, i] - m[i]) * (x[:, j] - m[j])).sum()
            var_i = (w * (x[:, i] - m[i]) ** 2).sum()
            var_j = (w * (x[:, j] - m[j]) ** 2).sum()
            expected[i, j] = cov / np.sqrt(var_i * var_j)
    np.testing.assert_allclose(weighted_pearson(x, w), expected, atol=TOL)
    # integer weights are frequency weights: same as repeating the rows
    counts = np.array([1, 3, 2, 1, 4])
    repeated = np.repeat(x, counts, axis=0)
    np.testing.assert_allclose(weighted_pearson(x, counts), np.corrcoef(repeated, rowvar=False), atol=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_correlation_matrix_matches_corrcoef_and_weighted_pearson(seed):
    n_options, humans, personas, weights = random_case(seed)
    complete = (humans != MISSING).all(axis=1)
    np.testing.assert_allclose(
        correlation_matrix(humans), np.corrcoef(humans[complete], rowvar=False), atol=TOL
    )
    np.testing.assert_allclose(
        weighted_pearson(humans[complete]), np.corrcoef(humans[complete], rowvar=False), atol=TOL
    )
    np.testing.assert_allclose(
        weighted_pearson(humans[complete], np.ones(complete.sum())),
        np.corrcoef(humans[complete], rowvar=False),
        atol=TOL,
    )
    np.testing.assert_allclose(
        correlation_matrix(humans, weights), weighted_pearson(humans[complete], weights[complete]), atol=TOL
    )
    c = compare(humans, personas, n_options, human_weights=weights)
    np.testing.assert_allclose(c.human_correlation, correlation_matrix(humans, weights), atol=TOL)
    p_complete = (personas != MISSING).all(axis=1)
    np.testing.assert_allclose(
        c.persona_correlation, np.corrcoef(personas[p_complete], rowvar=False), atol=TOL
    )
    expected = np.sqrt(((c.human_correlation - c.persona_correlation) ** 2).sum())
    assert c.frobenius == pytest.approx(expected, abs=TOL)
    assert frobenius_distance(c.human_correlation, c.persona_correlation) == pytest.approx(expected, abs=TOL)


def test_frobenius_by_hand():
    a = np.array([[1.0, 0.5], [0.5, 1.0]])
    b = np.array([[1.0, -0.5], [-0.5, 1.0]])
    assert frobenius_distance(a, b) == pytest.approx(np.sqrt(2.0))


def test_constant_column_policies():
    answers = np.array([[1, 3, 2], [2, 3, 1], [3, 3, 3], [4, 3, 3]])
    zero = correlation_matrix(answers)
    assert zero[1].tolist() == [0.0, 1.0, 0.0] and zero[:, 1].tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(
        zero[[0, 2]][:, [0, 2]], np.corrcoef(answers[:, [0, 2]], rowvar=False), atol=TOL
    )
    nan = correlation_matrix(answers, constant="nan")
    assert np.isnan(nan[1]).all() and np.isnan(nan[:, 1]).all()
    assert not np.isnan(nan[[0, 2]][:, [0, 2]]).any()
    with pytest.raises(ValueError, match=r"question\(s\) \[1\].*constant='zero'"):
        correlation_matrix(answers, constant="raise")
    # the comparison carries the policy through; NaN correlations give a NaN Frobenius norm
    varied = np.array([[1, 1, 2], [2, 3, 1], [3, 2, 3], [4, 1, 3]])
    assert np.isfinite(compare(varied, answers, 4).frobenius)
    assert np.isnan(compare(varied, answers, 4, constant="nan").frobenius)
    with pytest.raises(ValueError, match="persona answers"):
        compare(varied, answers, 4, constant="raise")
    # weighted: a column constant among the respondents with positive weight
    w = np.array([1.0, 1.0, 0.0, 0.0])
    assert correlation_matrix(np.array([[1, 2], [2, 2], [3, 1], [4, 4]]), w)[0, 1] == 0.0


def test_support_counts_complete_respondents_and_varying_questions():
    """What the correlations rest on: complete rows with positive weight, questions that vary there."""
    humans = np.array([[1, 2, 3], [2, 2, 1], [3, 2, MISSING], [4, 1, 2], [1, 3, 3]])
    weights = np.array([1.0, 1.0, 1.0, 1.0, 0.0])  # the last row counts for nothing
    personas = np.array([[2, 2, 2], [2, 1, 3], [2, 3, 1]])
    c = compare(humans, personas, 4, human_weights=weights)
    # humans: rows 0, 1, 3 complete with weight; question 2 varies (2, 2, 1), so all three vary
    assert (c.human_support.complete, c.human_support.varying) == (3, 3)
    assert (c.persona_support.complete, c.persona_support.varying) == (3, 2)  # question 0 is constant
    assert c.n_humans_complete == 4  # answered everything, whatever the weight
    alike = compare(humans, np.full((4, 3), 2), 4, human_weights=weights)
    assert alike.persona_support.varying == 0


def test_too_few_complete_respondents_gives_nan():
    answers = np.array([[1, 2], [MISSING, 1], [2, MISSING]])
    assert np.isnan(correlation_matrix(answers)).all()
    assert np.isnan(cronbach_alpha(answers))


# -- Cronbach's alpha -------------------------------------------------------------------------------------


def test_cronbach_alpha_hand_cases():
    # items variances 1 and 1, total [2, 5, 5] has variance 3: alpha = 2 * (1 - 2/3)
    assert cronbach_alpha(np.array([[1, 1], [2, 3], [3, 2]])) == pytest.approx(2 / 3, abs=TOL)
    # perfectly parallel items
    assert cronbach_alpha(np.array([[1, 2], [2, 3], [3, 4]])) == pytest.approx(1.0, abs=TOL)
    # a constant total score: undefined
    assert np.isnan(cronbach_alpha(np.array([[1, 3], [2, 2], [3, 1]])))


@pytest.mark.parametrize("seed", SEEDS)
def test_cronbach_alpha_matches_pingouin(seed):
    n_options, humans, personas, weights = random_case(seed)
    frame = pd.DataFrame(np.where(humans == MISSING, np.nan, humans))
    ref, _ = pingouin.cronbach_alpha(frame, nan_policy="listwise")
    assert cronbach_alpha(humans) == pytest.approx(ref, abs=TOL)
    c = compare(humans, personas, n_options, human_weights=weights)
    assert c.alpha_humans == pytest.approx(ref, abs=TOL)
    p_frame = pd.DataFrame(np.where(personas == MISSING, np.nan, personas))
    p_ref, _ = pingouin.cronbach_alpha(p_frame, nan_policy="listwise")
    assert c.alpha_personas == pytest.approx(p_ref, abs=TOL)
    assert c.alpha_personas_weighted == pytest.approx(p_ref, abs=TOL)
    # weighted: unit weights give the unweighted value, integer weights the value on repeated rows
    assert cronbach_alpha_weighted(humans, np.ones(len(humans))) == pytest.approx(ref, abs=TOL)
    counts = np.random.default_rng(seed).integers(1, 4, size=len(humans))
    repeated = pd.DataFrame(np.repeat(frame.to_numpy(), counts, axis=0))
    rep_ref, _ = pingouin.cronbach_alpha(repeated, nan_policy="listwise")
    assert cronbach_alpha_weighted(humans, counts) == pytest.approx(rep_ref, abs=TOL)
    assert c.alpha_humans_weighted == pytest.approx(cronbach_alpha_weighted(humans, weights), abs=TOL)


# -- the human lower bound ------------------------------------------------------------------------------


def test_lower_bound_equals_naive_splits_and_is_deterministic():
    n_options, humans, _, weights = random_case(7, n_humans=301)
    bound = human_lower_bound(humans, n_options, weights, n_splits=12, seed=5)
    streams = np.random.default_rng(5).spawn(12)
    wd, fro, complete = [], [], []
    for stream in streams:
        order = stream.permutation(len(humans))
        a, b = order[:150], order[150:]
        c = compare(humans[a], humans[b], n_options, human_weights=weights[a], persona_weights=weights[b])
        wd.append(c.wd_raw)
        fro.append(c.frobenius)
        complete.append([(humans[half] != MISSING).all(axis=1).sum() for half in (a, b)])
    np.testing.assert_allclose(bound.wd_raw_per_split, wd, atol=TOL)
    np.testing.assert_allclose(bound.frobenius_per_split, fro, atol=TOL)
    np.testing.assert_array_equal(bound.complete_per_split, complete)
    assert (bound.varying_per_split == len(n_options)).all()
    assert bound.wd_raw == pytest.approx(np.mean(wd), abs=TOL)
    assert bound.frobenius == pytest.approx(np.mean(fro), abs=TOL)
    assert bound.wd_normalized_per_split.shape == (12,)
    again = human_lower_bound(humans, n_options, weights, n_splits=12, seed=5)
    assert again.wd_raw == bound.wd_raw and again.frobenius == bound.frobenius
    other = human_lower_bound(humans, n_options, weights, n_splits=12, seed=6)
    assert other.wd_raw != bound.wd_raw


def test_lower_bound_is_small_for_a_huge_population():
    rng = np.random.default_rng(0)
    n_options = np.array([4, 5, 5])
    humans = latent_answers(rng, 100_000, n_options)
    bound = human_lower_bound(humans, n_options, rng.lognormal(size=100_000), n_splits=5, seed=0)
    assert bound.wd_raw < 0.03 and bound.wd_normalized < 0.01
    assert bound.frobenius < 0.05
    small = human_lower_bound(humans[:400], n_options, n_splits=5, seed=0)
    assert small.wd_raw > bound.wd_raw and small.frobenius > bound.frobenius


# -- bootstrap ------------------------------------------------------------------------------------------


def test_bootstrap_intervals():
    n_options, humans, personas, weights = random_case(3, n_humans=400, n_personas=300)
    ci = bootstrap(humans, personas, n_options, human_weights=weights, n_resamples=300, seed=11)
    point = compare(humans, personas, n_options, human_weights=weights)
    for name, value in point.scalars().items():
        interval = ci[name]
        assert interval.estimate == value
        assert interval.low <= value <= interval.high, name
        assert ci.replicates[name].shape == (300,)
    per_q = ci["wd_per_question_raw"]
    assert per_q.low.shape == (len(n_options),) and (per_q.low <= per_q.high).all()
    again = bootstrap(humans, personas, n_options, human_weights=weights, n_resamples=300, seed=11)
    assert again["frobenius"].low == ci["frobenius"].low
    np.testing.assert_array_equal(again.replicates["wd_raw"], ci.replicates["wd_raw"])
    other = bootstrap(humans, personas, n_options, human_weights=weights, n_resamples=300, seed=12)
    assert other["frobenius"].low != ci["frobenius"].low
    narrow = bootstrap(
        humans, personas, n_options, human_weights=weights, n_resamples=300, seed=11, confidence=0.5
    )
    assert ci["wd_raw"].low <= narrow["wd_raw"].low <= narrow["wd_raw"].high <= ci["wd_raw"].high


def test_bootstrap_replicates_equal_metrics_on_resampled_rows():
    n_options, humans, personas, weights = random_case(4, n_humans=120, n_personas=90)
    ci = bootstrap(humans, personas, n_options, human_weights=weights, n_resamples=3, seed=2)
    human_root, persona_root = np.random.default_rng(2).spawn(2)
    for r, (hs, ps) in enumerate(zip(human_root.spawn(3), persona_root.spawn(3), strict=True)):
        h = hs.integers(0, len(humans), size=len(humans))
        p = ps.integers(0, len(personas), size=len(personas))
        c = compare(humans[h], personas[p], n_options, human_weights=weights[h])
        for name, value in c.scalars().items():
            assert ci.replicates[name][r] == pytest.approx(value, abs=TOL), name


# -- breakdowns and individual agreement --------------------------------------------------------------------


def test_subgroup_breakdown_equals_metrics_on_subsets():
    n_options, humans, personas, weights = random_case(5)
    rng = np.random.default_rng(0)
    h_groups = rng.choice(np.array(["18-29", "30-49", "50-64"], dtype=object), size=len(humans))
    p_groups = rng.choice(np.array(["18-29", "30-49", "50-64"], dtype=object), size=len(personas))
    h_groups[:5] = None  # refused: in no subgroup
    breakdown = subgroup_breakdown(humans, personas, n_options, h_groups, p_groups, human_weights=weights)
    assert list(breakdown) == ["18-29", "30-49", "50-64"]
    for label, result in breakdown.items():
        h = h_groups == label
        p = p_groups == label
        direct = compare(humans[h], personas[p], n_options, human_weights=weights[h])
        assert result.n_humans == h.sum() and result.n_personas == p.sum()
        for name, value in direct.scalars().items():
            assert getattr(result, name) == pytest.approx(value, abs=TOL, nan_ok=True), name
        np.testing.assert_allclose(result.wd_per_question_raw, direct.wd_per_question_raw, atol=TOL)
    table = subgroup_table(breakdown, group="age")
    assert table.shape[0] == 3 and table.columns[0] == "age"


def test_subgroup_missing_on_one_side_is_nan():
    humans = np.array([[1, 2], [2, 1], [3, 3]])
    result = subgroup_breakdown(humans, humans, 3, ["a", "a", "b"], ["a", "a", "a"])
    assert result["b"].n_personas == 0 and np.isnan(result["b"].wd_raw)


def test_individual_agreement_by_hand():
    humans = np.array([[1, 2, 5], [3, MISSING, 1], [2, 2, 2]])
    personas = np.array([[1, 4, 5], [1, 3, 1], [2, 2, MISSING]])
    result = individual_agreement(humans, personas, [3, 4, 5])
    np.testing.assert_array_equal(result.n_pairs, [3, 2, 2])
    np.testing.assert_allclose(result.per_question_exact_match_rate, [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(result.per_question_mean_abs_distance, [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(result.per_question_mean_abs_distance_normalized, [1 / 3, 1 / 3, 0.0])
    assert result.exact_match_rate == pytest.approx(5 / 7)
    assert result.mean_abs_distance == pytest.approx(4 / 7)
    assert result.mean_abs_distance_normalized == pytest.approx((1 + 2 / 3) / 7)
    weighted = individual_agreement(humans, personas, [3, 4, 5], weights=[1.0, 0.0, 1.0])
    assert weighted.exact_match_rate == pytest.approx(4 / 5)


# -- pandas helpers ------------------------------------------------------------------------------------------


def test_frames():
    frame = pd.DataFrame(
        {"q1": pd.array([1, None, 3], dtype="Int64"), "q2": pd.array([2, 2, None], dtype="Int64")}
    )
    answers = answers_from_frame(frame)
    np.testing.assert_array_equal(answers, [[1, 2], [MISSING, 2], [3, MISSING]])
    np.testing.assert_array_equal(answers_from_frame(frame, ["q2"]), [[2], [2], [MISSING]])
    n_options, humans, personas, weights = random_case(1)
    c = compare(humans, personas, n_options, human_weights=weights)
    ci = bootstrap(humans, personas, n_options, human_weights=weights, n_resamples=20)
    table = metrics_table(c, ci)
    assert list(table.columns) == ["metric", "value", "ci_low", "ci_high"]
    assert table.set_index("metric").loc["frobenius", "value"] == c.frobenius
    bound = human_lower_bound(humans, n_options, weights, n_splits=4)
    assert metrics_table(bound)["metric"].tolist() == ["wd_raw", "wd_normalized", "frobenius"]
    ids = [f"Q{j}" for j in range(len(n_options))]
    per_q = per_question_table(c, ids, ci, bound)
    assert per_q["question_id"].tolist() == ids
    assert {"wd_raw_ci_low", "lower_bound_wd_normalized"} <= set(per_q.columns)


# -- bad input -----------------------------------------------------------------------------------------------

GOOD = np.array([[1, 2], [2, 1], [3, 3]])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: compare(np.array([1, 2, 3]), GOOD, 3), r"2-D array.*reshape\(-1, 1\)"),
        (lambda: compare(GOOD, GOOD[:, :1], 3), "human_answers has 2 questions but persona_answers has 1"),
        (lambda: compare(GOOD, GOOD, 2), r"human_answers\[2, 0\] = 3 lies outside 1..2"),
        (lambda: compare(GOOD, np.array([[4, 1]]), [3, 3]), r"persona_answers\[0, 0\] = 4"),
        (lambda: compare(GOOD, -GOOD, 3), "option positions are 1..K"),
        (lambda: compare(GOOD + 0.5, GOOD, 3), "not a whole-number option position"),
        (lambda: compare(GOOD.astype(bool), GOOD, 3), "integer option positions"),
        (lambda: compare(np.array([["a", "b"]]), GOOD, 3), "integer option positions"),
        (lambda: compare(GOOD, GOOD, [3, 3, 3]), r"n_options must be one number or one per question \(2\)"),
        (lambda: compare(GOOD, GOOD, 1), "n_options >= 2"),
        (lambda: compare(GOOD, GOOD, 3, human_weights=[1, 2]), r"human_weights must have shape \(3,\)"),
        (lambda: compare(GOOD, GOOD, 3, human_weights=[1, -1, 2]), "non-negative"),
        (lambda: compare(GOOD, GOOD, 3, persona_weights=[1, np.nan, 2]), "persona_weights must be finite"),
        (lambda: compare(GOOD, GOOD, 3, constant="drop"), "constant must be one of"),
        (lambda: cronbach_alpha(GOOD[:, :1]), "at least two questions"),
        (lambda: cronbach_alpha_weighted(GOOD, None), "needs weights"),
        (lambda: weighted_pearson(np.array([[1.0, np.nan], [2.0, 1.0]])), "drop rows with missing values"),
        (lambda: frobenius_distance(np.eye(2), np.eye(3)), "same shape"),
        (
            lambda: wasserstein_distances([[0.5, 0.5, 0.0]], [[0.0, 0.5, 0.5]], 2),
            "beyond a question's n_options",
        ),
        (lambda: human_lower_bound(GOOD[:1], 3), "at least two humans"),
        (lambda: human_lower_bound(GOOD, 3, n_splits=0), "n_splits must be a positive integer"),
        (lambda: bootstrap(GOOD, GOOD, 3, n_resamples=0), "n_resamples must be a positive integer"),
        (lambda: bootstrap(GOOD, GOOD, 3, confidence=1.0), "confidence must lie strictly between 0 and 1"),
        (lambda: bootstrap(GOOD, GOOD[:0], 3), "persona_answers has no respondents"),
        (
            lambda: subgroup_breakdown(GOOD, GOOD, 3, ["a"], ["a", "b", "c"]),
            r"human_groups must have shape \(3,\)",
        ),
        (lambda: individual_agreement(GOOD, GOOD[:2], 3), "one matched persona per human"),
    ],
)
def test_bad_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
