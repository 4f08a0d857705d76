"""A user's own survey: the worked example of docs/codebook.md (a CSV and a YAML codebook) loads, shows,
and reads the same from Parquet and Stata files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyreadstat
import pytest
from surveys_support import run_cli, write_doc_example

from anthology.surveys import Option, Question, load_survey, read_codebook
from anthology.surveys.codes import Decoder, Matcher, normalise_text


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return write_doc_example(tmp_path)


def test_doc_example_loads(example: Path):
    survey = load_survey(example)
    people = survey.respondents
    assert (survey.report.rows, len(people)) == (12, 11)
    [exclusion] = survey.report.exclusions
    assert (exclusion.count, exclusion.examples) == (1, ("T11",))
    assert survey.report.warnings == ()
    assert people.weighted and people.weights["T02"] == 0.85
    traits = people.traits
    assert traits.loc["T01", "age"] == "30-49" and traits.loc["T02", "age"] == "50 or older"
    assert pd.isna(traits.loc["T06", "age"])  # empty cell
    assert traits.loc["T05", "gender"] == "Non-binary"  # matched by label text
    assert pd.isna(traits.loc["T06", "gender"]) and pd.isna(traits.loc["T05", "income"])  # refused
    assert traits.loc["T04", "party"] == "Independent" and traits.loc["T09", "district"] == "North"
    assert people.answers.loc["T04", "library"] == 1  # "Yes" matched case-insensitively
    nonresponse = people.nonresponse
    assert nonresponse.loc["T07", "parks"] == "refused"
    assert set(nonresponse.index[nonresponse["council"] == "dont_know"]) == {"T03", "T09"}
    assert nonresponse.loc["T08", "library"] == "missing"
    counts = people.answers.notna().sum()
    assert (counts["parks"], counts["council"], counts["library"]) == (10, 9, 10)


def test_doc_example_weighted_distributions(example: Path):
    survey = load_survey(example)
    raw = pd.read_csv(example.parent / "town-survey.csv").set_index("resp_id")
    raw = raw[raw.index != "T11"]
    shares = survey.distributions().set_index(["question_id", "position"])["share"]
    answered = raw["parks"].isin([1, 2, 3, 4])
    expected = (
        raw.loc[answered, "wt"].groupby(raw.loc[answered, "parks"]).sum() / raw.loc[answered, "wt"].sum()
    )
    for code, share in expected.items():
        assert shares[("parks", code)] == pytest.approx(share)
    by_district = survey.distributions(by="district")
    totals = by_district.groupby(["district", "question_id"], observed=True)["share"].sum()
    assert totals.to_numpy() == pytest.approx(1.0)
    north = by_district[(by_district["district"] == "North") & (by_district["question_id"] == "library")]
    north_raw = raw[(raw["district"] == "north") & raw["library"].notna()]
    yes = north_raw.loc[north_raw["library"].str.lower() == "yes", "wt"].sum() / north_raw["wt"].sum()
    assert north.set_index("option")["share"]["Yes"] == pytest.approx(yes)


def test_doc_example_shows_in_the_cli(example: Path):
    result = run_cli("surveys", "show", str(example))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in (
        "town-survey: Town residents' survey 2024",
        "respondents: 11 of 12 rows",
        "excluded: 1 who answered none of the 3 questions (e.g. ids T11)",
        "weights: column wt",
        "answered 10, refused 1",
        "answered 9, dont_know 2",
        "absent: every respondent lives in one town",
        "Other (e.g., non-binary, trans)",
    ):
        assert text in out, text


def test_data_option_overrides_the_codebook_and_other_formats_read_the_same(example: Path, tmp_path: Path):
    csv = load_survey(example)
    frame = pd.read_csv(example.parent / "town-survey.csv", keep_default_na=False, na_values=[""])
    frame.to_parquet(tmp_path / "copy.parquet")
    frame["age"] = frame["age"].astype(float)
    pyreadstat.write_dta(frame, str(tmp_path / "copy.dta"))
    for path in (tmp_path / "copy.parquet", tmp_path / "copy.dta"):
        other = load_survey(example, data=path)
        assert other.report.source == str(path)
        pd.testing.assert_frame_equal(other.respondents.answers, csv.respondents.answers)
        pd.testing.assert_frame_equal(other.respondents.traits, csv.respondents.traits)
    in_memory = load_survey(example, data=frame)
    pd.testing.assert_frame_equal(in_memory.respondents.answers, csv.respondents.answers)


def test_codebook_without_data_has_questions_only(example: Path):
    text = example.read_text().replace("data: town-survey.csv", "")
    example.write_text(text)
    survey = load_survey(example)
    assert survey.respondents is None
    assert survey.questionnaire["library"].labels == ("Yes", "No")
    assert [o.position for o in survey.questionnaire["parks"].options] == [1, 2, 3, 4]
    result = run_cli("surveys", "show", str(example))
    assert result.returncode == 0 and "respondents: none loaded" in result.stdout


def test_questions_can_be_built_in_python():
    question = Question(id="q", wording="Agree?", options=["Yes", {"label": "No", "code": 2}])
    assert question.options == (Option(position=1, label="Yes"), Option(position=2, label="No", code=2))
    assert question.data_column == "q"


def test_read_codebook_names_the_file(example: Path):
    codebook = read_codebook(example)
    assert codebook.locate("questions", 2, "options").startswith(f"{example}:")
    assert set(codebook.columns()) == {
        "resp_id",
        "wt",
        "age",
        "gender",
        "income",
        "educ",
        "party",
        "district",
        "parks",
        "council",
        "library",
    }


def test_show_prints_brackets_in_labels_literally(example: Path):
    text = example.read_text().replace(
        "{label: Excellent, code: 1}", '{label: "Excellent [/b] [OR]", code: 1}'
    )
    example.write_text(text)
    result = run_cli("surveys", "show", str(example))
    assert result.returncode == 0, result.stderr
    assert "1. Excellent [/b] [OR]" in result.stdout


def test_text_codes_ignore_case_punctuation_and_asides():
    assert normalise_text("Associate’s degree") == normalise_text("associate's DEGREE")
    assert normalise_text("Mormon (Church of Jesus Christ of Latter-day Saints or LDS)") == "mormon"
    assert normalise_text("100 to under $150,000 [OR]") == normalise_text("100 to under $150,000")


def test_missing_codes_win_over_open_ranges():
    """An age column whose 99 means refused, with an open-ended top bracket."""
    decoder = Decoder(
        [Matcher.build(1, "18-64", (), (18, 64)), Matcher.build(2, "65+", (), (65, None))], {99: "refused"}
    )
    assert decoder.decode(99.0, None)[0] == "refused"
    assert decoder.decode(70.0, None)[0].label == "65+"
    assert decoder.decode("Refused", None) == (None, False)
    assert decoder.decode(12.0, None) == (None, False)


def test_nullable_integer_columns_with_missing_values_load(example: Path):
    frame = pd.read_csv(example.parent / "town-survey.csv", keep_default_na=False, na_values=[""])
    expected = load_survey(example, data=frame.copy()).respondents.traits
    numeric = [c for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])]
    assert "income" in numeric
    frame[numeric] = frame[numeric].astype("Int64")
    frame.loc[frame.index[0], "income"] = pd.NA
    traits = load_survey(example, data=frame).respondents.traits
    first = traits.index[0]
    assert pd.isna(traits.loc[first, "income"])
    pd.testing.assert_frame_equal(traits.drop(index=first), expected.drop(index=first))
