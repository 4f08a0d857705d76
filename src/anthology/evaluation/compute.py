"""Compute an evaluation from loaded run data (:func:`compute`, no I/O): per method (one row per
weighting of its personas, :meth:`~anthology.evaluation.load.RunData.rows`) the paper's
metrics with bootstrap intervals, the expected-distribution WD of log-prob runs, the matched-pair
agreement and how many humans its panel is worth (read off the humans' curve of WD against panel
size, :mod:`anthology.metrics.worth`); per question and per subgroup the same with the humans'
split-half lower bound; and the option coverage of the log-prob stages. A Fro. or alpha that
:mod:`.sizes` finds undefined is NaN with its reason in ``note`` (and no interval). The conventions
are in :mod:`anthology.evaluation`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from anthology.coverage import score_coverage
from anthology.evaluation.load import RunData
from anthology.evaluation.names import AGREEMENT, LOWER_BOUND, row_method
from anthology.evaluation.retest import retest_table
from anthology.evaluation.sizes import alpha_note, frobenius_note, split_note, worth_note
from anthology.evaluation.tables import agreement_table, paper_table
from anthology.method.raking import kish_ess
from anthology.metrics import (
    SCALAR_METRICS,
    Comparison,
    LowerBound,
    WassersteinDistances,
    WorthCurve,
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
    worth_curve,
    worth_n_humans,
)

_PERSONA_METRICS = ("wd_raw", "wd_normalized", "frobenius", "alpha_personas", "alpha_personas_weighted")
#: The metric row counting each row's respondents (the personas; the humans on the lower-bound row).
N_RESPONDENTS = "n_respondents"
#: A weighted row's Kish effective sample size and largest weight relative to the mean weight.
N_EFFECTIVE = "n_effective"
MAX_WEIGHT_RATIO = "max_weight_ratio"
_HUMAN_ALPHAS = ("alpha_humans", "alpha_humans_weighted")
_SPLIT_SPREAD = (2.5, 97.5)
_FLOORS = ("lower_bound_wd_raw", "lower_bound_frobenius")
_SUBGROUP_COLUMNS = ("method", "trait", "group", "n_humans", "n_personas", *SCALAR_METRICS, *_FLOORS, "note")


@dataclass(frozen=True)
class Evaluation:
    """The evaluation of a run: ``metrics`` (long: method, metric, value, ci_low, ci_high, note; the
    rows of metrics.csv), ``per_question`` and ``per_subgroup`` tables, ``coverage`` (observed and imputed
    option mass of log-prob stages, :func:`anthology.coverage.score_coverage`), ``worth_curve`` (the
    humans' WD against panel size that ``worth_n_humans`` is read off: size, wd_raw and its band
    wd_raw_low, wd_raw_high); ``table`` (the paper's layout) and ``agreement`` (matched pairs) are
    derived from ``metrics``."""

    metrics: pd.DataFrame
    per_question: pd.DataFrame
    per_subgroup: pd.DataFrame
    coverage: pd.DataFrame
    worth_curve: pd.DataFrame
    retest: pd.DataFrame  # test-retest of repeated questions (no rows without them; evaluation.retest)

    @cached_property
    def table(self) -> pd.DataFrame:
        return paper_table(self.metrics)

    @cached_property
    def agreement(self) -> pd.DataFrame:
        """One row per method: exact match rate and mean ordinal distance of the matched pairs."""
        return agreement_table(self.metrics)


def compute(
    data: RunData, *, n_splits: int, n_resamples: int, seed: int, persona_weights: str = "equal"
) -> Evaluation:
    """Every metric of every method in ``data`` (see :mod:`anthology.evaluation`); the persona side
    of each method's rows weighted as ``persona_weights`` says (:meth:`RunData.rows`)."""
    human, k, w = data.human_answers, data.n_options, data.human_weights
    lower = human_lower_bound(human, k, w, n_splits=n_splits, seed=seed)
    curve = worth_curve(human, k, w, n_draws=n_splits, seed=seed)
    metrics, questions, subgroups = [], [], []
    rows = data.rows(persona_weights)
    agreed: set[str] = set()  # each human-persona pair counts with the human's weight on every row
    for row in rows:
        method, _ = row_method(row)
        personas, pw = data.persona_answers(method), data.persona_weights(row)
        result = compare(human, personas, k, human_weights=w, persona_weights=pw)
        ci = bootstrap(
            human, personas, k, human_weights=w, persona_weights=pw, n_resamples=n_resamples, seed=seed
        )
        scalars = _undefine(metrics_table(result, ci), _comparison_notes(result))
        per_question = per_question_table(result, data.question_ids, ci, lower)
        expected = _expected_wd(data, method, result, pw)
        extra = {N_RESPONDENTS: result.n_personas, **_weight_rows(pw)}
        if data.has_respondents(method) and method not in agreed:  # the raked pool has no pairs
            agreed.add(method)
            agreement = individual_agreement(human, data.matched_answers(method), k, weights=w)
            extra |= {name: getattr(agreement, name) for name in AGREEMENT}
            per_question["exact_match_rate"] = agreement.per_question_exact_match_rate
            per_question["mean_abs_distance"] = agreement.per_question_mean_abs_distance
        if expected is not None:
            extra["wd_expected_raw"] = expected.mean_raw
            extra["wd_expected_normalized"] = expected.mean_normalized
            per_question["wd_expected_raw"] = expected.per_question_raw
            per_question["wd_expected_normalized"] = expected.per_question_normalized
        if row == rows[0]:  # the humans' alphas and their intervals are the same in every run
            human_rows = pd.concat(
                [
                    _lower_bound_rows(lower, len(data.question_ids)),
                    scalars[scalars["metric"].isin(_HUMAN_ALPHAS)],
                    _rows({N_RESPONDENTS: result.n_humans, **_weight_rows(w)}),
                ]
            )
        persona_rows = scalars[scalars["metric"].isin(_PERSONA_METRICS)]
        worth = _worth_row(curve, result.wd_raw)
        metrics.append(_with_method(pd.concat([persona_rows, worth, _rows(extra)]), row))
        questions.append(_with_method(per_question, row))
        subgroups.extend(_subgroups(data, row, personas, pw))
    metrics.append(_with_method(human_rows, LOWER_BOUND))
    per_subgroup = pd.DataFrame(columns=list(_SUBGROUP_COLUMNS))  # a survey without traits has no subgroups
    if subgroups:
        floors = _subgroup_lower_bounds(data, n_splits, seed)
        merged = pd.concat(subgroups, ignore_index=True).merge(floors, on=["trait", "group"], how="left")
        per_subgroup = _with_floor_notes(merged)
    return Evaluation(
        metrics=pd.concat(metrics, ignore_index=True),
        per_question=pd.concat(questions, ignore_index=True),
        per_subgroup=per_subgroup,
        coverage=score_coverage(data.answers, data.demographics),
        worth_curve=pd.DataFrame(
            {"size": curve.sizes, "wd_raw": curve.wd_raw, "wd_raw_low": curve.low, "wd_raw_high": curve.high}
        ),
        retest=retest_table(data),
    )


def _with_floor_notes(frame: pd.DataFrame) -> pd.DataFrame:
    """The subgroup rows with the lower bound's reasons joined into ``note``, as the last column."""
    parts = frame[["note", "lower_bound_note"]].to_numpy()
    notes = ["; ".join(part for part in row if isinstance(part, str)) or None for row in parts]
    return frame.drop(columns=["note", "lower_bound_note"]).assign(note=notes)


def _with_method(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    return frame.assign(method=method)[["method", *frame.columns]]


def _rows(values: Mapping[str, float]) -> pd.DataFrame:
    """Metric rows without intervals or notes."""
    return pd.DataFrame(
        {
            "metric": list(values),
            "value": [float(v) for v in values.values()],
            "ci_low": np.nan,
            "ci_high": np.nan,
            "note": None,
        }
    )


def _comparison_notes(result: Comparison) -> dict[str, str]:
    """Why each of a comparison's Fro. and alphas is undefined (:mod:`.sizes`), by metric; only the
    undefined ones."""
    q = len(result.n_options)
    notes = {"frobenius": frobenius_note(q, result.human_support, result.persona_support)}
    for side, support in (("humans", result.human_support), ("personas", result.persona_support)):
        for metric in (f"alpha_{side}", f"alpha_{side}_weighted"):
            notes[metric] = alpha_note(q, support, side, getattr(result, metric))
    return {metric: note for metric, note in notes.items() if note is not None}


def _undefine(table: pd.DataFrame, notes: Mapping[str, str]) -> pd.DataFrame:
    """Long metric rows with each noted metric's value and interval NaN and its reason in ``note``."""
    noted = table["metric"].isin(list(notes))
    table = table.assign(note=table["metric"].map(notes))
    table.loc[noted, ["value", "ci_low", "ci_high"]] = np.nan
    return table


def _worth_row(curve: WorthCurve, wd_raw: float) -> pd.DataFrame:
    """The ``worth_n_humans`` row: the panel size whose WD matches ``wd_raw`` and the sizes where the
    curve's band does; at the grid's end, with the reason, when it lies beyond."""
    worth = worth_n_humans(curve, wd_raw)
    return pd.DataFrame(
        {
            "metric": ["worth_n_humans"],
            "value": [worth.estimate],
            "ci_low": [worth.low],
            "ci_high": [worth.high],
            "note": [worth_note(worth, curve.sizes)],
        }
    )


def _lower_bound_rows(lower: LowerBound, q: int) -> pd.DataFrame:
    """The lower bound's scalars with the middle 95% of the split values as the interval (NaN, like
    the mean, when a split left the metric undefined); Fro. undefined when a split half fails the
    rule (:func:`.sizes.split_note`)."""
    table = metrics_table(lower)
    splits = {
        "wd_raw": lower.wd_raw_per_split,
        "wd_normalized": lower.wd_normalized_per_split,
        "frobenius": lower.frobenius_per_split,
    }
    bounds = np.array([np.percentile(splits[name], _SPLIT_SPREAD) for name in table["metric"]])
    table["ci_low"], table["ci_high"] = bounds[:, 0], bounds[:, 1]
    note = split_note(q, lower)
    return _undefine(table, {"frobenius": note} if note else {})


def _weight_rows(weights: np.ndarray | None) -> dict[str, float]:
    """A weighted panel's Kish effective sample size and largest weight relative to the mean (none
    for a panel whose members count once)."""
    if weights is None:
        return {}
    return {N_EFFECTIVE: kish_ess(weights), MAX_WEIGHT_RATIO: float(weights.max() / weights.mean())}


def _expected_wd(
    data: RunData, method: str, result: Comparison, weights: np.ndarray | None
) -> WassersteinDistances | None:
    """WD between the humans and the method's exact expected distributions (members weighted as in
    ``result``), or ``None`` without them."""
    probabilities = data.probabilities(method)
    if probabilities is None:
        return None
    expected = expected_distributions(probabilities, data.n_options, weights)
    return wasserstein_distances(result.human_distributions, expected, data.n_options)


def _subgroups(
    data: RunData, metrics_row: str, personas: np.ndarray, weights: np.ndarray | None
) -> list[pd.DataFrame]:
    """Per trait, a metrics row's metrics within each subgroup; personas take their human's group (in
    the raked pool, their own most likely category), and keep their weights."""
    method, _ = row_method(metrics_row)
    frames = []
    for trait in data.traits:
        breakdown = subgroup_breakdown(
            data.human_answers,
            personas,
            data.n_options,
            data.groups(trait, data.humans["respondent_id"]),
            data.persona_groups(method, trait),
            human_weights=data.human_weights,
            persona_weights=weights,
        )
        table = subgroup_table(breakdown, group="group")
        notes = [_comparison_notes(result) for result in breakdown.values()]
        for row, noted in enumerate(notes):
            if noted:
                table.loc[row, list(noted)] = np.nan
        table["note"] = [_join_notes(noted) for noted in notes]
        table["group"] = [data.category(trait, code) for code in table["group"]]
        frames.append(table.assign(method=metrics_row, trait=trait)[["method", "trait", *table.columns]])
    return frames


def _subgroup_lower_bounds(data: RunData, n_splits: int, seed: int) -> pd.DataFrame:
    """The split-half lower bound (WD raw, Fro.) of the humans within each subgroup, with the reason
    where it is undefined (under two humans; a split half that fails the rule for Fro.)."""
    q = len(data.question_ids)
    rows = []
    for trait in data.traits:
        codes = data.groups(trait, data.humans["respondent_id"])
        for code in np.unique(codes[~np.isnan(codes)]):
            mask = codes == code
            wd, fro, notes = np.nan, np.nan, {}
            if mask.sum() < 2:
                notes = dict.fromkeys(_FLOORS, "fewer than two humans to split")
            else:
                lower = human_lower_bound(
                    data.human_answers[mask],
                    data.n_options,
                    data.human_weights[mask],
                    n_splits=n_splits,
                    seed=seed,
                )
                wd, note = lower.wd_raw, split_note(q, lower)
                fro, notes = (np.nan, {_FLOORS[1]: note}) if note else (lower.frobenius, {})
            rows.append(
                {
                    "trait": trait,
                    "group": data.category(trait, code),
                    _FLOORS[0]: wd,
                    _FLOORS[1]: fro,
                    "lower_bound_note": _join_notes(notes),
                }
            )
    return pd.DataFrame(rows, columns=["trait", "group", *_FLOORS, "lower_bound_note"])


def _join_notes(notes: Mapping[str, str]) -> str | None:
    """One ``note`` cell from ``{metric: reason}``: "metric, metric: reason; ...", ``None`` for none."""
    by_reason: dict[str, list[str]] = {}
    for metric, reason in notes.items():
        by_reason.setdefault(reason, []).append(metric)
    return "; ".join(f"{', '.join(metrics)}: {reason}" for reason, metrics in by_reason.items()) or None
