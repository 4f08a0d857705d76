"""Stage 5: a panel of personas (matched Anthology personas or baselines) answers the target survey.

Each question is put after the panel member's context as the paper's block::

    <context>

    Please answer the following question keeping in mind your previous answers.
    Question: {wording}
    (A) {option}
    ...
    Answer with (A), (B), or (C).
    Answer:

(in chat, the block is a new user turn after the system prompt and the stored conversation).

* ``context="sequential"`` (the paper): the member's answer is appended (completion: `` (B) About right``
  after ``Answer:``; chat: an assistant turn) before the next question. Members go through the
  questionnaire in cohorts of as many as the model keeps conversations of between calls
  (:func:`_cohort`): question k is asked of every member of a cohort in one batch (per resampling
  round), then question k+1. Each prompt extends the member's previous one, so a backend with a prefix
  cache (the transformers backend with ``prefix_cache`` on; a vLLM or SGLang server with prefix
  caching) need compute only the new answer and question block. Members answer in blocks of whole
  members (about :data:`BLOCK_REQUESTS` prompts each), so that a large panel never holds all its
  prompts at once.
* ``context="independent"``: every question sees only the member's own context, so all of a member's
  questions share that prefix; they are sent in one batch.
* ``mode="sample"`` (the paper): one answer per question at temperature 1.0, parsed by option letter or
  text; non-compliant answers are resampled (the next sample index of the same seeded request) up to
  ``max_attempts`` times, then recorded as non-compliant (position NA).
* ``mode="logprob"`` (fast): one scoring pass reads each option's answer forms
  (:func:`anthology.method.prompts.answer_forms`), renormalised over the options; an individual answer
  is drawn from them and the exact distribution is kept, with ``coverage`` (the mass the backend
  observed on the forms) and ``imputed`` (the mass it filled in).

Waves (a questionnaire with ``waves:``, :mod:`anthology.surveys.waves`): the panel answers wave after
wave, each wave as above over its own questions (shuffled within the wave). With ``memory`` off every
wave starts from the member's context alone. With ``memory`` on, wave k starts from::

    <context> + for each earlier wave in order, for each of its questions the member answered, in the
    order the member was asked them: "\n\n" + the question block (as asked: its options reversed or
    not) + " " + the answer's line (completion); or the block as a user turn and the answer as an
    assistant turn (chat)

which is exactly the context a sequential member has after those questions (a question left
unanswered is left out); in sequential mode wave k then grows on from there. Without waves the whole
questionnaire is one wave and nothing changes. The answers and distributions get a ``wave`` column
(the wave's name) only when the questionnaire has waves.

Question order is shuffled and each question's options are reversed at random per member; answers are
mapped back to the canonical option position. Every random choice (order, reversal, draws, sampling
seeds) is a stable hash of ``(seed, method, respondent_id[, question_id])`` (the persona instead of the
respondent in a panel without respondents, the raked pool), so a member's answers do not depend on the
panel's order or on which other members share a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from anthology.errors import ConfigError
from anthology.method import prompts
from anthology.method.backstories import context_prompt
from anthology.method.demographics import continuations, question_prompt
from anthology.method.parsing import parse_choice
from anthology.method.seeds import stable_int, uniform
from anthology.method.settings import AskConfig
from anthology.models.base import GenerateRequest, LanguageModel, Prompt, ScoreRequest
from anthology.surveys.schema import Question, Questionnaire

#: The columns of a panel: who answers, and the context they answer in.
PANEL_COLUMNS = ("method", "respondent_id", "persona_id", "style", "context")
ANSWER_COLUMNS = (
    "method",
    "respondent_id",
    "persona_id",
    "question_id",
    "position",
    "order",
    "reversed",
    "attempts",
    "compliant",
    "text",
    "probabilities",
    "coverage",
    "imputed",
)
DISTRIBUTION_COLUMNS = ("method", "question_id", "position", "option", "probability", "source")
#: About how many prompts are built and answered at a time (whole members: all their questions), or
#: four of the model's cache chunks where that is more (Ray: 512 per worker).
BLOCK_REQUESTS = 16_384
#: Members answering turn by turn together in sequential mode when the model does not say how many
#: conversations it keeps (see :func:`_cohort`).
COHORT = 64


@dataclass
class _Member:
    """One panel row; ``context`` grows as the member answers in sequential mode."""

    method: str
    respondent_id: Any
    persona_id: Any
    context: Prompt
    order: tuple[str, ...]

    @property
    def key(self) -> Any:
        """Who the member is within its method: its respondent (:func:`member_key`)."""
        return member_key(self.respondent_id, self.persona_id)


@dataclass(frozen=True)
class _Job:
    """One question put to one member."""

    member: _Member
    question: Question
    order: int
    reversed: bool
    prompt: Prompt
    key: tuple[object, ...]  # (seed, method, member key, question_id)

    @property
    def asked(self) -> tuple[str, ...]:
        labels = self.question.labels
        return labels[::-1] if self.reversed else labels

    def position(self, asked_index: int) -> int:
        """The canonical 1-based position of the option asked at ``asked_index``."""
        k = len(self.question.options)
        return k - asked_index if self.reversed else asked_index + 1


@dataclass
class _Reply:
    position: int | None  # canonical, None when non-compliant
    said: str | None  # what goes into the context after "Answer:" (stripped)
    attempts: int = 1
    text: str | None = None
    probabilities: list[float] | None = None  # canonical order
    coverage: float = float("nan")  # observed probability mass on the answer forms (logprob mode)
    imputed: float = float("nan")  # mass filled in for forms the backend could not observe


def ask(
    model: LanguageModel,
    panel: pd.DataFrame,
    questionnaire: Questionnaire,
    *,
    seed: int = 0,
    config: AskConfig | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every panel member answers every question. Returns ``(answers, distributions)``: one row per
    (method, respondent_id, question_id) with the canonical ``position`` (see :data:`ANSWER_COLUMNS`),
    and the per-method answer distributions (see :func:`distributions`)."""
    config = config or AskConfig()
    _check_panel(panel)
    # Members answer in blocks of about BLOCK_REQUESTS prompts: a block's members, prompts, requests
    # and replies are dropped once its answers are rows, so memory does not grow with panel x
    # questions (65,000 respondents x 8 methods x 18 questions would be 9.4 million prompts at once).
    step = max(1, max(BLOCK_REQUESTS, 4 * getattr(model, "chunk_size", 0)) // max(1, len(questionnaire)))
    column = {q: i for i, q in enumerate(questionnaire.ids)}
    blocks = [
        _ask_waves(model, panel.iloc[start : start + step], questionnaire, column, seed, config)
        for start in range(0, len(panel), step)
    ]
    if len(blocks) == 1:
        answers = blocks[0]
    else:
        answers = pd.concat(blocks, ignore_index=True) if blocks else _answers_frame([])
    answers = _with_waves(answers, questionnaire)
    return answers, _with_waves(distributions(answers, questionnaire), questionnaire)


def _ask_waves(
    model: LanguageModel,
    rows: pd.DataFrame,
    questionnaire: Questionnaire,
    column: dict[str, int],
    seed: int,
    config: AskConfig,
) -> pd.DataFrame:
    """The answers of some panel rows, wave after wave (the whole questionnaire without waves), one row
    per (member, question), members in order; with ``memory`` each wave starts from the member's
    context and its earlier waves (:func:`remembered`)."""
    pairs: list[tuple[_Job, _Reply]] = []
    rank: dict[int, int] = {}
    contexts: list[Prompt] | None = None
    for _, part in questionnaire.parts():
        members = _members(rows, part, seed, config)
        if contexts is not None:
            for member, context in zip(members, contexts, strict=True):
                member.context = context
        starts = [m.context for m in members]
        rank |= {id(m): i for i, m in enumerate(members)}
        answered = _ask_block(model, members, part, seed, config)
        if config.memory and questionnaire.waves:
            mine: dict[int, list[tuple[_Job, _Reply]]] = {id(m): [] for m in members}
            for job, reply in answered:
                mine[id(job.member)].append((job, reply))
            contexts = [remembered(s, mine[id(m)], config) for s, m in zip(starts, members, strict=True)]
        pairs += answered
    pairs.sort(key=lambda p: (rank[id(p[0].member)], column[p[0].question.id]))
    return _answers_frame([_row(job, reply) for job, reply in pairs])


def remembered(context: Prompt, answered: Sequence[tuple[_Job, _Reply]], config: AskConfig) -> Prompt:
    """A member's context followed by the questions it answered, in the order it was asked them:
    each question's block as it was asked and the member's answer, as sequential mode appends them
    (the memory a later wave starts from; an unanswered question is left out)."""
    for job, reply in sorted(answered, key=lambda pair: pair[0].order):
        if reply.said is not None:
            block = prompts.multiple_choice(job.question.wording, job.asked, instruction=config.instruction)
            context = _with_answer(question_prompt(context, block), reply.said)
    return context


def _with_waves(frame: pd.DataFrame, questionnaire: Questionnaire) -> pd.DataFrame:
    """The answers or distributions with a ``wave`` column after ``question_id`` (the name of the
    question's wave) when the questionnaire has waves; unchanged without."""
    if not questionnaire.waves:
        return frame
    waves = {q: questionnaire.wave_of(q) for q in questionnaire.ids}
    where = list(frame.columns).index("question_id") + 1
    frame.insert(where, "wave", frame["question_id"].map(waves).astype(object))
    return frame


def _ask_block(
    model: LanguageModel,
    members: list[_Member],
    questionnaire: Questionnaire,
    seed: int,
    config: AskConfig,
) -> list[tuple[_Job, _Reply]]:
    """Some members answer a questionnaire (one wave): each (job, reply), in the order answered."""
    if config.context == "independent":
        jobs = [_job(m, questionnaire[q], k, seed, config) for m in members for k, q in enumerate(m.order)]
        pairs = list(zip(jobs, _answer(model, jobs, config), strict=True))
    else:
        pairs = []
        size = _cohort(model, members, questionnaire)
        for start in range(0, len(members), size):
            cohort = members[start : start + size]
            for k in range(len(questionnaire)):
                jobs = [_job(m, questionnaire[m.order[k]], k, seed, config) for m in cohort]
                for job, reply in zip(jobs, _answer(model, jobs, config), strict=True):
                    if reply.said is not None:  # an unanswered question is left out of the context
                        job.member.context = _with_answer(job.prompt, reply.said)
                    pairs.append((job, reply))
    return pairs


def planned_jobs(
    panel: pd.DataFrame,
    questionnaire: Questionnaire,
    seed: int,
    config: AskConfig,
    said: Callable[[_Job], str],
) -> list[list[_Job]]:
    """Each panel member's jobs in the order it is asked them, without the model: in sequential mode
    every earlier answer in the context is ``said(job)``, a stand-in for what the model will say
    (the jobs of a member's first question, and every job in independent mode, are exactly those
    the stage sends). Waves follow each other, with ``memory`` as :func:`remembered` builds it. For
    estimating a stage before it runs."""
    planned: list[list[_Job]] = [[] for _ in range(len(panel))]
    contexts: list[Prompt] | None = None
    for _, part in questionnaire.parts():
        members = _members(panel, part, seed, config)
        for member, context in zip(members, contexts or [m.context for m in members], strict=True):
            member.context = context
        starts = [m.context for m in members]
        asked = []
        for member in members:
            jobs = []
            for k, question_id in enumerate(member.order):
                job = _job(member, part[question_id], k, seed, config)
                if config.context == "sequential":
                    member.context = _with_answer(job.prompt, said(job))
                jobs.append(job)
            asked.append(jobs)
        for i, jobs in enumerate(asked):
            planned[i] += jobs
        if config.memory and questionnaire.waves:
            contexts = [
                remembered(start, [(j, _Reply(1, said(j))) for j in jobs], config)
                for start, jobs in zip(starts, asked, strict=True)
            ]
    return planned


def _cohort(model: LanguageModel, members: list[_Member], questionnaire: Questionnaire) -> int:
    """How many members answer turn by turn together in sequential mode: as many whole conversations
    as the model keeps between calls (``conversation_tokens``; about 3 characters a token), so that
    each member's next question starts from its cached conversation; :data:`COHORT` where the model
    does not say (a server's prefix cache then still holds a member's last turn when the next
    comes)."""
    tokens = getattr(model, "conversation_tokens", None)
    if not tokens or not members:
        return COHORT
    blocks = sum(len(q.wording) + sum(map(len, q.labels)) + 200 for q in questionnaire.questions)
    chars = max(len(str(m.context)) for m in members) + blocks
    return max(1, tokens // max(1, chars // 3))


def _answers_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    answers = pd.DataFrame(rows, columns=list(ANSWER_COLUMNS))
    ids = [row["respondent_id"] for row in rows]
    if any(pd.isna(i) for i in ids) and all(isinstance(i, int | np.integer) for i in ids if pd.notna(i)):
        answers["respondent_id"] = pd.array(ids, dtype="Int64")  # members without respondents: not floats
    answers["position"] = answers["position"].astype("Int64")
    answers["coverage"] = answers["coverage"].astype(float)
    answers["imputed"] = answers["imputed"].astype(float)
    return answers


def member_key(respondent_id: Any, persona_id: Any) -> Any:
    """A panel member's key within its method: the respondent it answers for, or, in a panel
    without respondents (the raked pool), its persona."""
    return persona_id if pd.isna(respondent_id) else respondent_id


def _check_panel(panel: pd.DataFrame) -> None:
    missing = [c for c in PANEL_COLUMNS if c not in panel.columns]
    if missing:
        raise ConfigError(f"the panel lacks the column(s) {missing}; it needs {list(PANEL_COLUMNS)}")
    keys = [member_key(r, p) for r, p in zip(panel["respondent_id"], panel["persona_id"], strict=True)]
    duplicated = pd.DataFrame({"method": panel["method"].to_numpy(), "key": keys}).duplicated()
    if duplicated.any():
        row = panel[duplicated.to_numpy()].iloc[0]
        known = pd.notna(row["respondent_id"])
        who = f"respondent {row['respondent_id']!r}" if known else f"persona {row['persona_id']!r}"
        raise ConfigError(
            f"the panel has {who} twice under method {row['method']!r}; "
            "each (method, respondent_id) answers once, or each persona in a panel without respondents"
        )
    styles = panel["style"]
    bad = styles[~styles.isin(("completion", "chat"))]
    if len(bad):
        raise ConfigError(f"panel style must be 'completion' or 'chat', got {bad.iloc[0]!r}")


def _members(
    panel: pd.DataFrame, questionnaire: Questionnaire, seed: int, config: AskConfig
) -> list[_Member]:
    members = []
    for row in panel.itertuples(index=False):
        order = questionnaire.ids
        if config.shuffle_questions:
            key = (seed, row.method, member_key(row.respondent_id, row.persona_id))
            order = tuple(sorted(order, key=lambda q, key=key: stable_int(*key, q, "order")))
        context = with_system(row.style, row.context)
        members.append(_Member(row.method, row.respondent_id, row.persona_id, context, order))
    return members


def with_system(style: str, context: str) -> Prompt:
    """The stored context as a prompt; chat conversations get the answering system prompt if they have
    no system message."""
    prompt = context_prompt(style, context)
    if isinstance(prompt, str) or (prompt and prompt[0]["role"] == "system"):
        return prompt
    return ({"role": "system", "content": prompts.CHAT_SYSTEM}, *prompt)


def reversed_options(seed: int, method: str, member: Any, question_id: str, config: AskConfig) -> bool:
    """Whether a member (its :func:`member_key`) of a method sees a question's options reversed."""
    return config.reverse_options and bool(stable_int(seed, method, member, question_id, "reverse") & 1)


def _job(member: _Member, question: Question, order: int, seed: int, config: AskConfig) -> _Job:
    key = (seed, member.method, member.key, question.id)
    flip = reversed_options(seed, member.method, member.key, question.id, config)
    labels = question.labels[::-1] if flip else question.labels
    block = prompts.multiple_choice(question.wording, labels, instruction=config.instruction)
    return _Job(member, question, order, flip, question_prompt(member.context, block), key)


def _with_answer(prompt: Prompt, said: str) -> Prompt:
    """The prompt followed by the answer: `` (B) ...`` after ``Answer:``, or an assistant turn."""
    if isinstance(prompt, str):
        return f"{prompt} {said}"
    return (*prompt, {"role": "assistant", "content": said})


def _answer(model: LanguageModel, jobs: Sequence[_Job], config: AskConfig) -> list[_Reply]:
    if not jobs:
        return []
    return _score(model, jobs) if config.mode == "logprob" else _sample(model, jobs, config)


def _sample(model: LanguageModel, jobs: Sequence[_Job], config: AskConfig) -> list[_Reply]:
    """Sample every job; resample the non-compliant ones (sample index = attempt) in rounds."""
    replies = [_Reply(None, None) for _ in jobs]
    pending = list(range(len(jobs)))
    for attempt in range(config.max_attempts):
        if not pending:
            break
        requests = [sample_request(jobs[i], attempt, config) for i in pending]
        still = []
        for i, result in zip(pending, model.generate(requests), strict=True):
            text = result.samples[0].text
            index = parse_choice(text, jobs[i].asked)
            replies[i].attempts, replies[i].text = attempt + 1, text
            if index is None:
                still.append(i)
            else:
                replies[i].position = jobs[i].position(index)
                replies[i].said = text.strip().split("\n", 1)[0]  # the line parse_choice read
        pending = still
    return replies


def sample_request(job: _Job, attempt: int, config: AskConfig) -> GenerateRequest:
    """The ``attempt``-th sampled answer to a job (its sample index is the attempt)."""
    return GenerateRequest(
        job.prompt,
        n=1,
        first_sample=attempt,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        stop=config.stop,
        seed=stable_int(*job.key, "sample"),
    )


def score_request(job: _Job) -> ScoreRequest:
    """A job's option letters to score (logprob mode)."""
    return ScoreRequest(job.prompt, continuations(job.prompt, len(job.asked)))


def _score(model: LanguageModel, jobs: Sequence[_Job]) -> list[_Reply]:
    """Score every job's option letters and draw one answer from the renormalised probabilities."""
    requests = [score_request(j) for j in jobs]
    replies = []
    for job, result in zip(jobs, model.score(requests), strict=True):
        masses = prompts.option_masses(result.logprobs, len(job.asked))
        asked = [m / sum(masses) for m in masses]
        canonical = asked[::-1] if job.reversed else asked
        cumulative = np.cumsum(canonical)
        drawn = int(np.searchsorted(cumulative, uniform(*job.key, "draw") * cumulative[-1], side="right"))
        position = min(drawn, len(canonical) - 1) + 1
        asked_index = len(canonical) - position if job.reversed else position - 1
        replies.append(
            _Reply(
                position,
                prompts.chosen(asked_index).strip(),
                probabilities=[float(p) for p in canonical],
                coverage=float(result.coverage),
                imputed=float(result.imputed_mass),
            )
        )
    return replies


def _row(job: _Job, reply: _Reply) -> dict[str, Any]:
    member = job.member
    return {
        "method": member.method,
        "respondent_id": member.respondent_id,
        "persona_id": member.persona_id,
        "question_id": job.question.id,
        "position": reply.position,
        "order": job.order,
        "reversed": job.reversed,
        "attempts": reply.attempts,
        "compliant": reply.position is not None,
        "text": reply.text,
        "probabilities": reply.probabilities,
        "coverage": reply.coverage,
        "imputed": reply.imputed,
    }


def distributions(answers: pd.DataFrame, questionnaire: Questionnaire) -> pd.DataFrame:
    """Per method, question and canonical option: ``source="answers"``, the share of the individual
    answers (non-compliant ones excluded; NaN when a question has no compliant answer), and where the
    answers carry probabilities (logprob mode) ``source="expected"``, the mean of the members'
    probability vectors."""
    rows = []
    for (method, question_id), group in answers.groupby(["method", "question_id"], sort=False):
        labels = questionnaire[str(question_id)].labels
        counts = np.bincount(group["position"].dropna().astype(int), minlength=len(labels) + 1)[1:]
        shares = counts / counts.sum() if counts.sum() else np.full(len(labels), np.nan)
        vectors = group["probabilities"].dropna().tolist()
        sources = {"answers": shares}
        if vectors:
            sources["expected"] = np.mean(np.array(vectors, dtype=float), axis=0)
        for source, values in sources.items():
            rows += [
                (method, question_id, k, label, float(p), source)
                for k, (label, p) in enumerate(zip(labels, values, strict=True), 1)
            ]
    return pd.DataFrame(rows, columns=list(DISTRIBUTION_COLUMNS))


def compliance(answers: pd.DataFrame) -> pd.DataFrame:
    """Per method: the number of answers, the share that named an option, and the mean attempts."""
    return (
        answers.groupby("method", sort=False)
        .agg(
            answers=("compliant", "size"),
            compliant=("compliant", "mean"),
            mean_attempts=("attempts", "mean"),
        )
        .reset_index()
    )
