"""Panels that persist across waves: the codebook's ``waves:`` and ``repeats:`` (and their errors), the
contexts each wave is asked in with ``ask.memory`` on and off (a recording fake model), the seeds of
a repeated question, the test-retest metrics against a hand count and scipy, an end-to-end run of the
tiny model on a two-wave GSS codebook whose humans are a panel, and a run killed (SIGKILL) during wave
2 that resumes with no model call made twice."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from test_answering import BLOCK1, BLOCK2, CHAT_STORY, FIXED, INSTRUCTION, STORY, FakeModel, panel

from anthology.errors import ConfigError
from anthology.method import prompts
from anthology.method.answering import ANSWER_COLUMNS, AskConfig, ask, reversed_options
from anthology.method.seeds import stable_int
from anthology.metrics.retest import pool_change, stability
from anthology.surveys import Question, Questionnaire, Wave, load_survey
from anthology.surveys.builtin import BUILTINS
from anthology.surveys.codebook import parse_codebook

GSS = BUILTINS["gss2018-spending"]
#: Wave 2 of the test survey: two of wave 1's questions again.
REPEATS = {"natenvir_w2": "natenvir", "natarms_w2": "natarms"}


#: The first wave of the studies below (short, so that a remembered wave fits the tiny model's 2,048
#: tokens); the second holds the other GSS questions and the repeats.
SHORT_FIRST = ["natspac", "natenvir", "natheal", "natarms"]


def two_wave_text(extra: str = "", waves: str | None = None, first: list[str] | None = None) -> str:
    """The built-in GSS codebook with two repeats appended (``extra``: more question entries) and
    ``waves`` (default: wave ``w1`` the ``first`` questions, all 18 when not given, wave ``w2`` the
    others and the repeats)."""
    text = GSS.codebook_path.read_text()
    for repeat, original in REPEATS.items():
        text += f"  - id: {repeat}\n    repeats: {original}\n    wording: 'Again: on {original}?'\n"
        text += "    options: *spending\n"
    text += extra
    if waves is None:
        every = [q.id for q in load_survey("gss2018-spending").questionnaire.questions]
        first = every if first is None else first
        second = [q for q in every if q not in first] + [*REPEATS, *re.findall(r"id: (\w+)", extra)]
        waves = f"waves:\n  - {{name: w1, questions: {first}}}\n  - {{name: w2, questions: {second}}}\n"
    return text + waves.replace("'", "")


def two_wave_survey(folder: Path, first: list[str] | None = None) -> Path:
    """The two-wave codebook (:func:`two_wave_text`) and a copy of the GSS data in which the humans
    answered the repeats too: every fifth respondent moves one option toward "too much" there."""
    data = GSS.load()
    for repeat, original in REPEATS.items():
        moved = data[original].where(data.index % 5 != 0, (data[original] - 1).clip(lower=-1))
        data[repeat] = moved
    data.to_csv(folder / "gss-panel.csv", index=False)
    path = folder / "gss-panel.yaml"
    text = two_wave_text(first=first).replace(
        "name: gss2018-spending", "name: gss-panel\ndata: gss-panel.csv"
    )
    path.write_text(text)
    return path


# -- the codebook ------------------------------------------------------------------------------------


def test_a_two_wave_codebook_loads_with_its_waves_and_repeats(tmp_path):
    survey = load_survey(two_wave_survey(tmp_path))
    questionnaire = survey.questionnaire
    assert [w.name for w in questionnaire.waves] == ["w1", "w2"]
    assert [name for name, _ in questionnaire.parts()] == ["w1", "w2"]
    assert questionnaire.parts()[1][1].ids == ("natenvir_w2", "natarms_w2")
    assert questionnaire.repeated() == (("natenvir", "natenvir_w2"), ("natarms", "natarms_w2"))
    assert questionnaire.wave_of("natspac") == "w1" and questionnaire.wave_of("natarms_w2") == "w2"
    people = survey.respondents
    assert people is not None
    changed = (people.answers["natenvir"] != people.answers["natenvir_w2"]).sum()
    assert 0 < changed < len(people) / 5 + 1  # a panel: the repeat's column has its own answers
    # without waves, a questionnaire is its one part
    plain = load_survey("gss2018-spending").questionnaire
    assert plain.waves == () and plain.parts() == ((None, plain),) and plain.repeated() == ()


def test_surveys_show_lists_the_waves(tmp_path):
    path = two_wave_survey(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "anthology", "surveys", "show", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wave 2 w2: natenvir_w2 (repeats natenvir), natarms_w2 (repeats natarms)" in result.stdout
    assert "wave 1 w1: natspac, natenvir," in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            two_wave_text(waves="waves:\n  - {name: w1, questions: [natspac]}\n"),
            "are in no wave; list each in exactly one",
        ),
        (
            two_wave_text(waves="waves:\n  - {name: w1, questions: [natspac, natspac]}\n"),
            "question 'natspac' is already in wave 'w1'",
        ),
        (
            two_wave_text(waves="waves:\n  - {name: w1, questions: [natspace]}\n"),
            "'natspace' is not a question id under `questions:`",
        ),
        (
            two_wave_text(waves=""),
            "repeats 'natenvir', but the codebook has no `waves:`",
        ),
        (
            two_wave_text(
                extra="  - id: natx\n    repeats: natenvir\n    wording: 'Other?'\n    options: [A, B, C]\n"
            ),
            "'natx' repeats 'natenvir' but its options ['A', 'B', 'C'] differ",
        ),
        (
            two_wave_text(
                extra="  - id: naty\n    repeats: natenvir_w2\n    wording: 'Once more?'\n"
                "    options: *spending\n"
            ),
            "'natenvir_w2' is itself a repeat (of 'natenvir'); repeat the original",
        ),
    ],
)
def test_wave_errors_are_one_line_naming_the_place(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        parse_codebook(text, tmp_path / "bad.yaml")
    line = str(error.value)
    assert message in line and "\n" not in line
    assert line.startswith(f"{tmp_path / 'bad.yaml'}:")


def test_a_repeat_comes_in_a_later_wave(tmp_path):
    first = [q.id for q in load_survey("gss2018-spending").questionnaire.questions]
    same = f"waves:\n  - {{name: w1, questions: {[*first, *REPEATS]}}}\n"
    with pytest.raises(ConfigError, match="which is not in an earlier wave"):
        parse_codebook(two_wave_text(waves=same), tmp_path / "bad.yaml")


# -- the contexts each wave is asked in --------------------------------------------------------------

WAVES = Questionnaire(
    name="toy",
    questions=(
        Question(id="q1", wording="Is it good?", options=("Yes", "Maybe", "No")),
        Question(id="q2", wording="Is it bad?", options=("Too little", "About right", "Too much")),
        Question(id="q1_w2", wording="Is it good?", options=("Yes", "Maybe", "No"), repeats="q1"),
    ),
    waves=(Wave(name="w1", questions=("q1", "q2")), Wave(name="w2", questions=("q1_w2",))),
)


def prompts_asked(model: FakeModel) -> list:
    return [r.prompt for batch in model.generated for r in batch]


@pytest.mark.parametrize("context", ["independent", "sequential"])
def test_memory_off_each_wave_sees_only_the_context(context):
    model = FakeModel()
    answers, _ = ask(model, panel(1), WAVES, config=AskConfig(**FIXED, context=context))
    asked = prompts_asked(model)
    first_q2 = f"{STORY}\n\n{BLOCK2}" if context == "independent" else f"{STORY}\n\n{BLOCK1} (A)\n\n{BLOCK2}"
    assert asked == [f"{STORY}\n\n{BLOCK1}", first_q2, f"{STORY}\n\n{BLOCK1}"]
    assert list(answers.columns) == [*ANSWER_COLUMNS[:4], "wave", *ANSWER_COLUMNS[4:]]
    assert answers["wave"].tolist() == ["w1", "w1", "w2"]


@pytest.mark.parametrize("context", ["independent", "sequential"])
@pytest.mark.parametrize("mode", ["sample", "logprob"])
def test_memory_on_a_wave_starts_from_the_earlier_waves_questions_and_answers(context, mode):
    model = FakeModel(reply=lambda prompt, k: " (B) Maybe" if prompt.endswith(BLOCK1) else " (C) Too much")
    config = AskConfig(**FIXED, context=context, mode=mode, memory=True)
    answers, dists = ask(model, panel(1), WAVES, config=config)
    asked = (
        [r.context for batch in model.scored for r in batch] if mode == "logprob" else prompts_asked(model)
    )
    # logprob mode appends the drawn letter (the fake puts its mass on (A)); sample mode the answer line
    one, two = ("(A)", "(A)") if mode == "logprob" else ("(B) Maybe", "(C) Too much")
    remembered = f"{STORY}\n\n{BLOCK1} {one}\n\n{BLOCK2} {two}"
    assert asked[-1] == f"{remembered}\n\n{BLOCK1}"
    assert set(dists["wave"]) == {"w1", "w2"}
    assert len(answers) == 3


def test_memory_on_in_chat_the_earlier_waves_are_turns():
    model = FakeModel(reply=lambda prompt, k: " (A) Yes")
    ask(model, panel(1, style="chat"), WAVES, config=AskConfig(**FIXED, context="independent", memory=True))
    last = prompts_asked(model)[-1]
    assert list(last) == [
        {"role": "system", "content": prompts.CHAT_SYSTEM},
        *CHAT_STORY,
        {"role": "user", "content": BLOCK1},
        {"role": "assistant", "content": "(A) Yes"},
        {"role": "user", "content": BLOCK2},
        {"role": "assistant", "content": "(A) Yes"},
        {"role": "user", "content": BLOCK1},
    ]


def test_an_unanswered_question_is_left_out_of_the_memory():
    model = FakeModel(reply=lambda prompt, k: "no idea" if prompt.endswith(BLOCK2) else " (A)")
    config = AskConfig(**FIXED, context="independent", memory=True, max_attempts=2)
    answers, _ = ask(model, panel(1), WAVES, config=config)
    assert not answers.set_index("question_id").loc["q2", "compliant"]
    assert prompts_asked(model)[-1] == f"{STORY}\n\n{BLOCK1} (A)\n\n{BLOCK1}"


def test_a_repeat_has_its_own_seeds_and_order_and_reversal_stay_per_question():
    model = FakeModel()
    config = AskConfig(context="independent")
    answers, _ = ask(model, panel(40), WAVES, seed=3, config=config)
    requests = {(r.prompt, r.seed) for batch in model.generated for r in batch}
    assert len(requests) == 3 * 40  # no two requests alike: the repeat's seed is its own
    for member in range(40):
        rows = answers[answers["respondent_id"] == member].set_index("question_id")
        for question_id in WAVES.ids:
            flip = reversed_options(3, "test", member, question_id, config)
            assert rows.loc[question_id, "reversed"] == flip
        # the order within wave 1 is the hash order of its questions; wave 2 starts again at 0
        order = sorted(["q1", "q2"], key=lambda q: stable_int(3, "test", member, q, "order"))
        assert [rows.loc[q, "order"] for q in order] == [0, 1] and rows.loc["q1_w2", "order"] == 0
    flips = [reversed_options(3, "test", m, q, config) for m in range(40) for q in ("q1", "q1_w2")]
    assert flips[0::2] != flips[1::2]  # the repeat's reversal is drawn apart from the original's


def test_without_waves_answers_are_as_before():
    model = FakeModel()
    plain = Questionnaire(name="toy", questions=WAVES.questions[:2])
    answers, dists = ask(model, panel(1), plain, config=AskConfig(**FIXED, memory=True))
    assert list(answers.columns) == list(ANSWER_COLUMNS) and "wave" not in dists
    assert prompts_asked(model)[1] == f"{STORY}\n\n{BLOCK1} (A)\n\n{BLOCK2}"  # memory has nothing to do
    assert INSTRUCTION in BLOCK1


# -- test-retest metrics -----------------------------------------------------------------------------


def test_stability_and_change_against_a_hand_count():
    first = [1, 2, 3, 0, 2, 1]
    second = [1, 3, 3, 2, 0, 2]
    held = stability(first, second, 3)
    # both answered: (1,1) (2,3) (3,3) (1,2): 2 of 4 alike; distances 0, 1, 0, 1 over K-1 = 2
    assert held.n_pairs == 4 and held.exact_agreement == 0.5 and held.mean_ordinal_distance == 0.25
    assert held.correlation == pytest.approx(stats.pearsonr([1, 2, 3, 1], [1, 3, 3, 2]).statistic)
    assert held.note is None
    change = pool_change(first, second, 3)
    expected = stats.wasserstein_distance([1, 2, 3, 2, 1], [1, 3, 3, 2, 2])
    assert change.wd_raw == pytest.approx(expected) and change.wd_normalized == pytest.approx(expected / 2)


def test_weighted_stability_and_change_against_scipy():
    rng = np.random.default_rng(5)
    first, second = rng.integers(0, 5, 300), rng.integers(0, 5, 300)  # 0: no answer
    weights = rng.uniform(0.2, 3.0, 300)
    held = stability(first, second, 4, weights)
    both = (first > 0) & (second > 0)
    w = weights[both]
    assert held.n_pairs == both.sum()
    assert held.exact_agreement == pytest.approx(np.average(first[both] == second[both], weights=w))
    distance = np.abs(first[both] - second[both]) / 3
    assert held.mean_ordinal_distance == pytest.approx(np.average(distance, weights=w))
    x, y = first[both].astype(float), second[both].astype(float)
    cov = np.cov(x, y, aweights=w, bias=True)
    assert held.correlation == pytest.approx(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))
    unweighted = stability(first, second, 4)
    assert unweighted.correlation == pytest.approx(stats.pearsonr(x, y).statistic)
    change = pool_change(first, second, 4, weights)
    a, b = first > 0, second > 0
    expected = stats.wasserstein_distance(first[a], second[b], weights[a], weights[b])
    assert change.wd_raw == pytest.approx(expected)


def test_constant_answers_give_no_correlation_and_say_why():
    held = stability([2, 2, 2], [1, 2, 3], 3)
    assert np.isnan(held.correlation) and held.exact_agreement == pytest.approx(1 / 3)
    assert held.note == "correlation undefined: the answers of the first wave are constant"
    none = stability([1, 0], [0, 2], 3)
    assert none.n_pairs == 0 and np.isnan(none.exact_agreement) and none.note == "no member answered both"
    assert np.isnan(pool_change([0, 0], [1, 2], 3).wd_raw)


# -- the study ---------------------------------------------------------------------------------------

#: A small study on the tiny model: log-prob answers, each question on its own, memory on.
TINY = {
    "profile": "fast",
    "seed": 4,
    "survey": {"respondents": 6},
    "backstories": {
        "n": 10,
        "max_tokens": 16,
        "min_tokens": 1,
        "first_person": "off",
        "near_duplicate": 2.0,
        "preamble": False,
    },
    "matching": {"methods": ["greedy"]},
    "ask": {"methods": ["anthology-greedy", "qa"], "memory": True},
    "evaluate": {"splits": 5, "resamples": 20},
}


def anthology(*args: str, **popen) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "anthology", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        **popen,
    )


def finish(process: subprocess.Popen[str]) -> str:
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0, err
    return err


def test_a_two_wave_study_end_to_end_with_the_tiny_model(tiny_folder, tmp_path):
    survey = two_wave_survey(tmp_path, SHORT_FIRST)
    config = tmp_path / "study.yaml"
    study = {**TINY, "model": {"name": tiny_folder}, "survey": {**TINY["survey"], "name": str(survey)}}
    config.write_text(yaml.safe_dump(study))
    out = tmp_path / "run"
    finish(anthology("run", str(config), "--out", str(out)))
    answers = pd.read_parquet(out / "answers.parquet")
    assert set(answers["wave"]) == {"w1", "w2"}
    assert set(answers.loc[answers["wave"] == "w1", "question_id"]) == set(SHORT_FIRST)
    assert len(answers) == 2 * 6 * 20  # two methods, six respondents, 18 + 2 questions
    retest = pd.read_csv(out / "retest.csv")
    assert retest["method"].tolist() == ["humans", "anthology-greedy", "qa"] * 2
    assert retest["repeat_id"].tolist() == ["natenvir_w2"] * 3 + ["natarms_w2"] * 3
    humans = pd.read_parquet(out / "humans.parquet")
    for original, repeat in (("natenvir", "natenvir_w2"), ("natarms", "natarms_w2")):
        row = retest[(retest["method"] == "humans") & (retest["question_id"] == original)].iloc[0]
        both = humans[[original, repeat]].dropna()
        assert row["n_pairs"] == len(both)
        assert row["exact_agreement"] == pytest.approx((both[original] == both[repeat]).mean())
        greedy = answers[answers["method"] == "anthology-greedy"].pivot(
            index="respondent_id", columns="question_id", values="position"
        )
        mine = retest[(retest["method"] == "anthology-greedy") & (retest["question_id"] == original)].iloc[0]
        alike = (greedy[original] == greedy[repeat]).mean()
        assert mine["exact_agreement"] == pytest.approx(alike)
    per_question = pd.read_csv(out / "metrics_per_question.csv")
    assert set(REPEATS) <= set(per_question["question_id"])  # a repeat is just another question
    report = (out / "report.html").read_text()
    assert '<section id="waves">' in report and "Wave 2: w2" in report
    assert "Change between waves" in report and "natenvir → natenvir_w2" in report


# -- resume after SIGKILL during wave 2 ----------------------------------------------------------------


#: The study killed in wave 2: enough members that wave 2 takes several of the cache's chunks.
KILLED = {
    **TINY,
    "survey": {"respondents": 24},
    "ask": {**TINY["ask"], "methods": ["anthology-greedy", "qa", "nothing"]},
}


def cache_rows(run: Path) -> tuple[int, int]:
    """The response cache's rows, and how many of them answer a wave-2 prompt (memory on)."""
    with sqlite3.connect(f"file:{run / 'cache.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        second = db.execute(
            "SELECT COUNT(*) FROM prompts WHERE (LENGTH(prompt) - LENGTH(REPLACE(prompt, ?, ''))) >= ?",
            (INSTRUCTION, 2 * len(INSTRUCTION)),
        ).fetchone()[0]
    return rows, second


def computed(run: Path) -> int:
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    return sum(entry["model_calls"]["computed"] for entry in stages.values() if "model_calls" in entry)


def test_killed_during_wave_2_resumes_with_no_model_call_made_twice(tiny_folder, tmp_path):
    survey = two_wave_survey(tmp_path, SHORT_FIRST)
    study = {**KILLED, "model": {"name": tiny_folder}, "survey": {**KILLED["survey"], "name": str(survey)}}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    finish(anthology("run", str(config), "--out", str(whole)))
    total = computed(whole)
    assert cache_rows(whole)[0] == total  # every computed unit is one cache row

    process = anthology("run", str(config), "--out", str(cut))
    drain = threading.Thread(target=process.communicate, daemon=True)  # keep stderr flowing
    drain.start()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if (cut / "cache.sqlite").exists():
            try:
                if cache_rows(cut)[1] > 0:  # wave 2 has begun and some of it is stored
                    break
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before wave 2 could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    drain.join(timeout=10)
    assert not (cut / "answers.parquet").exists()
    kept, second = cache_rows(cut)
    assert second > 0 and kept < total

    err = finish(anthology("run", str(config), "--out", str(cut)))
    assert "Traceback" not in err
    # the resumed run computed only what the killed one had not stored: nothing twice
    ask = json.loads((cut / "manifest.json").read_text())["stages"]["ask"]["model_calls"]
    assert ask["cache_hits"] > 0
    assert ask["computed"] == total - kept  # the other stages were done already
    assert cache_rows(cut)[0] == total
    pd.testing.assert_frame_equal(
        pd.read_parquet(cut / "answers.parquet"), pd.read_parquet(whole / "answers.parquet")
    )
