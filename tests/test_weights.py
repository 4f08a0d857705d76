"""Panel weights and the raked panel in the evaluation: weighted rows against scipy and numpy by hand
(a persona counting with its respondent's survey weight), the raked panel's rows against its raking
weights, greedy matching's usage counts against a hand count, and a tiny-model study with a raked
panel from the command line (margins file, match, ask, evaluate, resume)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml
from click.testing import CliRunner
from test_evaluate import SURVEY, make_run, survey_layout

from anthology.cli import app
from anthology.evaluation import evaluate, load_run, weighting_lines
from anthology.method.matching import trait_tables, usage
from anthology.method.raked_panel import persona_cells
from anthology.method.raking import kish_ess
from anthology.report import write_report
from anthology.store import RunDir
from anthology.surveys import load_survey

PERSONAS = [f"p{i:03d}" for i in range(12)]  # make_run's pool


def with_raked_panel(root: Path, seed: int = 1) -> np.ndarray:
    """Add to a make_run directory a raked panel of its 12 personas (weights drawn at random, mean 1)
    that answered every question at random; return the weights."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.2, 3.0, len(PERSONAS))
    weights *= len(weights) / weights.sum()
    run = RunDir(root)
    nobody = pd.array([None] * len(PERSONAS), dtype="Int64")
    raked = pd.DataFrame(
        {
            "method": "raked",
            "respondent_id": nobody,
            "persona_id": PERSONAS,
            "log_weight": np.nan,
            "weight": weights,
        }
    )
    run.write("matches", pd.concat([run.read("matches"), raked], ignore_index=True))
    ids, ks, _ = survey_layout()
    rows = []
    for qid, k in zip(ids, ks, strict=True):
        drawn = rng.integers(1, k + 1, len(PERSONAS))
        rows.append(
            pd.DataFrame(
                {
                    "method": "anthology-raked",
                    "respondent_id": nobody,
                    "persona_id": PERSONAS,
                    "question_id": qid,
                    "position": pd.array(drawn, dtype="Int64"),
                    "attempts": 1,
                    "compliant": True,
                    "probabilities": [np.eye(k)[p - 1] for p in drawn],
                    "coverage": 0.9,
                    "imputed": 0.0,
                }
            )
        )
    answers = pd.concat([run.read("answers"), *rows], ignore_index=True)
    answers["respondent_id"] = pd.array(answers["respondent_id"], dtype="Int64")
    run.write("answers", answers)
    return weights


@pytest.fixture(scope="module")
def weighted(tmp_path_factory):
    root = make_run(tmp_path_factory.mktemp("run") / "run", weighted=True)
    weights = with_raked_panel(root)
    return root, weights, evaluate(root, n_splits=5, n_resamples=30, seed=0, persona_weights="both")


def _metric(result, row: str, metric: str) -> float:
    found = result.metrics[(result.metrics["method"] == row) & (result.metrics["metric"] == metric)]
    assert len(found) == 1, (row, metric)
    return float(found["value"].iloc[0])


def _weighted_corr(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    cov = np.cov(x, rowvar=False, aweights=w, bias=True)
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def test_each_method_gets_its_weighted_row_and_the_raked_panel_one(weighted):
    _, _, result = weighted
    assert result.table["method"].tolist() == [
        "anthology-greedy",
        "anthology-greedy:weighted",
        "anthology-raked",
        "qa",
        "qa:weighted",
        "nothing",
        "nothing:weighted",
        "dp",
        "dp:weighted",
        "human-lower-bound",
    ]
    assert result.table.set_index("method").loc["qa:weighted", "label"] == "QA, weighted"
    assert result.table.set_index("method").loc["anthology-raked", "label"] == "Anthology (raked)"
    # Matched pairs once per method; the raked pool has none.
    assert result.agreement["method"].tolist() == ["anthology-greedy", "qa", "nothing", "dp"]


def test_a_panel_answering_as_its_humans_is_exact_only_when_weighted_as_they_are(weighted):
    _, _, result = weighted
    assert _metric(result, "anthology-greedy:weighted", "wd_raw") < 1e-12
    assert _metric(result, "anthology-greedy:weighted", "frobenius") < 1e-9
    assert _metric(result, "anthology-greedy", "wd_raw") > 0.01  # the survey weights vary


def test_weighted_rows_equal_scipy_and_numpy_by_hand(weighted):
    root, _, result = weighted
    humans = pd.read_parquet(root / "humans.parquet").set_index("respondent_id")
    answers = pd.read_parquet(root / "answers.parquet")
    nothing = answers[answers["method"] == "nothing"].pivot(
        index="respondent_id", columns="question_id", values="position"
    )
    ids, ks, _ = survey_layout()
    per_question = result.per_question.set_index(["method", "question_id"])
    w_p = humans["weight"].reindex(nothing.index).to_numpy()
    for qid, k in zip(ids, ks, strict=True):
        answered = humans[qid].notna()
        expected = scipy.stats.wasserstein_distance(
            humans.loc[answered, qid].astype(float),
            nothing[qid].astype(float),
            u_weights=humans.loc[answered, "weight"],
            v_weights=w_p,
        )
        assert per_question.loc[("nothing:weighted", qid), "wd_raw"] == pytest.approx(expected, abs=1e-12)
        assert per_question.loc[("nothing:weighted", qid), "wd_normalized"] == pytest.approx(
            expected / (k - 1)
        )
    assert _metric(result, "nothing:weighted", "wd_raw") == pytest.approx(
        per_question.xs("nothing:weighted")["wd_raw"].mean()
    )
    # Fro. and alpha: weighted Pearson and weighted variances over the complete respondents.
    complete = humans[list(ids)].notna().all(axis=1)
    h = humans.loc[complete, list(ids)].to_numpy(dtype=float)
    p = nothing[list(ids)].to_numpy(dtype=float)
    fro = np.linalg.norm(
        _weighted_corr(h, humans.loc[complete, "weight"].to_numpy()) - _weighted_corr(p, w_p)
    )
    assert _metric(result, "nothing:weighted", "frobenius") == pytest.approx(fro, abs=1e-10)
    cov = np.cov(p, rowvar=False, aweights=w_p, bias=True)
    alpha = len(ids) / (len(ids) - 1) * (1 - np.trace(cov) / cov.sum())
    table = result.table.set_index("method")
    assert table.loc["nothing:weighted", "alpha"] == pytest.approx(alpha, abs=1e-10)
    assert _metric(result, "nothing:weighted", "n_effective") == pytest.approx(kish_ess(w_p))
    assert _metric(result, "nothing:weighted", "max_weight_ratio") == pytest.approx(w_p.max() / w_p.mean())
    dp = humans["weight"].iloc[: len(humans) // 2].to_numpy()  # dp answered for the first half
    assert _metric(result, "dp:weighted", "n_effective") == pytest.approx(kish_ess(dp))
    # One-hot probabilities: the expected-distribution WD is the sampled one on weighted rows too.
    assert _metric(result, "nothing:weighted", "wd_expected_raw") == pytest.approx(
        _metric(result, "nothing:weighted", "wd_raw"), abs=1e-12
    )


def test_the_raked_row_counts_each_persona_with_its_raking_weight(weighted):
    root, weights, result = weighted
    humans = pd.read_parquet(root / "humans.parquet")
    answers = pd.read_parquet(root / "answers.parquet")
    raked = answers[answers["method"] == "anthology-raked"]
    assert raked["respondent_id"].isna().all()
    by_persona = raked.pivot(index="persona_id", columns="question_id", values="position").reindex(PERSONAS)
    ids, _, _ = survey_layout()
    per_question = result.per_question.set_index(["method", "question_id"])
    for qid in ids[:4]:
        answered = humans[qid].notna()
        expected = scipy.stats.wasserstein_distance(
            humans.loc[answered, qid].astype(float),
            by_persona[qid].astype(float),
            u_weights=humans.loc[answered, "weight"],
            v_weights=weights,
        )
        assert per_question.loc[("anthology-raked", qid), "wd_raw"] == pytest.approx(expected, abs=1e-12)
    assert _metric(result, "anthology-raked", "n_respondents") == len(PERSONAS)
    assert _metric(result, "anthology-raked", "n_effective") == pytest.approx(kish_ess(weights))
    assert _metric(result, "anthology-raked", "max_weight_ratio") == pytest.approx(weights.max())
    lines = weighting_lines(result.metrics)
    assert lines[0] == (
        "Humans: survey-weighted. Personas: each counts once, as in the paper; ', weighted' rows count each "
        "persona with its respondent's survey weight; Anthology (raked) counts each with its raking weight."
    )
    assert (
        f"Anthology (raked): Kish effective sample size {kish_ess(weights):,.1f} of 12 personas"
        in "\n".join(lines)
    )


def test_raked_personas_fall_in_their_own_most_likely_subgroup(weighted):
    root, _, result = weighted
    demographics = pd.read_parquet(root / "demographics.parquet")
    survey = load_survey(SURVEY)
    categories = survey.codebook.traits["age"].categories
    age = demographics[demographics["trait"] == "age"].set_index(["persona_id", "option"])["probability"]
    likeliest = Counter(
        max(categories, key=lambda c: sum(age.get((p, label), 0.0) for label in c.persona)).label
        for p in PERSONAS
    )
    rows = result.per_subgroup[
        (result.per_subgroup["method"] == "anthology-raked") & (result.per_subgroup["trait"] == "age")
    ]
    assert dict(zip(rows["group"], rows["n_personas"], strict=True)) == {
        label: likeliest.get(label, 0) for label in rows["group"]
    }
    ideology = result.per_subgroup[
        (result.per_subgroup["method"] == "anthology-raked") & (result.per_subgroup["trait"] == "ideology")
    ]
    assert (ideology["n_personas"] == 0).all()  # not a persona trait: the pool has no such group


def test_the_report_shows_weighting_panels_and_weighted_rows(weighted):
    root, weights, _ = weighted
    html = write_report(root).read_text()
    assert "Anthology (greedy), weighted" in html and "Anthology (raked)" in html
    assert 'id="persona-weighting"' in html and "Humans: survey-weighted." in html
    assert 'id="panels-table"' in html and "Raked, weighted" in html
    greedy = pd.read_parquet(root / "matches.parquet").query("method == 'greedy'")["persona_id"]
    counts = Counter(greedy)
    assert (
        f"<td>Anthology (greedy)</td><td>12</td><td>{len(counts)}</td><td>{max(counts.values())}</td>" in html
    )
    assert f"<td>{kish_ess(weights):.1f}</td><td>{weights.max():.2f}x</td>" in html


def test_the_default_is_the_papers_unweighted_persona_side(tmp_path):
    root = make_run(tmp_path / "run", weighted=True)
    result = evaluate(root, n_splits=5, n_resamples=20)
    assert not result.table["method"].str.endswith(":weighted").any()
    assert weighting_lines(result.metrics) == [
        "Humans: survey-weighted. Personas: each counts once, as in the paper."
    ]
    out = invoke("evaluate", str(root), "--splits", "5", "--resamples", "20", "--persona-weights", "survey")
    text = " ".join(out.output.split())
    assert "Anthology (greedy), weighted" in text and "each counts once" not in text
    assert "Personas: ', weighted' rows count each persona with its respondent's survey weight." in text


def test_usage_counts_equal_a_hand_count():
    chosen = ["a", "b", "a", "c", "a", "b"] + ["d"] * 4
    counts = Counter(chosen)
    found = usage(chosen, pool=150)  # the busiest 1% of 150 personas: 2
    assert found == {
        "personas_used": len(counts),
        "most_served": max(counts.values()),
        "top_1pct_share": sum(sorted(counts.values())[-2:]) / len(chosen),
    }
    assert usage(chosen, pool=40)["top_1pct_share"] == max(counts.values()) / len(chosen)


# -- a tiny-model study with a raked panel, from the command line ---------------------------------


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def test_a_raked_study_from_the_command_line(tiny_folder, tmp_path):
    run = str(tmp_path / "run")
    story = ("-n", "10", "--max-tokens", "12", "--no-preamble", "--min-tokens", "1", "--first-person", "off")
    invoke("backstories", run, "--model", tiny_folder, *story, "--seed", "2")
    invoke("demographics", run, "--mode", "logprob")
    # The tiny model's personas all fall in the same age category: margins with a share for another
    # one cannot be met (an empty cell), margins on the one they are in can.
    survey = load_survey(SURVEY)
    demographics = pd.read_parquet(f"{run}/demographics.parquet")
    persona_ids = list(dict.fromkeys(demographics["persona_id"]))
    tables = trait_tables(survey, demographics, persona_ids)
    age = tables[[t.name for t in tables].index("age")]
    present = sorted({age.labels[c] for c in persona_cells([age])[:, 0] if c >= 0})
    missing = next(label for label in age.labels if label not in present)
    margins = tmp_path / "margins.yaml"
    margins.write_text(yaml.safe_dump({"age": {present[0]: 0.5, missing: 0.5}}))
    match = ("match", run, "--respondents", "6", "--method", "greedy,raked", "--margins", str(margins))
    empty = CliRunner().invoke(app, list(match), env={"COLUMNS": "200"})
    assert empty.exit_code == 2 and "Traceback" not in empty.output
    assert f"no persona's most likely age is {missing!r}" in empty.output
    margins.write_text(yaml.safe_dump({"age": {present[0]: 1.0}}))
    matched = invoke(*match)
    assert "raked:" in matched.output and "the margins file on age" in " ".join(matched.output.split())
    matches = pd.read_parquet(f"{run}/matches.parquet")
    raked = matches[matches["method"] == "raked"]
    assert len(raked) == len(persona_ids) and raked["respondent_id"].isna().all()
    # Greedy's usage in the match report against a hand count over its matching.
    report = {row["method"]: row for row in RunDir(run).manifest()["stages"]["match"]["report"]}
    counts = Counter(matches.loc[matches["method"] == "greedy", "persona_id"])
    assert report["greedy"]["personas_used"] == len(counts)
    assert report["greedy"]["most_served"] == max(counts.values())
    assert report["greedy"]["top_1pct_share"] == pytest.approx(max(counts.values()) / 6)
    assert report["raked"]["effective_n"] == pytest.approx(kish_ess(raked["weight"].to_numpy()))

    ask = (
        "ask",
        run,
        "--methods",
        "anthology-greedy,anthology-raked",
        "--mode",
        "logprob",
        "--context",
        "independent",
    )
    invoke(*ask)
    answers = pd.read_parquet(f"{run}/answers.parquet")
    pool = answers[answers["method"] == "anthology-raked"]
    assert pool["respondent_id"].isna().all() and answers["respondent_id"].dtype == "Int64"
    assert pool.groupby("persona_id").size().to_dict() == dict.fromkeys(raked["persona_id"], 18)
    assert "ask: done already, skipped" in invoke(*ask).output

    evaluated = invoke("evaluate", run, "--splits", "5", "--resamples", "20", "--persona-weights", "both")
    assert "Anthology (raked): Kish effective sample size" in evaluated.output
    data = load_run(run)
    assert data.rows("both") == ["anthology-greedy", "anthology-greedy:weighted", "anthology-raked"]
    np.testing.assert_allclose(
        data.persona_weights("anthology-raked"),
        raked.set_index("persona_id")["weight"].reindex(data.persona_frame("anthology-raked").index),
    )

    # The margins file counts by its contents: the same path with other shares makes the panel again.
    margins.write_text(margins.read_text() + "# revised\n")
    again = invoke(*match)
    assert "match: runs again: margins changed" in again.output
    bad = CliRunner().invoke(
        app, ["match", run, "--margins", str(tmp_path / "nowhere.yaml"), "--method", "raked"]
    )
    assert bad.exit_code == 2 and "margins file" in bad.output and "does not exist" in bad.output
    assert math.isfinite(pd.read_parquet(f"{run}/matches.parquet").query("method == 'raked'")["weight"].sum())
