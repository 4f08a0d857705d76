"""An evaluation that says when a number means nothing (issue 15, part 5) and subgroups on every trait
(part 3): run directories built from a small codebook survey (CSV data through the real loader) and
hand-made persona answers, evaluated and reported through the real code paths; the numbers checked
against numpy, the pingouin formula and scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from click.testing import CliRunner

from anthology.cli import app
from anthology.evaluation import (
    FILES,
    LOWER_BOUND,
    MIN_COMPLETE,
    RELIABLE_RESPONDENTS,
    best_methods,
    evaluate,
    is_current,
    load_run,
    lower_bound_label,
    read_evaluation,
    respondents_advice,
)
from anthology.evaluation.sizes import split_note
from anthology.metrics import human_lower_bound
from anthology.report import write_report
from anthology.store import RunDir

CANONICAL = ("age", "gender", "education", "income", "race", "religion", "region", "party")
#: Survey-only traits (no `persona:` mapping), in an order that is not alphabetical.
PROVINCES = ("Ontario", "Quebec", "Alberta")
VOTES = ("Liberal", "Conservative", "NDP")
K = 4


def write_survey(folder: Path, humans: np.ndarray) -> tuple[Path, Path]:
    """A codebook of ``q`` four-option questions and two survey-only traits (province, vote), and its
    CSV: one row per human, answers as positions (0: an empty cell, no answer)."""
    n, q = humans.shape
    questions = "".join(
        f"  - id: q{j + 1}\n    wording: Question {j + 1}?\n    options:\n"
        + "".join(f"      - {{label: Option {c}, code: {c}}}\n" for c in range(1, K + 1))
        for j in range(q)
    )

    def trait(name: str, labels: tuple[str, ...]) -> str:
        rows = "".join(f"      - {{label: {label}, codes: [{i}]}}\n" for i, label in enumerate(labels, 1))
        return f"  {name}:\n    column: {name}\n    categories:\n{rows}"

    codebook = folder / "tiny.yaml"
    codebook.write_text(
        "name: tiny\ntitle: A tiny survey\nrespondent_id: id\ntraits:\n"
        + trait("province", PROVINCES)
        + trait("vote", VOTES)
        + "absent:\n"
        + "".join(f"  {name}: not asked\n" for name in CANONICAL)
        + "questions:\n"
        + questions,
        encoding="utf-8",
    )
    frame = pd.DataFrame({"id": np.arange(1, n + 1)})
    frame["province"] = np.arange(n) % 3 + 1
    frame["vote"] = (np.arange(n) // 3) % 3 + 1
    for j in range(q):
        frame[f"q{j + 1}"] = pd.array(np.where(humans[:, j] > 0, humans[:, j], pd.NA), dtype="Int64")
    data = folder / "tiny.csv"
    frame.to_csv(data, index=False)
    return codebook, data


def make_study(root: Path, humans: np.ndarray, methods: dict[str, np.ndarray]) -> Path:
    """A run directory for :func:`write_survey`'s survey: humans.parquet as the loader codes it, and
    per method one persona per human answering the given ``(n, q)`` positions (0: no answer)."""
    root.mkdir(parents=True)
    codebook, data = write_survey(root, humans)
    run = RunDir(root)
    from anthology.surveys import load_survey

    survey = load_survey(str(codebook), str(data))
    people = survey.humans()
    run.write("humans", people)
    rows = []
    for method, answers in methods.items():
        for j, qid in enumerate(survey.questionnaire.ids):
            position = pd.array(np.where(answers[:, j] > 0, answers[:, j], pd.NA), dtype="Int64")
            rows.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "respondent_id": people["respondent_id"].to_numpy(),
                        "persona_id": [f"{method}-{i}" for i in range(len(people))],
                        "question_id": qid,
                        "position": position,
                        "attempts": 1,
                        "compliant": ~pd.isna(position),
                        "probabilities": None,
                        "coverage": np.nan,
                        "imputed": np.nan,
                    }
                )
            )
    run.write("answers", pd.concat(rows, ignore_index=True))
    run.record("match", {"survey": {"name": str(codebook), "data": str(data), "respondents": len(people)}})
    return root


def varied(seed: int, n: int, q: int) -> np.ndarray:
    """Correlated answers 1..K (one latent trait), every question answered."""
    rng = np.random.default_rng(seed)
    score = rng.normal(size=(n, 1)) + rng.normal(size=(n, q))
    return 1 + (score[:, :, None] > np.array([-0.8, 0.0, 0.8])).sum(axis=2)


def _evaluate(root: Path, **settings):
    return evaluate(root, n_splits=settings.get("n_splits", 20), n_resamples=settings.get("n_resamples", 30))


def _row(result, method: str, metric: str) -> pd.Series:
    rows = result.metrics[(result.metrics["method"] == method) & (result.metrics["metric"] == metric)]
    assert len(rows) == 1, (method, metric)
    return rows.iloc[0]


def _cli(root: Path) -> str:
    out = CliRunner().invoke(
        app, ["evaluate", str(root), "--splits", "10", "--resamples", "20"], env={"COLUMNS": "250"}
    )
    assert out.exit_code == 0, out.output
    return out.output


def _table_line(output: str, label: str) -> str:
    return next(line for line in output.splitlines() if line.lstrip("│ ").startswith(label))


def test_one_question_survey_has_no_fro_or_alpha_and_no_star(tmp_path):
    humans = varied(0, 30, 1)
    root = make_study(tmp_path / "run", humans, {"qa": varied(1, 30, 1), "nothing": varied(2, 30, 1)})
    result = _evaluate(root)
    table = result.table.set_index("method")
    assert table["frobenius"].isna().all() and table["alpha"].isna().all()
    assert (table["frobenius_note"] == "one question, so no correlation between questions").all()
    assert table["alpha_note"].str.startswith("one question").all()
    # WD is still defined, and so is the worth in humans read off it
    assert set(best_methods(result.table)) == {"wd_raw", "wd_normalized", "worth_n_humans"}
    # WD checks against scipy on this one question
    expected = scipy.stats.wasserstein_distance(humans[:, 0], varied(1, 30, 1)[:, 0])
    assert table.loc["qa", "wd_raw"] == pytest.approx(expected, abs=1e-12)
    output = _cli(root)
    for label in ("QA", "Nothing", "Split-half reference (noisy at n=30)"):
        cells = _table_line(output, label).split("│")
        assert cells[4].strip() == "-" and cells[5].strip() == "-", cells  # Fro., alpha
    assert "Fro., every row: one question, so no correlation between questions" in output
    assert "alpha, every row: one question, and alpha needs two or more" in output
    html = write_report(root).read_text(encoding="utf-8")
    metrics = html[
        html.index('id="metrics-table"') : html.index("</table>", html.index('id="metrics-table"'))
    ]
    assert metrics.count('<td class="best">') == 3  # the two WD columns and the worth read off WD
    assert "Fro., every row: one question, so no correlation between questions." in html


def test_humans_who_all_gave_one_answer_leave_fro_undefined_everywhere(tmp_path):
    n, q = 40, 3
    humans = np.ones((n, q), dtype=int)
    methods = {"qa": np.full((n, q), 2), "nothing": varied(3, n, q)}
    root = make_study(tmp_path / "run", humans, methods)
    result = _evaluate(root)
    bound = _row(result, LOWER_BOUND, "frobenius")
    assert np.isnan(bound["value"]) and np.isnan(bound["ci_low"]) and np.isnan(bound["ci_high"])
    assert bound["note"] == "in 20 of 20 splits a half's answers vary on fewer than two questions"
    for method in methods:  # before: qa's Fro. was 0.000 (both matrices the identity) and starred
        row = _row(result, method, "frobenius")
        assert np.isnan(row["value"]) and row["note"] == (
            "the humans' answers vary on 0 of 3 questions, and correlations need two"
        )
    assert (
        _row(result, LOWER_BOUND, "alpha_humans_weighted")["note"] == "the humans' total score does not vary"
    )
    assert "frobenius" not in best_methods(result.table)
    saved = pd.read_csv(root / FILES["metrics"]).set_index(["method", "metric"])
    assert np.isnan(saved.loc[(LOWER_BOUND, "frobenius"), "ci_low"])
    assert saved.loc[(LOWER_BOUND, "frobenius"), "note"].startswith("in 20 of 20 splits")
    output = _cli(root)
    assert _table_line(output, "Split-half reference").split("│")[4].strip() == "-"
    assert "half's answers vary on fewer than two questions" in output


def test_a_panel_whose_personas_all_answer_alike_is_not_starred(tmp_path):
    n, q = 40, 4
    humans = varied(4, n, q)
    alike = np.full((n, q), 3)
    partly = varied(5, n, q)
    partly[:, 1] = 2  # constant on one question only: the documented zero convention
    root = make_study(tmp_path / "run", humans, {"anthology-greedy": humans, "qa": alike, "nothing": partly})
    result = _evaluate(root)
    table = result.table.set_index("method")
    assert np.isnan(table.loc["qa", "frobenius"]) and np.isnan(table.loc["qa", "alpha"])
    assert (
        table.loc["qa", "frobenius_note"]
        == "the personas' answers vary on 0 of 4 questions, and correlations need two"
    )
    assert table.loc["qa", "alpha_note"] == "the personas' total score does not vary"
    assert best_methods(result.table)["frobenius"] == "anthology-greedy"  # 0: exactly the humans
    # the partly constant panel: Fro. by hand, the constant question uncorrelated (1 on the diagonal)
    human_corr = np.corrcoef(humans, rowvar=False)
    persona_corr = np.eye(q)
    others = [0, 2, 3]
    persona_corr[np.ix_(others, others)] = np.corrcoef(partly[:, others], rowvar=False)
    assert table.loc["nothing", "frobenius"] == pytest.approx(
        np.linalg.norm(human_corr - persona_corr), abs=1e-9
    )
    assert np.isnan(table.loc["nothing", "frobenius_note"])
    html = write_report(root).read_text(encoding="utf-8")
    assert "Fro., QA: the personas&#39; answers vary on 0 of 4 questions, and correlations need two." in html


def _alpha(answers: np.ndarray) -> float:
    """Cronbach's alpha as pingouin computes it (ddof=1 variances over complete rows)."""
    complete = answers[(answers > 0).all(axis=1)].astype(float)
    k = complete.shape[1]
    return k / (k - 1) * (1 - complete.var(axis=0, ddof=1).sum() / complete.sum(axis=1).var(ddof=1))


@pytest.mark.parametrize("complete", [MIN_COMPLETE - 1, MIN_COMPLETE])
def test_fro_and_alpha_need_the_minimum_of_complete_cases(tmp_path, complete):
    n, q = 30, 3
    humans = varied(6, n, q)
    humans[complete:, 0] = 0  # only the first `complete` humans answered every question
    personas = varied(7, n, q)
    root = make_study(tmp_path / "run", humans, {"nothing": personas})
    result = _evaluate(root)
    fro, alpha = _row(result, "nothing", "frobenius"), _row(result, LOWER_BOUND, "alpha_humans")
    persona_alpha = _row(result, "nothing", "alpha_personas")
    assert persona_alpha["value"] == pytest.approx(_alpha(personas), abs=1e-9)  # 30 complete personas
    if complete < MIN_COMPLETE:
        reason = f"the humans have {complete} complete respondents, fewer than {MIN_COMPLETE}"
        assert np.isnan(fro["value"]) and fro["note"] == reason
        assert np.isnan(alpha["value"]) and alpha["note"] == reason
    else:
        rows = humans[:complete]
        expected = np.linalg.norm(np.corrcoef(rows, rowvar=False) - np.corrcoef(personas, rowvar=False))
        assert fro["value"] == pytest.approx(expected, abs=1e-9) and pd.isna(fro["note"])
        assert alpha["value"] == pytest.approx(_alpha(humans), abs=1e-9)
    # the split halves have at most `complete` humans with every answer between them: never 10 each
    assert "fewer than 10 complete respondents" in _row(result, LOWER_BOUND, "frobenius")["note"]


def test_the_lower_bound_is_fro_defined_when_every_half_has_enough(tmp_path):
    n, q = 60, 3
    humans = varied(8, n, q)
    root = make_study(tmp_path / "run", humans, {"nothing": varied(9, n, q)})
    result = _evaluate(root)
    data = load_run(root)
    floor = human_lower_bound(data.human_answers, data.n_options, data.human_weights, n_splits=20, seed=0)
    assert split_note(q, floor) is None and floor.complete_per_split.tolist() == [[30, 30]] * 20
    row = _row(result, LOWER_BOUND, "frobenius")
    assert row["value"] == pytest.approx(floor.frobenius, abs=1e-12) and pd.isna(row["note"])
    # one split by hand: the halves' Pearson matrices
    order = np.random.default_rng(0).spawn(20)[0].permutation(n)
    a, b = humans[order[: n // 2]], humans[order[n // 2 :]]
    by_hand = np.linalg.norm(np.corrcoef(a, rowvar=False) - np.corrcoef(b, rowvar=False))
    assert floor.frobenius_per_split[0] == pytest.approx(by_hand, abs=1e-9)


def test_the_lower_bound_row_follows_the_sample_size(tmp_path):
    small = make_study(
        tmp_path / "small", varied(10, 8, 3), {"qa": varied(11, 8, 3), "nothing": varied(12, 8, 3)}
    )
    result = _evaluate(small)
    assert result.table.iloc[-1]["label"] == "Split-half reference (noisy at n=8)"
    output = _cli(small)
    assert "Split-half reference (noisy at n=8)" in output
    assert f"the bound is reliable from {RELIABLE_RESPONDENTS} respondents" in " ".join(output.split())
    html = write_report(small).read_text(encoding="utf-8")
    text = " ".join(html.split())
    assert (
        "<em>split-half reference</em> row" in text and "With 8 respondents it is noisy at this size" in text
    )
    assert f"The bound is reliable from {RELIABLE_RESPONDENTS} respondents" in text
    assert "cannot be expected to beat it" not in text

    n = RELIABLE_RESPONDENTS
    large = make_study(
        tmp_path / "large", varied(13, n, 3), {"qa": varied(14, n, 3), "nothing": varied(15, n, 3)}
    )
    result = evaluate(large, n_splits=5, n_resamples=10)
    assert result.table.iloc[-1]["label"] == "Human lower bound"
    assert "Human lower bound" in _cli(large)
    text = " ".join(write_report(large).read_text(encoding="utf-8").split())
    assert "<em>human lower bound</em> row" in text and "cannot be expected to beat it" in text


def test_labels_and_advice_follow_the_documented_size():
    assert lower_bound_label(RELIABLE_RESPONDENTS) == "Human lower bound"
    assert lower_bound_label(None) == "Human lower bound"  # older files: the count is unknown
    assert lower_bound_label(2348 if RELIABLE_RESPONDENTS <= 2348 else 0) == "Human lower bound"
    assert (
        lower_bound_label(RELIABLE_RESPONDENTS - 1)
        == f"Split-half reference (noisy at n={RELIABLE_RESPONDENTS - 1})"
    )
    assert respondents_advice(RELIABLE_RESPONDENTS, 2348) is None
    assert respondents_advice(12, 2348) == (
        f"the human lower bound is noisy below {RELIABLE_RESPONDENTS} respondents: "
        f"use --respondents {RELIABLE_RESPONDENTS} (the survey has 2,348)"
    )
    assert "use --respondents 40 (all the survey has); it stays noisy" in respondents_advice(12, 40)
    assert respondents_advice(40, 40).endswith("and the survey has only 40: read it as a noisy reference")


def test_subgroups_cover_every_trait_in_codebook_order(tmp_path):
    n, q = 36, 3
    root = make_study(
        tmp_path / "run", varied(16, n, q), {"qa": varied(17, n, q), "nothing": varied(18, n, q)}
    )
    result = _evaluate(root)
    saved = pd.read_csv(root / FILES["per_subgroup"])
    assert list(dict.fromkeys(saved["trait"])) == ["province", "vote"]  # survey-only traits
    qa = saved[saved["method"] == "qa"]
    assert qa.loc[qa["trait"] == "province", "group"].tolist() == list(PROVINCES)  # codebook, not sorted
    assert qa.loc[qa["trait"] == "vote", "group"].tolist() == list(VOTES)
    assert (qa["n_humans"] == 12).all()
    # 12 humans a group: Fro. and alpha are read from 10 complete, the split halves of 6 never are
    assert qa["frobenius"].notna().all()
    assert qa["lower_bound_frobenius"].isna().all()
    assert qa["note"].str.contains("lower_bound_frobenius: in 20 of 20 splits a half has fewer than 10").all()
    assert list(saved.columns)[-1] == "note"
    html = write_report(root).read_text(encoding="utf-8")
    subgroups = html[html.index('<section id="subgroups">') : html.index('<section id="demographics">')]
    for label in ("province", "vote", *PROVINCES, *VOTES):
        assert f">{label}<" in subgroups
    assert subgroups.index(">Ontario<") < subgroups.index(">Quebec<") < subgroups.index(">Alberta<")
    assert "&dagger;" in subgroups  # groups of 12 humans: a noisy reference
    assert result.per_subgroup["trait"].tolist() == saved["trait"].tolist()


def test_files_of_older_evaluations_read_back_without_notes(tmp_path):
    n, q = 30, 3
    root = make_study(
        tmp_path / "run", np.ones((n, q), dtype=int), {"qa": varied(19, n, q), "nothing": varied(20, n, q)}
    )
    result = _evaluate(root)
    for key in ("metrics", "per_subgroup"):
        path = root / FILES[key]
        old = pd.read_csv(path).drop(columns="note")
        old = old[old["metric"] != "n_respondents"] if key == "metrics" else old
        old.to_csv(path, index=False)
    assert is_current(root)  # the digests of the answers and humans still match
    again = read_evaluation(root)
    assert again.table.iloc[-1]["label"] == "Human lower bound"  # the number of humans is unknown
    pd.testing.assert_series_equal(again.table["wd_raw"], result.table["wd_raw"])
    assert again.table["frobenius_note"].isna().all()
    html = write_report(root).read_text(encoding="utf-8")
    assert 'id="metrics-notes"' not in html
