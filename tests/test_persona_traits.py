"""Persona traits a study defines: a codebook (or a shared trait file) declares traits of its own or
replaces canonical ones; the demographic survey asks only the traits the survey maps; matching, the
baselines, the subgroups and the load report follow them. The worked example is the synthetic
Norwegian survey of examples/norway/ (docs/surveys-outside-us.md), run end to end with the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from surveys_support import one_line_error, run_cli

from anthology.config import load_config
from anthology.errors import ConfigError
from anthology.method.baselines import demographic_text
from anthology.surveys import load_codebook, load_survey, read_codebook, survey_content_hash

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NORWAY = EXAMPLES / "norway" / "ess-norway.yaml"
#: The traits the Norwegian codebook maps: what its demographic survey asks, in this order.
ASKED = ["age", "gender", "education", "income", "region", "vote"]

BASE = """\
name: tiny-uk
title: A small British survey
data: people.csv
respondent_id: id
persona_traits:
  region:
    question: In which part of the United Kingdom do you live?
    options: [England, Scotland, Wales, Northern Ireland]
  vote:
    question: Which party would you vote for, {0} or {1}?
    options: [Labour, Conservative, Another party]
    swap: [Labour, Conservative]
traits:
  age:
    column: age
    categories:
      - {label: "15-17", range: [15, 17], exclude: true}
      - {label: "18-49", range: [18, 49], persona: ["18-29", "30-49"]}
      - {label: "50 or older", range: [50, null], persona: ["50-64", "65 or Above"]}
  region:
    column: nation
    categories:
      - {label: England, codes: [1], persona: [England]}
      - {label: Elsewhere, codes: [2, 3, 4], persona: [Scotland, Wales, Northern Ireland]}
  vote:
    column: vote
    categories:
      - {label: Labour, codes: [L], persona: [Labour]}
      - {label: Conservative, codes: [C], persona: [Conservative]}
      - {label: Other, codes: [O], persona: [Another party]}
  tenure:
    column: tenure
    categories: [{label: Owner}, {label: Renter}]
absent:
  gender: not in this extract
  education: not in this extract
  income: not in this extract
  race: not in this extract
  religion: not in this extract
  party: US party identification; vote intention is `vote`
questions:
  - id: q1
    wording: Is the economy getting better?
    options: [{label: "Yes", code: 1}, {label: "No", code: 2}]
"""

PEOPLE = (
    "id,age,nation,vote,tenure,q1\n1,16,1,L,Owner,1\n2,34,2,C,Renter,2\n3,70,1,O,Owner,1\n4,52,3,L,Renter,2\n"
)


def write(folder: Path, codebook: str = BASE, people: str = PEOPLE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "people.csv").write_text(people)
    path = folder / "uk.yaml"
    path.write_text(codebook)
    return path


def test_declared_traits_replace_and_extend_the_canonical_ones(tmp_path):
    codebook = read_codebook(write(tmp_path))
    definitions = codebook.persona_definitions
    assert list(definitions)[:8] == [
        "age",
        "gender",
        "education",
        "income",
        "race",
        "religion",
        "region",
        "party",
    ]
    assert list(definitions)[8:] == ["vote"]
    region = definitions["region"]
    assert region.question == "In which part of the United Kingdom do you live?"
    assert region.categories == ("England", "Scotland", "Wales", "Northern Ireland", "Prefer not to answer")
    assert region.bio is None  # a replaced region keeps the paper's choice: no baseline sentence
    vote = definitions["vote"]
    assert vote.bio == "My vote is {value}." and vote.topic == "vote"
    assert vote.asked(swapped=True) == (
        "Which party would you vote for, Conservative or Labour?",
        ("Conservative", "Labour", "Another party", "Prefer not to answer"),
    )
    # What the demographic survey asks: the mapped persona traits, not the absent ones or `tenure`.
    assert [t.name for t in codebook.matched_traits] == ["age", "region", "vote"]


def test_an_excluded_category_leaves_its_respondents_out_counted(tmp_path):
    survey = load_survey(write(tmp_path))
    assert list(survey.respondents.traits.index) == [2, 3, 4]
    [exclusion] = survey.report.exclusions
    assert exclusion.count == 1 and exclusion.examples == (1,)
    assert "age category '15-17', excluded from matching" in exclusion.reason
    assert "uk.yaml:" in exclusion.reason  # where the codebook says so


def test_the_baselines_state_the_declared_traits(tmp_path):
    survey = load_survey(write(tmp_path))
    bio = demographic_text(survey, 2, "bio", seed=0)
    assert "My vote is Conservative." in bio and "My age is 18-49." in bio
    assert "Scotland" not in bio and "Elsewhere" not in bio  # region has no bio sentence
    assert "tenure" not in bio.lower()  # survey-only traits are not stated
    qa = demographic_text(survey, 2, "qa", seed=0)
    assert "Question: Which party would you vote for, Labour or Conservative?\n(A) Labour" in qa
    assert (
        "Question: What is your age?\n(A) 18-49\n(B) 50 or older\n" in qa
    )  # the excluded 15-17 is not offered
    assert "United Kingdom" not in qa  # nor is region, in QA as in Bio
    portray = demographic_text(survey, 2, "portray", seed=0)
    assert "vote: Conservative" in portray.splitlines()


def test_a_shared_trait_file_counts_in_the_surveys_content(tmp_path):
    traits = yaml.safe_load(BASE)["persona_traits"]
    (tmp_path / "uk-traits.yaml").write_text(yaml.safe_dump(traits))
    codebook = BASE.replace(
        BASE[BASE.index("persona_traits:") : BASE.index("traits:\n  age")], "persona_traits: uk-traits.yaml\n"
    )
    path = write(tmp_path, codebook)
    assert (
        read_codebook(path).persona_definitions
        == read_codebook(write(tmp_path / "inline")).persona_definitions
    )
    before = survey_content_hash(path)
    traits["vote"]["question"] = "Which party do you feel closest to, {0} or {1}?"
    (tmp_path / "uk-traits.yaml").write_text(yaml.safe_dump(traits))
    assert survey_content_hash(path) != before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("persona: [Labour]}", "persona: [Labor]}"), "'Labor' is not a vote category; use one of: Labour;"),
        (("swap: [Labour, Conservative]", "swap: [Labour, Green]"), "swap ['Labour', 'Green'] must name two"),
        (
            (
                "options: [England, Scotland, Wales, Northern Ireland]",
                "options: [England, Prefer not to answer, Wales]",
            ),
            "'Prefer not to answer' is added as the last option",
        ),
        (
            (
                "    options: [England, Scotland, Wales, Northern Ireland]\n",
                "    options: [England, Scotland, Wales, Northern Ireland]\n    bio: I live there.\n",
            ),
            "the bio sentence needs {value}",
        ),
        (
            (
                '{label: "15-17", range: [15, 17], exclude: true}',
                '{label: "15-17", range: [15, 17], exclude: true, persona: ["18-29"]}',
            ),
            "is excluded, so it takes no `persona:` categories",
        ),
        (
            (
                "  tenure:\n    column: tenure\n    categories: [{label: Owner}, {label: Renter}]",
                "  tenure:\n    column: tenure\n    categories: [{label: Owner, persona: [Owner]}]",
            ),
            "'tenure' is not a persona trait",
        ),
        (
            ("persona_traits:\n  region:", "persona_traits:\n  regoin:"),
            "'England' is not a region category; use one of: Northeast;",
        ),
    ],
)
def test_declaration_problems_are_one_line_with_their_place(tmp_path, change, message):
    path = write(tmp_path, BASE.replace(*change))
    with pytest.raises(ConfigError) as caught:
        read_codebook(path)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"{path}:")


def test_a_missing_trait_file_is_named(tmp_path):
    path = write(
        tmp_path,
        BASE.replace(
            BASE[BASE.index("persona_traits:") : BASE.index("traits:\n  age")],
            "persona_traits: nowhere.yaml\n",
        ),
    )
    result = run_cli("surveys", "show", str(path))
    assert result.returncode == 2
    assert f"trait file {tmp_path / 'nowhere.yaml'} (persona_traits:) does not exist" in one_line_error(
        result
    )


def test_asking_fewer_traits_than_the_survey_matches_on_is_refused_before_work(tmp_path):
    from anthology.study import plan

    config = load_config(
        None,
        {"survey.name": str(NORWAY), "demographics.traits": ["age", "gender"], "out": str(tmp_path / "run")},
    )
    with pytest.raises(ConfigError, match=r"demographics\.traits leaves out .education., which survey"):
        plan(config)
    unknown = load_config(None, {"survey.name": str(NORWAY), "demographics.traits": ["age", "race2"]})
    with pytest.raises(ConfigError, match="'race2', which is not a persona trait of this survey"):
        plan(unknown, ["backstories", "demographics"])


def test_the_norwegian_example_loads_as_documented():
    survey = load_survey(NORWAY)
    assert len(survey.respondents) == 145 and survey.report.rows == 160
    assert [e.count for e in survey.report.exclusions] == [15]
    assert any("read as cp1252" in w for w in survey.report.warnings)
    codebook = load_codebook(NORWAY)
    assert [t.name for t in codebook.matched_traits] == ASKED
    assert survey.respondents.traits["region"].value_counts()["Trøndelag"] > 0  # decoded from cp1252


@pytest.fixture(scope="module")
def norway_run(tmp_path_factory, tiny_parts) -> Path:
    """The Norwegian example run end to end with the tiny model, at test sizes: 10 of its respondents."""
    from anthology.cli import main

    root = tmp_path_factory.mktemp("norway")
    model, tokenizer = tiny_parts
    model.save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    shutil.copytree(EXAMPLES / "norway", root / "norway")
    example = yaml.safe_load((EXAMPLES / "norway.yaml").read_text())
    example.update(
        out=str(root / "run"),
        profile="fast",
        model={"name": str(root / "tiny"), "device": "cpu", "dtype": "float32"},
        survey={**example["survey"], "respondents": 10},
        evaluate={"splits": 4, "resamples": 20},
    )
    example["backstories"].update(
        style="completion", n=14, max_tokens=12, min_tokens=1, first_person="off", preamble=False
    )
    config = root / "norway.yaml"
    config.write_text(yaml.safe_dump(example, allow_unicode=True))
    try:
        main(["run", str(config)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return root / "run"


def test_the_example_asks_only_its_traits_and_matches_on_them(norway_run):
    demographics = pd.read_parquet(norway_run / "demographics.parquet")
    assert list(dict.fromkeys(demographics["trait"])) == ASKED
    vote = demographics[demographics["trait"] == "vote"]
    assert set(vote["option"]) >= {"Høyre (Conservative)", "I would not vote", "Prefer not to answer"}
    manifest = json.loads((norway_run / "manifest.json").read_text())
    assert manifest["stages"]["demographics"]["traits"] == ASKED
    humans = pd.read_parquet(norway_run / "humans.parquet")
    assert len(humans) == 10 and set(humans["citizen"].dropna()) == {"Norwegian citizen"}


def test_the_example_has_subgroups_on_every_trait(norway_run):
    subgroups = pd.read_csv(norway_run / "metrics_per_subgroup.csv")
    assert {"vote", "region", "citizen", "domicile"} <= set(subgroups["trait"])
    html = (norway_run / "report.html").read_text()
    assert "domicile" in html and "A big city" in html


def test_changing_a_trait_definition_reruns_the_demographic_survey(norway_run):
    """The demographic survey's fingerprint counts the asked traits' definitions: editing one
    reruns it (its unchanged questions come back from the cache); the data file does not count."""
    from anthology.config import load_config
    from anthology.pipeline import BY_NAME
    from anthology.store import RunDir
    from anthology.study import stage_parts

    config = load_config(norway_run.parent / "norway.yaml")
    run = RunDir(norway_run)
    before = stage_parts(BY_NAME["demographics"], config, run, type("M", (), {"identity": {}})())
    traits = norway_run.parent / "norway" / "norway-traits.yaml"
    original = traits.read_text(encoding="utf-8")
    try:
        traits.write_text(
            original.replace("In which region of Norway", "In which part of Norway"), encoding="utf-8"
        )
        after = stage_parts(BY_NAME["demographics"], config, run, type("M", (), {"identity": {}})())
    finally:
        traits.write_text(original, encoding="utf-8")
    assert before["traits"] != after["traits"]
    assert {k: v for k, v in before.items() if k != "traits"} == {
        k: v for k, v in after.items() if k != "traits"
    }
