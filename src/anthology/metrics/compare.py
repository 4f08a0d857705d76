"""Comparing a persona panel with the human respondents: all the paper's metrics at once, per question
and per subgroup, and the individual-level agreement of matched pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anthology.metrics._engine import Panel, panel_metrics
from anthology.metrics._inputs import (
    MISSING,
    ConstantPolicy,
    as_answers,
    as_labels,
    as_n_options,
    as_weights,
    check_policy,
    check_range,
    is_missing_label,
    same_questions,
)
from anthology.metrics.basic import make_panel

#: The scalar metrics of a :class:`Comparison`, in table order.
SCALAR_METRICS = (
    "wd_raw",
    "wd_normalized",
    "frobenius",
    "alpha_personas",
    "alpha_personas_weighted",
    "alpha_humans",
    "alpha_humans_weighted",
)


@dataclass(frozen=True)
class Support:
    """What a panel's correlations and Cronbach's alpha rest on: the ``complete`` respondents (every
    question answered, positive weight) and the number of questions whose answers ``vary`` among
    them. A correlation needs two respondents and two varying questions; how many make it mean
    something is the evaluation's rule (:mod:`anthology.evaluation.sizes`)."""

    complete: int
    varying: int


@dataclass(frozen=True)
class Comparison:
    """Every metric of one persona panel against the humans.

    Attributes:
        n_options: ``(q,)`` K per question.
        n_humans, n_personas: respondents in each panel; ``n_*_complete``: of them, those who answered
            every question (the correlations and alphas use only these).
        human_distributions, persona_distributions: ``(q, max K)`` answer shares (humans weighted by
            their survey weights; personas by theirs if given, else equally).
        wd_per_question_raw, wd_per_question_normalized: ``(q,)`` Wasserstein distance per question on
            positions 1..K, raw and divided by K-1.
        wd_raw, wd_normalized: their mean over the questions where both sides have answers (the paper's
            WD is ``wd_raw`` on its own scale; OpinionQA's is ``wd_normalized``).
        human_correlation, persona_correlation: ``(q, q)`` Pearson matrices (humans weighted).
        frobenius: ``||human_correlation - persona_correlation||_F``.
        alpha_humans, alpha_personas: Cronbach's alpha, unweighted (pingouin's value);
        alpha_humans_weighted, alpha_personas_weighted: with the panels' weights (equal to the
            unweighted value when a panel has no weights).
        human_support, persona_support: what each panel's correlations and alphas rest on.
    """

    n_options: np.ndarray
    n_humans: int
    n_personas: int
    n_humans_complete: int
    n_personas_complete: int
    human_distributions: np.ndarray
    persona_distributions: np.ndarray
    wd_per_question_raw: np.ndarray
    wd_per_question_normalized: np.ndarray
    wd_raw: float
    wd_normalized: float
    human_correlation: np.ndarray
    persona_correlation: np.ndarray
    frobenius: float
    alpha_humans: float
    alpha_humans_weighted: float
    alpha_personas: float
    alpha_personas_weighted: float
    human_support: Support
    persona_support: Support

    def scalars(self) -> dict[str, float]:
        """The scalar metrics by name (:data:`SCALAR_METRICS`)."""
        return {name: getattr(self, name) for name in SCALAR_METRICS}


def prepare(
    human_answers: Any,
    persona_answers: Any,
    n_options: Any,
    human_weights: Any | None,
    persona_weights: Any | None,
) -> tuple[Panel, Panel]:
    """Validate both panels against each other and build their feature rows."""
    humans = make_panel(human_answers, n_options, human_weights, "human_answers", "human_weights")
    personas = make_panel(persona_answers, n_options, persona_weights, "persona_answers", "persona_weights")
    if humans.q != personas.q:
        raise ValueError(
            f"human_answers has {humans.q} questions but persona_answers has {personas.q}; "
            "both must list the same questions in the same order"
        )
    return humans, personas


def comparison_from_panels(humans: Panel, personas: Panel, constant: ConstantPolicy) -> Comparison:
    values = panel_metrics(humans, humans.total(), personas, personas.total(), constant, "")
    support = {
        f"{side}_support": Support(int(values.pop(f"{side}_complete")), int(values.pop(f"{side}_varying")))
        for side in ("human", "persona")
    }
    scalars = {k: float(v) for k, v in values.items() if np.ndim(v) == 0}
    arrays = {k: v for k, v in values.items() if np.ndim(v) > 0}
    return Comparison(
        n_options=humans.n_options,
        n_humans=humans.n,
        n_personas=personas.n,
        n_humans_complete=humans.n_complete,
        n_personas_complete=personas.n_complete,
        **arrays,
        **scalars,
        **support,
    )


def compare(
    human_answers: Any,
    persona_answers: Any,
    n_options: Any,
    *,
    human_weights: Any | None = None,
    persona_weights: Any | None = None,
    constant: ConstantPolicy = "zero",
) -> Comparison:
    """All the paper's metrics of a persona panel against the humans.

    Args:
        human_answers: ``(n_h, q)`` positions 1..K, ``MISSING`` (0) or NaN for no answer.
        persona_answers: ``(n_p, q)`` the personas' answers to the same questions.
        n_options: K per question (an int or ``(q,)``).
        human_weights: ``(n_h,)`` survey weights (``None``: equal).
        persona_weights: ``(n_p,)`` (``None``: equal, the paper's plain Pearson and counts).
        constant: how a question without variance enters the correlations (see
            :func:`anthology.metrics.weighted_pearson`).
    """
    check_policy(constant)
    humans, personas = prepare(human_answers, persona_answers, n_options, human_weights, persona_weights)
    return comparison_from_panels(humans, personas, constant)


def subgroup_breakdown(
    human_answers: Any,
    persona_answers: Any,
    n_options: Any,
    human_groups: Any,
    persona_groups: Any,
    *,
    human_weights: Any | None = None,
    persona_weights: Any | None = None,
    constant: ConstantPolicy = "zero",
) -> dict[Any, Comparison]:
    """:func:`compare` within each subgroup: the humans whose label is ``g`` against the personas whose
    label is ``g`` (for matched personas, usually the label of the human they were matched to).

    Args:
        human_groups: ``(n_h,)`` a label per human (e.g. age group); ``None``/NaN: in no subgroup.
        persona_groups: ``(n_p,)`` a label per persona.

    Returns:
        ``{label: Comparison}`` for every label present on either side, in sorted order where labels
        sort (first-seen order otherwise). A side with nobody in a subgroup gives NaN metrics there.
    """
    check_policy(constant)
    h = as_answers(human_answers, "human_answers")
    p = as_answers(persona_answers, "persona_answers")
    same_questions(h, p)
    k = as_n_options(n_options, h.shape[1])
    check_range(h, k, "human_answers")
    check_range(p, k, "persona_answers")
    hw = as_weights(human_weights, h.shape[0], "human_weights")
    pw = as_weights(persona_weights, p.shape[0], "persona_weights")
    hg = as_labels(human_groups, h.shape[0], "human_groups")
    pg = as_labels(persona_groups, p.shape[0], "persona_groups")
    labels: dict[Any, None] = {}
    for label in [*hg.tolist(), *pg.tolist()]:
        if not is_missing_label(label):
            labels.setdefault(label, None)
    try:
        ordered = sorted(labels)
    except TypeError:
        ordered = list(labels)
    index = {label: i for i, label in enumerate(ordered)}
    h_codes = _codes(hg, index)
    p_codes = _codes(pg, index)
    out: dict[Any, Comparison] = {}
    for i, label in enumerate(ordered):
        hm = h_codes == i
        pm = p_codes == i
        humans = Panel(h[hm], k, hw[hm], weighted=human_weights is not None)
        personas = Panel(p[pm], k, pw[pm], weighted=persona_weights is not None)
        out[label] = comparison_from_panels(humans, personas, constant)
    return out


def _codes(groups: np.ndarray, index: dict[Any, int]) -> np.ndarray:
    """The position of each label in ``index``; -1 for no subgroup."""
    return np.fromiter(
        (-1 if is_missing_label(g) else index[g] for g in groups.tolist()), dtype=np.int64, count=len(groups)
    )


@dataclass(frozen=True)
class Agreement:
    """How far each persona's answers agree with those of the human it was matched to.

    Over the (human, persona) pairs where both answered a question: ``exact_match_rate`` is the share of
    identical answers, ``mean_abs_distance`` the mean ``|human - persona|`` in option positions and
    ``mean_abs_distance_normalized`` the mean of ``|human - persona| / (K-1)``. The overall figures
    pool every answered (pair, question); ``per_question_*`` and ``n_pairs`` have shape ``(q,)``.
    With ``weights`` each pair counts with its human's weight.
    """

    exact_match_rate: float
    mean_abs_distance: float
    mean_abs_distance_normalized: float
    per_question_exact_match_rate: np.ndarray
    per_question_mean_abs_distance: np.ndarray
    per_question_mean_abs_distance_normalized: np.ndarray
    n_pairs: np.ndarray


def individual_agreement(
    human_answers: Any, persona_answers: Any, n_options: Any, *, weights: Any | None = None
) -> Agreement:
    """Agreement of aligned pairs: row ``i`` of ``persona_answers`` is the persona matched to human ``i``
    (both ``(n, q)``). ``weights``: optional ``(n,)`` pair weights (e.g. the humans' survey weights)."""
    h = as_answers(human_answers, "human_answers")
    p = as_answers(persona_answers, "persona_answers")
    same_questions(h, p)
    if h.shape[0] != p.shape[0]:
        raise ValueError(
            f"human_answers has {h.shape[0]} rows but persona_answers has {p.shape[0]}; "
            "individual agreement needs one matched persona per human, row by row"
        )
    k = as_n_options(n_options, h.shape[1])
    check_range(h, k, "human_answers")
    check_range(p, k, "persona_answers")
    w = as_weights(weights, h.shape[0])
    both = (h != MISSING) & (p != MISSING)
    pair_w = np.where(both, w[:, None], 0.0)
    distance = np.abs(h - p).astype(float)
    exact = (h == p).astype(float)
    scaled = distance / (k - 1)
    per_q = pair_w.sum(axis=0)
    total = per_q.sum()
    with np.errstate(invalid="ignore", divide="ignore"):

        def per_question(values: np.ndarray) -> np.ndarray:
            return np.where(per_q > 0, (pair_w * values).sum(axis=0) / per_q, np.nan)

        def overall(values: np.ndarray) -> float:
            return float((pair_w * values).sum() / total) if total > 0 else float("nan")

        return Agreement(
            exact_match_rate=overall(exact),
            mean_abs_distance=overall(distance),
            mean_abs_distance_normalized=overall(scaled),
            per_question_exact_match_rate=per_question(exact),
            per_question_mean_abs_distance=per_question(distance),
            per_question_mean_abs_distance_normalized=per_question(scaled),
            n_pairs=both.sum(axis=0),
        )
