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

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Where each public name lives; the submodules load on first use, so that importing
#: ``anthology.method.settings`` or ``anthology.method.prompts`` (as the command line does to build its
#: flags) does not import pandas.
_HOMES = {
    "AskConfig": "settings",
    "BackstoryConfig": "settings",
    "DemographicsConfig": "settings",
    "ask": "answering",
    "compliance": "answering",
    "generate_backstories": "backstories",
    "summary": "backstories",
    "anthology_panel": "baselines",
    "baseline_contexts": "baselines",
    "dp_backstories": "baselines",
    "dp_panel": "baselines",
    "agreement": "demographics",
    "survey_demographics": "demographics",
    "match_survey": "matching",
    "PoolConfig": "settings",
    "audit_pool": "topup",
    "top_up": "topup",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"anthology.method.{_HOMES[name]}"), name)


__all__ = [
    "AskConfig",
    "BackstoryConfig",
    "DemographicsConfig",
    "PoolConfig",
    "agreement",
    "anthology_panel",
    "ask",
    "audit_pool",
    "baseline_contexts",
    "compliance",
    "dp_backstories",
    "dp_panel",
    "generate_backstories",
    "match_survey",
    "summary",
    "survey_demographics",
    "top_up",
]
