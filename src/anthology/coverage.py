"""How much of the option probability mass a run's log-prob scores observed, and how much was imputed.

An exact backend (the local one, or a server that echoes prompt log-probabilities) observes every
answer form, so nothing is imputed. A server that returns only the top-k alternatives of generated
tokens cannot see forms outside them; their probability is filled in by the OpinionQA rule and
recorded as imputed. Per stage and method this module reports the number of scored items, the mean
observed mass (``mean_coverage``) and the share of the options' mass that was imputed
(``imputed_share``); :func:`warnings` names what passes :data:`IMPUTED_WARNING`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Above this share of imputed option mass a stage's probabilities are mostly a rule's, not the
#: model's: evaluate and the report warn.
IMPUTED_WARNING = 0.01

COLUMNS = ("stage", "method", "scored", "mean_coverage", "imputed_share")


def score_coverage(answers: pd.DataFrame | None, demographics: pd.DataFrame | None) -> pd.DataFrame:
    """One row per stage and method scored in log-prob mode (see the module docstring). The
    demographic survey belongs to the backstory pool (method ``anthology``); sampled stages have no
    row."""
    rows = []
    if demographics is not None and {"coverage", "imputed"} <= set(demographics.columns):
        items = demographics.drop_duplicates(["persona_id", "trait"])
        rows += _rows("demographics", items.assign(method="anthology"))
    if answers is not None and {"coverage", "imputed"} <= set(answers.columns):
        rows += _rows("ask", answers)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _rows(stage: str, items: pd.DataFrame) -> list[dict[str, object]]:
    scored = items[items["coverage"].notna()]
    out = []
    for method, part in scored.groupby("method", sort=False):
        observed = part["coverage"].to_numpy(float)
        imputed = part["imputed"].fillna(0.0).to_numpy(float)
        total = float(np.sum(observed + imputed))
        out.append(
            {
                "stage": stage,
                "method": str(method),
                "scored": len(part),
                "mean_coverage": float(observed.mean()),
                "imputed_share": float(imputed.sum() / total) if total > 0 else float("nan"),
            }
        )
    return out


def warnings(table: pd.DataFrame) -> list[str]:
    """One line per stage and method whose imputed share passes :data:`IMPUTED_WARNING`."""
    lines = []
    for row in table.itertuples(index=False):
        if row.imputed_share > IMPUTED_WARNING:
            lines.append(
                f"{100 * row.imputed_share:.1f}% of the option probability in {row.stage} ({row.method}) "
                f"was imputed, not observed (more than {100 * IMPUTED_WARNING:g}%): serve the model with "
                "a server that echoes prompt log-probabilities (vLLM) or use sample mode"
            )
    return lines
