"""Data files as they come: CSV files split on `;`, tabs or other delimiters and written in UTF-8 (with or
without a byte-order mark) or a Windows/latin-1 encoding load, detected or as the codebook's `read:`
says; Excel workbooks load; a file read wrongly gets an error that says how it was read."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from surveys_support import one_line_error, run_cli

from anthology.errors import ConfigError
from anthology.surveys import load_survey
from anthology.surveys.datafiles import sniff_delimiter

ABSENT = "".join(
    f"  {t}: not asked\n"
    for t in ("age", "gender", "education", "income", "race", "religion", "region", "party")
)


def write_codebook(folder: Path, data: str, read: str = "") -> Path:
    """A small French survey: ids, a weight, a survey-only trait `région` and two questions with
    accented labels; ``read`` is the codebook's `read:` block, if any."""
    path = folder / "enquete.yaml"
    path.write_text(
        f"""name: enquete
title: "Enquête régionale"
data: {data}
{read}respondent_id: id
weight: poids
traits:
  zone:
    column: région
    categories:
      - {{label: Île-de-France}}
      - {{label: Bretagne}}
absent:
{ABSENT}questions:
  - id: q1
    wording: "Êtes-vous satisfait de votre région ?"
    options: ["Très satisfait", "Peu satisfait"]
    missing: {{"NA": dont_know}}
  - id: q2
    wording: "Combien de fois par an ?"
    options: [{{label: Une, code: 1}}, {{label: Deux, code: 2}}]
""",
        encoding="utf-8",
    )
    return path


ROWS = [
    ("a1", "0,5", "Île-de-France", "Très satisfait", "1"),
    ("a2", "1,25", "Bretagne", "Peu satisfait", ""),
    ("a3", "2", "Île-de-France", "NA", "2"),
]
HEADER = ("id", "poids", "région", "q1", "q2")


def write_rows(path: Path, delimiter: str, encoding: str, decimal: str = ",") -> Path:
    lines = [delimiter.join(HEADER)]
    lines += [
        delimiter.join(row).replace("0,5", f"0{decimal}5").replace("1,25", f"1{decimal}25") for row in ROWS
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def assert_loaded(survey) -> None:
    """The rows of :data:`ROWS` read with their labels, weights and nonresponse."""
    people = survey.respondents
    assert list(people.traits.index) == ["a1", "a2", "a3"]
    assert people.traits["zone"].tolist() == ["Île-de-France", "Bretagne", "Île-de-France"]
    assert people.weights.tolist() == [0.5, 1.25, 2.0]
    assert people.answers["q1"].tolist()[:2] == [1, 2]
    assert people.nonresponse.loc["a3", "q1"] == "dont_know"  # the text "NA", covered by the codebook
    assert people.nonresponse.loc["a2", "q2"] == "missing"  # an empty cell


def test_semicolon_file_with_decimal_commas_loads(tmp_path: Path):
    write_rows(tmp_path / "answers.csv", ";", "utf-8")
    survey = load_survey(write_codebook(tmp_path, "answers.csv"))
    assert_loaded(survey)
    assert survey.report.warnings == ()


def test_tab_separated_files_load(tmp_path: Path):
    write_rows(tmp_path / "answers.tsv", "\t", "utf-8", decimal=".")
    assert_loaded(load_survey(write_codebook(tmp_path, "answers.tsv")))
    write_rows(tmp_path / "answers.csv", "\t", "utf-8", decimal=".")
    assert_loaded(load_survey(write_codebook(tmp_path, "answers.csv")))


def test_quoted_fields_with_other_delimiters_inside(tmp_path: Path):
    text = 'id,poids,région,q1,q2\na1,0.5,Île-de-France,"Très satisfait; vraiment",1\n'
    text += 'a2,1.25,Bretagne,"Peu satisfait, hélas",\na3,2,Île-de-France,NA,2\n'
    (tmp_path / "answers.csv").write_text(text, encoding="utf-8")
    codebook = write_codebook(tmp_path, "answers.csv")
    text = codebook.read_text(encoding="utf-8").replace(
        '["Très satisfait", "Peu satisfait"]', '["Très satisfait; vraiment", "Peu satisfait, hélas"]'
    )
    codebook.write_text(text, encoding="utf-8")
    assert_loaded(load_survey(codebook))


def test_latin1_file_loads_and_the_report_names_the_encoding(tmp_path: Path):
    write_rows(tmp_path / "answers.csv", ";", "latin-1")
    with pytest.raises(UnicodeDecodeError):
        (tmp_path / "answers.csv").read_text(encoding="utf-8")
    codebook = write_codebook(tmp_path, "answers.csv")
    survey = load_survey(codebook)
    assert_loaded(survey)
    [warning] = survey.report.warnings
    assert "answers.csv is not UTF-8 text: read as cp1252" in warning
    assert "set read.encoding in the codebook" in warning
    result = run_cli("surveys", "show", str(codebook))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stdout and "read as cp1252" in result.stdout


def test_utf8_with_a_byte_order_mark_and_utf16_load(tmp_path: Path):
    write_rows(tmp_path / "answers.csv", ",", "utf-8-sig", decimal=".")
    survey = load_survey(write_codebook(tmp_path, "answers.csv"))  # the mark is not part of 'id'
    assert_loaded(survey)
    assert survey.report.warnings == ()
    write_rows(tmp_path / "answers.txt", "\t", "utf-16", decimal=".")  # Excel's "Unicode text"
    assert_loaded(load_survey(write_codebook(tmp_path, "answers.txt")))


def test_explicit_read_options_are_honoured(tmp_path: Path):
    write_rows(tmp_path / "answers.csv", ";", "latin-1")
    read = 'read: {delimiter: ";", encoding: latin-1}\n'
    survey = load_survey(write_codebook(tmp_path, "answers.csv", read))
    assert_loaded(survey)
    assert survey.report.warnings == ()  # nothing guessed
    write_rows(tmp_path / "colons.csv", ":", "utf-8")  # not a delimiter that is tried
    assert_loaded(load_survey(write_codebook(tmp_path, "colons.csv", 'read: {delimiter: ":"}\n')))


def test_explicit_encoding_overrides_detection(tmp_path: Path):
    """UTF-16 without a byte-order mark cannot be told from binary data; read.encoding says what it is."""
    write_rows(tmp_path / "answers.csv", ";", "utf-16-le")
    with pytest.raises(
        ConfigError, match=r"not text \(it has NUL bytes\).* set read.encoding in the codebook"
    ):
        load_survey(write_codebook(tmp_path, "answers.csv"))
    assert_loaded(load_survey(write_codebook(tmp_path, "answers.csv", "read: {encoding: utf-16-le}\n")))


def test_wrong_delimiter_names_the_dialect_read(tmp_path: Path):
    write_rows(tmp_path / "answers.csv", ",", "utf-8", decimal=".")
    codebook = write_codebook(tmp_path, "answers.csv", 'read: {delimiter: ";"}\n')
    line = one_line_error(run_cli("surveys", "show", str(codebook)))
    assert "answers.csv has no column 'id'" in line
    assert "(read as CSV with delimiter ';', encoding utf-8; its header is 'id,poids,région,q1,q2')" in line
    assert "set read.delimiter in the codebook if it is not ';'" in line
    assert f"{codebook}:5:" in line  # where `respondent_id:` names the column


def test_missing_column_in_a_detected_file_keeps_the_close_match(tmp_path: Path):
    write_rows(tmp_path / "answers.csv", ";", "utf-8")
    codebook = write_codebook(tmp_path, "answers.csv")
    codebook.write_text(codebook.read_text(encoding="utf-8").replace("weight: poids", "weight: poid"))
    with pytest.raises(ConfigError) as caught:
        load_survey(codebook)
    message = str(caught.value)
    assert "has no column 'poid' (did you mean 'poids'?)" in message
    assert "read as CSV with delimiter ';', encoding utf-8" in message


def test_excel_workbook_loads_first_named_or_numbered_sheet(tmp_path: Path):
    rows = [
        {"id": "a1", "poids": 0.5, "région": "Île-de-France", "q1": "Très satisfait", "q2": 1},
        {"id": "a2", "poids": 1.25, "région": "Bretagne", "q1": "Peu satisfait", "q2": None},
        {"id": "a3", "poids": 2, "région": "Île-de-France", "q1": "NA", "q2": 2},
    ]
    with pd.ExcelWriter(tmp_path / "answers.xlsx", engine="openpyxl") as writer:
        pd.DataFrame({"note": ["not the data"]}).to_excel(writer, sheet_name="Lisez-moi", index=False)
        pd.DataFrame(rows).to_excel(writer, sheet_name="Données", index=False)
    with pytest.raises(ConfigError, match=r"answers.xlsx, sheet 'Lisez-moi' has no column 'id', named at"):
        load_survey(write_codebook(tmp_path, "answers.xlsx"))
    for sheet in ("Données", "1"):
        survey = load_survey(write_codebook(tmp_path, "answers.xlsx", f"read: {{sheet: {sheet}}}\n"))
        assert_loaded(survey)
        assert survey.report.source.endswith("answers.xlsx, sheet 'Données'")
    line = one_line_error(
        run_cli("surveys", "show", str(write_codebook(tmp_path, "answers.xlsx", "read: {sheet: Data}\n")))
    )
    assert "has no sheet 'Data' (its sheets: 'Lisez-moi', 'Données'); set read.sheet in the codebook" in line


def test_excel_without_openpyxl_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pd.DataFrame({"id": ["a1"]}).to_excel(tmp_path / "answers.xlsx", index=False)
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # `import openpyxl` now fails
    with pytest.raises(ConfigError, match=r"needs openpyxl: pip install 'anthology-personas\[excel\]'$"):
        load_survey(write_codebook(tmp_path, "answers.xlsx"))


def test_files_that_are_not_what_they_say(tmp_path: Path):
    pd.DataFrame({"id": ["a1"]}).to_excel(tmp_path / "answers.csv", index=False)
    with pytest.raises(
        ConfigError, match=r"not text \(it has NUL bytes and looks like an Excel workbook: give it the .xlsx"
    ):
        load_survey(write_codebook(tmp_path, "answers.csv"))
    write_rows(tmp_path / "ragged.csv", ",", "utf-8", decimal=".")
    with (tmp_path / "ragged.csv").open("a", encoding="utf-8") as file:
        file.write('a4,1,Bretagne,"Peu satisfait,2\n')  # a quote never closed
    with pytest.raises(
        ConfigError,
        match=r"as CSV with delimiter ',', encoding utf-8: .*EOF inside string starting at row 4; fix that",
    ):
        load_survey(write_codebook(tmp_path, "ragged.csv"))
    (tmp_path / "broken.xlsx").write_text("id,q1\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"cannot read .*broken.xlsx as an Excel .xlsx workbook: File is not a zip"
    ):
        load_survey(write_codebook(tmp_path, "broken.xlsx"))
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(
        ConfigError, match=r"unknown file type '.xls'; use .csv, .* save an .xls workbook as .xlsx"
    ):
        load_survey(write_codebook(tmp_path, "old.xls"))


@pytest.mark.parametrize(
    ("read", "message"),
    [
        ('read: {delimter: ";"}\n', r":4:8: read.delimter: unknown field; check its spelling"),
        (
            "read: {encoding: latin-9}\n",
            r":4:8: read.encoding: unknown encoding 'latin-9'; use a Python codec",
        ),
        ('read: {delimiter: ";;"}\n', r":4:8: read.delimiter: the delimiter is one character"),
    ],
)
def test_read_typos_are_one_line_with_line_and_column(tmp_path: Path, read: str, message: str):
    write_rows(tmp_path / "answers.csv", ";", "utf-8")
    codebook = write_codebook(tmp_path, "answers.csv", read)
    line = one_line_error(run_cli("surveys", "show", str(codebook)))
    assert f"error: {codebook}" in line
    assert re.search(message, line), line


def test_a_read_key_for_another_kind_of_file_is_refused(tmp_path: Path):
    write_rows(tmp_path / "answers.csv", ";", "utf-8")
    with pytest.raises(
        ConfigError, match=r"read.sheet in the codebook does not apply to .*answers.csv \(CSV\)"
    ):
        load_survey(write_codebook(tmp_path, "answers.csv", "read: {sheet: 0}\n"))


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        ("id;age;q1\n", ";"),  # header only
        ("id|q1\n1|2\n", "|"),  # one row
        ("id\n1\n2\n", ","),  # one column
        ('"id";"note"\n"1";"a, b, c, d"\n', ";"),  # quoted, with commas inside
        ('id,note\n1,"x;y;z"\n2,"p;q"\n', ","),
        ("id\tname\n1\tSmith, John\n", "\t"),
    ],
)
def test_sniff_delimiter(sample: str, delimiter: str):
    assert sniff_delimiter(sample) == delimiter
