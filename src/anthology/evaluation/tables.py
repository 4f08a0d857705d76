"""Lay out an evaluation's long metrics as the tables the CLI and the report show: the paper's
Table 1 (:func:`paper_table`), its best cell per column (:func:`best_methods`), the reasons for its
undefined cells (:func:`table_notes`), the matched-pair agreement (:func:`agreement_table`) and
the text of a worth-in-humans cell (:func:`worth_cell`)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from anthology.evaluation.names import AGREEMENT, LOWER_BOUND, RAKED_METHOD, method_label, row_method
from anthology.evaluation.sizes import lower_bound_label

#: The fewest defined values a column needs for its best one to be starred: a star compares, so a
#: column where every other method is undefined gets none.
MIN_STARRED = 2

#: Columns of the paper-style table: metric -> (heading, "min" or "max" is better).
TABLE_COLUMNS = {
    "wd_raw": ("WD", "min"),
    "wd_normalized": ("WD/(K-1)", "min"),
    "frobenius": ("Fro.", "min"),
    "alpha": ("alpha", "max"),
    "wd_expected_raw": ("WD exp.", "min"),
    "wd_expected_normalized": ("WD exp./(K-1)", "min"),
    "worth_n_humans": ("worth n humans", "max"),
}


def paper_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout from the long metrics: one row per method (paper order) and the lower
    bound last; ``n`` its respondents (NaN in older files); per :data:`TABLE_COLUMNS` metric the value,
    ``*_ci_low``/``*_ci_high`` and ``*_note`` (why it is undefined; the ``wd_expected_*`` columns only
    for runs that have them). ``alpha`` is the personas' alpha with the row's persona weights (the
    plain alpha on an unweighted row), and the humans' (weighted) alpha on the lower-bound row, whose
    label follows the number of humans (:func:`.sizes.lower_bound_label`)."""
    alphas = {"alpha_personas_weighted": "alpha", "alpha_humans_weighted": "alpha"}
    renamed = metrics[metrics["metric"] != "alpha_personas"].replace({"metric": alphas})
    rows = renamed[renamed["metric"].isin(TABLE_COLUMNS)]
    wide = rows.pivot(index="method", columns="metric", values=["value", "ci_low", "ci_high", "note"])
    methods = list(dict.fromkeys(metrics["method"]))
    counts = metrics[metrics["metric"] == "n_respondents"].set_index("method")["value"]
    table = pd.DataFrame({"method": methods, "n": counts.reindex(methods).to_numpy(dtype=float)})
    table.insert(1, "label", [_label(m, n) for m, n in zip(methods, table["n"], strict=True)])
    for metric in TABLE_COLUMNS:
        if metric not in rows["metric"].values:
            continue
        for part, suffix in (
            ("value", ""),
            ("ci_low", "_ci_low"),
            ("ci_high", "_ci_high"),
            ("note", "_note"),
        ):
            table[metric + suffix] = wide[(part, metric)].reindex(methods).to_numpy()
        table[metric] = table[metric].astype(float)
    return table


def worth_cell(value: float, low: float, high: float, sizes: Sequence[float]) -> tuple[str, str]:
    """A defined worth-in-humans value and its interval as the tables show them: whole numbers, "≤ 5"
    / "≥ 2,537" at the ends of the curve's ``sizes`` (where the panel's WD lies beyond the curve);
    the interval ``"[low, high]"``, empty when it says no more than the value (all three equal)."""

    def text(number: float) -> str:
        if number <= min(sizes):
            return f"≤ {min(sizes):,.0f}"
        if number >= max(sizes):
            return f"≥ {max(sizes):,.0f}"
        return f"{number:,.0f}"

    texts = [text(number) for number in (value, low, high)]
    return texts[0], "" if len(set(texts)) == 1 else f"[{texts[1]}, {texts[2]}]"


def _label(method: str, n: float) -> str:
    return lower_bound_label(n) if method == LOWER_BOUND else method_label(method)


def agreement_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method (in the metrics' order): exact match rate and mean ordinal distance of the
    matched pairs."""
    rows = metrics[metrics["metric"].isin(AGREEMENT)]
    wide = rows.pivot(index="method", columns="metric", values="value").reindex(columns=list(AGREEMENT))
    order = [m for m in dict.fromkeys(metrics["method"]) if m in wide.index]
    return wide.reindex(order).rename_axis(columns=None).reset_index()


def best_of(values: pd.Series, direction: str) -> str | None:
    """The index of the best value (``"min"`` or ``"max"``) among the defined ones; ``None`` when
    fewer than :data:`MIN_STARRED` are defined (undefined cells are NaN)."""
    defined = values.astype(float).dropna()
    if len(defined) < MIN_STARRED:
        return None
    return str(defined.idxmin() if direction == "min" else defined.idxmax())


def best_methods(table: pd.DataFrame) -> dict[str, str]:
    """For each metric column of :func:`paper_table`, the method with the best defined value (the
    lower-bound row excluded; lower is better except for alpha; see :func:`best_of`)."""
    methods = table[table["method"] != LOWER_BOUND].set_index("method")
    best = {}
    for metric, (_, direction) in TABLE_COLUMNS.items():
        if metric in methods and (method := best_of(methods[metric], direction)) is not None:
            best[metric] = method
    return best


def table_notes(table: pd.DataFrame) -> list[str]:
    """One line per reason a cell of :func:`paper_table` is undefined: "Fro., QA, Nothing: reason"
    ("every row" when it is all of them), in column order."""
    lines = []
    for metric, (heading, _) in TABLE_COLUMNS.items():
        if f"{metric}_note" not in table:
            continue
        noted = table[table[metric].isna() & table[f"{metric}_note"].notna()]
        for note, rows in noted.groupby(f"{metric}_note", sort=False):
            labels = "every row" if len(rows) == len(table) else ", ".join(rows["label"])
            lines.append(f"{heading}, {labels}: {note}")
    return lines


def weighting_lines(metrics: pd.DataFrame) -> list[str]:
    """What the table's persona side counts, in lines under the table: the human side is
    survey-weighted; each persona counts once (the paper's) on a plain row, with its respondent's
    survey weight on a ", weighted" row, with its raking weight on the raked panel's; and per weighted
    row its Kish effective sample size and largest weight relative to the mean."""
    methods = [m for m in dict.fromkeys(metrics["method"]) if m != LOWER_BOUND]
    weighted = [row_method(m)[1] for m in methods]
    parts = []
    if any(not w and m != RAKED_METHOD for m, w in zip(methods, weighted, strict=True)):
        parts.append("each counts once, as in the paper")
    if any(weighted):
        parts.append("', weighted' rows count each persona with its respondent's survey weight")
    if RAKED_METHOD in methods:
        parts.append(f"{method_label(RAKED_METHOD)} counts each with its raking weight")
    lines = [f"Humans: survey-weighted. Personas: {'; '.join(parts)}."]
    values = metrics.set_index(["method", "metric"])["value"]
    by_text: dict[str, list[str]] = {}  # rows whose weights read alike share a line
    for method in methods:
        if (method, "n_effective") in values.index:
            text = (
                f"Kish effective sample size {values[(method, 'n_effective')]:,.1f} of "
                f"{values[(method, 'n_respondents')]:,.0f} personas, largest weight "
                f"{values[(method, 'max_weight_ratio')]:.2f} x the mean"
            )
            by_text.setdefault(text, []).append(method_label(method))
    return lines + [f"{'; '.join(labels)}: {text}" for text, labels in by_text.items()]
