"""`anthology surveys init`: a codebook drafted from a data file. Labelled SPSS and Stata files written
here (variable and value labels, user-missing and extended-missing codes, a weight, Pew-style
demographics), the built-in surveys' own data written back to those formats, and unlabelled CSV and
Parquet files; every draft must load with the real codebook loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest
import yaml
from surveys_support import one_line_error, run_cli, write_doc_example, write_pew_sav

from anthology.surveys import Codebook, draft_codebook, load_codebook, load_survey
from anthology.surveys.builtin import BUILTINS

# --- a labelled file written here ----------------------------------------------------------------

_N = 60
_WORDING = {
    "QKEY": "Respondent ID",
    "WEIGHT_W7": "Wave 7 weight",
    "F_AGECAT": "Age category",
    "F_GENDER": "Gender",
    "F_EDUCCAT2": "Education (six categories)",
    "F_RACETHN": "Race and Hispanic origin",
    "F_PARTY_FINAL": "Party identification",
    "SAT": "How satisfied are you with the way things are going in your town?",
    "TRUST": "How much do you trust the town council?",
    "FEEL": "How warmly do you feel about your neighbours, from 0 to 10?",
    "OPEN": "Anything else you would like to tell us?",
    "MINUTES": "Interview length in minutes",
}
_LABELS: dict[str, dict[int, str]] = {
    "F_AGECAT": {1: "18-29", 2: "30-49", 3: "50-64", 4: "65+", 99: "Refused"},
    "F_GENDER": {1: "A man", 2: "A woman", 3: "In some other way", 99: "Refused"},
    "F_EDUCCAT2": {
        1: "Less than high school",
        2: "High school graduate",
        3: "Some college, no degree",
        4: "Associate's degree",
        5: "College graduate/some postgrad",
        6: "Postgraduate",
        99: "Refused",
    },
    "F_RACETHN": {
        1: "White non-Hispanic",
        2: "Black non-Hispanic",
        3: "Hispanic",
        4: "Other",
        9: "DK/Refused",
    },
    "F_PARTY_FINAL": {1: "Republican", 2: "Democrat", 3: "Independent", 4: "Something else", 99: "Refused"},
    "SAT": {
        1: "Very satisfied",
        2: "Somewhat satisfied",
        3: "Not too satisfied",
        4: "Not at all satisfied",
        98: "Don't know",
        99: "Refused",
    },
    "TRUST": {3: "A lot", 2: "Some", 1: "Not at all", 99: "Refused"},  # listed from the top of the scale
    "FEEL": {0: "Not at all warm", 10: "Very warm"},  # only the ends of the scale are labelled
}


def _labelled_frame(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = {"QKEY": np.arange(5001, 5001 + _N, dtype=float), "WEIGHT_W7": rng.uniform(0.3, 2.5, _N).round(3)}
    for column, labels in _LABELS.items():
        frame[column] = rng.choice(list(labels), _N).astype(float)
    frame["FEEL"] = rng.integers(0, 11, _N).astype(float)
    frame["OPEN"] = [f"comment number {i}" if i % 3 else "" for i in range(_N)]
    frame["MINUTES"] = rng.uniform(5, 40, _N).round(2)
    return pd.DataFrame(frame)


def _write_sav(path: Path) -> pd.DataFrame:
    """The frame as an SPSS file; 99 is user-missing in every column that labels it."""
    frame = _labelled_frame()
    user_missing = {c: [99.0] for c, labels in _LABELS.items() if 99 in labels}
    pyreadstat.write_sav(
        frame,
        str(path),
        column_labels=[_WORDING[c] for c in frame.columns],
        variable_value_labels={c: {float(k): v for k, v in labels.items()} for c, labels in _LABELS.items()},
        missing_ranges=user_missing,
        file_label="Town panel, wave 7",
    )
    return frame


def _write_dta(path: Path) -> pd.DataFrame:
    """The frame as a Stata file; SAT's 99 ("Refused") becomes the extended missing value .a."""
    frame = _labelled_frame()
    sat = frame["SAT"].astype(object).where(frame["SAT"] != 99, "a")
    labels = {c: dict(labels) for c, labels in _LABELS.items()}
    labels["SAT"] = {**{k: v for k, v in labels["SAT"].items() if k != 99}, "a": "Refused"}
    pyreadstat.write_dta(
        frame.assign(SAT=sat),
        str(path),
        column_labels=[_WORDING[c] for c in frame.columns],
        variable_value_labels=labels,
        missing_user_values={"SAT": ["a"]},
    )
    return frame


def _written(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _comments_above(text: str, entry: str) -> list[str]:
    """The comment lines right above the first line of ``text`` that starts (indentation aside) with
    ``entry``."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith(entry))
    above = []
    while at > 0 and lines[at - 1].lstrip().startswith("#"):
        at -= 1
        above.insert(0, lines[at].strip())
    return above


def _persona_by_code(codebook: Codebook) -> dict[str, dict[float, tuple[str, ...]]]:
    """Each mapped trait's numeric codes with the persona categories they are summed into."""
    return {
        name: {c: cat.persona for cat in trait.categories for c in cat.codes if not isinstance(c, str)}
        for name, trait in codebook.traits.items()
    }


_OTHER_RACES = (
    "American Indian or Alaska Native",
    "Asian or Asian American",
    "Middle Eastern or North African",
    "Native Hawaiian or Other Pacific Islander",
    "Other",
)
_EXPECTED_TRAITS = {
    "age": {1: ("18-29",), 2: ("30-49",), 3: ("50-64",), 4: ("65 or Above",)},
    "gender": {1: ("Male",), 2: ("Female",), 3: ("Other (e.g., non-binary, trans)",)},
    "education": {
        1: ("Less than high school",),
        2: ("High school graduate or equivalent (e.g., GED)",),
        3: ("Some college, but no degree",),
        4: ("Associate degree",),
        5: ("Bachelor's degree",),
        6: ("Professional degree (e.g., JD, MD)", "Master's degree", "Doctoral degree"),
    },
    "race": {
        1: ("White or European",),
        2: ("Black or African American",),
        3: ("Hispanic or Latino/a",),
        4: _OTHER_RACES,
    },
    "party": {1: ("Republican",), 2: ("Democrat",), 3: ("Independent", "No preference"), 4: ("Other",)},
}


def _weighted_shares(frame: pd.DataFrame, column: str, codes: list[int]) -> list[float]:
    """Weighted share of each code among the rows that hold one of them (pandas, not the loader)."""
    answered = frame[frame[column].isin(codes)]
    totals = answered.groupby(column)["WEIGHT_W7"].sum()
    return [totals.get(float(c), 0.0) / answered["WEIGHT_W7"].sum() for c in codes]


def test_labelled_sav_drafts_wordings_options_missing_codes_weight_and_traits(tmp_path: Path):
    sav = tmp_path / "town.sav"
    frame = _write_sav(sav)
    draft = draft_codebook(sav)
    codebook = draft.codebook
    assert codebook is not None and draft.todo == ()
    assert (codebook.title, codebook.respondent_id, codebook.weight) == (
        "Town panel, wave 7",
        "QKEY",
        "WEIGHT_W7",
    )
    assert [q.id for q in codebook.questions] == ["SAT", "TRUST", "FEEL"]
    sat, trust, feel = codebook.questions
    assert [q.wording for q in codebook.questions] == [_WORDING["SAT"], _WORDING["TRUST"], _WORDING["FEEL"]]
    assert [(o.label, o.code) for o in sat.options] == [(v, k) for k, v in _LABELS["SAT"].items() if k < 98]
    assert {**codebook.missing, **sat.missing} == {98: "dont_know", 99: "refused"}
    assert codebook.missing == {99: "refused"}  # user-missing and labelled "Refused" in every column
    assert [(o.label, o.code) for o in trust.options] == [("A lot", 3), ("Some", 2), ("Not at all", 1)]
    assert [o.code for o in feel.options] == list(range(11))
    assert [feel.options[i].label for i in (0, 5, 10)] == ["Not at all warm", "5", "Very warm"]
    assert _persona_by_code(codebook) == _EXPECTED_TRAITS
    assert codebook.traits["race"].missing == {9: "refused"}  # "DK/Refused"
    assert codebook.traits["gender"].unmapped == ()
    assert set(codebook.absent) == {"income", "religion", "region"}
    assert draft.left_out == (
        "OPEN: free text (40 distinct answers)",
        "MINUTES: numeric, 60 distinct values, no value labels",
    )
    text = draft.text
    for entry in ("title:", "respondent_id: QKEY", "weight: WEIGHT_W7", "age:", "party:", "income:"):
        assert _comments_above(text, entry)[0].startswith("# GUESS:"), entry
    assert '98: "Don\'t know" by its label' in _comments_above(text, "missing: {98: dont_know}")[0]
    assert "user-missing in the file" in _comments_above(text, "missing: {99: refused}")[0]
    assert "not the order of their codes" in _comments_above(text, "- id: TRUST")[0]
    assert "have no value label" in _comments_above(text, "- id: FEEL")[0]
    assert "'No preference': no category of its own" in _comments_above(text, "- {label: Independent")[0]

    survey = load_survey(_written(text, tmp_path / "town.yaml"), data=sav)
    assert len(survey.respondents) == _N and survey.report.warnings == ()
    shares = survey.distributions().set_index(["question_id", "position"])["share"]
    assert [shares["SAT", p] for p in (1, 2, 3, 4)] == pytest.approx(
        _weighted_shares(frame, "SAT", [1, 2, 3, 4])
    )
    assert [shares["TRUST", p] for p in (1, 2, 3)] == pytest.approx(
        _weighted_shares(frame, "TRUST", [3, 2, 1])
    )
    nonresponse = survey.respondents.nonresponse["SAT"]
    assert (nonresponse == "dont_know").sum() == (frame["SAT"] == 98).sum()
    assert (nonresponse == "missing").sum() == (frame["SAT"] == 99).sum()  # user-missing: read as empty
    party = survey.respondents.traits["party"]
    assert (party == "Independent").sum() == (frame["F_PARTY_FINAL"] == 3).sum()
    assert party.isna().sum() == (frame["F_PARTY_FINAL"] == 99).sum()


def test_labelled_dta_keeps_code_order_and_notes_extended_missing(tmp_path: Path):
    dta = tmp_path / "town.dta"
    frame = _write_dta(dta)
    target = tmp_path / "drafts" / "town.yaml"
    draft = draft_codebook(dta, target)
    codebook = draft.codebook
    assert codebook is not None
    assert codebook.data == "../town.dta"
    assert [q.id for q in codebook.questions] == ["SAT", "TRUST", "FEEL"]
    sat, trust, _ = codebook.questions
    assert sat.wording == _WORDING["SAT"]
    assert [(o.label, o.code) for o in trust.options] == [("Not at all", 1), ("Some", 2), ("A lot", 3)]
    assert {**codebook.missing, **sat.missing} == {98: "dont_know", 99: "refused"}
    assert _persona_by_code(codebook) == _EXPECTED_TRAITS
    assert "extended missing values .a 'Refused'" in " ".join(_comments_above(draft.text, "- id: SAT"))
    assert (
        "'Refused' by its label" in _comments_above(draft.text, "missing: {99: refused}")[0]
    )  # a guess here
    survey = load_survey(_written(draft.text, target))  # its `data:` entry, relative to the codebook
    nonresponse = survey.respondents.nonresponse["SAT"]
    assert (nonresponse == "missing").sum() == (frame["SAT"] == 99).sum()
    assert survey.respondents.traits["party"].isna().sum() == (frame["F_PARTY_FINAL"] == 99).sum()


def test_cli_drafts_next_to_the_data_and_the_draft_shows(tmp_path: Path):
    sav = tmp_path / "town.sav"
    _write_sav(sav)
    result = run_cli("surveys", "init", str(sav))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    written = tmp_path / "town.yaml"
    assert f"wrote {written}: 3 questions; traits: age (F_AGECAT), gender (F_GENDER)" in out
    assert "weight: WEIGHT_W7; respondent id: QKEY" in out
    marked = sum(line.strip().startswith("# GUESS:") for line in written.read_text().splitlines())
    assert f'{marked} guesses are marked "# GUESS:" in the file' in out and "to do:" not in out
    assert "left out:\n  - OPEN: free text (40 distinct answers)\n  - MINUTES: numeric" in out
    assert f"then: anthology surveys show {written} --data {sav}" in out
    shown = run_cli("surveys", "show", str(written), "--data", str(sav))
    assert shown.returncode == 0, shown.stderr
    for text in (
        "respondents: 60 of 60 rows",
        "weights: column WEIGHT_W7",
        "Very satisfied",
        "In some other way",
    ):
        assert text in shown.stdout, text
    assert "warning" not in shown.stdout


# --- the built-in surveys' own data, written back with their labels ------------------------------


def _builtin_labels(codebook: Codebook) -> dict[str, dict[float, str]]:
    """Value labels from a codebook: each option's and each coded category's label for its codes."""
    labels = {
        t.column: {float(c): cat.label for cat in t.categories for c in cat.codes if not isinstance(c, str)}
        for t in codebook.traits.values()
    }
    labels.update({q.data_column: {float(o.code): o.label for o in q.options} for q in codebook.questions})
    return {column: codes for column, codes in labels.items() if codes}


def _categories(codebook: Codebook, trait: str) -> tuple[set[tuple], tuple[str, ...]]:
    """A trait's categories as (numeric codes, range, persona categories), and its unmapped ones."""
    entry = codebook.traits[trait]
    categories = {
        (tuple(c for c in cat.codes if not isinstance(c, str)), cat.range, cat.persona)
        for cat in entry.categories
    }
    return categories, entry.unmapped


@pytest.mark.parametrize(
    ("name", "suffix"), [("gss2018-spending", ".sav"), ("anes1996", ".sav"), ("anes1996", ".dta")]
)
def test_draft_reproduces_a_builtin_survey_from_its_data(tmp_path: Path, name: str, suffix: str):
    builtin = load_codebook(name)
    frame = BUILTINS[name].load()
    wordings = {q.data_column: q.wording for q in builtin.questions}
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".sav":
        labels = [wordings.get(c) for c in frame.columns]
        pyreadstat.write_sav(
            frame, str(path), column_labels=labels, variable_value_labels=_builtin_labels(builtin)
        )
    else:  # Stata: variable labels of at most 80 characters, whole-number codes
        labels = [wordings[c][:80] if c in wordings else None for c in frame.columns]
        value_labels = {
            c: {int(k): v for k, v in codes.items()} for c, codes in _builtin_labels(builtin).items()
        }
        pyreadstat.write_dta(frame, str(path), column_labels=labels, variable_value_labels=value_labels)
    draft = draft_codebook(path)
    codebook = draft.codebook
    assert codebook is not None, draft.todo
    drafted = {q.id: q for q in codebook.questions}
    for question, label in zip(
        builtin.questions, [wordings[q.data_column] for q in builtin.questions], strict=True
    ):
        mine = drafted[question.id]
        assert mine.data_column == question.data_column
        assert mine.wording == (label if suffix == ".sav" else label[:80])
        assert [(o.label, o.code) for o in mine.options] == [(o.label, o.code) for o in question.options]
    # unlabelled columns with few values, and the built-in's own survey-only demographics, are drafted too
    extra = {"gss2018-spending": {"polviews", "xnorcsiz", "news", "wrkstat"}, "anes1996": set()}[name]
    assert set(drafted) - {q.id for q in builtin.questions} == extra
    assert {n: t.column for n, t in codebook.traits.items()} == {
        n: t.column for n, t in builtin.traits.items() if n in builtin.persona_definitions
    }
    assert set(codebook.absent) == set(builtin.absent)
    for trait in codebook.traits:
        expected, unmapped = _categories(builtin, trait)
        if (name, trait) == ("gss2018-spending", "education"):  # the draft leaves some college unmapped
            expected = {
                (c, r, tuple(p for p in ps if not p.startswith("Some college"))) for c, r, ps in expected
            }
            unmapped = ("Some college, but no degree",)
        if (name, trait) == ("gss2018-spending", "race"):  # ... and sums Hispanic into "Other"
            expected = {
                (c, r, (*ps[:2], "Hispanic or Latino/a", *ps[2:]) if c == (3,) else ps)
                for c, r, ps in expected
            }
            unmapped = ()
        assert _categories(codebook, trait) == (expected, unmapped), trait
    # the same answers as the built-in reads from its bundled data
    ours = (
        load_survey(_written(draft.text, tmp_path / "draft.yaml"), data=path)
        .distributions()
        .set_index(["question_id", "position"])
    )
    theirs = load_survey(name).distributions().set_index(["question_id", "position"])
    assert ours.loc[theirs.index, "share"].to_numpy() == pytest.approx(theirs["share"].to_numpy())


def test_draft_reproduces_pew_w34_from_a_synthetic_sav(tmp_path: Path):
    builtin = load_codebook("pew-atp-w34")
    sav = tmp_path / "w34.sav"
    write_pew_sav(sav, builtin)
    codebook = draft_codebook(sav).codebook
    assert codebook is not None
    assert (codebook.respondent_id, codebook.weight, codebook.missing) == (
        "QKEY",
        "WEIGHT_W34",
        {99: "refused"},
    )
    assert [(q.id, [(o.label, o.code) for o in q.options]) for q in codebook.questions] == [
        (q.id, [(o.label, o.code) for o in q.options]) for q in builtin.questions
    ]
    assert {n: t.column for n, t in codebook.traits.items()} == {
        n: t.column for n, t in builtin.traits.items()
    }
    for trait in builtin.traits:
        assert _categories(codebook, trait) == _categories(builtin, trait), trait


# --- files without labels -----------------------------------------------------------------------


def test_csv_and_parquet_drafts_list_raw_values_to_confirm(tmp_path: Path):
    write_doc_example(tmp_path)
    csv = tmp_path / "town-survey.csv"
    draft = draft_codebook(csv, tmp_path / "draft.yaml")
    assert isinstance(yaml.safe_load(draft.text), dict)
    codebook = draft.codebook
    assert codebook is not None
    assert (codebook.respondent_id, codebook.weight) == ("resp_id", "wt")
    questions = {q.id: q for q in codebook.questions}
    assert list(questions) == ["district", "parks", "council", "library"]
    assert [(o.label, o.code) for o in questions["parks"].options] == [(str(c), c) for c in (1, 2, 3, 4)]
    assert questions["parks"].missing == {99: "refused"}  # far above the other values: a guess
    assert [o.code for o in questions["council"].options] == [1, 2, 3, 4, 8]
    assert [(o.label, o.code) for o in questions["library"].options] == [("no", None), ("yes", None)]
    for question in codebook.questions:
        above = " ".join(_comments_above(draft.text, f"- id: {question.id}"))
        assert "TO DO: no value labels: the options are the column's distinct values" in above
        assert "TO DO: no variable label" in above
    assert "GUESS: no answer: 99: by its value" in _comments_above(draft.text, "missing: {99: refused}")[0]
    gender = codebook.traits["gender"]
    assert [(c.label, c.persona) for c in gender.categories] == [
        ("Man", ("Male",)),
        ("Non-binary", ("Other (e.g., non-binary, trans)",)),
        ("Woman", ("Female",)),
    ]
    assert gender.missing == {"Prefer not to say": "refused"}
    assert [c.range for c in codebook.traits["age"].categories] == [(18, 29), (30, 49), (50, 64), (65, None)]
    assert set(codebook.absent) == {"education", "income", "race", "religion", "region"}
    todo = " ".join(draft.todo)
    assert "column educ looks like education (by its name), but its values (1, 2, 3, 4)" in todo
    assert "column income looks like income" in todo and "questions whose options are raw values" in todo
    assert draft.text.rstrip().endswith("- income: named like income, not mapped yet (see TO DO)")
    survey = load_survey(_written(draft.text, tmp_path / "draft.yaml"))
    assert (survey.report.rows, len(survey.respondents)) == (12, 12)  # T11 answered district, a question here

    parquet = tmp_path / "town-survey.parquet"
    pd.read_csv(csv, keep_default_na=False, na_values=[""]).to_parquet(parquet)
    from_parquet = draft_codebook(parquet, tmp_path / "draft.yaml").codebook
    assert from_parquet is not None
    assert from_parquet.questions == codebook.questions and from_parquet.traits == codebook.traits


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_one_line(tmp_path: Path):
    missing = one_line_error(run_cli("surveys", "init", str(tmp_path / "nowhere.sav")))
    assert "nowhere.sav does not exist" in missing
    (tmp_path / "answers.json").write_text("{}")
    unknown = one_line_error(run_cli("surveys", "init", str(tmp_path / "answers.json")))
    assert "unknown file type '.json'" in unknown
    write_doc_example(tmp_path)
    target = str(tmp_path / "town-survey.yaml")
    exists = one_line_error(run_cli("surveys", "init", str(tmp_path / "town-survey.csv"), "-o", target))
    assert "town-survey.yaml exists; pass --force to overwrite it" in exists
    notes = tmp_path / "notes.csv"
    notes.write_text("id,note\n" + "".join(f"{i},remark {i}\n" for i in range(1, 21)))
    useless = one_line_error(run_cli("surveys", "init", str(notes)))
    assert (
        "has no column that can be a question" in useless
        and "note: free text (20 distinct answers)" in useless
    )
    assert not (tmp_path / "notes.yaml").exists()
