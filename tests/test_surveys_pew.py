"""The Pew path end to end on small synthetic SPSS files built with pyreadstat: value labels, survey
weights, 99 = refused, respondents excluded with the reason, and value labels checked against the
codebook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from surveys_support import run_cli, write_pew_sav

from anthology.surveys import load_survey


@pytest.mark.parametrize("wave", [34, 92, 99])
def test_pew_wave_end_to_end(wave: int, tmp_path: Path):
    name = f"pew-atp-w{wave}"
    codebook = load_survey(name).codebook
    sav = tmp_path / f"ATP_W{wave}.sav"
    raw = write_pew_sav(sav, codebook, seed=wave)
    survey = load_survey(name, data=sav)
    people = survey.respondents
    assert survey.report.rows == len(raw)
    assert len(people) == len(raw) - 1
    [exclusion] = survey.report.exclusions
    assert exclusion.examples == (int(raw["QKEY"].iloc[-1]),)
    assert survey.report.warnings == ()
    kept = raw.iloc[:-1].set_index(raw["QKEY"].iloc[:-1].astype(int))
    np.testing.assert_allclose(people.weights.to_numpy(), kept[f"WEIGHT_W{wave}"].to_numpy())
    shares = survey.distributions().set_index(["question_id", "position"])["share"]
    for question in survey.questionnaire.questions:
        column = kept[question.data_column]
        answered = column.between(1, len(question.options))
        weights = kept.loc[answered, f"WEIGHT_W{wave}"]
        expected = weights.groupby(column[answered]).sum() / weights.sum()
        for code, share in expected.items():
            assert shares[(question.id, int(code))] == pytest.approx(share)
        refused = people.nonresponse[question.id] == "refused"
        assert refused.sum() == (column == 99).sum()
    for name_, trait in survey.codebook.traits.items():
        assert people.traits[name_].isna().sum() == (kept[trait.column] == 99).sum()


def test_label_matched_race_does_not_depend_on_code_order(tmp_path: Path):
    """F_RACETHNMOD is matched by value label, so Asian = 4 / Other = 5 and the reverse read the same."""
    codebook = load_survey("pew-atp-w92").codebook
    order = ["White non-Hispanic", "Black non-Hispanic", "Hispanic", "Asian non-Hispanic", "Other"]
    assert list(codebook.traits["race"].labels) == order
    readings = []
    for codes in ([1, 2, 3, 5, 4], [1, 2, 3, 4, 5]):
        sav = tmp_path / f"w92_{codes[3]}.sav"
        write_pew_sav(sav, codebook, seed=7, label_only_codes={"F_RACETHNMOD": codes})
        readings.append(load_survey("pew-atp-w92", data=sav).respondents.traits["race"])
    pd.testing.assert_series_equal(readings[0], readings[1])
    assert set(readings[0].dropna()) == set(order)


def test_value_labels_that_disagree_are_reported(tmp_path: Path):
    codebook = load_survey("pew-atp-w34").codebook
    sav = tmp_path / "ATP_W34.sav"
    write_pew_sav(sav, codebook, relabel={"FUD37A_W34": {1.0: "Not at all likely", 4.0: "Very likely"}})
    survey = load_survey("pew-atp-w34", data=sav)
    warnings = survey.report.warnings
    assert len(warnings) == 2
    assert (
        "column 'FUD37A_W34': code 1 is labelled 'Not at all likely' in the file but means 'Very likely'"
        in (warnings[0])
    )
    result = run_cli("surveys", "show", "pew-atp-w34", "--data", str(sav))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stdout and "'Not at all likely'" in result.stdout


def test_pew_show_with_data(tmp_path: Path):
    codebook = load_survey("pew-atp-w34").codebook
    sav = tmp_path / "ATP_W34.sav"
    raw = write_pew_sav(sav, codebook, n=40, seed=3)
    result = run_cli("surveys", "show", "pew-atp-w34", "--data", str(sav))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"respondents: 39 of 40 rows in {sav}" in out
    assert "excluded: 1 who answered none of the 8 questions" in out
    assert "weights: column WEIGHT_W34" in out
    refused = int((raw["FUD37A_W34"].iloc[:-1] == 99).sum())
    assert f"refused {refused}" in out
