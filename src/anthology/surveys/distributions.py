"""Weighted human answer distributions, per question and per subgroup (pure functions).

As the method prescribes: each respondent counts with their survey weight, refused / don't know /
missing answers are left out, and the rest is renormalised to sum to 1 over the option positions 1..K.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from anthology.errors import ConfigError

if TYPE_CHECKING:
    from anthology.surveys.schema import Questionnaire, Respondents


def weighted_totals(positions: pd.Series, weights: pd.Series, n_options: int) -> np.ndarray:
    """The summed weight of each position 1..``n_options`` over the answered (non-NA) rows;
    ``positions`` and ``weights`` are aligned row by row."""
    answered = positions.notna().to_numpy()
    index = positions.to_numpy()[answered].astype(int) - 1
    if index.size and (index.min() < 0 or index.max() >= n_options):
        raise ValueError(f"positions must lie in 1..{n_options}")
    return np.bincount(index, weights=weights.to_numpy(dtype=float)[answered], minlength=n_options)


def weighted_shares(positions: pd.Series, weights: pd.Series, n_options: int) -> np.ndarray:
    """The weighted share of each position 1..``n_options`` among the answered rows. Raises
    ``ValueError`` when no answered row has positive weight (the distribution is then undefined)."""
    totals = weighted_totals(positions, weights, n_options)
    if totals.sum() <= 0:
        raise ValueError("no answered row has positive weight")
    return totals / totals.sum()


def answer_distributions(
    respondents: Respondents,
    questionnaire: Questionnaire,
    by: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (subgroup,) question and option: ``question_id``, ``position``, ``option``, ``share``
    (weighted, sums to 1 per question and subgroup), ``weight`` (summed weight) and ``n`` (unweighted
    count), preceded by one column per ``by`` trait.

    Respondents without a value for a ``by`` trait are left out of the subgroup tables; a subgroup in
    which nobody (of positive weight) answered a question has no rows for it.
    """
    by = [by] if isinstance(by, str) else list(by or ())
    unknown = [name for name in by if name not in respondents.traits.columns]
    if unknown:
        raise ConfigError(
            f"no trait {unknown[0]!r} to group by; this survey has: {', '.join(respondents.traits.columns)}"
        )
    groups = (
        respondents.traits.groupby(by, observed=True).indices if by else {(): np.arange(len(respondents))}
    )
    rows: list[dict] = []
    for key, members in groups.items():
        key = key if isinstance(key, tuple) else (key,)
        weights = respondents.weights.iloc[members]
        ones = pd.Series(1.0, index=weights.index)
        for question in questionnaire.questions:
            positions = respondents.answers[question.id].iloc[members]
            totals = weighted_totals(positions, weights, len(question.options))
            if totals.sum() <= 0:
                continue
            counts = weighted_totals(positions, ones, len(question.options))
            for option in question.options:
                i = option.position - 1
                rows.append(
                    {
                        **dict(zip(by, key, strict=True)),
                        "question_id": question.id,
                        "position": option.position,
                        "option": option.label,
                        "share": totals[i] / totals.sum(),
                        "weight": totals[i],
                        "n": int(counts[i]),
                    }
                )
    columns = [*by, "question_id", "position", "option", "share", "weight", "n"]
    return pd.DataFrame(rows, columns=columns)


def trait_shares(respondents: Respondents, trait: str) -> pd.Series:
    """The weighted share of each category of ``trait`` among respondents who have a value for it."""
    categories = respondents.traits[trait]
    totals = respondents.weights.groupby(categories, observed=False).sum()
    return totals / totals.sum() if totals.sum() > 0 else totals
