"""Open-ended questions: the codebook's ``open_questions:``, free-text answers seeded per member and
question, their coding back to categories by log-probability (a fake coder whose letters are known),
the agreement with the closed answers, and a tiny-model run through the CLI that resumes after
kill -9 with no repeated model calls."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml
from conftest import build_tiny_llama
from surveys_support import write_doc_example
from test_answering import FakeModel

from anthology.errors import ConfigError
from anthology.method import prompts
from anthology.method.open_answers import NONE_OF_THESE, answer_open, code_answers, open_seed
from anthology.metrics.open_agreement import closed_answers, open_agreement
from anthology.surveys import read_codebook
from anthology.surveys.open_questions import OpenCategory, OpenQuestion

OPEN = """
open_questions:
  - id: parks_open
    wording: "What do you think of the parks in your neighbourhood?"
    column: parks_text
    closed: parks
  - id: worry
    wording: "What worries you most about the town?"
    categories:
      - {label: Roads, description: "potholes, traffic, parking"}
      - {label: Crime, description: "safety, theft"}
"""
TEXTS = ["lovely and green", "fine", "run down", "awful", "", "great", "ok", "poor", "nice", "meh", "", "bad"]


def town_with_open(folder: Path, extra: str = OPEN) -> Path:
    """The docs' town survey with open questions and a free-text column of the humans' answers."""
    codebook = write_doc_example(folder)
    codebook.write_text(codebook.read_text() + extra)
    data = folder / "town-survey.csv"
    frame = pd.read_csv(data, dtype=str)
    frame["parks_text"] = TEXTS
    frame.to_csv(data, index=False)
    return codebook


def test_open_questions_load_with_the_closed_options_as_categories(tmp_path):
    codebook = read_codebook(town_with_open(tmp_path))
    assert [q.id for q in codebook.open_questions] == ["parks_open", "worry"]
    assert [c.label for c in codebook.open_categories["parks_open"]] == ["Excellent", "Good", "Fair", "Poor"]
    assert codebook.open_categories["worry"][0].description == "potholes, traffic, parking"
    assert codebook.columns()["parks_text"] == ("open_questions", 0, "column")


def test_surveys_show_lists_the_open_questions(tmp_path):
    from surveys_support import run_cli as cli

    result = cli("surveys", "show", str(town_with_open(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "Open questions" in result.stdout and "parks_open" in result.stdout
    assert "closed: parks" in result.stdout and "Roads (potholes, traffic, parking)" in result.stdout


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('  - {id: q, wording: "Why?"}', "needs `categories:` (two or more) or `closed:`"),
        ('  - {id: q, wording: "Why?", closed: nope}', "'nope' is not a question under `questions:`"),
        ('  - {id: parks, wording: "Why?", closed: parks}', "'parks' is used twice"),
        (
            '  - {id: q, wording: "Why?", closed: library, categories: [{label: a}, {label: b}, {label: c}]}',
            "has 3 categories but its closed question 'library' has 2 options",
        ),
    ],
)
def test_a_bad_open_question_is_one_line_naming_its_place(tmp_path, entry, problem):
    path = town_with_open(tmp_path, "\nopen_questions:\n" + entry + "\n")
    with pytest.raises(ConfigError) as caught:
        read_codebook(path)
    message = str(caught.value)
    assert "\n" not in message and problem in message and "open_questions[0]" in message


def panel(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": "qa",
            "respondent_id": list(range(1, n + 1)),
            "persona_id": pd.array([pd.NA] * n, dtype="Int64"),
            "style": "completion",
            "context": [f"Question: Who are you?\n\nAnswer: person {i}" for i in range(1, n + 1)],
        }
    )


QUESTIONS = [
    OpenQuestion(
        id="a", wording="What about the parks?", categories=(OpenCategory(label="x"), OpenCategory(label="y"))
    ),
    OpenQuestion(
        id="b", wording="What about the roads?", categories=(OpenCategory(label="x"), OpenCategory(label="y"))
    ),
]


def test_free_text_answers_are_seeded_per_member_and_question_and_repeat_exactly():
    model = FakeModel(reply=lambda prompt, k: f" said to: {str(prompt)[-60:]}")
    answers = answer_open(model, panel(), QUESTIONS, seed=5)
    seeds = [r.seed for batch in model.generated for r in batch]
    assert len(seeds) == len(set(seeds)) == 6
    assert seeds[0] == open_seed(5, "qa", 1, "a")
    assert all(r.max_tokens == 96 and r.temperature == 1.0 for batch in model.generated for r in batch)
    assert (
        answers["prompt"].map(json.loads).str.endswith("Question: What about the parks?\nAnswer:").sum() == 3
    )
    assert json.loads(answers["model"].iloc[0]) == {"backend": "fake"}
    again = answer_open(
        FakeModel(reply=lambda prompt, k: f" said to: {str(prompt)[-60:]}"), panel(), QUESTIONS, seed=5
    )
    pd.testing.assert_frame_equal(answers, again)


def letter_coder(letters: dict[str, str]) -> FakeModel:
    """A coder that puts nearly all its mass on the letter ``letters[word]`` for the answer holding
    ``word`` (the bare letter with a closing parenthesis, one of the answer forms)."""

    def scores(request) -> list[float]:
        text = str(request.context)
        letter = next(v for k, v in letters.items() if f'"{k}' in text)
        n = len(request.options) // prompts.FORMS_PER_OPTION
        index = prompts.LETTERS.index(letter)
        return [
            math.log(0.9 if (i == index * prompts.FORMS_PER_OPTION) else 0.1 / (n * 5))
            for i in range(len(request.options))
        ]

    return FakeModel(scores=scores)


def test_the_coder_maps_answers_to_their_categories_and_an_off_topic_one_to_none():
    categories = (OpenCategory(label="Roads"), OpenCategory(label="Crime", description="safety"))
    question = OpenQuestion(id="worry", wording="What worries you?", categories=categories)
    answers = pd.DataFrame(
        {
            "method": ["qa", "qa", "qa", "humans"],
            "respondent_id": [1, 2, 3, 1],
            "persona_id": pd.array([pd.NA] * 4, dtype="Int64"),
            "question_id": "worry",
            "text": ["potholes everywhere", "burglaries", "I like cheese", ""],
        }
    )
    coder = letter_coder({"potholes": "A", "burglaries": "B", "I like cheese": "C"})
    codes = code_answers(coder, answers, {"worry": question}, {"worry": categories})
    assert codes["label"].tolist()[:3] == ["Roads", "Crime", NONE_OF_THESE]
    assert codes["code"].tolist()[:3] == [1, 2, pd.NA]
    assert codes["none"].iloc[2] > 0.8 and codes["probabilities"].iloc[0][0] > 0.8
    assert pd.isna(codes["code"].iloc[3]) and codes["probabilities"].iloc[3] is None  # empty: not sent
    (batch,) = coder.scored
    assert len(batch) == 3 and "(B) Crime: safety\n(C) None of these" in batch[0].context


def test_agreement_matches_a_hand_count_and_scipy():
    codes = pd.DataFrame(
        {
            "method": "qa",
            "respondent_id": [1, 2, 3, 4],
            "persona_id": pd.NA,
            "question_id": "o",
            "probabilities": [[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]],
            "code": pd.array([1, 2, 3, 1], dtype="Int64"),
        }
    )
    answers = pd.DataFrame(
        {
            "method": "qa",
            "respondent_id": [1, 2, 3, 4],
            "persona_id": pd.NA,
            "question_id": "c",
            "position": [1, 2, 1, 3],
        }
    )
    closed = closed_answers(answers, pd.DataFrame({"respondent_id": [1]}), ["c"])
    table = open_agreement(codes, closed, {"o": "c"}, {"o": 3})
    (row,) = table.itertuples()
    assert row.members == 4 and row.agreement == pytest.approx(2 / 4)
    coded = [0.4, 0.2625, 0.3375]
    assert row.coded == pytest.approx(coded)
    assert row.closed == pytest.approx([0.5, 0.25, 0.25])
    assert row.wd == pytest.approx(
        scipy.stats.wasserstein_distance([1, 2, 3], [1, 2, 3], coded, [0.5, 0.25, 0.25])
    )


# -- a tiny-model run through the CLI -------------------------------------------------------------

TINY_FLAGS = [
    "--profile",
    "fast",
    "--respondents",
    "4",
    "--personas",
    "6",
    "--backstory-tokens",
    "12",
    "--seed",
    "3",
]


def study(folder: Path, tiny: str) -> Path:
    config = {
        "model": {"name": tiny},
        "survey": {"name": str(town_with_open(folder))},
        "backstories": {"min_tokens": 1, "preamble": None, "first_person": "off", "near_duplicate": 2.0},
        "ask": {"methods": ["anthology-greedy", "qa", "dp"], "dp_max_tokens": 12},
        "matching": {"methods": ["greedy"]},
        "open": {"max_tokens": 8},
        "evaluate": {"splits": 5, "resamples": 20},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(config: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "anthology", "run", str(config), "--out", str(out), *TINY_FLAGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )


def stage_calls(out: Path) -> dict[str, dict[str, int]]:
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {name: entry.get("model_calls", {}) for name, entry in stages.items()}


def test_a_tiny_run_answers_codes_reports_and_resumes_after_kill_9(tmp_path, tiny_folder):
    config = study(tmp_path, tiny_folder)
    out = tmp_path / "run"
    process = run_cli(config, out)
    assert process.stderr is not None
    for line in process.stderr:
        if "] code" in line:  # the coding stage has started: kill the run there
            time.sleep(0.2)
            os.kill(process.pid, signal.SIGKILL)
            break
    process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL
    first = stage_calls(out)
    _, err = (rerun := run_cli(config, out)).communicate(timeout=600)
    assert rerun.returncode == 0, err
    calls = stage_calls(out)
    # what the killed run had finished is skipped or answered by the cache: nothing is computed twice
    assert "open: done already, skipped" in err
    assert calls["open"] == first["open"]
    coded = pd.read_parquet(out / "open_codes.parquet")["probabilities"].notna().sum()
    code = calls["code"]
    assert code["computed"] + code["cache_hits"] + code["duplicates"] == coded
    answers = pd.read_parquet(out / "open_answers.parquet")
    assert set(answers["method"]) == {"anthology-greedy", "qa", "dp"} and set(answers["question_id"]) == {
        "parks_open",
        "worry",
    }
    codes = pd.read_parquet(out / "open_codes.parquet")
    assert (
        "humans" in set(codes["method"]) and len(codes) == len(answers) + (codes["method"] == "humans").sum()
    )
    closed = closed_answers(
        pd.read_parquet(out / "answers.parquet"), pd.read_parquet(out / "humans.parquet"), ["parks"]
    )
    table = open_agreement(codes, closed, {"parks_open": "parks"}, {"parks_open": 4})
    assert {"humans", "anthology-greedy", "qa", "dp"} <= set(table["method"])
    assert table["wd"].between(0, 3).all() and table["agreement"].between(0, 1).all()
    html = (out / "report.html").read_text()
    assert "<h2>Open questions</h2>" in html and "Exact agreement" in html
    # a third run computes nothing at all
    _, err = (third := run_cli(config, out)).communicate(timeout=600)
    assert third.returncode == 0, err
    assert "open: done already, skipped" in err and "code: done already, skipped" in err


def save_tiny(folder: Path, seed: int) -> str:
    model, tokenizer = build_tiny_llama(seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_another_coder_is_cached_and_its_weights_are_in_the_code_stage_fingerprint(tmp_path, tiny_folder):
    config = study(tmp_path, tiny_folder)
    coder = save_tiny(tmp_path / "coder", seed=1)
    settings = yaml.safe_load(config.read_text())
    settings["open"]["coder"] = coder
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "run"
    _, err = (first := run_cli(config, out)).communicate(timeout=600)
    assert first.returncode == 0, err
    codes = pd.read_parquet(out / "open_codes.parquet")
    study_model = json.loads((out / "manifest.json").read_text())["model"]["identity"]
    assert (
        set(codes["coder"]) == {codes["coder"].iloc[0]} and json.loads(codes["coder"].iloc[0]) != study_model
    )
    coded = json.loads((out / "manifest.json").read_text())["stages"]["code"]["coder_calls"]
    assert coded["computed"] > 0

    save_tiny(tmp_path / "coder", seed=2)  # the same spec, other weights: the codes are stale
    _, err = (again := run_cli(config, out)).communicate(timeout=600)
    assert again.returncode == 0, err
    assert "open: done already, skipped" in err and "code: runs again: coder changed" in err

    def probabilities(frame: pd.DataFrame) -> np.ndarray:
        return np.concatenate(frame["probabilities"].dropna().to_list())

    assert not np.allclose(probabilities(pd.read_parquet(out / "open_codes.parquet")), probabilities(codes))
