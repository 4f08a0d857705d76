"""Evaluate a run directory: every persona method's answers against the human respondents with the
paper's metrics (:mod:`anthology.metrics`), the human split-half lower bound, bootstrap intervals, and
breakdowns per question, per subgroup and per matched pair.

    from anthology.evaluation import evaluate

    result = evaluate("runs/w34")          # also writes metrics*.csv into the run directory
    result.table                            # the paper's Table 1: one row per method + lower bound

Conventions. The humans are ``humans.parquet`` with their survey weights; each method's personas are
its rows of ``answers.parquet`` pivoted to one row per respondent, each counting once (no weights).
``wd_raw`` is ``scipy.stats.wasserstein_distance`` on positions 1..K (the paper's WD) and
``wd_normalized`` divides it by K-1 (OpinionQA's form). ``wd_expected_*`` use the exact expected
distributions of logprob-mode runs instead of the sampled answers. Intervals are 95% percentile
bootstrap intervals (humans and personas resampled independently, the same seed for every method);
for the lower-bound row they are the middle 95% of the split-half values. The alpha of the lower-bound
row is the humans' own (survey-weighted) Cronbach's alpha.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anthology.coverage import score_coverage
from anthology.errors import ConfigError
from anthology.metrics import (
    Comparison,
    LowerBound,
    WassersteinDistances,
    bootstrap,
    compare,
    expected_distributions,
    human_lower_bound,
    individual_agreement,
    metrics_table,
    per_question_table,
    subgroup_breakdown,
    subgroup_table,
    wasserstein_distances,
)
from anthology.metrics.frames import answers_from_frame
from anthology.store import RunDir
from anthology.surveys import Questionnaire, Survey, load_survey

#: Methods in the order of the paper's table, with their display names.
METHOD_LABELS = {
    "anthology-greedy": "Anthology (greedy)",
    "anthology-max-weight": "Anthology (max-weight)",
    "anthology-random": "Anthology (random)",
    "bio": "Bio",
    "qa": "QA",
    "portray": "Portray",
    "nothing": "Nothing",
    "dp": "Anthology DP",
}
LOWER_BOUND = "human-lower-bound"
LOWER_BOUND_LABEL = "Human lower bound"

#: The human traits the subgroup breakdown uses, where humans.parquet has them.
SUBGROUP_TRAITS = ("age", "gender", "race", "party", "education")

#: Columns of the paper-style table: metric -> (heading, "min" or "max" is better).
TABLE_COLUMNS = {
    "wd_raw": ("WD", "min"),
    "wd_normalized": ("WD/(K-1)", "min"),
    "frobenius": ("Fro.", "min"),
    "alpha": ("alpha", "max"),
    "wd_expected_raw": ("WD exp.", "min"),
    "wd_expected_normalized": ("WD exp./(K-1)", "min"),
}

#: The files :func:`evaluate` writes into the run directory.
FILES = {
    "metrics": "metrics.csv",
    "per_question": "metrics_per_question.csv",
    "per_subgroup": "metrics_per_subgroup.csv",
    "coverage": "score_coverage.csv",
}

_PERSONA_METRICS = ("wd_raw", "wd_normalized", "frobenius", "alpha_personas", "alpha_personas_weighted")
_HUMAN_ALPHAS = ("alpha_humans", "alpha_humans_weighted")
_AGREEMENT = ("exact_match_rate", "mean_abs_distance", "mean_abs_distance_normalized")
_SPLIT_SPREAD = (2.5, 97.5)


def method_label(method: str) -> str:
    """The display name of a method id."""
    return LOWER_BOUND_LABEL if method == LOWER_BOUND else METHOD_LABELS.get(method, method)


@dataclass(frozen=True)
class RunData:
    """What evaluation reads from a run directory: the survey (for its questionnaire and trait
    mapping), the humans and every method's answers."""

    run: RunDir
    manifest: dict[str, Any]
    survey: Survey
    humans: pd.DataFrame
    answers: pd.DataFrame
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def questionnaire(self) -> Questionnaire:
        return self.survey.questionnaire

    @property
    def question_ids(self) -> list[str]:
        return list(self.questionnaire.ids)

    @cached_property
    def n_options(self) -> np.ndarray:
        return np.array([len(q.options) for q in self.questionnaire.questions])

    @cached_property
    def human_answers(self) -> np.ndarray:
        """``(n_humans, q)`` positions, 0 for no answer, in questionnaire order."""
        return answers_from_frame(self.humans, self.question_ids)

    @cached_property
    def human_weights(self) -> np.ndarray:
        return self.humans["weight"].to_numpy(dtype=float)

    @cached_property
    def methods(self) -> tuple[str, ...]:
        """The methods with answers, in the paper's order (unknown ones last)."""
        present = self.answers["method"].unique().tolist()
        order = list(METHOD_LABELS)
        return tuple(sorted(present, key=lambda m: (order.index(m) if m in order else len(order), m)))

    @cached_property
    def traits(self) -> list[str]:
        """The subgroup traits humans.parquet holds."""
        return [t for t in SUBGROUP_TRAITS if t in self.humans.columns]

    def persona_frame(self, method: str) -> pd.DataFrame:
        """One row per respondent the method answered for (index ``respondent_id``), one column of
        positions per question."""
        if method not in self._frames:
            rows = self.answers[self.answers["method"] == method]
            wide = rows.pivot(index="respondent_id", columns="question_id", values="position")
            self._frames[method] = wide.reindex(columns=self.question_ids)
        return self._frames[method]

    def persona_answers(self, method: str) -> np.ndarray:
        return answers_from_frame(self.persona_frame(method))

    def matched_answers(self, method: str) -> np.ndarray:
        """The method's answers aligned row by row with the humans (no answers where it has no row)."""
        frame = self.persona_frame(method).reindex(self.humans["respondent_id"])
        return answers_from_frame(frame)

    def probabilities(self, method: str) -> np.ndarray | None:
        """``(n_personas, q, max K)`` per-answer option probabilities (logprob mode), rows in
        :meth:`persona_frame` order; ``None`` when the method's answers carry none."""
        rows = self.answers[(self.answers["method"] == method) & self.answers["probabilities"].notna()]
        if rows.empty:
            return None
        index = self.persona_frame(method).index
        out = np.full((len(index), len(self.question_ids), int(self.n_options.max())), np.nan)
        column = {qid: j for j, qid in enumerate(self.question_ids)}
        for qid, part in rows[rows["question_id"].isin(column)].groupby("question_id", sort=False):
            j = column[qid]
            where = index.get_indexer(part["respondent_id"])
            out[where, j, :] = 0.0
            out[where, j, : self.n_options[j]] = np.stack(part["probabilities"].to_numpy())
        return out

    def groups(self, trait: str, respondent_ids: Any) -> np.ndarray:
        """The category code (float, NaN for none) of the given respondents' ``trait``, so subgroups
        sort in the trait's category order."""
        column = self.humans.set_index("respondent_id")[trait].astype("category")
        codes = column.cat.codes.reindex(respondent_ids).to_numpy(dtype=float, na_value=np.nan)
        return np.where(codes >= 0, codes, np.nan)

    def category(self, trait: str, code: float) -> Any:
        return self.humans[trait].astype("category").cat.categories[int(code)]


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory's humans, answers and survey; a missing artifact raises ``ConfigError``
    naming the command that makes it."""
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    run = RunDir(run_dir)
    humans = run.read("humans")
    answers = run.read("answers")
    manifest = run.manifest()
    info = manifest.get("stages", {}).get("match", {}).get("survey")
    if info is None:
        raise ConfigError(f"{run.manifest_path} records no matched survey: run `anthology match {run.root}`")
    survey = load_survey(info["name"], info.get("data"))
    missing = [q for q in survey.questionnaire.ids if q not in humans.columns]
    if missing:
        raise ConfigError(
            f"{run.artifact('humans')} has no column for question {missing[0]!r} of survey {survey.name!r}: "
            f"rerun `anthology match {run.root}`"
        )
    if answers.empty:
        raise ConfigError(f"{run.artifact('answers')} holds no answers: rerun `anthology ask {run.root}`")
    return RunData(run, manifest, survey, humans, answers)


@dataclass(frozen=True)
class Evaluation:
    """The evaluation of a run: ``metrics`` (long: method, metric, value, ci_low, ci_high; the rows of
    metrics.csv), ``per_question`` and ``per_subgroup`` tables, ``coverage`` (observed and imputed
    option mass of log-prob stages, :func:`anthology.coverage.score_coverage`); ``table`` (the paper's
    layout) and ``agreement`` (matched pairs) are derived from ``metrics``."""

    metrics: pd.DataFrame
    per_question: pd.DataFrame
    per_subgroup: pd.DataFrame
    coverage: pd.DataFrame

    @cached_property
    def table(self) -> pd.DataFrame:
        return paper_table(self.metrics)

    @cached_property
    def agreement(self) -> pd.DataFrame:
        """One row per method: exact match rate and mean ordinal distance of the matched pairs."""
        rows = self.metrics[self.metrics["metric"].isin(_AGREEMENT)]
        wide = rows.pivot(index="method", columns="metric", values="value").reindex(columns=list(_AGREEMENT))
        order = [m for m in dict.fromkeys(self.metrics["method"]) if m in wide.index]
        return wide.reindex(order).rename_axis(columns=None).reset_index()

    def write(self, run: RunDir) -> dict[str, Path]:
        paths = {}
        for key, name in FILES.items():
            paths[key] = run.root / name
            getattr(self, key).to_csv(paths[key], index=False)
        return paths


def read_evaluation(run_dir: str | Path) -> Evaluation:
    """The evaluation that :func:`evaluate` wrote into the run directory."""
    root = Path(run_dir)
    frames = {}
    for key, name in FILES.items():
        if not (root / name).exists():
            raise ConfigError(f"{root / name} does not exist: run `anthology evaluate {root}` first")
        frames[key] = pd.read_csv(root / name)
    return Evaluation(**frames)


def is_current(run_dir: str | Path) -> bool:
    """Whether the run's metric files exist and are newer than its humans and answers."""
    run = RunDir(run_dir)
    paths = [run.root / name for name in FILES.values()]
    if not all(p.exists() for p in paths):
        return False
    inputs = [run.artifact(name) for name in ("humans", "answers") if run.has(name)]
    return min(p.stat().st_mtime for p in paths) >= max((p.stat().st_mtime for p in inputs), default=0)


def evaluate(
    run_dir: str | Path, *, n_splits: int = 100, n_resamples: int = 1000, seed: int = 0
) -> Evaluation:
    """Compute every metric of every method in the run directory and write metrics.csv,
    metrics_per_question.csv and metrics_per_subgroup.csv there (see the module docstring)."""
    started = time.perf_counter()
    data = load_run(run_dir)
    human, k, w = data.human_answers, data.n_options, data.human_weights
    lower = human_lower_bound(human, k, w, n_splits=n_splits, seed=seed)
    metrics, questions, subgroups = [], [], []
    for method in data.methods:
        personas = data.persona_answers(method)
        result = compare(human, personas, k, human_weights=w)
        ci = bootstrap(human, personas, k, human_weights=w, n_resamples=n_resamples, seed=seed)
        scalars = metrics_table(result, ci)
        per_question = per_question_table(result, data.question_ids, ci, lower)
        expected = _expected_wd(data, method, result)
        agreement = individual_agreement(human, data.matched_answers(method), k, weights=w)
        extra = {name: getattr(agreement, name) for name in _AGREEMENT}
        per_question["exact_match_rate"] = agreement.per_question_exact_match_rate
        per_question["mean_abs_distance"] = agreement.per_question_mean_abs_distance
        if expected is not None:
            extra["wd_expected_raw"] = expected.mean_raw
            extra["wd_expected_normalized"] = expected.mean_normalized
            per_question["wd_expected_raw"] = expected.per_question_raw
            per_question["wd_expected_normalized"] = expected.per_question_normalized
        if method == data.methods[0]:  # the humans' alphas and their intervals are the same in every run
            human_rows = pd.concat([_lower_bound_rows(lower), scalars[scalars["metric"].isin(_HUMAN_ALPHAS)]])
        metrics.append(
            _with_method(pd.concat([scalars[scalars["metric"].isin(_PERSONA_METRICS)], _rows(extra)]), method)
        )
        questions.append(_with_method(per_question, method))
        subgroups.extend(_subgroups(data, method, personas))
    metrics.append(_with_method(human_rows, LOWER_BOUND))
    per_subgroup = pd.concat(subgroups, ignore_index=True)
    if not per_subgroup.empty:
        floors = _subgroup_lower_bounds(data, n_splits, seed)
        per_subgroup = per_subgroup.merge(floors, on=["trait", "group"], how="left")
    demographics = data.run.read("demographics") if data.run.has("demographics") else None
    evaluation = Evaluation(
        metrics=pd.concat(metrics, ignore_index=True),
        per_question=pd.concat(questions, ignore_index=True),
        per_subgroup=per_subgroup,
        coverage=score_coverage(data.answers, demographics),
    )
    evaluation.write(data.run)
    data.run.record(
        "evaluate",
        {
            "seconds": round(time.perf_counter() - started, 3),
            "seed": seed,
            "n_splits": n_splits,
            "n_resamples": n_resamples,
            "methods": list(data.methods),
        },
    )
    return evaluation


def _with_method(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    return frame.assign(method=method)[["method", *frame.columns]]


def _rows(values: Mapping[str, float]) -> pd.DataFrame:
    """Metric rows without intervals."""
    return pd.DataFrame(
        {"metric": list(values), "value": list(values.values()), "ci_low": np.nan, "ci_high": np.nan}
    )


def _lower_bound_rows(lower: LowerBound) -> pd.DataFrame:
    """The lower bound's scalars with the middle 95% of the split values as the interval (NaN, like
    the mean, when a split left the metric undefined)."""
    table = metrics_table(lower)
    splits = {
        "wd_raw": lower.wd_raw_per_split,
        "wd_normalized": lower.wd_normalized_per_split,
        "frobenius": lower.frobenius_per_split,
    }
    bounds = np.array([np.percentile(splits[name], _SPLIT_SPREAD) for name in table["metric"]])
    table["ci_low"], table["ci_high"] = bounds[:, 0], bounds[:, 1]
    return table


def _expected_wd(data: RunData, method: str, result: Comparison) -> WassersteinDistances | None:
    """WD between the humans and the method's exact expected distributions, or ``None`` without them."""
    probabilities = data.probabilities(method)
    if probabilities is None:
        return None
    expected = expected_distributions(probabilities, data.n_options)
    return wasserstein_distances(result.human_distributions, expected, data.n_options)


def _subgroups(data: RunData, method: str, personas: np.ndarray) -> list[pd.DataFrame]:
    """Per trait, the method's metrics within each subgroup; personas take their human's group."""
    persona_ids = data.persona_frame(method).index
    frames = []
    for trait in data.traits:
        breakdown = subgroup_breakdown(
            data.human_answers,
            personas,
            data.n_options,
            data.groups(trait, data.humans["respondent_id"]),
            data.groups(trait, persona_ids),
            human_weights=data.human_weights,
        )
        table = subgroup_table(breakdown, group="group")
        table["group"] = [data.category(trait, code) for code in table["group"]]
        frames.append(table.assign(method=method, trait=trait)[["method", "trait", *table.columns]])
    return frames


def _subgroup_lower_bounds(data: RunData, n_splits: int, seed: int) -> pd.DataFrame:
    """The split-half lower bound (WD raw, Fro.) of the humans within each subgroup (NaN under two)."""
    rows = []
    for trait in data.traits:
        codes = data.groups(trait, data.humans["respondent_id"])
        for code in np.unique(codes[~np.isnan(codes)]):
            mask = codes == code
            floor = (
                human_lower_bound(
                    data.human_answers[mask],
                    data.n_options,
                    data.human_weights[mask],
                    n_splits=n_splits,
                    seed=seed,
                ).scalars()
                if mask.sum() >= 2
                else {"wd_raw": np.nan, "frobenius": np.nan}
            )
            rows.append(
                {
                    "trait": trait,
                    "group": data.category(trait, code),
                    "lower_bound_wd_raw": floor["wd_raw"],
                    "lower_bound_frobenius": floor["frobenius"],
                }
            )
    return pd.DataFrame(rows, columns=["trait", "group", "lower_bound_wd_raw", "lower_bound_frobenius"])


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
