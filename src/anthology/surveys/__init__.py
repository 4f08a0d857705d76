"""Surveys and human data: questionnaires, canonical persona traits, respondents with weights and
demographics, built-in surveys and the YAML codebook format for one's own data.

The Python API::

    from anthology.surveys import load_survey

    survey = load_survey("gss2018-spending")          # or a codebook path, with data="answers.csv"
    survey.questionnaire.questions[0].options         # ordered options with positions 1..K
    survey.tidy()                                     # one row per respondent and question
    survey.distributions(by="party")                  # weighted answer shares per subgroup

    draft = draft_codebook("ATP_W34.sav")             # a codebook drafted from a labelled file
    draft.text, draft.todo                            # its YAML (guesses marked) and what to do
"""

from anthology.surveys.codebook import Codebook, read_codebook
from anthology.surveys.declared import TraitDeclaration
from anthology.surveys.distributions import answer_distributions, trait_shares, weighted_shares
from anthology.surveys.draft import Draft, draft_codebook
from anthology.surveys.registry import load_codebook, load_survey, survey_content_hash, survey_names
from anthology.surveys.schema import (
    DECLINE,
    Exclusion,
    LoadReport,
    Option,
    Question,
    Questionnaire,
    Respondents,
    Survey,
    SurveyCategory,
    SurveyTrait,
    Trait,
    Wave,
)
from anthology.surveys.traits import CANONICAL_TRAITS

__all__ = [
    "CANONICAL_TRAITS",
    "DECLINE",
    "Codebook",
    "Draft",
    "Exclusion",
    "LoadReport",
    "Option",
    "Question",
    "Questionnaire",
    "Respondents",
    "Survey",
    "SurveyCategory",
    "SurveyTrait",
    "Trait",
    "TraitDeclaration",
    "Wave",
    "answer_distributions",
    "draft_codebook",
    "load_codebook",
    "load_survey",
    "read_codebook",
    "survey_content_hash",
    "survey_names",
    "trait_shares",
    "weighted_shares",
]
