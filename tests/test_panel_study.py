"""Issue 18's three parts in one study: a survey with an open question, a second wave repeating two
questions and a top-up budget, run end to end on the tiny model from the CLI and from the Python API,
with the report showing the coded answers, the test-retest table and the pool audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from test_open_answers import town_with_open

from anthology.config import load_config

WAVES = """
  - id: parks_w2
    wording: "How would you rate the parks in your neighbourhood?"
    repeats: parks
    options:
      - {label: Excellent, code: 1}
      - {label: Good, code: 2}
      - {label: Fair, code: 3}
      - {label: Poor, code: 4}
  - id: council_w2
    wording: "How much do you trust the town council to do what is right?"
    repeats: council
    options:
      - {label: A lot, code: 1}
      - {label: Some, code: 2}
      - {label: Not much, code: 3}
      - {label: Not at all, code: 4}
waves:
  - {name: spring, questions: [parks, council, library]}
  - {name: autumn, questions: [parks_w2, council_w2]}
"""
OPEN = """
open_questions:
  - id: parks_open
    wording: "What do you think of the parks in your neighbourhood?"
    column: parks_text
    closed: parks
"""
SETTINGS = {
    "profile": "fast",
    "seed": 3,
    "backstories": {
        "n": 6,
        "max_tokens": 12,
        "min_tokens": 1,
        "preamble": None,
        "first_person": "off",
        "near_duplicate": 2.0,
    },
    "matching": {"methods": ["greedy"]},
    "ask": {"methods": ["anthology-greedy", "qa"], "memory": True},
    "open": {"max_tokens": 8},
    "pool": {"top_up": 6, "batch": 3, "min_plausible": 2},
    "evaluate": {"splits": 5, "resamples": 20},
}


def panel_survey(folder: Path) -> Path:
    """The docs' town survey, its questions asked in two waves (the second repeats parks and
    council; the humans answered both, so they are a panel) and one open question."""
    codebook = town_with_open(folder, OPEN)
    text = codebook.read_text().replace("\nopen_questions:", WAVES + "open_questions:", 1)
    codebook.write_text(text)
    data = folder / "town-survey.csv"
    frame = pd.read_csv(data, dtype=str)
    frame["parks_w2"] = ["2", "1", "3", "2", "4", "1", "", "3", "2", "1", "", "4"]
    frame["council_w2"] = ["1", "3", "1", "2", "3", "1", "4", "3", "", "2", "", "4"]  # three changed
    frame.to_csv(data, index=False)
    return codebook


def run_study_cli(config: Path, out: Path) -> None:
    """``anthology run CONFIG --out OUT`` in a subprocess, offline; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "anthology", "run", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr[-3000:]


def check_run(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    pool = manifest["stages"]["pool"]
    assert pool["rounds"] >= 1 and pool["added"]["generated"] <= 6
    answers = pd.read_parquet(out / "answers.parquet")
    assert set(answers["wave"]) == {"spring", "autumn"}
    codes = pd.read_parquet(out / "open_codes.parquet")
    assert {"anthology-greedy", "qa", "humans"} <= set(codes["method"])
    retest = pd.read_csv(out / "retest.csv")
    assert {"humans", "anthology-greedy", "qa"} <= set(retest["method"])
    assert set(retest["question_id"]) == {"parks", "council"}
    html = (out / "report.html").read_text()
    for section in ("<h2>Open questions</h2>", "Change between waves", "Pool audit"):
        assert section in html


def test_free_text_answers_are_escaped_in_the_report(tmp_path, tiny_folder):
    """A persona's free text goes to the page as text, never as markup."""
    from anthology.report import write_report

    codebook = panel_survey(tmp_path)
    settings = {**SETTINGS, "model": {"name": tiny_folder}, "survey": {"name": str(codebook)}}
    settings["pool"] = {"top_up": 0}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "run"
    run_study_cli(config, out)
    codes = pd.read_parquet(out / "open_codes.parquet")
    codes.loc[codes.index[0], "text"] = "<script>alert(1)</script>"
    codes.to_parquet(out / "open_codes.parquet")
    html = write_report(out).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html


def test_open_question_second_wave_and_top_up_from_the_cli_and_the_python_api(tmp_path, tiny_folder):
    codebook = panel_survey(tmp_path)
    survey = {"name": str(codebook), "respondents": 6}
    settings = {**SETTINGS, "model": {"name": tiny_folder}, "survey": survey}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(settings))

    run_study_cli(config, tmp_path / "cli")
    check_run(tmp_path / "cli")

    from anthology.cli.common import open_model
    from anthology.study import run_study

    api = load_config(config, {"out": str(tmp_path / "api")})
    run = run_study(api, open_model=lambda c, r: open_model(c.model, c.executor, cache_path=r.cache_path))
    check_run(run.root)
    # The same settings and model give the same study either way.
    for name in ("answers", "open_codes", "audit"):
        a, b = (pd.read_parquet(root / f"{name}.parquet") for root in (tmp_path / "cli", run.root))
        pd.testing.assert_frame_equal(a, b)


def test_a_second_wave_the_humans_have_not_answered_is_asked_of_personas_only(tmp_path, tiny_folder):
    """A pilot's wave 2 (or a cross-sectional survey's): the repeats have no data column; personas
    answer them, the test-retest table has their stability, and the human metrics use wave 1."""
    codebook = panel_survey(tmp_path)
    data = tmp_path / "town-survey.csv"
    pd.read_csv(data, dtype=str).drop(columns=["parks_w2", "council_w2"]).to_csv(data, index=False)
    text = codebook.read_text()
    for original in ("parks", "council"):
        text = text.replace(
            f"    repeats: {original}\n", f"    repeats: {original}\n    personas_only: true\n"
        )
    codebook.write_text(text)
    settings = {**SETTINGS, "model": {"name": tiny_folder}, "survey": {"name": str(codebook)}}
    settings["pool"] = {"top_up": 0}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "run"
    run_study_cli(config, out)
    answers = pd.read_parquet(out / "answers.parquet")
    assert {"parks_w2", "council_w2"} <= set(answers["question_id"])
    retest = pd.read_csv(out / "retest.csv").set_index(["method", "question_id"])
    assert retest.loc[("humans", "parks"), "n_pairs"] == 0
    assert retest.loc[("qa", "parks"), "n_pairs"] > 0
    per_question = pd.read_csv(out / "metrics_per_question.csv")
    assert set(per_question["question_id"]) == {"parks", "council", "library"}


def test_only_a_repeat_can_be_asked_of_personas_only(tmp_path):
    from surveys_support import one_line_error, run_cli

    codebook = panel_survey(tmp_path)
    codebook.write_text(
        codebook.read_text().replace("  - id: library\n", "  - id: library\n    personas_only: true\n")
    )
    line = one_line_error(run_cli("surveys", "show", str(codebook)))
    assert "asked of personas only, but only a repeat" in line
