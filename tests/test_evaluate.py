"""``anthology evaluate`` on a run directory built from small synthetic artifacts with known answers,
against the built-in GSS 2018 questionnaire. ``make_run`` is shared with test_report.py."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from click.testing import CliRunner

from anthology.cli import app
from anthology.errors import ConfigError
from anthology.evaluation import (
    FILES,
    LOWER_BOUND,
    MIN_COMPLETE,
    evaluate,
    is_current,
    load_run,
    read_evaluation,
)
from anthology.metrics import compare, human_lower_bound, worth_curve, worth_n_humans
from anthology.store import RunDir
from anthology.surveys import CANONICAL_TRAITS, load_survey

SURVEY = "gss2018-spending"
SCRIPT = "<script>alert(1)</script>"
IMAGE = "<img src=x onerror=alert(1)>"
N_HUMANS = 40
N_PERSONAS = 12
#: The humans' traits: persona traits and a survey-only one (ideology), not in codebook order.
TRAITS = ("age", "gender", "race", "party", "education", "income", "ideology")


@functools.cache
def survey_layout() -> tuple[tuple[str, ...], tuple[int, ...], dict[str, tuple[str, ...]]]:
    """Question ids, K per question and the survey's trait categories."""
    survey = load_survey(SURVEY)
    traits = {t: survey.codebook.traits[t].labels for t in TRAITS}
    return survey.questionnaire.ids, tuple(len(q.options) for q in survey.questionnaire.questions), traits


def _probabilities(positions: pd.Series, k: int) -> list[np.ndarray | None]:
    """One-hot option probabilities (what logprob mode stores), None for no answer."""
    return [None if pd.isna(p) else np.eye(k)[int(p) - 1] for p in positions]


def make_run(root: Path, *, weighted: bool = False, model: str = "synthetic-model", seed: int = 0) -> Path:
    """A run directory with humans, answers, backstories, demographics, matches and a manifest.

    Methods: ``anthology-greedy`` answers exactly as its human; ``qa`` always picks the last option;
    ``nothing`` answers at random; ``dp`` answers at random for half of the humans. Every answer
    carries one-hot probabilities, so the expected-distribution WD equals the sampled one. Humans have
    survey weights only when ``weighted`` (else the greedy panel's distributions are exactly theirs).
    Persona ``p000`` (matched to the first human) has a backstory with HTML in it.
    """
    rng = np.random.default_rng(seed)
    ids, ks, labels = survey_layout()
    weights = rng.uniform(0.5, 2, N_HUMANS) if weighted else np.ones(N_HUMANS)
    humans = pd.DataFrame({"respondent_id": np.arange(100, 100 + N_HUMANS), "weight": weights})
    for trait, categories in labels.items():
        values = pd.Series(
            pd.Categorical(rng.choice(categories, N_HUMANS), categories=categories, ordered=True)
        )
        values[rng.random(N_HUMANS) < 0.05] = None
        humans[trait] = values
    for qid, k in zip(ids, ks, strict=True):
        column = pd.array(rng.integers(1, k + 1, N_HUMANS), dtype="Int64")
        column[rng.random(N_HUMANS) < 0.05] = pd.NA
        humans[qid] = column
    personas = [f"p{i:03d}" for i in range(N_PERSONAS)]
    greedy = [personas[i % N_PERSONAS] for i in range(N_HUMANS)]
    answers = []
    for method in ("nothing", "dp", "qa", "anthology-greedy"):  # not the paper's order
        people = humans.iloc[: N_HUMANS // 2] if method == "dp" else humans
        n = len(people)
        persona_ids = greedy[:n] if method == "anthology-greedy" else [f"{method}-{i}" for i in range(n)]
        for qid, k in zip(ids, ks, strict=True):
            if method == "anthology-greedy":
                position = people[qid].reset_index(drop=True)
            else:
                drawn = [k] * n if method == "qa" else rng.integers(1, k + 1, n)
                position = pd.Series(pd.array(drawn, dtype="Int64"))
            answers.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "respondent_id": people["respondent_id"].to_numpy(),
                        "persona_id": persona_ids,
                        "question_id": qid,
                        "position": position,
                        "attempts": 1,
                        "compliant": position.notna().to_numpy(),
                        "probabilities": _probabilities(position, k),
                        # qa's server saw 0.6 of the mass and imputed 0.2 (a quarter): evaluate warns.
                        "coverage": 0.6 if method == "qa" else 0.9,
                        "imputed": 0.2 if method == "qa" else 0.0,
                    }
                )
            )
    stories = [f"I grew up in Ohio and I am persona {p}." for p in personas]
    stories[0] = f"I was born in Texas. {SCRIPT} Then {IMAGE} and more."
    demographics = []
    for persona in personas:
        for trait in ("age", "gender", "education", "income", "race", "religion", "region", "party"):
            options = CANONICAL_TRAITS[trait].categories
            demographics.append(
                pd.DataFrame(
                    {
                        "persona_id": persona,
                        "trait": trait,
                        "option": options,
                        "position": np.arange(1, len(options) + 1),
                        "probability": rng.dirichlet(np.ones(len(options))) * 0.9,
                        "noncompliant": 0.1,
                        "coverage": 0.9,
                        "imputed": 0.0,
                        "mode": "logprob",
                        "swapped": False,
                    }
                )
            )
    matches = pd.DataFrame(
        {
            "method": np.repeat(["greedy", "random"], N_HUMANS),
            "respondent_id": np.tile(humans["respondent_id"].to_numpy(), 2),
            "persona_id": greedy + list(rng.choice(personas, N_HUMANS)),
            "log_weight": rng.normal(-8, 1, 2 * N_HUMANS),
        }
    )
    run = RunDir(root)
    run.write("humans", humans)
    run.write("answers", pd.concat(answers, ignore_index=True).astype({"position": "Int64"}))
    run.write("backstories", pd.DataFrame({"persona_id": personas, "text": stories, "kept": True}))
    run.write("demographics", pd.concat(demographics, ignore_index=True))
    run.write("matches", matches)
    calls = {"calls": 3, "cache_hits": 7, "computed": 40, "prompt_tokens": 1234, "completion_tokens": 567}
    run.record("backstories", {"seconds": 1.5, "seed": seed, "model_calls": calls}, model={"name": model})
    run.record("match", {"seed": seed, "survey": {"name": SURVEY, "data": None, "respondents": N_HUMANS}})
    return root


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = make_run(tmp_path_factory.mktemp("run") / "run")
    return root, evaluate(root, n_splits=20, n_resamples=200, seed=0)


def _value(result, method: str, metric: str) -> pd.Series:
    rows = result.metrics[(result.metrics["method"] == method) & (result.metrics["metric"] == metric)]
    assert len(rows) == 1, (method, metric)
    return rows.iloc[0]


def test_table_has_the_papers_rows_in_order_and_the_lower_bound_last(evaluated):
    _, result = evaluated
    table = result.table
    assert table["method"].tolist() == ["anthology-greedy", "qa", "nothing", "dp", LOWER_BOUND]
    assert table["label"].tolist() == [
        "Anthology (greedy)",
        "QA",
        "Nothing",
        "Anthology DP",
        "Split-half reference (noisy at n=40)",  # 40 humans: under RELIABLE_RESPONDENTS
    ]
    for metric in (
        "wd_raw",
        "wd_normalized",
        "frobenius",
        "alpha",
        "wd_expected_raw",
        "wd_expected_normalized",
    ):
        assert {metric, f"{metric}_ci_low", f"{metric}_ci_high"} <= set(table.columns)
    assert table.iloc[-1][["wd_expected_raw", "wd_expected_normalized"]].isna().all()


def test_a_panel_that_answers_like_its_humans_scores_zero(evaluated):
    _, result = evaluated
    row = result.table.set_index("method").loc["anthology-greedy"]
    assert abs(row["wd_raw"]) < 1e-12 and abs(row["wd_normalized"]) < 1e-12
    assert abs(row["frobenius"]) < 1e-9
    # A percentile interval of a distance starts at or above 0 (resampling only adds distance) and
    # covers the estimate's neighbourhood: its low end is no further from 0 than the human noise floor.
    assert 0 <= row["wd_raw_ci_low"] <= row["wd_raw_ci_high"]
    floor = result.table.set_index("method").loc[LOWER_BOUND, "wd_raw"]
    assert row["wd_raw_ci_low"] < floor
    assert row["alpha_ci_low"] <= row["alpha"] <= row["alpha_ci_high"]
    assert abs(row["alpha"] - _value(result, LOWER_BOUND, "alpha_humans")["value"]) < 1e-9
    agreement = result.agreement.set_index("method").loc["anthology-greedy"]
    assert agreement["exact_match_rate"] == 1.0 and agreement["mean_abs_distance"] == 0.0


def test_wd_matches_scipy_with_the_survey_weights(tmp_path):
    root = make_run(tmp_path / "run", weighted=True)
    result = evaluate(root, n_splits=5, n_resamples=20)
    humans = pd.read_parquet(root / "humans.parquet")
    ids, ks, _ = survey_layout()
    per_question = result.per_question.set_index(["method", "question_id"])
    for qid, k in zip(ids[:3], ks[:3], strict=True):
        answered = humans[qid].notna()
        expected = scipy.stats.wasserstein_distance(
            humans.loc[answered, qid].astype(float), [float(k)], u_weights=humans.loc[answered, "weight"]
        )
        assert abs(per_question.loc[("qa", qid), "wd_raw"] - expected) < 1e-9
        assert abs(per_question.loc[("qa", qid), "wd_normalized"] - expected / (k - 1)) < 1e-9
    assert _value(result, "qa", "wd_raw")["value"] > _value(result, "nothing", "wd_raw")["value"]


def test_expected_distributions_are_reported_separately(evaluated):
    _, result = evaluated
    for method in ("anthology-greedy", "qa", "nothing", "dp"):
        sampled = _value(result, method, "wd_raw")["value"]
        assert abs(_value(result, method, "wd_expected_raw")["value"] - sampled) < 1e-9  # one-hot


def test_lower_bound_row_is_the_split_half_bound(evaluated):
    root, result = evaluated
    data = load_run(root)
    floor = human_lower_bound(data.human_answers, data.n_options, data.human_weights, n_splits=20, seed=0)
    row = _value(result, LOWER_BOUND, "wd_raw")
    assert row["value"] == pytest.approx(floor.wd_raw, abs=1e-12)
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    # About 16 of the 40 humans answered all 18 questions, so no split half has the 10 complete
    # respondents correlations need: Fro. is undefined, with the reason (tests/test_degenerate.py has
    # a defined one against this function).
    assert (floor.complete_per_split.min(axis=1) < MIN_COMPLETE).all()
    fro = _value(result, LOWER_BOUND, "frobenius")
    assert np.isnan(fro["value"]) and np.isnan(fro["ci_low"])
    assert fro["note"] == f"in 20 of 20 splits a half has fewer than {MIN_COMPLETE} complete respondents"


def test_each_method_is_worth_a_number_of_humans(evaluated):
    """The worth column: read off the humans' curve (20 draws per size, the splits) at each method's
    WD; the greedy panel answers as its humans (WD 0: beyond the largest size), QA always the last
    option (far above the curve at 5 respondents)."""
    root, result = evaluated
    data = load_run(root)
    curve = worth_curve(data.human_answers, data.n_options, data.human_weights, n_draws=20, seed=0)
    assert result.worth_curve["size"].tolist() == [5, 10, 20, N_HUMANS]
    np.testing.assert_allclose(result.worth_curve["wd_raw"], curve.wd_raw, atol=1e-12)
    np.testing.assert_allclose(result.worth_curve["wd_raw_low"], curve.low, atol=1e-12)
    table = result.table.set_index("method")
    assert np.isnan(table.loc[LOWER_BOUND, "worth_n_humans"])
    for method in ("nothing", "dp"):
        wd = compare(
            data.human_answers, data.persona_answers(method), data.n_options, human_weights=data.human_weights
        ).wd_raw
        worth = worth_n_humans(curve, wd)
        row = _value(result, method, "worth_n_humans")
        assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx(
            (worth.estimate, worth.low, worth.high)
        )
        assert 5 <= row["ci_low"] <= row["value"] <= row["ci_high"] <= N_HUMANS and pd.isna(row["note"])
    # dp has half as many personas as nothing, both answering at random: it is worth fewer humans
    assert table.loc["dp", "worth_n_humans"] < table.loc["nothing", "worth_n_humans"]
    greedy, qa = _value(result, "anthology-greedy", "worth_n_humans"), _value(result, "qa", "worth_n_humans")
    assert greedy["value"] == greedy["ci_high"] == N_HUMANS
    assert greedy["note"] == (
        f"its WD is below that of {N_HUMANS} random respondents, the largest panel the humans give: "
        f"worth {N_HUMANS} or more"
    )
    assert qa["value"] == qa["ci_low"] == qa["ci_high"] == 5
    assert qa["note"] == "its WD is above that of 5 random respondents: worth 5 or fewer"
    assert read_evaluation(root).worth_curve.equals(result.worth_curve)


def test_metric_files(evaluated):
    root, result = evaluated
    metrics = pd.read_csv(root / FILES["metrics"])
    assert metrics.columns.tolist() == ["method", "metric", "value", "ci_low", "ci_high", "note"]
    assert set(metrics["method"]) == {"anthology-greedy", "qa", "nothing", "dp", LOWER_BOUND}
    ids, _, labels = survey_layout()
    questions = pd.read_csv(root / FILES["per_question"])
    assert len(questions) == 4 * len(ids)
    assert {
        "question_id",
        "n_options",
        "wd_raw",
        "wd_raw_ci_low",
        "lower_bound_wd_raw",
        "wd_expected_raw",
    } <= set(questions.columns)
    assert {"exact_match_rate", "mean_abs_distance"} <= set(questions.columns)
    subgroups = pd.read_csv(root / FILES["per_subgroup"])
    # every codebook trait the humans carry, the survey-only ideology too, in codebook order
    assert list(dict.fromkeys(subgroups["trait"])) == [
        t for t in load_survey(SURVEY).codebook.traits if t in TRAITS
    ]
    assert "ideology" in set(subgroups["trait"])
    age = subgroups[(subgroups["method"] == "qa") & (subgroups["trait"] == "age")]
    assert age["group"].tolist() == [c for c in labels["age"] if c in set(age["group"])]  # category order
    humans = pd.read_parquet(root / "humans.parquet")
    assert age["n_humans"].sum() == humans["age"].notna().sum()
    assert {"lower_bound_wd_raw", "lower_bound_frobenius", "wd_raw", "frobenius"} <= set(subgroups.columns)
    again = read_evaluation(root)
    pd.testing.assert_frame_equal(again.table, result.table, check_dtype=False)
    assert is_current(root)
    stage = RunDir(root).manifest()["stages"]["evaluate"]
    assert stage["n_splits"] == 20 and stage["n_resamples"] == 200 and stage["seed"] == 0


def test_missing_answers_is_a_one_line_error(tmp_path):
    root = make_run(tmp_path / "run")
    (root / "answers.parquet").unlink()
    with pytest.raises(ConfigError, match=r"answers\.parquet does not exist: run `anthology ask`"):
        evaluate(root)
    result = CliRunner().invoke(app, ["evaluate", str(root)])
    assert result.exit_code == 2
    assert "answers.parquet" in result.output and "anthology ask" in result.output
    assert len(result.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert not (tmp_path / "nowhere").exists()


def test_cli_prints_the_table(tmp_path):
    root = make_run(tmp_path / "run")
    result = CliRunner().invoke(
        app, ["evaluate", str(root), "--splits", "10", "--resamples", "50"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for text in (
        "Anthology (greedy)",
        "QA",
        "Nothing",
        "Anthology DP",
        "Split-half reference",
        "WD exp.",
        " *",
        "worth n humans",
        f"≥ {N_HUMANS}",  # the greedy panel, which answers as its humans
        "≤ 5",  # QA
    ):
        assert text in result.output
    assert (root / "metrics.csv").exists()


def test_coverage_and_imputed_mass_per_stage_and_method(tmp_path):
    root = make_run(tmp_path / "run")
    result = evaluate(root, n_splits=5, n_resamples=20)
    table = result.coverage.set_index(["stage", "method"])
    ids, _, _ = survey_layout()
    assert table.loc[("demographics", "anthology"), "scored"] == N_PERSONAS * 8
    assert table.loc[("ask", "qa"), "scored"] == N_HUMANS * len(ids)
    assert table.loc[("ask", "dp"), "scored"] == N_HUMANS // 2 * len(ids)
    assert table.loc[("ask", "qa"), "mean_coverage"] == pytest.approx(0.6)
    assert table.loc[("ask", "qa"), "imputed_share"] == pytest.approx(0.2 / 0.8)
    assert table.loc[("ask", "nothing"), "imputed_share"] == 0.0
    assert read_evaluation(root).coverage.equals(result.coverage)
    out = CliRunner().invoke(app, ["evaluate", str(root), "--splits", "5", "--resamples", "20"])
    assert out.exit_code == 0, out.output
    assert "Option scoring" in out.output
    warned = [line for line in out.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "25.0% of the option probability in ask (qa) was imputed" in warned[0]
