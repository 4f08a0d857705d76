"""The building blocks: answer distributions, Wasserstein distances, correlation matrices, the Frobenius
norm and Cronbach's alpha, each on plain numpy arrays.

Conventions (shared by the whole package):

* ``answers``: an ``(n, q)`` array, one row per respondent and one column per question, holding the
  option's position 1..K in the question's canonical order, or ``MISSING`` (0) / NaN for refused,
  don't know and missing.
* ``n_options``: the number of options K of each question, one int or an ``(q,)`` array.
* ``weights``: an ``(n,)`` array of non-negative survey weights; ``None`` means every respondent counts 1.
* A statistic that the data cannot define (nobody answered, fewer than two complete respondents, no
  variance) is NaN, never an error; errors are for malformed input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anthology.metrics._engine import (
    CONSTANT_TOLERANCE,
    Panel,
    correlation_from_moments,
    mean_defined,
    wasserstein_raw,
)
from anthology.metrics._inputs import (
    ConstantPolicy,
    as_answers,
    as_n_options,
    as_weights,
    check_policy,
    check_range,
)


def make_panel(
    answers: Any,
    n_options: Any | None,
    weights: Any | None,
    name: str = "answers",
    weights_name: str = "weights",
) -> Panel:
    """Validate one panel's arrays and build its feature rows. Without ``n_options`` K is taken as the
    largest position seen in each question (enough for correlations and alpha)."""
    matrix = as_answers(answers, name)
    n, q = matrix.shape
    if n_options is None:
        k = np.maximum(matrix.max(axis=0, initial=0), 2) if n else np.full(q, 2)
    else:
        k = as_n_options(n_options, q)
        check_range(matrix, k, name)
    w = as_weights(weights, n, weights_name)
    return Panel(matrix, k, w, weighted=weights is not None)


# -- distributions and the Wasserstein distance ---------------------------------------------------------


def answer_distributions(answers: Any, n_options: Any, weights: Any | None = None) -> np.ndarray:
    """Weighted answer distribution of each question.

    Each respondent counts with their weight; missing answers are left out and the rest renormalised.

    Returns:
        ``(q, max K)`` float array: row ``j`` holds the shares of positions 1..K_j (summing to 1) and
        zeros beyond K_j; a row of NaN where nobody with positive weight answered question ``j``.
    """
    panel = make_panel(answers, n_options, weights)
    return panel.distributions(panel.total())


def expected_distributions(probabilities: Any, n_options: Any, weights: Any | None = None) -> np.ndarray:
    """A panel's distribution from each member's own answer distribution (e.g. the exact expected
    distribution that option scoring gives, instead of one sampled answer).

    Args:
        probabilities: ``(n, q, K')`` array with ``K' >= max K``: member ``i``'s probability of each
            position of question ``j``, summing to 1 (within 1e-6; renormalised) and zero beyond K_j. A
            member without an answer to a question has an all-NaN row there and is left out of it.
        n_options: K per question.
        weights: ``(n,)`` member weights, ``None`` for equal weights.

    Returns:
        ``(q, max K)`` weighted mean distribution, like :func:`answer_distributions`.
    """
    array = np.asarray(probabilities, dtype=float)
    if array.ndim != 3:
        raise ValueError(f"probabilities must have shape (members, questions, options), got {array.shape}")
    n, q, width = array.shape
    k = as_n_options(n_options, q)
    if width < k.max():
        raise ValueError(f"probabilities has {width} option columns but a question has {k.max()} options")
    w = as_weights(weights, n)
    missing = np.isnan(array).all(axis=2)
    if np.isnan(array[~missing]).any() or np.isinf(array).any():
        raise ValueError("probabilities must be finite; mark a missing answer with an all-NaN row")
    filled = np.where(missing[:, :, None], 0.0, array)
    if (filled < 0).any():
        raise ValueError("probabilities must be non-negative")
    beyond = np.arange(filled.shape[2])[None, None, :] >= k[None, :, None]
    if (filled * beyond).any():
        raise ValueError("probabilities put mass beyond a question's n_options")
    sums = filled.sum(axis=2)
    if (np.abs(sums[~missing] - 1.0) > 1e-6).any():
        raise ValueError("each member's probabilities must sum to 1 per question (within 1e-6)")
    filled = filled / np.where(missing, 1.0, sums)[:, :, None]
    totals = np.einsum("i,ijk->jk", w, filled)[:, : int(k.max())]
    mass = totals.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, totals / mass, np.nan)


@dataclass(frozen=True)
class WassersteinDistances:
    """Wasserstein distances between two sets of per-question distributions on positions 1..K.

    ``*_raw`` is ``scipy.stats.wasserstein_distance`` on the positions (the L1 distance between the
    CDFs, spacing 1), in [0, K-1]; ``*_normalized`` divides by K-1 (OpinionQA's form), in [0, 1].
    ``per_question_*`` have shape ``(q,)`` (NaN where either side has no answers); ``mean_*`` average
    over the questions where the distance is defined.
    """

    per_question_raw: np.ndarray
    per_question_normalized: np.ndarray
    mean_raw: float
    mean_normalized: float


def wasserstein_distances(p: Any, q: Any, n_options: Any) -> WassersteinDistances:
    """Wasserstein distances between ``p`` and ``q``, both ``(questions, options)`` distributions as
    :func:`answer_distributions` returns them (zeros beyond each question's K; rows are renormalised)."""
    a = np.asarray(p, dtype=float)
    b = np.asarray(q, dtype=float)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"p and q must be 2-D (questions, options) of the same shape, got {a.shape} and {b.shape}"
        )
    k = as_n_options(n_options, a.shape[0])
    if a.shape[1] < k.max():
        raise ValueError(
            f"distributions have {a.shape[1]} option columns but a question has {k.max()} options"
        )
    for name, dist in (("p", a), ("q", b)):
        ok = ~np.isnan(dist).any(axis=1)
        beyond = np.arange(dist.shape[1])[None, :] >= k[:, None]
        if (dist[ok] < 0).any() or np.isinf(dist).any():
            raise ValueError(f"{name} must hold non-negative finite shares")
        if (dist[ok] * beyond[ok]).any():
            raise ValueError(f"{name} puts mass beyond a question's n_options")
        if (dist[ok].sum(axis=1) <= 0).any():
            raise ValueError(f"{name} has a question with zero total mass (use a NaN row for no answers)")
    a = a / a.sum(axis=1, keepdims=True)
    b = b / b.sum(axis=1, keepdims=True)
    raw = wasserstein_raw(a, b)
    normalized = raw / (k - 1)
    return WassersteinDistances(raw, normalized, float(mean_defined(raw)), float(mean_defined(normalized)))


# -- correlations ------------------------------------------------------------------------------------


def weighted_pearson(x: Any, weights: Any | None = None, *, constant: ConstantPolicy = "zero") -> np.ndarray:
    """Weighted Pearson correlation matrix of the columns of ``x``.

    ``corr_w(a, b) = cov_w(a, b) / sqrt(cov_w(a, a) cov_w(b, b))`` with
    ``cov_w(a, b) = sum_i w_i (a_i - m_a)(b_i - m_b) / sum_i w_i`` and ``m_a`` the weighted mean; with
    unit weights this is ``np.corrcoef(x, rowvar=False)``.

    Args:
        x: ``(n, q)`` finite numbers (no missing values: drop those rows first).
        weights: ``(n,)`` non-negative weights, ``None`` for plain Pearson.
        constant: a column with zero (weighted) variance has no correlation: ``"zero"`` reports 0 with
            the other columns (1 on the diagonal), ``"nan"`` a NaN row and column, ``"raise"`` raises.

    Returns:
        ``(q, q)`` symmetric matrix; all NaN with fewer than two rows of positive weight.
    """
    check_policy(constant)
    array = np.asarray(x, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"x must be 2-D (rows x columns), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("x must be finite: drop rows with missing values first")
    w = as_weights(weights, array.shape[0])
    total = w.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = w @ array / total
        centred = array - mean
        cov = (centred * w[:, None]).T @ centred / total
    second = cov + np.outer(mean, mean)
    return correlation_from_moments(cov, second, np.asarray((w > 0).sum()), constant, "x")


def correlation_matrix(
    answers: Any,
    weights: Any | None = None,
    *,
    n_options: Any | None = None,
    constant: ConstantPolicy = "zero",
) -> np.ndarray:
    """The ``(q, q)`` correlation matrix of the questions over the respondents who answered all of them
    (listwise deletion): weighted Pearson with ``weights`` (humans), plain Pearson without (personas).
    ``n_options`` only checks the positions' range. See :func:`weighted_pearson` for ``constant``."""
    check_policy(constant)
    panel = make_panel(answers, n_options, weights)
    return panel.correlation(panel.total(), constant, "answers")


def frobenius_distance(a: Any, b: Any) -> float:
    """``||a - b||_F``: the square root of the summed squared differences of two ``(q, q)`` matrices.
    NaN entries (undefined correlations) make the result NaN."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] != x.shape[1]:
        raise ValueError(f"a and b must be square matrices of the same shape, got {x.shape} and {y.shape}")
    return float(np.sqrt(((x - y) ** 2).sum()))


# -- Cronbach's alpha ---------------------------------------------------------------------------------


def cronbach_alpha(answers: Any, *, n_options: Any | None = None) -> float:
    """Cronbach's alpha of the questions as items, as ``pingouin.cronbach_alpha(df,
    nan_policy="listwise")`` computes it: respondents with any missing answer are dropped, then
    ``k/(k-1) * (1 - sum of item variances / variance of the total score)`` with ddof=1 variances.

    NaN with fewer than two complete respondents or a constant total score. Needs ``q >= 2``.
    """
    panel = _alpha_panel(answers, n_options, None)
    return float(panel.alpha(panel.total(), weighted=False))


def cronbach_alpha_weighted(answers: Any, weights: Any, *, n_options: Any | None = None) -> float:
    """Cronbach's alpha with weighted item and total-score variances (``sum w (x - m_w)^2 / sum w``;
    the normalisation cancels in alpha), over complete respondents. With unit weights it equals
    :func:`cronbach_alpha`."""
    if weights is None:
        raise ValueError("cronbach_alpha_weighted needs weights; use cronbach_alpha for the unweighted form")
    panel = _alpha_panel(answers, n_options, weights)
    return float(panel.alpha(panel.total(), weighted=True))


def _alpha_panel(answers: Any, n_options: Any | None, weights: Any | None) -> Panel:
    panel = make_panel(answers, n_options, weights)
    if panel.q < 2:
        raise ValueError(f"Cronbach's alpha needs at least two questions (items), got {panel.q}")
    return panel


__all__ = [
    "CONSTANT_TOLERANCE",
    "WassersteinDistances",
    "answer_distributions",
    "correlation_matrix",
    "cronbach_alpha",
    "cronbach_alpha_weighted",
    "expected_distributions",
    "frobenius_distance",
    "wasserstein_distances",
    "weighted_pearson",
]
