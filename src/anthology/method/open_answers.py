"""Free-form answers to a survey's open questions, and their coding back to categories.

Every panel member answers every open question in free text, after the same context the closed
questions see::

    <context>

    Please answer the following question keeping in mind your previous answers.
    Question: {wording}
    Answer:

sampled (``open.temperature``, ``open.max_tokens``) with the seed ``stable_int(seed, "open", method,
member, question_id)``, so no two members or questions share random numbers and a rerun is identical.

A coder model then reads each answer (the personas' and the humans') and scores the multiple-choice
block "Which category best describes this answer?" over the question's categories and a last "None
of these", by the log-probability of the option letters (as log-prob answering does): each answer
gets a distribution over the categories, the probability of none, and its most likely ``code``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from anthology.method import prompts
from anthology.method.answering import member_key, with_system
from anthology.method.demographics import question_prompt
from anthology.method.seeds import stable_int
from anthology.method.settings import OpenConfig
from anthology.models.base import GenerateRequest, LanguageModel, Prompt, ScoreRequest
from anthology.redact import redact_values
from anthology.surveys.open_questions import OpenCategory, OpenQuestion

OPEN_ANSWER_COLUMNS = ("method", "respondent_id", "persona_id", "question_id", "text", "prompt", "model")
OPEN_CODE_COLUMNS = (
    "method",
    "respondent_id",
    "persona_id",
    "question_id",
    "text",
    "probabilities",
    "none",
    "code",
    "label",
    "coder",
)
#: The last option of every coding block.
NONE_OF_THESE = "None of these"
CODING_QUESTION = "Which category best describes this answer?"
#: Requests sent to the model at a time.
BATCH = 4096


def identity_json(model: LanguageModel) -> str:
    """A model's full identity as sorted JSON, without secrets (what the artifacts record)."""
    return json.dumps(redact_values(model.identity), sort_keys=True, default=str)


def open_prompt(context: Prompt, wording: str) -> Prompt:
    """The free-text question after a member's context (a new paragraph, or a user turn)."""
    block = f"{prompts.ANSWER_INSTRUCTION}\nQuestion: {wording}"
    return question_prompt(context, f"{block}\nAnswer:" if isinstance(context, str) else block)


def open_seed(seed: int, method: str, member: Any, question_id: str) -> int:
    """The sampling seed of one member's free-text answer to one open question."""
    return stable_int(seed, "open", method, member, question_id)


def answer_open(
    model: LanguageModel,
    panel: pd.DataFrame,
    questions: Sequence[OpenQuestion],
    *,
    seed: int = 0,
    config: OpenConfig | None = None,
) -> pd.DataFrame:
    """Every panel member (see :data:`anthology.method.answering.PANEL_COLUMNS`) answers every open
    question in free text: one row per (member, question), see :data:`OPEN_ANSWER_COLUMNS`."""
    rows, requests = open_requests(panel, questions, seed=seed, config=config or OpenConfig())
    texts = [r.samples[0].text.strip() for r in _batched(model.generate, requests)]
    made = identity_json(model)
    frame = pd.DataFrame(
        [{**row, "text": text, "model": made} for row, text in zip(rows, texts, strict=True)],
        columns=list(OPEN_ANSWER_COLUMNS),
    )
    return _ids(frame)


def open_requests(
    panel: pd.DataFrame, questions: Sequence[OpenQuestion], *, seed: int, config: OpenConfig
) -> tuple[list[dict[str, Any]], list[GenerateRequest]]:
    """The free-text requests of every (member, question), in order, and their rows' ids and prompts
    (also what ``--dry-run`` counts)."""
    rows: list[dict[str, Any]] = []
    requests: list[GenerateRequest] = []
    for member in panel.itertuples(index=False):
        context = with_system(member.style, member.context)
        key = member_key(member.respondent_id, member.persona_id)
        for question in questions:
            prompt = open_prompt(context, question.wording)
            rows.append(
                {
                    "method": member.method,
                    "respondent_id": member.respondent_id,
                    "persona_id": member.persona_id,
                    "question_id": question.id,
                    "prompt": json.dumps(prompt),
                }
            )
            requests.append(
                GenerateRequest(
                    prompt,
                    temperature=config.temperature,
                    max_tokens=config.max_tokens,
                    stop=config.stop,
                    seed=open_seed(seed, member.method, key, question.id),
                )
            )
    return rows, requests


def _batched(call: Any, requests: Sequence[Any]) -> list[Any]:
    """``call`` over the requests in batches of :data:`BATCH` (memory stays bounded)."""
    return [
        result for start in range(0, len(requests), BATCH) for result in call(requests[start : start + BATCH])
    ]


def _ids(frame: pd.DataFrame) -> pd.DataFrame:
    """Respondent and persona ids as nullable integers where they are integers (baselines and the
    raked pool leave one of them empty), so the artifact writes."""
    for column in ("respondent_id", "persona_id"):
        values = frame[column]
        known = values.dropna()
        if len(known) < len(values) and all(isinstance(v, int | np.integer) for v in known):
            frame[column] = pd.array(values.tolist(), dtype="Int64")
    return frame


def coding_block(wording: str, text: str, categories: Sequence[OpenCategory]) -> str:
    """The coder's prompt: the question, the answer, and the categories plus "None of these"."""
    options = [f"{c.label}: {c.description}" if c.description else c.label for c in categories]
    head = f'Question: {wording}\nAnswer given: "{text}"\n\n'
    return head + prompts.multiple_choice(CODING_QUESTION, [*options, NONE_OF_THESE])


def coding_request(wording: str, text: str, categories: Sequence[OpenCategory], chat: bool) -> ScoreRequest:
    """The coder's scoring request for one answer: the coding block (one user turn for a chat-only
    coder) over the letters of the categories and "None of these"."""
    block = coding_block(wording, text, categories)
    context: Prompt = ({"role": "user", "content": block},) if chat else block
    return ScoreRequest(context, prompts.option_continuations(len(categories) + 1, chat=chat))


def code_answers(
    coder: LanguageModel,
    answers: pd.DataFrame,
    questions: Mapping[str, OpenQuestion],
    categories: Mapping[str, Sequence[OpenCategory]],
) -> pd.DataFrame:
    """Code each free-text answer (rows with method, respondent_id, persona_id, question_id, text)
    into its question's ``categories`` by the coder's log-probabilities of the option letters (a
    completion prompt, or one user turn for a chat-only coder): one row per answer, see
    :data:`OPEN_CODE_COLUMNS`; ``code`` is the 1-based category most likely, NA when "None of these"
    is, and an empty answer is not sent (NA probabilities and code)."""
    chat = not coder.capabilities.completion
    asked = [i for i, text in enumerate(answers["text"]) if isinstance(text, str) and text.strip()]
    requests = []
    for i in asked:
        row = answers.iloc[i]
        question = row["question_id"]
        requests.append(coding_request(questions[question].wording, row["text"], categories[question], chat))
    results = dict(zip(asked, _batched(coder.score, requests), strict=True))
    made = identity_json(coder)
    rows = []
    for i, row in enumerate(
        answers[["method", "respondent_id", "persona_id", "question_id", "text"]].itertuples()
    ):
        found: dict[str, Any] = {"probabilities": None, "none": float("nan"), "code": None, "label": None}
        if i in results:
            labels = [c.label for c in categories[row.question_id]]
            masses = prompts.option_masses(results[i].logprobs, len(labels) + 1)
            shares = [m / sum(masses) for m in masses]
            best = int(np.argmax(shares))
            found = {
                "probabilities": shares[:-1],
                "none": shares[-1],
                "code": best + 1 if best < len(labels) else None,
                "label": [*labels, NONE_OF_THESE][best],
            }
        rows.append(
            {
                "method": row.method,
                "respondent_id": row.respondent_id,
                "persona_id": row.persona_id,
                "question_id": row.question_id,
                "text": row.text,
                **found,
                "coder": made,
            }
        )
    frame = pd.DataFrame(rows, columns=list(OPEN_CODE_COLUMNS))
    frame["code"] = frame["code"].astype("Int64")
    frame["none"] = frame["none"].astype(float)
    return _ids(frame)


def human_texts(texts: pd.DataFrame, questions: Sequence[OpenQuestion]) -> pd.DataFrame:
    """The humans' free-text answers as rows to code (method ``humans``), from a frame indexed by
    respondent id with each open question's ``column``; empty answers are left out."""
    parts = []
    for question in questions:
        if question.column is None:
            continue
        values = texts[question.column]
        said = values[values.notna() & (values.astype(str).str.strip() != "")]
        parts.append(
            pd.DataFrame(
                {
                    "method": "humans",
                    "respondent_id": said.index.to_numpy(),
                    "persona_id": pd.NA,
                    "question_id": question.id,
                    "text": said.astype(str).str.strip().to_numpy(),
                }
            )
        )
    columns = ["method", "respondent_id", "persona_id", "question_id", "text"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
