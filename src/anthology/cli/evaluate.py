"""The evaluation in the terminal: the paper's table with intervals, human-persona agreement, option
scoring coverage and its warnings (``anthology evaluate`` and ``anthology run`` print them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd


def print_evaluation(result, splits: int) -> None:  # result: anthology.evaluation.Evaluation
    """The paper-style table with intervals and the reasons for its undefined cells, then
    human-persona agreement."""
    from anthology.coverage import warnings
    from anthology.evaluation import table_notes, weighting_lines

    console = Console()
    console.print(_paper_table(result.table, splits, result.worth_curve["size"].tolist()))
    for line in [*weighting_lines(result.metrics), *table_notes(result.table)]:
        console.print(f"  - {escape(line)}", soft_wrap=True, highlight=False)
    console.print(_agreement_table(result.agreement))
    if not result.coverage.empty:
        console.print(_coverage_table(result.coverage))
    for line in warnings(result.coverage):
        Console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)


def _cell(value: float, low: float, high: float, sizes: Sequence[int] | None = None) -> str:
    """A metric cell; with ``sizes`` (those of the worth-in-humans curve) a worth-in-humans one."""
    from anthology.evaluation import worth_cell

    if math.isnan(value):
        return "-"
    if sizes is not None:
        number, interval = worth_cell(value, low, high, sizes)
        return f"{number} [dim]{interval}[/dim]" if interval else number
    if math.isnan(low):
        return f"{value:.3f}"
    return f"{value:.3f} [dim][{low:.3f}, {high:.3f}][/dim]"


def _paper_table(table: pd.DataFrame, splits: int, sizes: Sequence[int]) -> Table:
    """The paper's table; an undefined cell is "-" (its reason follows the table: ``table_notes``).
    ``sizes``: the panel sizes of the worth-in-humans curve."""
    from anthology.evaluation import LOWER_BOUND, RELIABLE_RESPONDENTS, TABLE_COLUMNS, best_methods

    best = best_methods(table)
    columns = [m for m in TABLE_COLUMNS if m in table.columns]
    out = Table(
        title="Representativeness and consistency against the humans",
        caption=escape(
            "* best per column. Lower WD and Fro. are better, higher alpha and worth are better. WD is "
            "scipy's Wasserstein distance on positions 1..K; WD/(K-1) is OpinionQA's scale"
            + ("; 'exp.' uses the expected distributions" if "wd_expected_raw" in columns else "")
            + ". [95% percentile bootstrap interval: for a distance it can lie above the estimate]; "
            f"lower bound: mean of {splits} split halves [middle 95% of splits], the bound is reliable "
            f"from {RELIABLE_RESPONDENTS} respondents (a noisy reference below). Worth n humans: the "
            f"number of random respondents whose WD equals the method's [where the middle 95% of "
            f"{splits} draws does]; '≤'/'≥': beyond the sizes drawn, {min(sizes):,} to {max(sizes):,}. "
            "'-': undefined, why below."
        ),
    )
    out.add_column("Method")
    for metric in columns:
        out.add_column(TABLE_COLUMNS[metric][0], justify="right")
    for row in table.to_dict("records"):
        cells = []
        for metric in columns:
            worth = sizes if metric == "worth_n_humans" else None
            text = _cell(row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], worth)
            cells.append(f"[bold green]{text} *[/bold green]" if best.get(metric) == row["method"] else text)
        lower = row["method"] == LOWER_BOUND
        if lower:
            out.add_section()
        out.add_row(row["label"], *cells, style="italic" if lower else None)
    return out


def _agreement_table(agreement: pd.DataFrame) -> Table:
    from anthology.evaluation import method_label

    out = Table(title="Each human against their own persona (answered pairs)")
    for heading in ("Method", "Exact match", "Mean distance", "Mean distance/(K-1)"):
        out.add_column(heading, justify="left" if heading == "Method" else "right")
    for row in agreement.itertuples(index=False):
        out.add_row(
            method_label(row.method),
            f"{row.exact_match_rate:.3f}",
            f"{row.mean_abs_distance:.3f}",
            f"{row.mean_abs_distance_normalized:.3f}",
        )
    return out


def _coverage_table(coverage: pd.DataFrame) -> Table:
    from anthology.evaluation import method_label

    out = Table(
        title="Option scoring (log-prob mode)",
        caption="Coverage: probability mass the backend observed on the answer forms. "
        "Imputed: share of the options' mass filled in for forms outside a server's top-k.",
    )
    for heading in ("Stage", "Method", "Scored", "Mean coverage", "Imputed"):
        out.add_column(heading, justify="left" if heading in ("Stage", "Method") else "right")
    for row in coverage.itertuples(index=False):
        label = "backstory pool" if row.method == "anthology" else method_label(row.method)
        share = f"{100 * row.imputed_share:.1f}%"
        out.add_row(row.stage, label, str(row.scored), f"{row.mean_coverage:.3f}", share)
    return out
