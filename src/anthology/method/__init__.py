"""The Anthology method, one module per stage (Moon et al., EMNLP 2024)::

from anthology import CachedModel, ResponseCache, load_model
from anthology.method import (
    AskConfig, BackstoryConfig, DemographicsConfig, anthology_panel, ask, baseline_contexts,
    generate_backstories, match_survey, survey_demographics,
)
from anthology.surveys import load_survey

model = CachedModel(load_model("gemma3-270m"), ResponseCache("run/cache.sqlite"), progress=True)
stories = generate_backstories(model, 16, seed=0, config=BackstoryConfig(max_tokens=300))
traits = survey_demographics(model, stories, seed=0, config=DemographicsConfig(mode="logprob"))
survey = load_survey("gss2018-spending").sample(8, seed=0)
matches, report = match_survey(survey, traits, seed=0)
panel = anthology_panel(matches, stories, survey=survey)
answers, distributions = ask(model, panel, survey.questionnaire, seed=0)
"""

from anthology.method.answering import AskConfig, ask, compliance
from anthology.method.backstories import BackstoryConfig, generate_backstories, summary
from anthology.method.baselines import anthology_panel, baseline_contexts, dp_backstories, dp_panel
from anthology.method.demographics import DemographicsConfig, agreement, survey_demographics
from anthology.method.matching import match_survey

__all__ = [
    "AskConfig",
    "BackstoryConfig",
    "DemographicsConfig",
    "agreement",
    "anthology_panel",
    "ask",
    "baseline_contexts",
    "compliance",
    "dp_backstories",
    "dp_panel",
    "generate_backstories",
    "match_survey",
    "summary",
    "survey_demographics",
]
