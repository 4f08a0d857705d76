"""The report's "Open questions" section: per open question, some free-text answers beside their
codes, the coded distributions beside the humans' closed answers, and how far coded open answers
agree with the same members' closed answers (:func:`anthology.metrics.open_agreement`).

Every text goes to the page through the template's autoescaping."""

from __future__ import annotations

from typing import Any

import pandas as pd

from anthology.metrics.open_agreement import closed_answers, coded_distribution, open_agreement
from anthology.store import RunDir

#: Free-text answers shown per open question and method.
SAMPLE_ANSWERS = 2


def _share(value: float) -> str:
    return f"{value:.2f}"


def open_section(run: RunDir) -> list[dict[str, Any]]:
    """The section's content, one entry per open question; empty when the run coded none."""
    if not run.has("open_codes"):
        return []
    codes = run.read("open_codes")
    if codes.empty:
        return []
    from anthology.pipeline import run_survey

    codebook = run_survey(run).codebook
    counterparts = {q.id: q.closed for q in codebook.open_questions if q.closed}
    categories = codebook.open_categories
    closed = closed_answers(run.read("answers"), run.read("humans"), sorted(set(counterparts.values())))
    table = open_agreement(codes, closed, counterparts, {q: len(c) for q, c in categories.items()})
    found = []
    for question in codebook.open_questions:
        labels = [c.label for c in categories[question.id]]
        mine = codes[codes["question_id"] == question.id]
        samples = [
            {
                "method": row.method,
                "text": row.text,
                "code": row.label if isinstance(row.label, str) else "not coded",
                "probability": _share(max([*row.probabilities, row.none]))
                if row.probabilities is not None
                else "",
            }
            for _, group in mine.groupby("method", sort=False)
            for row in group.head(SAMPLE_ANSWERS).itertuples()
        ]
        columns: dict[str, list[float]] = {}
        if question.closed:
            humans = closed[(closed["method"] == "humans") & (closed["question_id"] == question.closed)]
            if len(humans):
                counts = humans["position"].value_counts(normalize=True)
                columns["humans (closed)"] = [float(counts.get(k, 0.0)) for k in range(1, len(labels) + 1)]
        for method, group in mine[mine["probabilities"].notna()].groupby("method", sort=False):
            columns[f"{method} (coded)"] = coded_distribution(group["probabilities"].tolist()).tolist()
        agreement = table[table["question_id"] == question.id]
        found.append(
            {
                "id": question.id,
                "wording": question.wording,
                "closed": question.closed,
                "samples": samples,
                "headings": list(columns),
                "distribution": [
                    {"label": label, "cells": [_share(values[k]) for values in columns.values()]}
                    for k, label in enumerate(labels)
                ],
                "agreement": [
                    {
                        "method": row.method,
                        "members": int(row.members),
                        "agreement": _share(row.agreement) if pd.notna(row.agreement) else "",
                        "wd": f"{row.wd:.3f}",
                    }
                    for row in agreement.itertuples()
                ],
            }
        )
    return found
