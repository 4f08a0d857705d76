"""Test-retest: how one panel's answers to a question change when it is asked again in a later wave.

For a question and its repeat, answered by the same panel (``first`` and ``second``: ``(n,)`` positions
1..K, ``MISSING`` (0) or NaN for no answer, row ``i`` the same member in both):

* persona-level stability (:func:`stability`) over the members who answered both: exact agreement
  (the share who gave the same option), mean ordinal distance (``|position difference| / (K-1)``, in
  [0, 1]) and the Pearson correlation of the positions, each member counting with its weight. The
  correlation is NaN, with a note, when fewer than two members answered both or when either wave's
  answers are constant among them.
* pool-level change (:func:`pool_change`): the Wasserstein distance between the panel's answer
  distribution in the first wave and in the second (every member who answered that wave), raw (in
  [0, K-1]) and normalized by K-1, as the paper's WD against the humans is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anthology.metrics._inputs import as_answers, as_weights, check_range
from anthology.metrics.basic import answer_distributions, wasserstein_distances, weighted_pearson
from anthology.metrics.compare import individual_agreement


@dataclass(frozen=True)
class Stability:
    """Persona-level stability of a question and its repeat (see the module docstring); ``note``
    says why a value is NaN, ``None`` when all are defined."""

    n_pairs: int
    exact_agreement: float
    mean_ordinal_distance: float
    correlation: float
    note: str | None


@dataclass(frozen=True)
class Change:
    """The Wasserstein distance between a panel's two waves' answer distributions of a question."""

    wd_raw: float
    wd_normalized: float


def _pair(first: Any, second: Any, n_options: int, weights: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """The two waves as one ``(n, 2)`` answer matrix (missing as 0), checked, and the weights."""
    answers = as_answers(np.column_stack([np.asarray(first, float), np.asarray(second, float)]), "answers")
    check_range(answers, np.array([n_options, n_options]), "answers")
    return answers, as_weights(weights, answers.shape[0])


def stability(first: Any, second: Any, n_options: int, weights: Any | None = None) -> Stability:
    """Exact agreement, mean ordinal distance and correlation of the members who answered both."""
    answers, w = _pair(first, second, n_options, weights)
    agreement = individual_agreement(answers[:, :1], answers[:, 1:], [n_options], weights=w)
    both = (answers != 0).all(axis=1) & (w > 0)
    n_pairs = int(both.sum())
    note = None
    correlation = float("nan")
    if n_pairs < 2:
        note = "fewer than two members answered both" if n_pairs else "no member answered both"
    else:
        pairs = answers[both].astype(float)
        waves = zip(("first", "second"), pairs.T, strict=True)
        constant = [wave for wave, column in waves if np.ptp(column) == 0]
        if constant:
            note = f"correlation undefined: the answers of the {' and '.join(constant)} wave are constant"
        else:
            correlation = float(weighted_pearson(pairs, w[both], constant="nan")[0, 1])
    return Stability(
        n_pairs=n_pairs,
        exact_agreement=agreement.exact_match_rate,
        mean_ordinal_distance=agreement.mean_abs_distance_normalized,
        correlation=correlation,
        note=note,
    )


def pool_change(first: Any, second: Any, n_options: int, weights: Any | None = None) -> Change:
    """WD between the first and the second wave's answer distributions (NaN when a wave has none)."""
    answers, w = _pair(first, second, n_options, weights)
    shares = answer_distributions(answers, [n_options, n_options], w)
    distance = wasserstein_distances(shares[:1], shares[1:], [n_options])
    return Change(float(distance.per_question_raw[0]), float(distance.per_question_normalized[0]))
