"""Input checking shared by the metric functions: every public function turns its arguments into plain
numpy arrays here and raises ``ValueError`` with a message that names the argument and the problem."""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np

#: The marker for "no answer" (refused, don't know, missing) in an answer matrix. Options are numbered
#: 1..K, so 0 is never an answer. Float matrices may use NaN instead; both mean the same.
MISSING: Final = 0

#: What to do with a question whose answers are all equal (zero variance) among the respondents used for
#: a correlation: ``"zero"`` sets its correlations with other questions to 0 and keeps 1 on the
#: diagonal; ``"nan"`` makes its row and column NaN (so a Frobenius norm over it is NaN); ``"raise"``
#: raises ``ValueError``.
ConstantPolicy = Literal["zero", "nan", "raise"]
CONSTANT_POLICIES: Final = ("zero", "nan", "raise")


def check_policy(constant: str) -> None:
    if constant not in CONSTANT_POLICIES:
        raise ValueError(
            f"constant must be one of {', '.join(map(repr, CONSTANT_POLICIES))}, not {constant!r}"
        )


def as_answers(answers: Any, name: str = "answers") -> np.ndarray:
    """An ``(n, q)`` int64 matrix of option positions, ``MISSING`` (0) for no answer. Integer input is
    taken as is; float input may mark missing answers with NaN and must otherwise hold whole numbers."""
    try:
        array = np.asarray(answers)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be a 2-D array of option positions: {exc}") from None
    if array.dtype == object:
        try:
            array = array.astype(float)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be numeric (option positions 1..K, {MISSING} or NaN for missing); "
                "convert pandas nullable columns with anthology.metrics.answers_from_frame"
            ) from None
    if array.ndim != 2:
        hint = " (one question: use answers.reshape(-1, 1))" if array.ndim == 1 else ""
        raise ValueError(
            f"{name} must be a 2-D array (respondents x questions), got shape {array.shape}{hint}"
        )
    if array.shape[1] == 0:
        raise ValueError(f"{name} has no questions (shape {array.shape})")
    if array.dtype.kind == "b" or array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer option positions, not {array.dtype} values")
    if array.dtype.kind == "f":
        missing = np.isnan(array)
        if np.isinf(array).any():
            raise ValueError(f"{name} holds infinite values; option positions are whole numbers 1..K")
        filled = np.where(missing, MISSING, array)
        if (filled != np.round(filled)).any():
            bad = filled[filled != np.round(filled)][0]
            raise ValueError(f"{name} holds {bad!r}, which is not a whole-number option position")
        array = filled
    out = array.astype(np.int64, copy=False)
    if out.size and out.min() < MISSING:
        raise ValueError(
            f"{name} holds {out.min()}: option positions are 1..K "
            f"and {MISSING} (or NaN) marks a missing answer"
        )
    return out


def as_n_options(n_options: Any, n_questions: int) -> np.ndarray:
    """The number of options K of each question, an int64 array of shape ``(q,)``; a scalar applies to
    every question."""
    array = np.asarray(n_options)
    if array.dtype.kind == "b" or array.dtype.kind not in "iuf":
        raise ValueError(f"n_options must be whole numbers, not {array.dtype}")
    if array.ndim == 0:
        array = np.full(n_questions, array)
    if array.ndim != 1 or array.shape[0] != n_questions:
        raise ValueError(
            f"n_options must be one number or one per question ({n_questions}), got shape {array.shape}"
        )
    if (array != np.round(array)).any() or (array < 2).any():
        raise ValueError(f"every question needs n_options >= 2 whole options, got {array.tolist()}")
    return array.astype(np.int64)


def check_range(answers: np.ndarray, n_options: np.ndarray, name: str = "answers") -> None:
    """Raise when a position exceeds its question's K."""
    over = answers > n_options
    if over.any():
        row, col = np.argwhere(over)[0]
        raise ValueError(
            f"{name}[{row}, {col}] = {answers[row, col]} lies outside 1..{n_options[col]} "
            f"(question {col} has {n_options[col]} options; use {MISSING} or NaN for a missing answer)"
        )


def as_weights(weights: Any, n: int, name: str = "weights") -> np.ndarray:
    """Float64 weights of shape ``(n,)``: finite and non-negative. ``None`` gives unit weights."""
    if weights is None:
        return np.ones(n)
    try:
        array = np.asarray(weights, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers") from None
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one per respondent, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (found NaN or infinity)")
    if (array < 0).any():
        raise ValueError(f"{name} must be non-negative (found {array.min()})")
    return array


def as_labels(labels: Any, n: int, name: str) -> np.ndarray:
    """A 1-D array of subgroup labels of length ``n``."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), one label per respondent, got {array.shape}")
    return array


def is_missing_label(label: Any) -> bool:
    """``None``, NaN and pandas' NA / NaT mean "no subgroup"."""
    if label is None:
        return True
    try:
        return bool(label != label)  # NaN, NaT
    except TypeError:  # pandas.NA refuses bool()
        return True


def same_questions(human: np.ndarray, persona: np.ndarray) -> None:
    if human.shape[1] != persona.shape[1]:
        raise ValueError(
            f"human_answers has {human.shape[1]} questions but persona_answers has {persona.shape[1]}; "
            "both must list the same questions in the same order"
        )
