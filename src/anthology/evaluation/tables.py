"""Lay out an evaluation's long metrics as the tables the CLI and the report show: the paper's
Table 1 (:func:`paper_table`), its best cell per column (:func:`best_methods`) and the matched-pair
agreement (:func:`agreement_table`)."""

from __future__ import annotations

import pandas as pd

from anthology.evaluation.names import AGREEMENT, LOWER_BOUND, method_label

#: Columns of the paper-style table: metric -> (heading, "min" or "max" is better).
TABLE_COLUMNS = {
    "wd_raw": ("WD", "min"),
    "wd_normalized": ("WD/(K-1)", "min"),
    "frobenius": ("Fro.", "min"),
    "alpha": ("alpha", "max"),
    "wd_expected_raw": ("WD exp.", "min"),
    "wd_expected_normalized": ("WD exp./(K-1)", "min"),
}


def paper_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout from the long metrics: one row per method (paper order) and the lower
    bound last; per :data:`TABLE_COLUMNS` metric the value and ``*_ci_low``/``*_ci_high`` (the
    ``wd_expected_*`` columns only for runs that have them). ``alpha`` is the personas' alpha, and the
    humans' (weighted) alpha on the lower-bound row."""
    renamed = metrics.replace({"metric": {"alpha_personas": "alpha", "alpha_humans_weighted": "alpha"}})
    rows = renamed[renamed["metric"].isin(TABLE_COLUMNS)]
    wide = rows.pivot(index="method", columns="metric", values=["value", "ci_low", "ci_high"])
    methods = list(dict.fromkeys(metrics["method"]))
    table = pd.DataFrame({"method": methods, "label": [method_label(m) for m in methods]})
    for metric in TABLE_COLUMNS:
        if metric not in rows["metric"].values:
            continue
        for part, suffix in (("value", ""), ("ci_low", "_ci_low"), ("ci_high", "_ci_high")):
            table[metric + suffix] = wide[(part, metric)].reindex(methods).to_numpy()
    return table


def agreement_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method (in the metrics' order): exact match rate and mean ordinal distance of the
    matched pairs."""
    rows = metrics[metrics["metric"].isin(AGREEMENT)]
    wide = rows.pivot(index="method", columns="metric", values="value").reindex(columns=list(AGREEMENT))
    order = [m for m in dict.fromkeys(metrics["method"]) if m in wide.index]
    return wide.reindex(order).rename_axis(columns=None).reset_index()


def best_methods(table: pd.DataFrame) -> dict[str, str]:
    """For each metric column of :func:`paper_table`, the method with the best value (the lower-bound
    row excluded; lower is better except for alpha)."""
    methods = table[table["method"] != LOWER_BOUND].set_index("method")
    best = {}
    for metric, (_, direction) in TABLE_COLUMNS.items():
        if metric in methods and methods[metric].notna().any():
            values = methods[metric].astype(float)
            best[metric] = str(values.idxmin() if direction == "min" else values.idxmax())
    return best
