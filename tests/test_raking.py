"""Raking: the IPF against a 2x2 table solved by hand and against IPF over the full contingency
table (numpy, written the classic way), margins met, empty cells and margins out of reach refused;
the margins file's checks; the raked panel of a survey's twins through ``match_survey``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anthology.errors import ConfigError
from anthology.method.margins import rakeable_traits, read_margins, survey_margins
from anthology.method.matching import match_survey, trait_tables
from anthology.method.raked_panel import persona_cells
from anthology.method.raking import empty_cells, kish_ess, rake
from anthology.surveys import CANONICAL_TRAITS, load_survey

SURVEY = "gss2018-spending"


def test_a_2x2_table_raked_as_by_hand():
    # Units in cells (a, b): (0,0) twice, (0,1), (1,0), (1,1): the seed table [[2, 1], [1, 1]].
    a = np.array([0, 0, 0, 1, 1])
    b = np.array([0, 0, 1, 0, 1])
    result = rake([a, b], [np.array([0.6, 0.4]), np.array([0.5, 0.5])], tolerance=1e-12)
    # Raking keeps the seed's odds ratio (2*1)/(1*1) = 2: the (0,0) share x solves
    # x (x - 0.1) = 2 (0.6 - x)(0.5 - x), i.e. x^2 - 2.1 x + 0.6 = 0.
    x = (2.1 - math.sqrt(2.1**2 - 4 * 0.6)) / 2
    cells = {(0, 0): x, (0, 1): 0.6 - x, (1, 0): 0.5 - x, (1, 1): x - 0.1}
    expected = np.array([cells[(i, j)] / ((a == i) & (b == j)).sum() for i, j in zip(a, b, strict=True)])
    assert result.converged and result.gap <= 1e-12
    np.testing.assert_allclose(result.weights / result.weights.sum(), expected, atol=1e-10)
    assert result.weights.mean() == pytest.approx(1.0)


def _table_ipf(codes: list[np.ndarray], sizes: list[int], targets: list[np.ndarray]) -> np.ndarray:
    """Classic IPF on the full contingency table of counts, then each unit's share of its cell."""
    table = np.zeros(sizes)
    np.add.at(table, tuple(codes), 1.0)
    for _ in range(5000):
        for axis, target in enumerate(targets):
            other = tuple(i for i in range(len(sizes)) if i != axis)
            margin = table.sum(axis=other) / table.sum()
            shape = [1] * len(sizes)
            shape[axis] = -1
            table = table * np.divide(target, margin, out=np.zeros_like(target), where=margin > 0).reshape(
                shape
            )
    counts = np.zeros(sizes)
    np.add.at(counts, tuple(codes), 1.0)
    return table[tuple(codes)] / counts[tuple(codes)] / table.sum()


def test_raking_equals_ipf_over_the_contingency_table_and_meets_the_margins():
    rng = np.random.default_rng(4)
    sizes = [2, 3, 4]
    codes = [rng.integers(0, k, 200) for k in sizes]
    targets = [rng.dirichlet(np.ones(k)) for k in sizes]
    result = rake(codes, targets, tolerance=1e-12)
    assert result.converged
    np.testing.assert_allclose(
        result.weights / result.weights.sum(), _table_ipf(codes, sizes, targets), atol=1e-9
    )
    for code, target in zip(codes, targets, strict=True):
        shares = np.bincount(code, weights=result.weights, minlength=len(target)) / result.weights.sum()
        np.testing.assert_allclose(shares, target, atol=1e-12)


def test_a_zero_target_zeroes_its_units_and_the_rest_still_meet_the_margins():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([0, 1, 0, 1, 0, 1])
    result = rake([a, b], [np.array([0.5, 0.5, 0.0]), np.array([0.3, 0.7])])
    assert result.converged
    assert (result.weights[a == 2] == 0).all() and (result.weights[a != 2] > 0).all()


def test_empty_cells_and_margins_out_of_reach():
    a = np.array([0, 0, 1])
    assert empty_cells([a], [np.array([0.2, 0.3, 0.5])]) == [(0, 2)]
    assert empty_cells([a], [np.array([0.5, 0.5, 0.0])]) == []
    with pytest.raises(ValueError, match="no unit"):
        rake([a], [np.array([0.2, 0.3, 0.5])])
    # Every unit has the same category in both traits, so the two margins contradict each other.
    same = np.array([0, 1, 0, 1])
    result = rake([same, same], [np.array([0.5, 0.5]), np.array([0.2, 0.8])], max_iterations=50)
    assert not result.converged and result.iterations == 50 and result.gap > 0.1


def test_kish_effective_sample_size_by_hand():
    assert kish_ess(np.ones(7)) == pytest.approx(7)
    assert kish_ess(np.array([1.0, 1.0, 2.0])) == pytest.approx(16 / 6)


def test_the_survey_margins_are_its_weighted_shares_without_refusals():
    survey = load_survey(SURVEY).sample(300, 0)
    margins = survey_margins(survey)
    assert set(margins) == set(rakeable_traits(survey))
    people, weights = survey.respondents.traits, survey.respondents.weights
    known = people["age"].notna()
    shares = weights[known].groupby(people.loc[known, "age"].astype(str)).sum() / weights[known].sum()
    labels = survey.codebook.traits["age"].labels
    np.testing.assert_allclose(margins["age"], shares.reindex(labels, fill_value=0).to_numpy())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("astrology: {Leo: 1.0}", "has no persona trait 'astrology' to rake on; use one of"),
        ("gender: {Man: 1.0}", "gender has no category 'Man'; its categories are"),
        ("gender: {Male: 0.5, Female: 0.4}", "the gender shares sum to 0.9, not 1"),
        ("gender: {Male: 48, Female: 52}", "sum to 100, not 1: give shares (0.25), not percentages"),
        ("gender: {Male: -0.5, Female: 1.5}", "the share must be a number >= 0"),
        ("[1, 2]", "give one mapping per trait"),
        ("gender: {Male: [", "is not valid YAML"),
    ],
)
def test_a_bad_margins_file_is_a_one_line_error(tmp_path, text, message):
    path = tmp_path / "margins.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"margins file .*margins\.yaml") as error:
        read_margins(path, load_survey(SURVEY))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_margins_file_rounded_as_published_is_rescaled(tmp_path):
    path = tmp_path / "margins.yaml"
    path.write_text("gender: {Male: 0.4995, Female: 0.5}\n")
    margins = read_margins(path, load_survey(SURVEY))
    labels = load_survey(SURVEY).codebook.traits["gender"].labels
    assert list(margins) == ["gender"]
    expected = np.zeros(len(labels))
    expected[labels.index("Male")], expected[labels.index("Female")] = 0.4995 / 0.9995, 0.5 / 0.9995
    np.testing.assert_allclose(margins["gender"], expected)
    with pytest.raises(ConfigError, match="does not exist"):
        read_margins(tmp_path / "nowhere.yaml", load_survey(SURVEY))


def twin_demographics(survey) -> pd.DataFrame:
    """One persona per respondent, certain of the respondent's category in every persona trait the
    survey maps (uniform where the respondent has none)."""
    rows = []
    for respondent_id, person in survey.respondents.traits.iterrows():
        for trait in survey.codebook.matched_traits:
            survey_trait = survey.codebook.traits[trait.name]
            label = person.get(trait.name)
            mapped = next((c.persona for c in survey_trait.categories if c.label == label), ())
            options = CANONICAL_TRAITS[trait.name].categories
            for option in options:
                share = (1.0 / len(mapped) if option in mapped else 0.0) if mapped else 1.0 / len(options)
                rows.append(
                    {
                        "persona_id": f"twin-{respondent_id}",
                        "trait": trait.name,
                        "option": option,
                        "probability": share,
                    }
                )
    return pd.DataFrame(rows)


def test_raked_twins_meet_the_survey_margins():
    survey = load_survey(SURVEY).sample(60, 1)
    demographics = twin_demographics(survey)
    matches, report = match_survey(survey, demographics, ["greedy", "raked"], seed=0)
    raked = matches[matches["method"] == "raked"]
    assert raked["respondent_id"].isna().all() and raked["log_weight"].isna().all()
    assert raked["weight"].mean() == pytest.approx(1.0)
    persona_ids = list(dict.fromkeys(demographics["persona_id"]))
    tables = trait_tables(survey, demographics, persona_ids)
    cells = pd.DataFrame(persona_cells(tables), index=persona_ids, columns=[t.name for t in tables])
    margins = survey_margins(survey)
    for trait, target in margins.items():
        codes = cells.loc[raked["persona_id"], trait].to_numpy()
        shares = np.bincount(codes, weights=raked["weight"].to_numpy(), minlength=len(target))
        np.testing.assert_allclose(shares / shares.sum(), target, atol=1e-6)
    row = report.set_index("method").loc["raked"]
    assert row["personas_used"] == len(raked)
    assert row["effective_n"] == pytest.approx(kish_ess(raked["weight"].to_numpy()))
    assert row["max_weight"] == pytest.approx(raked["weight"].max())
    assert row["raked_on"] == ", ".join(margins) and row["margins"] == "survey"
    # The greedy rows keep their integer respondent ids beside the raked rows' missing ones.
    assert matches["respondent_id"].dtype == "Int64"


def test_an_empty_cell_is_a_one_line_error_naming_trait_and_category():
    survey = load_survey(SURVEY).sample(60, 1)
    demographics = twin_demographics(survey)
    labels = survey.codebook.traits["age"].labels
    people = survey.respondents.traits
    youngest = {f"twin-{r}" for r in people.index[people["age"].astype(object) == labels[0]]}
    # Those personas are now certain they are in the second age group: nobody is in the first.
    age = (demographics["trait"] == "age") & demographics["persona_id"].isin(youngest)
    second = survey.codebook.traits["age"].categories[1].persona[0]
    demographics.loc[age, "probability"] = (demographics.loc[age, "option"] == second).astype(float)
    with pytest.raises(ConfigError) as error:
        match_survey(survey, demographics, ["greedy", "raked"], seed=0)
    message = str(error.value)
    assert f"no persona's most likely age is {labels[0]!r}" in message and "\n" not in message
    assert "generate more backstories (--personas)" in message and "matching.margins" in message
