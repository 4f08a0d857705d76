"""The test-retest table of a run whose survey repeats questions in later waves (retest.csv): for
each question and its repeat, each method's persona-level stability and pool-level change
(:mod:`anthology.metrics.retest`) and the same for the humans, whose data is a panel with both
columns. A method's members count once (its plain row), the raked pool's with its raking weights;
the humans count with their survey weights, as in every other comparison. A survey without repeats
gives a table with no rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from anthology.evaluation.load import RunData
from anthology.metrics.frames import answers_from_frame
from anthology.metrics.retest import pool_change, stability

#: The row of the humans in retest.csv.
HUMANS = "humans"
RETEST_COLUMNS = (
    "method",
    "question_id",
    "repeat_id",
    "first_wave",
    "second_wave",
    "n_pairs",
    "exact_agreement",
    "mean_ordinal_distance",
    "correlation",
    "wd_change_raw",
    "wd_change_normalized",
    "note",
)


def retest_table(data: RunData) -> pd.DataFrame:
    """One row per (question, repeat) pair and method, the humans first (:data:`RETEST_COLUMNS`)."""
    questionnaire = data.questionnaire
    rows = []
    for question_id, repeat_id in questionnaire.repeated():
        k = len(questionnaire[question_id].options)
        pair = [question_id, repeat_id]
        sides = [(HUMANS, answers_from_frame(data.humans, pair), data.human_weights)]
        for method in data.methods:
            weights = None if data.has_respondents(method) else data.persona_weights(method)
            sides.append((method, answers_from_frame(data.persona_frame(method), pair), weights))
        for method, answers, weights in sides:
            held = stability(answers[:, 0], answers[:, 1], k, weights)
            change = pool_change(answers[:, 0], answers[:, 1], k, weights)
            rows.append(
                {
                    "method": method,
                    "question_id": question_id,
                    "repeat_id": repeat_id,
                    "first_wave": questionnaire.wave_of(question_id),
                    "second_wave": questionnaire.wave_of(repeat_id),
                    "n_pairs": held.n_pairs,
                    "exact_agreement": held.exact_agreement,
                    "mean_ordinal_distance": held.mean_ordinal_distance,
                    "correlation": held.correlation,
                    "wd_change_raw": change.wd_raw,
                    "wd_change_normalized": change.wd_normalized,
                    "note": held.note,
                }
            )
    table = pd.DataFrame(rows, columns=list(RETEST_COLUMNS))
    return table.astype({"n_pairs": "int64"}) if len(table) else table.assign(note=np.array([], dtype=object))
