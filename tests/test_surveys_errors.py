"""Bad input gets one clean line (exit status 2, no traceback) naming the file and line or the data
column, and the fix. Each case breaks the documented example in one way."""

from __future__ import annotations

from pathlib import Path

import pyreadstat
import pytest
from surveys_support import one_line_error, run_cli, write_doc_example, write_pew_sav

from anthology.errors import ConfigError
from anthology.surveys import load_survey


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _show_error(codebook: Path, *more: str) -> str:
    return one_line_error(run_cli("surveys", "show", str(codebook), *more))


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return write_doc_example(tmp_path)


def test_malformed_yaml_names_the_line(example: Path):
    _replace(example, "  - id: council\n", "  - id: council\n   wording: [unclosed\n")
    line = _show_error(example)
    assert f"{example}:{_line_of(example, '[unclosed')}:" in line
    assert "not valid YAML" in line


def test_missing_column_names_the_codebook_line_and_a_close_match(example: Path):
    _replace(example, "column: income", "column: incme")
    line = _show_error(example)
    assert "has no column 'incme' (did you mean 'income'?)" in line
    assert f"{example}:{_line_of(example, 'column: incme')}:" in line


def test_codes_not_in_the_codebook(example: Path):
    csv = example.parent / "town-survey.csv"
    _replace(csv, "T01,1.10,34,Woman,3,3,D,north,2,", "T01,1.10,34,Woman,3,3,D,north,5,")
    _replace(csv, "T02,0.85,71,Man,2,1,R,south,1,", "T02,0.85,71,Man,2,1,R,south,5,")
    line = _show_error(example)
    assert "column 'parks': value(s) 5 (2 rows) not covered by the codebook" in line
    assert "add them to the options or list them under `missing:`" in line


def test_uncovered_sav_codes_show_their_value_labels(tmp_path: Path):
    codebook = load_survey("pew-atp-w34").codebook
    sav = tmp_path / "w34.sav"
    raw = write_pew_sav(sav, codebook)
    raw.loc[0, "F_PARTY_FINAL"] = 5.0
    pyreadstat.write_sav(raw, str(sav), variable_value_labels={"F_PARTY_FINAL": {5.0: "No lean"}})
    line = one_line_error(run_cli("surveys", "show", "pew-atp-w34", "--data", str(sav)))
    assert "column 'F_PARTY_FINAL': value(s) 5 labelled 'No lean' (1 row) not covered" in line


def test_question_with_one_option(example: Path):
    _replace(example, 'options: ["Yes", "No"]', 'options: ["Yes"]')
    line = _show_error(example)
    assert "questions[2].options: a question needs at least two options; this one has 1" in line
    assert f"{example}:{_line_of(example, 'options: [')}:" in line


def test_question_nobody_answered(example: Path):
    csv = example.parent / "town-survey.csv"
    lines = csv.read_text().splitlines()
    blanked = [",".join([*row.split(",")[:-2], "", row.split(",")[-1]]) for row in lines[1:]]
    csv.write_text("\n".join([lines[0], *blanked]) + "\n")
    line = _show_error(example)
    assert "column 'council': nobody answered question 'council'" in line
    assert "remove it from the codebook or check the column" in line


@pytest.mark.parametrize(
    ("row", "expected"),
    [("T02,-0.85,", "1 negative value(s) (first: respondent 'T02')"), ("T02,,", "1 missing value(s)")],
)
def test_bad_weights(example: Path, row: str, expected: str):
    _replace(example.parent / "town-survey.csv", "T02,0.85,", row)
    line = _show_error(example)
    assert "weight column 'wt'" in line and expected in line
    assert "weights must be non-negative numbers" in line


def test_unreadable_sav(example: Path, tmp_path: Path):
    broken = tmp_path / "broken.sav"
    broken.write_bytes(b"$FL2 this is not really an SPSS file")
    line = _show_error(example, "--data", str(broken))
    assert f"cannot read {broken} as an SPSS .sav file" in line
    line = one_line_error(run_cli("surveys", "show", "pew-atp-w92", "--data", str(broken)))
    assert "SPSS .sav file" in line


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  region: every respondent lives in one town\n", "", "persona trait 'region' is neither mapped"),
        ('wording: "How would you rate', 'wordng: "How would you rate', "questions[0].wordng: unknown field"),
        ("persona: [Female]", "persona: [Femal]", "'Femal' is not a gender category"),
        (
            "  - {label: Poor, code: 4}",
            "  - {label: Poor, code: 3}",
            "code 3 of 'Poor' is also the code of 'Fair'",
        ),
        ("title: ", "title: x\ntitle: ", "key 'title' appears twice"),
        ("range: [30, 49]", "range: [25, 49]", "the range of '30-49' overlaps the range of '18-29'"),
        ('      - {label: Non-binary, persona: ["Other (e.g., non-binary, trans)"]}\n', "", "neither mapped"),
        (
            "{label: North, codes: [north]}",
            "{label: North, codes: [north], persona: [Northeast]}",
            "takes no",
        ),
    ],
)
def test_codebook_mistakes_name_the_line(example: Path, old: str, new: str, expected: str):
    _replace(example, old, new)
    with pytest.raises(ConfigError) as caught:
        load_survey(example)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"{example}:") and "\n" not in message


def test_duplicate_respondent_ids(example: Path):
    _replace(example.parent / "town-survey.csv", "T02,", "T01,")
    with pytest.raises(ConfigError, match="respondent id 'T01' appears 2 times"):
        load_survey(example)


def test_unknown_survey_and_wrong_file():
    assert "unknown survey 'gss2019'" in one_line_error(run_cli("surveys", "show", "gss2019"))
    missing = one_line_error(run_cli("surveys", "show", "gss2018-spending", "--data", "nowhere.csv"))
    assert "data file nowhere.csv does not exist" in missing


def test_data_file_given_as_the_survey(example: Path):
    line = _show_error(example.parent / "town-survey.csv")
    assert "is not a codebook" in line
