"""Topping up a backstory pool until its coverage audit passes (:mod:`anthology.method.audit`).

While the audit fails and the budget (``pool.top_up`` new backstories) is not spent, a round writes
``pool.batch`` more natural backstories (default ``backstories.n``, the last round what is left of
the budget) with the same prompt and settings. Their persona indices continue after the pool's, so
every new persona has a new id and seed (:func:`anthology.method.backstories.backstory_request`),
and the same run always makes the same ones. They pass the same filters (the critic included; near
duplicates of a kept backstory of the pool or an earlier round are dropped too), the kept ones answer
the demographic survey, and the whole pool is audited again.

All model calls go through the caller's model, so a top-up killed midway and started again finds
every call it had finished in the response cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anthology.method.audit import Audit, audit
from anthology.method.backstories import generate_backstories
from anthology.method.demographics import survey_demographics
from anthology.method.matching import TraitTable, trait_tables
from anthology.method.settings import BackstoryConfig, DemographicsConfig, PoolConfig
from anthology.models.base import LanguageModel
from anthology.surveys.schema import Survey, Trait


@dataclass(frozen=True)
class TopUp:
    """What a top-up made: the new backstories (every one generated, kept or dropped), the kept
    ones' demographics, and the audits before the first round and after each round."""

    backstories: pd.DataFrame
    demographics: pd.DataFrame
    audits: list[Audit]

    @property
    def rounds(self) -> int:
        return len(self.audits) - 1


def pool_tables(survey: Survey, demographics: pd.DataFrame) -> list[TraitTable]:
    """Matching's trait tables of a pool's demographics (its personas in their order)."""
    return trait_tables(survey, demographics, list(dict.fromkeys(demographics["persona_id"])))


def audit_pool(survey: Survey, demographics: pd.DataFrame, config: PoolConfig) -> Audit:
    """The coverage audit of the pool of ``demographics`` against the survey's respondents."""
    ids = survey.respondents.traits.index.to_numpy()  # type: ignore[union-attr]
    tables = pool_tables(survey, demographics)
    return audit(tables, ids, threshold=config.plausible, min_plausible=config.min_plausible)


def top_up(
    model: LanguageModel,
    survey: Survey,
    backstories: pd.DataFrame,
    demographics: pd.DataFrame,
    *,
    seed: int,
    config: PoolConfig,
    backstory_config: BackstoryConfig,
    demographics_config: DemographicsConfig,
    traits: Sequence[Trait],
    batch: int,
) -> TopUp:
    """Audit the pool (``backstories`` and their ``demographics``) and top it up, ``batch`` new
    backstories a round (``config.batch`` or the caller's default), while the audit fails and
    ``config.top_up`` allows (see the module's docstring)."""
    audits = [audit_pool(survey, demographics, config)]
    stories, answers = [backstories], [demographics]
    start = len(backstories)  # persona indices 0 .. start - 1 are the pool's
    spent = 0
    while not audits[-1].passed and spent < config.top_up:
        size = min(config.batch or batch, config.top_up - spent)
        earlier = pd.concat(stories, ignore_index=True)
        new = generate_backstories(
            model, start + size, seed=seed, config=backstory_config, start=start, earlier=earlier
        )
        stories.append(new)
        if new["kept"].any():
            answers.append(
                survey_demographics(model, new, seed=seed, config=demographics_config, traits=traits)
            )
        start, spent = start + size, spent + size
        audits.append(audit_pool(survey, pd.concat(answers, ignore_index=True), config))
    added = pd.concat(stories[1:], ignore_index=True) if len(stories) > 1 else backstories.iloc[:0]
    surveyed = pd.concat(answers[1:], ignore_index=True) if len(answers) > 1 else demographics.iloc[:0]
    return TopUp(added, surveyed, audits)


def audit_frame(audits: Sequence[Audit]) -> pd.DataFrame:
    """The ``audit`` artifact: one row per (round, respondent) with the number of plausible personas
    in the pool of that round (round 0: before any top-up) and the pool's size."""
    frames = [
        pd.DataFrame(
            {
                "round": np.full(len(a.plausible), r),
                "respondent_id": a.respondent_ids,
                "plausible": a.plausible,
                "personas": a.personas,
                "passed": a.plausible >= a.min_plausible,
            }
        )
        for r, a in enumerate(audits)
    ]
    return pd.concat(frames, ignore_index=True)
