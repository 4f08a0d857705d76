"""The two stages of a survey's open questions (entries ``open`` and ``code`` of
:data:`anthology.pipeline.STAGES`): every asked panel member answers them in free text, and a coder
model codes those answers, and the humans' own, back to the questions' categories.

Both read the survey the run matched; a survey without open questions gives empty artifacts at once,
with no model call.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pandas as pd

from anthology.config import RunConfig
from anthology.errors import CapabilityError
from anthology.method.open_answers import (
    OPEN_ANSWER_COLUMNS,
    OPEN_CODE_COLUMNS,
    answer_open,
    code_answers,
    human_texts,
)
from anthology.models.base import LanguageModel
from anthology.surveys.registry import respondent_columns


def answer_stage(stage: Any) -> dict[str, Any]:
    """Stage ``open``: the panel ``ask`` answered (its demographics-primed backstories read back, not
    generated again) answers each open question in free text (``open_answers``)."""
    from anthology import pipeline

    run, c, model = stage.run, stage.config, stage.need_model()
    survey = pipeline.run_survey(run)
    questions = survey.codebook.open_questions
    if not questions:
        run.write("open_answers", pd.DataFrame(columns=list(OPEN_ANSWER_COLUMNS)))
        return {"answers": 0}
    dp = run.read("dp_backstories") if "dp" in c.ask.methods else None
    panel = pipeline.study_panel(run, c, survey, pipeline.natural_style(run, c, model).style, dp)
    answers = answer_open(model, panel, questions, seed=c.seed, config=c.open)
    run.write("open_answers", answers)
    return {"answers": len(answers)}


def code_stage(stage: Any) -> dict[str, Any]:
    """Stage ``code``: the coder (``open.coder``, or the study's model) codes every free-text answer,
    the personas' and the humans' (method ``humans``, from each question's data ``column``)
    (``open_codes``)."""
    from anthology import pipeline

    run, c = stage.run, stage.config
    survey = pipeline.run_survey(run)
    codebook = survey.codebook
    if not codebook.open_questions:
        run.write("open_codes", pd.DataFrame(columns=list(OPEN_CODE_COLUMNS)))
        return {"coded": 0}
    answers = run.read("open_answers")[["method", "respondent_id", "persona_id", "question_id", "text"]]
    info = run.manifest().get("stages", {}).get("match", {}).get("survey", {})
    columns = [q.column for q in codebook.open_questions if q.column]
    humans = run.read("humans")["respondent_id"].tolist()
    if columns:
        texts = respondent_columns(info["name"], info.get("data"), columns)
        answers = pd.concat(
            [answers, human_texts(texts.loc[texts.index.intersection(humans)], codebook.open_questions)],
            ignore_index=True,
        )
    coder = open_coder(stage.need_model(), c)
    before = coder.stats.snapshot() if hasattr(coder, "stats") else None
    try:
        if not coder.capabilities.logprobs:
            raise CapabilityError(
                "the coder returns no log-probabilities, so it cannot score the categories: "
                "give open.coder a model that scores (a local model, or a server with logprobs)"
            )
        by_id = {q.id: q for q in codebook.open_questions}
        codes = code_answers(coder, answers, by_id, codebook.open_categories)
    finally:
        if coder is not stage.model:
            coder.close()
    run.write("open_codes", codes)
    found: dict[str, Any] = {
        "coded": len(codes),
        "coder": json.loads(codes["coder"].iloc[0]) if len(codes) else None,
    }
    if before is not None and coder is not stage.model:
        found["coder_calls"] = coder.stats.since(before)
    return found


def open_coder(model: LanguageModel, config: RunConfig) -> Any:
    """The coder: the study's model, or ``open.coder`` loaded and wrapped in the study model's
    response cache (its calls are cached and resumed like the study's)."""
    if config.open.coder is None:
        return model
    from anthology.models.cached_model import CachedModel
    from anthology.models.registry import load_model

    return CachedModel(load_model(config.open.coder), getattr(model, "cache", None), progress="code")


@functools.cache
def coder_identity(spec: str) -> dict[str, Any]:
    """The full identity of the coder ``spec`` (loaded once a process, then closed), for the code
    stage's fingerprint."""
    from anthology.models.registry import load_model

    coder = load_model(spec)
    try:
        return coder.identity
    finally:
        coder.close()
