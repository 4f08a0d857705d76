"""The report's sections for a survey asked in waves: per wave its questions and each panel's mean
WD from the humans over them, and the change between waves (the test-retest table of retest.csv,
the humans first). A survey without waves has neither (:func:`wave_sections` gives ``[]``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from anthology.evaluation import Evaluation, RunData, method_label
from anthology.evaluation.retest import HUMANS
from anthology.metrics import Comparison


def wave_sections(
    data: RunData, comparisons: dict[str, Comparison], evaluation: Evaluation
) -> list[dict[str, Any]]:
    """Per wave, in order: its name, its questions (a repeat with what it repeats) and one row per
    panel with its mean WD (raw) from the humans over the wave's questions, after the humans'
    split-half row."""
    from anthology.report.build import _number  # the page's one number format

    questionnaire = data.questionnaire
    if not questionnaire.waves:
        return []
    column = {q: j for j, q in enumerate(data.question_ids)}
    floor = evaluation.per_question.drop_duplicates("question_id").set_index("question_id")
    sections = []
    for name, part in questionnaire.parts():
        compared = [q for q in part.ids if q in column]  # a wave of personas only has no WD
        picked = [column[q] for q in compared]
        split = floor.loc[compared, "lower_bound_wd_raw"].mean()
        rows = [{"label": "Human split-half", "wd": _number(split)}]
        rows += [
            {
                "label": method_label(method),
                "wd": _number(np.nanmean(result.wd_per_question_raw[picked]) if picked else np.nan),
            }
            for method, result in comparisons.items()
        ]
        questions = [{"id": q.id, "wording": q.wording, "repeats": q.repeats} for q in part.questions]
        sections.append({"name": name, "questions": questions, "rows": rows})
    return sections


def retest_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The test-retest table's rows for the page: the pair, who, and the stability and change."""
    from anthology.report.build import _number

    return [
        {
            "pair": f"{row.question_id} → {row.repeat_id}",
            "waves": f"{row.first_wave} → {row.second_wave}",
            "label": "Humans" if row.method == HUMANS else method_label(row.method),
            "humans": row.method == HUMANS,
            "n_pairs": int(row.n_pairs),
            "exact": _number(row.exact_agreement),
            "distance": _number(row.mean_ordinal_distance),
            "correlation": _number(row.correlation),
            "change": _number(row.wd_change_raw),
            "note": row.note if isinstance(row.note, str) else "",
        }
        for row in evaluation.retest.itertuples(index=False)
    ]
