"""When an evaluation's numbers mean something: the fewest complete respondents correlations (Fro.)
and Cronbach's alpha are read from (:data:`MIN_COMPLETE`), the rules that leave them undefined with a
reason instead (:func:`frobenius_note`, :func:`alpha_note`, :func:`split_note`), the number of humans
from which the split-half is read as a lower bound (:data:`RELIABLE_RESPONDENTS`,
:func:`lower_bound_label`), and the advice ``anthology run`` gives below it
(:func:`respondents_advice`), and why a panel's worth in humans is only a bound
(:func:`worth_note`). The reasons for the numbers are in docs/runs.md, "Reading the evaluation at
small sizes", and docs/worth-n-humans.md."""

from __future__ import annotations

import math

import numpy as np

from anthology.evaluation.names import LOWER_BOUND_LABEL
from anthology.metrics import LowerBound, Support, Worth

#: Complete respondents (every question answered) each side needs for its correlation matrix and its
#: alpha to be read: below ten, one correlation's standard error (about ``1/sqrt(n - 1)`` near zero)
#: is above 1/3, the size of the correlations between survey items, so the matrix is mostly noise.
MIN_COMPLETE = 10

#: Humans from which the split-half is read as a lower bound: from 400, a simulation a quarter of an
#: option position off the humans (the error of the paper's best methods, .227 to .313) comes out
#: below the split-half WD in 2% of samples; at 100 in 35%, at 8 in 87%
#: (``benchmarks/lower_bound_size.py``).
RELIABLE_RESPONDENTS = 400

ONE_QUESTION = "one question, so no correlation between questions"


def correlation_note(q: int, support: Support, who: str) -> str | None:
    """Why the correlations over one side's answers (``who``: "humans", "personas") are not read,
    ``None`` when they are: one question, fewer than :data:`MIN_COMPLETE` complete respondents, or
    fewer than two questions whose answers vary among them. A question that is constant on one side
    only still counts there as uncorrelated with every other (the metrics' ``constant="zero"``): the
    panel is charged for the correlations it misses, and every method's Fro. is over the same
    questions."""
    if q < 2:
        return ONE_QUESTION
    if support.complete < MIN_COMPLETE:
        return _too_few(who, support.complete)
    if support.varying < 2:
        return f"the {who}' answers vary on {support.varying} of {q} questions, and correlations need two"
    return None


def frobenius_note(q: int, humans: Support, personas: Support) -> str | None:
    """Why Fro. between the two sides is undefined (:func:`correlation_note` of either side, the
    humans' first), ``None`` when it is defined."""
    return correlation_note(q, humans, "humans") or correlation_note(q, personas, "personas")


def alpha_note(q: int, support: Support, who: str, value: float) -> str | None:
    """Why a side's Cronbach's alpha is undefined, ``None`` when it is defined: one question, fewer
    than :data:`MIN_COMPLETE` complete respondents, or (``value`` NaN) a total score without variance."""
    if q < 2:
        return "one question, and alpha needs two or more"
    if support.complete < MIN_COMPLETE:
        return _too_few(who, support.complete)
    if math.isnan(value):
        return f"the {who}' total score does not vary"
    return None


def split_note(q: int, lower: LowerBound) -> str | None:
    """Why the split-half Fro. is undefined, ``None`` when it is defined: both halves of every split
    must pass :func:`correlation_note` (so about ``2 * MIN_COMPLETE`` complete humans are needed)."""
    if q < 2:
        return ONE_QUESTION
    splits = lower.n_splits
    few = int((lower.complete_per_split.min(axis=1) < MIN_COMPLETE).sum())
    if few:
        return f"in {few} of {splits} splits a half has fewer than {MIN_COMPLETE} complete respondents"
    flat = int((lower.varying_per_split.min(axis=1) < 2).sum())
    if flat:
        return f"in {flat} of {splits} splits a half's answers vary on fewer than two questions"
    return None


def worth_note(worth: Worth, sizes: np.ndarray) -> str | None:
    """Why a panel's worth in humans is the end of the curve's grid rather than a reading of it
    (the panel's WD lies beyond the curve), ``None`` when it is read off the curve."""
    if worth.below:
        return f"its WD is above that of {sizes[0]:,} random respondents: worth {sizes[0]:,} or fewer"
    if worth.above:
        return (
            f"its WD is below that of {sizes[-1]:,} random respondents, the largest panel the humans "
            f"give: worth {sizes[-1]:,} or more"
        )
    return None


def is_reliable(humans: int) -> bool:
    """Whether the split-half of this many humans is read as a lower bound."""
    return humans >= RELIABLE_RESPONDENTS


def lower_bound_label(humans: float | None) -> str:
    """The lower-bound row's name: "Human lower bound" from :data:`RELIABLE_RESPONDENTS` humans (or
    when the count is unknown: files of older evaluations), else a split-half reference, noisy at n."""
    if humans is None or np.isnan(humans) or is_reliable(int(humans)):
        return LOWER_BOUND_LABEL
    return f"Split-half reference (noisy at n={int(humans):,})"


def respondents_advice(respondents: int, available: int) -> str | None:
    """What ``anthology run`` suggests when the study matches ``respondents`` humans of the
    ``available`` ones its survey has, fewer than :data:`RELIABLE_RESPONDENTS`; ``None`` from there."""
    if is_reliable(respondents):
        return None
    noisy = f"the human lower bound is noisy below {RELIABLE_RESPONDENTS:,} respondents"
    if is_reliable(available):
        return f"{noisy}: use --respondents {RELIABLE_RESPONDENTS} (the survey has {available:,})"
    if respondents < available:
        return f"{noisy}: use --respondents {available} (all the survey has); it stays noisy at that size"
    return f"{noisy}, and the survey has only {available:,}: read it as a noisy reference"


def _too_few(who: str, complete: int) -> str:
    return f"the {who} have {complete} complete respondents, fewer than {MIN_COMPLETE}"
