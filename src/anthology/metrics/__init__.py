"""The paper's evaluation metrics as pure, vectorised numpy functions.

Inputs are plain arrays: answers ``(respondents, questions)`` holding option positions 1..K (``MISSING``
= 0, or NaN, for no answer), weights ``(respondents,)``, and K per question. See
:mod:`anthology.metrics.basic` for the conventions, :func:`compare` for all metrics of a persona panel
against the humans, :func:`human_lower_bound` and :func:`bootstrap` for the lower bound and confidence
intervals, :func:`worth_curve` and :func:`worth_n_humans` for how many humans a panel is worth, and
:mod:`anthology.metrics.frames` for pandas helpers.

    from anthology.metrics import bootstrap, compare, human_lower_bound, worth_curve, worth_n_humans

    result = compare(human_answers, persona_answers, n_options, human_weights=weights)
    result.wd_raw, result.wd_normalized, result.frobenius, result.alpha_personas
    floor = human_lower_bound(human_answers, n_options, weights, n_splits=100, seed=0)
    ci = bootstrap(human_answers, persona_answers, n_options, human_weights=weights, seed=0)
    ci["frobenius"].low, ci["frobenius"].high
    curve = worth_curve(human_answers, n_options, weights, n_draws=100, seed=0)
    worth = worth_n_humans(curve, result.wd_raw)   # worth.estimate, worth.low, worth.high
"""

from anthology.metrics._inputs import MISSING, ConstantPolicy
from anthology.metrics.basic import (
    WassersteinDistances,
    answer_distributions,
    correlation_matrix,
    cronbach_alpha,
    cronbach_alpha_weighted,
    expected_distributions,
    frobenius_distance,
    wasserstein_distances,
    weighted_pearson,
)
from anthology.metrics.compare import (
    SCALAR_METRICS,
    Agreement,
    Comparison,
    Support,
    compare,
    individual_agreement,
    subgroup_breakdown,
)
from anthology.metrics.frames import (
    answers_from_frame,
    metrics_table,
    per_question_table,
    subgroup_table,
)
from anthology.metrics.resampling import (
    BOOTSTRAP_METRICS,
    Bootstrap,
    Interval,
    LowerBound,
    bootstrap,
    human_lower_bound,
)
from anthology.metrics.worth import Worth, WorthCurve, worth_curve, worth_n_humans, worth_sizes

__all__ = [
    "BOOTSTRAP_METRICS",
    "MISSING",
    "SCALAR_METRICS",
    "Agreement",
    "Bootstrap",
    "Comparison",
    "ConstantPolicy",
    "Interval",
    "LowerBound",
    "Support",
    "WassersteinDistances",
    "Worth",
    "WorthCurve",
    "answer_distributions",
    "answers_from_frame",
    "bootstrap",
    "compare",
    "correlation_matrix",
    "cronbach_alpha",
    "cronbach_alpha_weighted",
    "expected_distributions",
    "frobenius_distance",
    "human_lower_bound",
    "individual_agreement",
    "metrics_table",
    "per_question_table",
    "subgroup_breakdown",
    "subgroup_table",
    "wasserstein_distances",
    "weighted_pearson",
    "worth_curve",
    "worth_n_humans",
    "worth_sizes",
]
