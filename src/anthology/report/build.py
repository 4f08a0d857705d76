"""Gather a run directory's results into the report's sections and render ``report.html``.

Everything on the page comes from the run directory: the metric files of :mod:`anthology.evaluation`
(the run's own; made again with the run's recorded seed, splits and resamples when missing or made
from other answers or humans, :func:`~anthology.evaluation.current_evaluation`), the answers and
humans for the charts, the demographic survey and matches for the panel's make-up, and the manifest
for provenance. The page is rendered by a Jinja2 template with autoescaping, and the charts are inline
SVG (:mod:`.svg`), so it needs no network and no script, and model-written text shows as text.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from anthology.coverage import warnings
from anthology.evaluation import (
    LOWER_BOUND,
    RELIABLE_RESPONDENTS,
    TABLE_COLUMNS,
    Evaluation,
    RunData,
    best_methods,
    best_of,
    current_evaluation,
    is_reliable,
    load_run,
    method_label,
    table_notes,
    weighting_lines,
    worth_cell,
)
from anthology.evaluation.names import row_method
from anthology.files import atomic_write
from anthology.method.matching import persona_probabilities, usage
from anthology.method.raking import kish_ess
from anthology.method.settings import PANELS, RAKED
from anthology.metrics import Comparison, compare
from anthology.persona_pool import read_pool
from anthology.pool_summary import pool_section
from anthology.report import svg
from anthology.report.open_section import open_section
from anthology.report.waves import retest_rows, wave_sections
from anthology.surveys import DECLINE

#: Backstories shown with their matched human.
SAMPLE_BACKSTORIES = 6
#: Matching methods in matches.parquet, in the order shown (the sample backstories are the first's).
MATCHINGS = ("greedy", "max-weight", "random")
HUMANS_COLOR = "#333333"
POOL_COLOR = "#56B4E9"
MATCHING_COLORS = dict(zip(PANELS, ("#E69F00", "#009E73", "#CC79A7", "#D55E00"), strict=True))

#: What each column of the metrics table means.
EXPLANATIONS = {
    "wd_raw": "Wasserstein (earth mover's) distance between the humans' and the personas' answer "
    "distributions on option positions 1..K (scipy.stats.wasserstein_distance), averaged over "
    "questions. Lower is better; 0 means identical distributions.",
    "wd_normalized": "The same divided by K-1, the largest possible distance (OpinionQA's scale, 0 to 1).",
    "worth_n_humans": "How many humans the panel is worth: the number of respondents drawn at random "
    "from the humans whose WD against the humans equals the panel's (the chart below). Higher is "
    "better; ≤ and ≥ mark a WD beyond the sizes drawn.",
    "frobenius": "Frobenius norm of the difference between the humans' (survey-weighted) and the "
    "personas' Pearson correlation matrices across questions, over respondents who answered every "
    "question. Lower is better: the panel reproduces which answers go together.",
    "alpha": "Cronbach's alpha of the panel's answers, its internal consistency across questions. The "
    "paper counts higher as better; the humans' own alpha is on the lower-bound row.",
    "wd_expected_raw": "Logprob runs: WD from each persona's exact option probabilities instead of its "
    "one answer (no interval).",
    "wd_expected_normalized": "The same divided by K-1.",
}


@dataclass(frozen=True)
class PoolTrait:
    """A persona trait of the backstory pool on the survey's categories."""

    trait: str
    labels: tuple[str, ...]
    persona_ids: pd.Index
    probabilities: np.ndarray  # (personas, categories), renormalised
    dropped: float  # mean mass on "Prefer not to answer", unmapped categories and non-compliance


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into the run directory and return its path. The metrics are the run's
    evaluation, made again with its recorded settings when not current; a line on stderr says which."""
    root = Path(run_dir)
    data = load_run(root)  # a missing artifact is reported before any work
    evaluation, how = current_evaluation(root)
    print(f"report: {how}", file=sys.stderr)
    manifest = data.run.manifest()  # with the evaluate stage
    rows = [m for m in evaluation.table["method"] if m != LOWER_BOUND]  # each with its persona weights
    comparisons = {
        row: compare(
            data.human_answers,
            data.persona_answers(row_method(row)[0]),
            data.n_options,
            human_weights=data.human_weights,
            persona_weights=data.persona_weights(row),
        )
        for row in rows
    }
    pool = _pool_traits(data)
    html = _template().render(
        overview=_overview(data),
        evaluated=manifest.get("stages", {}).get("evaluate", {}),
        explanations=[(TABLE_COLUMNS[k][0], v) for k, v in EXPLANATIONS.items() if k in evaluation.table],
        metrics=_metrics_table(evaluation.table, evaluation.worth_curve["size"].tolist()),
        worth=_worth(evaluation),
        weighting=weighting_lines(evaluation.metrics),
        reference={"reliable": is_reliable(len(data.humans)), "from": RELIABLE_RESPONDENTS},
        agreement=_agreement_rows(evaluation),
        methods=_method_summary(data),
        panels=_panels(data),
        coverage=_coverage_rows(evaluation),
        coverage_warnings=warnings(evaluation.coverage),
        questions=_questions(data, comparisons, evaluation),
        correlations=_correlations(data, comparisons, evaluation),
        color_scale=svg.color_scale(),
        subgroups=_subgroups(evaluation, tuple(rows)),
        demographics=_demographics(data, pool),
        samples=_samples(data, pool),
        open_questions=open_section(data.run),
        metadata=_metadata(manifest),
        pool_audit=_pool_audit(manifest),
        waves=wave_sections(data, comparisons, evaluation),
        retest=retest_rows(evaluation),
    )
    return atomic_write(root / "report.html", lambda tmp: tmp.write_text(html, encoding="utf-8"))


def _template() -> jinja2.Template:
    text = resources.files("anthology.report").joinpath("template.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return env.from_string(text)


def _number(value: Any, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if not np.isfinite(number) else f"{number:.{digits}f}"


def _overview(data: RunData) -> dict[str, Any]:
    weights = data.human_weights
    stories = read_pool(data.run, "backstories") if data.run.has("backstories") else None
    return {
        "run": data.run.root.resolve().name,
        "survey": data.survey.name,
        "survey_title": data.survey.codebook.title,
        "humans": len(data.humans),
        "weighted": bool(len(weights) and not np.allclose(weights, weights[0])),
        "questions": len(data.question_ids),
        "backstories": int(stories["kept"].sum()) if stories is not None else None,
        "model": data.manifest.get("model", {}).get("name", "unknown"),
        "generated": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def _metrics_table(table: pd.DataFrame, sizes: list[int]) -> dict[str, Any]:
    """Headings and rows of the paper's table, each cell with its interval and best mark ("–" when
    undefined), and the reasons for the undefined cells; ``sizes``: those of the worth-in-humans
    curve."""
    best = best_methods(table)
    columns = [m for m in TABLE_COLUMNS if m in table]
    rows = []
    for row in table.to_dict("records"):
        cells = []
        for metric in columns:
            value, low, high = row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
            if metric == "worth_n_humans" and np.isfinite(value):
                text, interval = worth_cell(value, low, high, sizes)
            else:
                text, interval = _number(value), "" if np.isnan(low) else f"[{_number(low)}, {_number(high)}]"
            cells.append({"value": text, "interval": interval, "best": best.get(metric) == row["method"]})
        rows.append({"label": row["label"], "lower": row["method"] == LOWER_BOUND, "cells": cells})
    headings = [
        {"name": TABLE_COLUMNS[m][0], "better": "lower" if TABLE_COLUMNS[m][1] == "min" else "higher"}
        for m in columns
    ]
    return {"headings": headings, "rows": rows, "notes": table_notes(table)}


def _worth(evaluation: Evaluation) -> dict[str, Any]:
    """The humans' WD against panel size with each method's WD as a level (a dot where the curve
    reaches it inside the sizes drawn), and the chart's legend."""
    curve = evaluation.worth_curve
    sizes = curve["size"].tolist()
    table = evaluation.table
    levels = []
    for i, row in enumerate(table[table["method"] != LOWER_BOUND].to_dict("records")):
        worth = row.get("worth_n_humans", np.nan)
        inside = bool(np.isfinite(worth) and sizes[0] < worth < sizes[-1])
        color = svg.CATEGORICAL[i % len(svg.CATEGORICAL)]
        levels.append(svg.Level(row["label"], float(row["wd_raw"]), color, float(worth) if inside else None))
    chart = svg.curve_chart(
        sizes,
        curve["wd_raw"].tolist(),
        curve["wd_raw_low"].tolist(),
        curve["wd_raw_high"].tolist(),
        levels,
        "WD of random respondents against the humans, by their number, and each method's WD",
        x_label="random respondents drawn from the humans (log scale)",
        y_label="WD",
    )
    return {"chart": chart, "smallest": f"{sizes[0]:,}", "largest": f"{sizes[-1]:,}"}


def _agreement_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    return [
        {"label": method_label(row["method"]), **{k: _number(v) for k, v in row.items() if k != "method"}}
        for row in evaluation.agreement.to_dict("records")
    ]


def _coverage_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    """Per log-prob stage and method: items scored, mean observed mass and imputed share."""
    return [
        {
            "stage": row["stage"],
            "label": "Backstory pool" if row["method"] == "anthology" else method_label(row["method"]),
            "scored": int(row["scored"]),
            "coverage": _number(row["mean_coverage"]),
            "imputed": f"{100 * row['imputed_share']:.1f}%",
        }
        for row in evaluation.coverage.to_dict("records")
    ]


def _panels(data: RunData) -> list[dict[str, Any]]:
    """Per panel in matches.parquet: how its personas serve the respondents (a matching: personas
    used, the most respondents one persona serves, the share the busiest 1% of the pool serves;
    :func:`~anthology.method.matching.usage`) or how its weights spread (the raked panel: Kish
    effective sample size, largest weight relative to the mean)."""
    matches = data.matches
    if matches is None:
        return []
    personas = data.demographics if data.demographics is not None else matches
    pool = personas["persona_id"].nunique()
    out = []
    for matching in PANELS:
        rows = matches[matches["method"] == matching]
        if rows.empty:
            continue
        panel = {"label": method_label(f"anthology-{matching}"), "pool": f"{pool:,}"}
        if matching == RAKED:
            weights = rows["weight"].to_numpy(dtype=float)
            panel |= {
                "used": f"{len(rows):,}",
                "served": "–",
                "top": "–",
                "effective": _number(kish_ess(weights), 1),
                "largest": f"{weights.max() / weights.mean():.2f}x",
            }
        else:
            counts = usage(rows["persona_id"].tolist(), pool)
            panel |= {
                "used": f"{counts['personas_used']:,}",
                "served": f"{counts['most_served']:,}",
                "top": f"{100 * counts['top_1pct_share']:.1f}%",
                "effective": "–",
                "largest": "–",
            }
        out.append(panel)
    return out


def _method_summary(data: RunData) -> list[dict[str, Any]]:
    """Per method: personas, answers, non-compliant answers and attempts."""
    rows = []
    for method, part in data.answers.groupby("method", sort=False):
        missing = int(part["position"].isna().sum())
        rows.append(
            {
                "order": data.methods.index(str(method)),
                "label": method_label(str(method)),
                "personas": len(data.persona_frame(str(method))),
                "answers": len(part),
                "noncompliant": missing,
                "share": f"{100 * missing / len(part):.1f}%",
                "attempts": _number(part["attempts"].mean(), 2),
            }
        )
    return sorted(rows, key=lambda r: r["order"])


def _questions(
    data: RunData, comparisons: dict[str, Comparison], evaluation: Evaluation
) -> list[dict[str, Any]]:
    """Per question, the humans' distribution above each method's, as stacked bars."""
    first = next(iter(comparisons.values()))
    floor = evaluation.per_question.drop_duplicates("question_id").set_index("question_id")
    out = []
    for j, question in enumerate(data.compared):
        k = len(question.options)
        rows = [
            svg.StackRow(
                f"Humans (n={len(data.humans)})",
                first.human_distributions[j, :k],
                f"split-half WD {_number(floor.loc[question.id, 'lower_bound_wd_raw'])}",
                reference=True,
            )
        ]
        rows += [
            svg.StackRow(
                method_label(method),
                result.persona_distributions[j, :k],
                f"WD {_number(result.wd_per_question_raw[j])}",
            )
            for method, result in comparisons.items()
        ]
        out.append(
            {
                "id": question.id,
                "wording": question.wording,
                "legend": list(zip(question.labels, svg.ordinal_colors(k), strict=True)),
                "chart": svg.stacked_bars(rows, question.labels, f"Answers to {question.id}"),
            }
        )
    return out


def _correlations(
    data: RunData, comparisons: dict[str, Comparison], evaluation: Evaluation
) -> list[dict[str, Any]]:
    labels = data.question_ids
    first = next(iter(comparisons.values()))
    table = evaluation.table.set_index("method")
    humans = svg.heatmap(first.human_correlation, labels, "Humans")
    maps = [{"title": "Humans", "note": "weighted Pearson", "chart": humans}]
    for method, result in comparisons.items():
        name = method_label(method)
        maps.append(
            {
                "title": name,
                "note": f"Fro. {_number(table.loc[method, 'frobenius'])}",
                "chart": svg.heatmap(result.persona_correlation, labels, name),
            }
        )
    return maps


def _subgroups(evaluation: Evaluation, methods: tuple[str, ...]) -> dict[str, Any]:
    """WD per subgroup (rows) and method (columns), with the subgroup's own split-half (marked noisy
    under :data:`RELIABLE_RESPONDENTS` humans); every trait of the survey the humans carry."""
    frame = evaluation.per_subgroup
    if frame.empty:
        return {"methods": [], "rows": []}
    wide = frame.pivot_table(index=["trait", "group"], columns="method", values="wd_raw", sort=False)
    info = frame.drop_duplicates(["trait", "group"]).set_index(["trait", "group"])
    rows = []
    for key, values in wide.reindex(columns=list(methods)).iterrows():
        best = best_of(values, "min")
        humans = int(info.loc[key, "n_humans"])
        rows.append(
            {
                "trait": key[0],
                "group": key[1],
                "humans": humans,
                "floor": _number(info.loc[key, "lower_bound_wd_raw"]),
                "noisy": not is_reliable(humans),
                "cells": [{"value": _number(values[m]), "best": m == best} for m in methods],
            }
        )
    return {"methods": [method_label(m) for m in methods], "rows": rows}


def _pool_traits(data: RunData) -> list[PoolTrait]:
    """The persona traits the survey maps, the humans carry and the demographic survey asked."""
    demographics = data.demographics
    if demographics is None:
        return []
    persona_ids = pd.Index(demographics["persona_id"].unique())
    out = []
    for definition in data.survey.codebook.matched_traits:
        trait, survey_trait = definition.name, data.survey.codebook.traits[definition.name]
        mapped = {label for c in survey_trait.categories for label in c.persona}
        rows = demographics[demographics["trait"] == trait]
        if rows.empty or trait not in data.humans:
            continue
        kept = rows[rows["option"].isin(mapped - {DECLINE})].groupby("persona_id")["probability"].sum()
        out.append(
            PoolTrait(
                trait=trait,
                labels=survey_trait.labels,
                persona_ids=persona_ids,
                probabilities=persona_probabilities(demographics, definition, survey_trait, persona_ids),
                dropped=float(1 - kept.reindex(persona_ids, fill_value=0.0).mean()),
            )
        )
    return out


def _demographics(data: RunData, pool: list[PoolTrait]) -> list[dict[str, Any]]:
    """Per trait: the humans' weighted shares, the pool's mean probabilities and each matched panel's
    most likely categories."""
    matches = data.run.read("matches") if data.run.has("matches") else pd.DataFrame(columns=["method"])
    out = []
    for item in pool:
        people = data.humans[item.trait].astype(object)
        totals = pd.Series(data.human_weights).groupby(people.to_numpy()).sum()
        humans = totals.reindex(list(item.labels), fill_value=0.0) / max(totals.sum(), 1e-300)
        series = [
            ("Humans", humans.to_numpy(), HUMANS_COLOR),
            (f"Backstory pool (n={len(item.persona_ids)})", item.probabilities.mean(axis=0), POOL_COLOR),
        ]
        likeliest = item.probabilities.argmax(axis=1)
        for matching in PANELS:
            chosen = matches[matches["method"] == matching]
            if chosen.empty:
                continue
            index = item.persona_ids.get_indexer(chosen["persona_id"])
            codes = likeliest[index[index >= 0]]
            weights = chosen["weight"].to_numpy(dtype=float)[index >= 0] if matching == RAKED else None
            counts = np.bincount(codes, weights=weights, minlength=len(item.labels))
            name = "Raked, weighted" if matching == RAKED else f"Matched, {matching}"
            series.append((name, counts / max(counts.sum(), 1e-300), MATCHING_COLORS[matching]))
        out.append(
            {
                "trait": item.trait,
                "dropped": f"{100 * item.dropped:.1f}%",
                "legend": [(name, color) for name, _, color in series],
                "chart": svg.grouped_bars(item.labels, series, f"{item.trait}: humans, pool and panels"),
            }
        )
    return out


def _pool_audit(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The "Pool audit" section, from the pool stage's entry (``None``: the run has none)."""
    entry = manifest.get("stages", {}).get("pool")
    return pool_section(entry, (entry or {}).get("settings", {}).get("pool", {}))


def _samples(data: RunData, pool: list[PoolTrait]) -> list[dict[str, Any]]:
    """A few matched backstories with their human's demographics and the persona's likeliest ones."""
    if not (data.run.has("matches") and data.run.has("backstories")):
        return []
    matches = data.run.read("matches")
    matching = next((m for m in MATCHINGS if (matches["method"] == m).any()), None)
    if matching is None:
        return []
    stories = read_pool(data.run, "backstories").set_index("persona_id")["text"]
    humans = data.humans.set_index("respondent_id")
    traits = [c for c in humans.columns if c != "weight" and c not in data.question_ids]
    picked = matches[matches["method"] == matching].drop_duplicates("persona_id").head(SAMPLE_BACKSTORIES)
    by_trait = {item.trait: item for item in pool}
    out = []
    for match in picked.itertuples(index=False):
        rows = []
        for trait in traits:
            human = humans.at[match.respondent_id, trait]
            row = {"trait": trait, "human": "–" if pd.isna(human) else human, "persona": "–", "agree": False}
            item = by_trait.get(trait)
            if item is not None and match.persona_id in item.persona_ids:
                p = item.probabilities[item.persona_ids.get_loc(match.persona_id)]
                likeliest = item.labels[int(p.argmax())]
                row |= {"persona": f"{likeliest} ({p.max():.0%})", "agree": likeliest == human}
            rows.append(row)
        out.append(
            {
                "persona": match.persona_id,
                "respondent": match.respondent_id,
                "matching": matching,
                "log_weight": _number(match.log_weight, 2),
                "traits": rows,
                "text": stories.get(match.persona_id, ""),
            }
        )
    return out


def _timestamp(seconds: float | None) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "–"


def _metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    """The model, versions and, per stage, its time, seed, model calls and parameters."""
    stages = []
    for name, info in manifest.get("stages", {}).items():
        calls = info.get("model_calls", {})
        params = {k: v for k, v in info.items() if k not in ("finished_at", "seconds", "seed", "model_calls")}
        stages.append(
            {
                "name": name,
                "finished": _timestamp(info.get("finished_at")),
                "seconds": _number(info.get("seconds"), 1),
                "seed": info.get("seed", "–"),
                **{
                    key: f"{calls[field]:,}" if field in calls else "–"
                    for key, field in (
                        ("calls", "calls"),
                        ("hits", "cache_hits"),
                        ("computed", "computed"),
                        ("prompt_tokens", "prompt_tokens"),
                        ("completion_tokens", "completion_tokens"),
                    )
                },
                "params": json.dumps(params, indent=2, default=str),
            }
        )
    model = manifest.get("model", {})
    return {
        "model": model.get("name", "unknown"),
        "identity": json.dumps(model.get("identity", {}), indent=2, default=str),
        "versions": manifest.get("versions", {}),
        "stages": stages,
    }
