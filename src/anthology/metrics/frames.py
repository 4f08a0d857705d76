"""Thin pandas helpers around the array functions: answers from a data frame, and results as tidy
tables (pandas is imported only when these are called)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from anthology.metrics._inputs import as_answers
from anthology.metrics.compare import SCALAR_METRICS, Comparison
from anthology.metrics.resampling import Bootstrap, LowerBound

if TYPE_CHECKING:
    import pandas as pd


def answers_from_frame(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> np.ndarray:
    """An answer matrix from a data frame with one column per question holding positions 1..K as
    (nullable) integers or floats, NA/NaN for no answer, in ``columns`` order (default: the frame's)."""
    data = frame if columns is None else frame[list(columns)]
    try:
        values = data.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        raise ValueError("the answer columns must be numeric option positions (NA for no answer)") from None
    return as_answers(values, "answers")


def metrics_table(result: Comparison | LowerBound, ci: Bootstrap | None = None) -> pd.DataFrame:
    """One row per scalar metric: ``metric``, ``value``, ``ci_low``, ``ci_high`` (NaN without ``ci``)."""
    import pandas as pd

    rows = []
    for name, value in result.scalars().items():
        interval = ci.intervals.get(name) if ci is not None else None
        low, high = (interval.low, interval.high) if interval is not None else (np.nan, np.nan)
        rows.append({"metric": name, "value": value, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["metric", "value", "ci_low", "ci_high"])


def per_question_table(
    result: Comparison,
    question_ids: Sequence[Any] | None = None,
    ci: Bootstrap | None = None,
    lower_bound: LowerBound | None = None,
) -> pd.DataFrame:
    """One row per question: ``question_id``, ``n_options``, ``wd_raw``, ``wd_normalized`` and, when
    given, their bootstrap bounds (``*_ci_low``/``*_ci_high``) and the split-half lower bound
    (``lower_bound_wd_raw``/``lower_bound_wd_normalized``)."""
    import pandas as pd

    q = len(result.n_options)
    ids = list(range(q)) if question_ids is None else list(question_ids)
    if len(ids) != q:
        raise ValueError(f"question_ids has {len(ids)} entries for {q} questions")
    table = pd.DataFrame(
        {
            "question_id": ids,
            "n_options": result.n_options,
            "wd_raw": result.wd_per_question_raw,
            "wd_normalized": result.wd_per_question_normalized,
        }
    )
    if ci is not None:
        for kind in ("raw", "normalized"):
            interval = ci.intervals[f"wd_per_question_{kind}"]
            table[f"wd_{kind}_ci_low"] = interval.low
            table[f"wd_{kind}_ci_high"] = interval.high
    if lower_bound is not None:
        table["lower_bound_wd_raw"] = lower_bound.wd_per_question_raw
        table["lower_bound_wd_normalized"] = lower_bound.wd_per_question_normalized
    return table


def subgroup_table(breakdown: Mapping[Any, Comparison], group: str = "group") -> pd.DataFrame:
    """One row per subgroup of :func:`~anthology.metrics.subgroup_breakdown`: the label (column
    ``group``), ``n_humans``, ``n_personas`` and the scalar metrics."""
    import pandas as pd

    rows = [
        {group: label, "n_humans": c.n_humans, "n_personas": c.n_personas, **c.scalars()}
        for label, c in breakdown.items()
    ]
    return pd.DataFrame(rows, columns=[group, "n_humans", "n_personas", *SCALAR_METRICS])
