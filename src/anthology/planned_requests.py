"""The model requests a study's stages will send, known before they run: for a sample of each stage's
units (personas, respondents) the requests are built by the stages' own code, and the number of
such requests is counted from the settings, the survey and what the run directory already holds.
:mod:`anthology.estimates` turns them into tokens, time and cost.

What is not known before a stage runs is stated as a range, its two ends these assumptions:

* **Backstories not yet written**: low, :data:`KEPT_SHARE_LOW` of the pool is kept (at least the
  respondents max-weight matching needs), each of the shortest length kept
  (``backstories.min_tokens``), and the others stop at once; high, all are kept and run to
  ``backstories.max_tokens``. The later stages read the kept ones only. Likewise for the DP
  backstories (up to ``ask.dp_max_tokens``). Where the run directory holds the backstories the
  stages will read, their real texts and lengths are used instead.
* **Preamble answers**: low, every answer says yes (one round of draws); high, one in
  :data:`PREAMBLE_YES_HIGH` does (more rounds, each drawn as the stage draws them).
* **Sampled answers** (demographic samples, answers): low, each stops at the shortest compliant
  answer (``" A"`` and its stop); high, each runs to its max tokens.
* **Duplicate prompts** (log-prob answers to questions asked on their own): a persona asked a
  question the same way for two respondents or by two matchings, and the Nothing baseline's
  questions, are scored once. Counted where the matches are known; else, at the low end, the
  matched personas are taken to be drawn at random from the fewest kept.
* **Resampling non-compliant answers** (``ask.max_attempts``, up to 1000): low, every answer complies
  at the first attempt; high, each attempt is non-compliant with probability
  :data:`NONCOMPLIANT_HIGH` (about 2 attempts an answer, whatever the limit). A model that never
  complies takes ``max_attempts`` attempts: the limit, not an estimate.
* **Top-up** (stage ``pool``, ``pool.top_up``): low, none (the audit passes at once); high, the
  whole budget, planned as the backstories and demographics stages plan them (the critic included).
* **Free-text answers** (stage ``open``): every panel member answers every open question, 1 to
  ``open.max_tokens`` tokens each; the matched personas, where not known yet, from the shortest kept
  backstory to the longest.
* **Coding** (stage ``code``): the humans' non-empty texts are known; of the personas' answers, low,
  every one is empty (not sent), high, every one is sent, ``open.max_tokens`` tokens long; where the
  run directory holds them, they are counted.
* **Earlier answers kept in context** (``ask.context: sequential``): low, each is the option letter
  (``(B)``); high, in sample mode, the letter and the option's longest label.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from anthology.config import ANTHOLOGY_METHODS, RunConfig
from anthology.method import prompts
from anthology.method.answering import (
    AskConfig,
    member_key,
    planned_jobs,
    reversed_options,
    sample_request,
    score_request,
)
from anthology.method.backstories import (
    CRITIC_QUESTION,
    JUDGE_QUESTION,
    PREAMBLE_ROUNDS,
    PREAMBLE_TOKENS,
    BackstoryConfig,
    backstory_request,
    interview_turns,
    judge_request,
    preamble_draws,
    preamble_request,
    stored_prompt,
    story_context,
)
from anthology.method.baselines import (
    BASELINES,
    anthology_panel,
    baseline_contexts,
    demographic_text,
    dp_context,
    dp_request,
)
from anthology.method.demographics import demographic_jobs, demographic_requests
from anthology.method.open_answers import coding_request, human_texts, open_requests
from anthology.method.settings import RAKED
from anthology.models.base import GenerateRequest, ScoreRequest
from anthology.pipeline import study_traits
from anthology.surveys import Survey
from anthology.surveys.registry import respondent_columns
from anthology.token_counts import TokenCounter

Request = GenerateRequest | ScoreRequest
#: The least share of a backstory pool the low end takes to be kept.
KEPT_SHARE_LOW = 0.5
#: At the high end, one preamble answer in this many says yes.
PREAMBLE_YES_HIGH = 4
#: At the high end, the chance that a sampled answer is non-compliant, at every attempt.
NONCOMPLIANT_HIGH = 0.5
#: Units (personas, respondents of a method) whose requests are built to count their tokens.
SAMPLE = 6
#: The shortest compliant sampled answer: an option letter and the newline that stops it.
SHORTEST_ANSWER = " A\n"


@dataclass(frozen=True)
class Span:
    """A quantity known to lie between ``low`` and ``high``."""

    low: float
    high: float

    @staticmethod
    def of(value: float) -> Span:
        return Span(value, value)

    def __add__(self, other: Span) -> Span:
        return Span(self.low + other.low, self.high + other.high)

    def __mul__(self, other: Span | float) -> Span:
        other = other if isinstance(other, Span) else Span.of(other)
        return Span(self.low * other.low, self.high * other.high)


#: Nothing, and all, at both ends.
ZERO, ONE = Span(0, 0), Span(1, 1)


@dataclass
class Planned:
    """Like requests of one stage: a ``sample`` of them built as the stage builds them (the prompts
    at the high end in ``high_sample``, where they differ), how many the stage sends (``requests``,
    every attempt counted) with how many samples in all (``units``), the completion tokens of a
    sample, and the tokens each prompt has beyond the sample's (``extra``: text not written yet, or
    the difference between the whole pool's backstories and the sample's). ``keyed`` are requests
    whose cache keys are exactly those the stage will send; ``keyed_all``: they stand for all of
    the requests (else for those of the low end only)."""

    row: str
    sample: Sequence[Request]
    requests: Span
    units: Span
    completion: Span = ZERO
    extra: Span = ZERO
    high_sample: Sequence[Request] | None = None
    keyed: Sequence[Request] = ()
    keyed_all: bool = True


@dataclass
class Artifacts:
    """What the run directory holds that the stages will read as it is (the artifacts of stages
    that will not run again): ``None`` where they will be made anew."""

    backstories: pd.DataFrame | None = None
    matches: pd.DataFrame | None = None
    open_answers: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def plan(
    config: RunConfig,
    stages: Sequence[str],
    survey: Survey | None,
    artifacts: Artifacts,
    counter: TokenCounter,
) -> list[Planned]:
    """The requests of the model stages among ``stages``; ``ask`` needs the ``survey`` (its sampled
    respondents and questions)."""
    pool = _Pool.of(config, stages, survey, artifacts.backstories, counter)
    planned: list[Planned] = []
    if "backstories" in stages:
        planned += _backstories(config, pool, counter)
    if "demographics" in stages:
        planned += _demographics(config, pool, counter)
    if "pool" in stages:
        planned += _top_up(config, survey, pool, counter)
    if "ask" in stages and survey is not None:
        planned += _ask(config, survey, pool, artifacts.matches, counter)
    if "open" in stages and survey is not None:
        planned += _open(config, survey, pool, artifacts.matches, counter)
    if "code" in stages and survey is not None:
        planned += _code(config, survey, pool, artifacts, counter)
    return planned


def evenly(n: int, k: int = SAMPLE) -> list[int]:
    """At most ``k`` indices spread evenly over ``range(n)``."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()}) if n else []


@dataclass
class _Pool:
    """The persona pool later stages read: the real kept backstories, or a stand-in persona whose
    backstory has ``story`` tokens still to be written, and how many are kept."""

    stories: pd.DataFrame
    kept: Span
    story: Span  # tokens per backstory beyond the stand-in's (0 for real ones: see extra_of)
    real: bool
    _lengths: pd.Series | None = None

    @staticmethod
    def of(
        config: RunConfig,
        stages: Sequence[str],
        survey: Survey | None,
        stories: pd.DataFrame | None,
        counter: TokenCounter,
    ) -> _Pool:
        b = config.backstories
        if stories is not None and stories["kept"].any():
            kept = stories[stories["kept"]].reset_index(drop=True)
            return _Pool(kept, Span.of(len(kept)), ZERO, True)
        natural = b.narrow(BackstoryConfig)
        context = story_context(natural, interview_turns(natural, "Yes" if b.preamble else None), "")
        stand_in = pd.DataFrame(
            {
                "persona_id": ["p00000"],
                "style": [b.style],
                "context": [stored_prompt(context)],
                "tokens": [0],
            }
        )
        respondents = len(survey.respondents) if survey is not None and survey.respondents is not None else 1
        needed = respondents if "max-weight" in config.matching.methods and "match" in stages else 1
        low = min(b.n, max(needed, math.ceil(KEPT_SHARE_LOW * b.n)))
        story = Span(min(b.min_tokens, b.max_tokens), b.max_tokens) + _preamble_extra(natural, counter)
        return _Pool(stand_in, Span(low, b.n), story, False)

    def lengths(self, counter: TokenCounter) -> pd.Series:
        """The tokens of each real backstory's text, by persona id (counted once)."""
        if self._lengths is None:
            texts = self.stories.set_index("persona_id")["text"]
            self._lengths = pd.Series([counter.text(str(t)) for t in texts], index=texts.index)
        return self._lengths

    def matched_extra(self, chosen: pd.DataFrame, counter: TokenCounter) -> Span:
        """The tokens a request built on the ``chosen`` personas lacks against those matching will
        pick, not known yet: from the shortest kept backstory to the longest (real ones)."""
        if not self.real:
            return self.story
        lengths = self.lengths(counter)
        mean = float(lengths.loc[chosen["persona_id"]].mean())
        return Span(float(lengths.min()) - mean, float(lengths.max()) - mean)

    def extra_of(self, chosen: pd.DataFrame, among: pd.DataFrame | None = None) -> Span:
        """The tokens a request built on the ``chosen`` personas lacks against the average one
        ``among`` (default: the kept pool): the story still to be written, or the difference of
        their real backstories' mean lengths."""
        if not self.real:
            return self.story
        among = self.stories if among is None else among
        return Span.of(float(among["tokens"].mean() - chosen["tokens"].mean()))


def _preamble_extra(config: BackstoryConfig, counter: TokenCounter) -> Span:
    """Tokens a preamble answer may have beyond the stand-in "Yes"."""
    if config.preamble is None:
        return ZERO
    return Span(0, max(0, PREAMBLE_TOKENS - counter.text(" Yes")))


def _backstories(c: RunConfig, pool: _Pool, counter: TokenCounter) -> list[Planned]:
    b, n = c.backstories.narrow(BackstoryConfig), c.backstories.n
    planned = []
    if b.preamble is not None:
        rounds_low, draws_low = _preamble_rounds(n, 1.0)
        rounds_high, draws_high = _preamble_rounds(n, 1 / PREAMBLE_YES_HIGH)
        first = preamble_request(b, c.seed, preamble_draws(n), 0)
        planned.append(
            Planned(
                "backstories",
                [first],
                Span(rounds_low, rounds_high),
                Span(draws_low, draws_high),
                completion=Span(counter.text(" Yes\n"), PREAMBLE_TOKENS),
                keyed=[first],
                keyed_all=False,
            )
        )
    yes = "Yes" if b.preamble is not None else None
    sample = [backstory_request(b, interview_turns(b, yes), c.seed, i) for i in evenly(n)]
    planned.append(
        Planned(
            "backstories",
            sample,
            Span.of(n),
            Span.of(n),
            completion=_written(b),
            extra=_preamble_extra(b, counter),
            keyed=sample if b.preamble is None else (),
        )
    )
    story = Span(min(b.min_tokens, b.max_tokens), b.max_tokens)
    if b.first_person == "judge":
        planned.append(_judge("backstories", pool.kept, story))
    if b.critic != "off":
        planned.append(_judge("backstories", pool.kept, story, CRITIC_QUESTION))
    return planned


def _written(b: BackstoryConfig) -> Span:
    """The tokens generated for a backstory: low, :data:`KEPT_SHARE_LOW` of them are the shortest
    kept (``min_tokens``) and the others stop at once (a token); high, each runs to its max."""
    shortest = min(b.min_tokens, b.max_tokens)
    return Span(KEPT_SHARE_LOW * shortest + (1 - KEPT_SHARE_LOW), b.max_tokens)


def _judge(row: str, candidates: Span, story: Span, question: str = JUDGE_QUESTION) -> Planned:
    """The LLM judge's question (or the critic's) after each backstory that passes the length filters."""
    return Planned(row, [judge_request("", question)], candidates, candidates, extra=story)


def _preamble_rounds(n: int, share: float) -> tuple[int, int]:
    """Rounds and draws of preamble answers until ``n`` say yes, when a ``share`` of them do."""
    found, drawn, rounds = 0.0, 0, 0
    while found < n and rounds < PREAMBLE_ROUNDS:
        want = preamble_draws(math.ceil(n - found))
        drawn, found, rounds = drawn + want, found + want * share, rounds + 1
    return rounds, drawn


def _demographics(c: RunConfig, pool: _Pool, counter: TokenCounter) -> list[Planned]:
    d, traits = c.demographics, study_traits(c)
    chosen = pool.stories.iloc[evenly(len(pool.stories))]
    sample = demographic_requests(demographic_jobs(chosen, c.seed, traits), c.seed, d)
    requests = pool.kept * len(traits)
    sampled = d.mode == "sample"
    return [
        Planned(
            "demographics",
            sample,
            requests,
            requests * (d.samples if sampled else 1),
            completion=Span(counter.text(SHORTEST_ANSWER), d.max_tokens) if sampled else ZERO,
            extra=pool.extra_of(chosen),
            keyed=sample if pool.real else (),
        )
    ]


@dataclass
class _Group:
    """A method's panel sample, its members, the tokens its contexts lack, whether the contexts are
    exactly the stage's, and the share of its questions that are distinct prompts (see
    :func:`_distinct_anthology`)."""

    panel: pd.DataFrame
    members: Span
    extra: Span
    exact: bool
    distinct: Span = ONE


def _ask(
    c: RunConfig, survey: Survey, pool: _Pool, matches: pd.DataFrame | None, counter: TokenCounter
) -> list[Planned]:
    dp, groups = _panel_groups(c, survey, pool, matches, counter)
    return dp + [_answers(c, survey, group, counter) for group in groups]


def _panel_groups(
    c: RunConfig, survey: Survey, pool: _Pool, matches: pd.DataFrame | None, counter: TokenCounter
) -> tuple[list[Planned], list[_Group]]:
    """The DP backstories the answering stage writes first (where ``dp`` is asked), and the panel
    sample of every asked method (the closed and the open questions are asked of the same panel)."""
    a = c.ask
    assert survey.respondents is not None
    ids = list(survey.respondents.traits.index)
    chosen_ids = [ids[i] for i in evenly(len(ids))]
    style = c.backstories.style
    anthology = [m for m in a.methods if m in ANTHOLOGY_METHODS]
    groups = [_anthology_group(c, survey, pool, matches, method, chosen_ids, counter) for method in anthology]
    shared = _distinct_anthology(c, survey, pool, matches, anthology, [g.members.high for g in groups])
    for group in groups:
        group.distinct = shared
    for method in (m for m in a.methods if m in BASELINES):
        panel = baseline_contexts(survey, [method], seed=c.seed, respondent_ids=chosen_ids, style=style)
        distinct = _distinct_nothing(c, survey, ids) if method == "nothing" else ONE
        groups.append(_Group(panel, Span.of(len(ids)), ZERO, True, distinct))
    planned: list[Planned] = []
    if "dp" in a.methods:
        dp = c.backstories.narrow(BackstoryConfig).updated(temperature=1.1, max_tokens=a.dp_max_tokens)
        texts = {rid: demographic_text(survey, rid, a.dp_style, seed=c.seed) for rid in chosen_ids}
        sample = [dp_request(dp, texts[rid], c.seed, rid) for rid in chosen_ids]
        story = Span(min(dp.min_tokens, dp.max_tokens), dp.max_tokens)
        every = Span.of(len(ids))
        planned.append(
            Planned("ask (dp backstories)", sample, every, every, completion=_written(dp), keyed=sample)
        )
        kept = Span(math.ceil(KEPT_SHARE_LOW * len(ids)), len(ids))
        if dp.first_person == "judge":
            planned.append(_judge("ask (dp backstories)", kept, story))
        if dp.critic != "off":
            planned.append(_judge("ask (dp backstories)", kept, story, CRITIC_QUESTION))
        rows = [
            ("dp", rid, f"dp-{rid}", dp.style, dp_context(dp.style, texts[rid], "")) for rid in chosen_ids
        ]
        groups.append(_Group(pd.DataFrame(rows, columns=_PANEL), kept, story, False))
    return planned, groups


#: The most (member, question) pairs hashed to count distinct prompts; beyond, a share of questions.
_DISTINCT_PAIRS = 200_000


def _scored_once(c: RunConfig) -> bool:
    """Whether like answering requests are one: log-prob scores of questions asked on their own (a
    sampled answer's seed is its member's, and earlier answers make sequential prompts differ)."""
    return c.ask.mode == "logprob" and c.ask.context == "independent"


def _distinct_anthology(
    c: RunConfig,
    survey: Survey,
    pool: _Pool,
    matches: pd.DataFrame | None,
    methods: list[str],
    members: list[float],
) -> Span:
    """The share of the Anthology panels' questions that are distinct prompts: a persona asked a
    question the same way (options forward or reversed) by two matchings, or for two respondents,
    is scored once. Counted where the matches are known; else, at the low end, the personas are
    taken to be drawn at random from the fewest kept, and at the high end to be all different."""
    if not methods or not _scored_once(c) or c.ask.append is not None:
        return ONE
    a, names = c.ask, [m.removeprefix("anthology-") for m in methods]
    questions = survey.questionnaire.ids
    if matches is not None and pool.real and set(names) <= set(matches["method"]):
        chosen = matches[matches["method"].isin(names)]
        asked = [questions[i] for i in evenly(len(questions), max(1, _DISTINCT_PAIRS // max(1, len(chosen))))]
        seen = {
            (persona, q, reversed_options(c.seed, f"anthology-{m}", member_key(r, persona), q, a))
            for m, r, persona in zip(
                chosen["method"], chosen["respondent_id"], chosen["persona_id"], strict=True
            )
            for q in asked
        }
        return Span.of(len(seen) / (len(chosen) * len(asked)))
    draws = sum(members)
    variants = (2 if a.reverse_options else 1) * max(1.0, pool.kept.low)
    expected = variants * (1 - (1 - 1 / variants) ** draws)
    return Span(min(1.0, expected / draws), 1)


def _distinct_nothing(c: RunConfig, survey: Survey, ids: list[Any]) -> Span:
    """The share of the Nothing baseline's questions that are distinct prompts: with no context,
    a question is one prompt with its options forward and one reversed, whoever is asked."""
    if not _scored_once(c):
        return ONE
    questions = survey.questionnaire.ids
    some = ids[:4096]  # beyond, every question is all but surely seen both ways
    seen = {(q, reversed_options(c.seed, "nothing", rid, q, c.ask)) for rid in some for q in questions}
    return Span.of(len(seen) / (len(ids) * len(questions)))


_PANEL = ["method", "respondent_id", "persona_id", "style", "context"]


def _anthology_group(
    c: RunConfig,
    survey: Survey,
    pool: _Pool,
    matches: pd.DataFrame | None,
    method: str,
    chosen_ids: list[Any],
    counter: TokenCounter,
) -> _Group:
    """The panel sample of one Anthology method, its size, and the tokens its contexts lack: the
    recorded matches over the real backstories where both are here, else stand-ins."""
    name = method.removeprefix("anthology-")
    append = c.ask.append
    if matches is not None and pool.real and name in set(matches["method"]):
        mine = matches[matches["method"] == name].reset_index(drop=True)
        picked = mine.iloc[evenly(len(mine))]
        panel = anthology_panel(picked, pool.stories, survey=survey, append=append, seed=c.seed)
        tokens = pool.stories.set_index("persona_id")["tokens"]
        matched = pd.DataFrame({"tokens": tokens.reindex(mine["persona_id"]).to_numpy()})
        chosen = pd.DataFrame({"tokens": tokens.reindex(picked["persona_id"]).to_numpy()})
        return _Group(panel, Span.of(len(mine)), pool.extra_of(chosen, matched), True)
    raked = name == RAKED
    members = pool.kept if raked else Span.of(len(survey.respondents or ()))
    stories = pool.stories.iloc[evenly(len(pool.stories), len(chosen_ids))]
    personas = [stories["persona_id"].iloc[i % len(stories)] for i in range(len(chosen_ids))]
    stand_in = pd.DataFrame(
        {
            "method": name,
            "respondent_id": [float("nan")] * len(personas) if raked else chosen_ids,
            "persona_id": personas,
        }
    )
    if raked:
        stand_in = stand_in.drop_duplicates("persona_id")
    panel = anthology_panel(stand_in, pool.stories, survey=survey, append=append, seed=c.seed)
    extra = pool.extra_of(stories) if raked else pool.matched_extra(stories, counter)
    return _Group(panel, members, extra, False)


def _answers(c: RunConfig, survey: Survey, group: _Group, counter: TokenCounter) -> Planned:
    """The answering requests of one method's panel sample, for its members."""
    a = c.ask.narrow(AskConfig)
    questionnaire = survey.questionnaire
    sampled = a.mode == "sample"

    def letter(job: Any) -> str:
        return prompts.chosen(0).strip()

    def labelled(job: Any) -> str:
        return f"{prompts.chosen(0).strip()} {max(job.asked, key=len)}"

    def requests(jobs: list[Any]) -> list[Request]:
        return [sample_request(j, 0, a) if sampled else score_request(j) for j in jobs]

    low = planned_jobs(group.panel, questionnaire, c.seed, a, letter)
    sample = requests([j for jobs in low for j in jobs])
    high = None
    if sampled and a.context == "sequential":
        labelled_jobs = planned_jobs(group.panel, questionnaire, c.seed, a, labelled)
        high = requests([j for jobs in labelled_jobs for j in jobs])
    sequential = a.context == "sequential"
    keyed = requests([jobs[0] for jobs in low if jobs]) if sequential else sample
    attempts = Span(1, sum(NONCOMPLIANT_HIGH**k for k in range(a.max_attempts))) if sampled else Span.of(1)
    count = group.members * len(questionnaire) * attempts * group.distinct
    return Planned(
        "ask",
        sample,
        count,
        count,
        completion=Span(counter.text(SHORTEST_ANSWER), a.max_tokens) if sampled else ZERO,
        extra=group.extra,
        high_sample=high,
        keyed=keyed if group.exact else (),
        keyed_all=not sequential,
    )


def _top_up(c: RunConfig, survey: Survey | None, pool: _Pool, counter: TokenCounter) -> list[Planned]:
    """The pool stage's top-up: up to ``pool.top_up`` more backstories, planned as the backstories
    stage plans them (the critic's questions included), and the kept ones' demographic survey. Low,
    none (the audit passes at once); high, the whole budget, every round's batch written. The new
    backstories are written by the same prompt and settings: where the pool's are written, the
    survey's prompts are counted on those."""
    budget = c.pool.top_up
    if budget == 0:
        return []
    more = c.model_copy(update={"backstories": c.backstories.model_copy(update={"n": budget})})
    if pool.real:
        pool = _Pool(pool.stories, Span(min(budget, math.ceil(KEPT_SHARE_LOW * budget)), budget), ZERO, True)
    else:
        pool = _Pool.of(more, [], survey, None, counter)
    up_to = Span(0, 1)
    return [
        # the new personas' indices continue after the pool's: the sample's cache keys are not theirs
        dataclasses.replace(p, row="pool", requests=p.requests * up_to, units=p.units * up_to, keyed=())
        for p in _backstories(more, pool, counter) + _demographics(more, pool, counter)
    ]


def _open(
    c: RunConfig, survey: Survey, pool: _Pool, matches: pd.DataFrame | None, counter: TokenCounter
) -> list[Planned]:
    """Free-text answers: every member of every asked panel answers every open question, one
    sampled request each, of 1 to ``open.max_tokens`` tokens."""
    questions = survey.codebook.open_questions
    if not questions:
        return []
    planned = []
    for group in _panel_groups(c, survey, pool, matches, counter)[1]:
        sample = open_requests(group.panel, questions, seed=c.seed, config=c.open)[1]
        count = group.members * len(questions)
        planned.append(
            Planned(
                "open",
                sample,
                count,
                count,
                completion=Span(1, c.open.max_tokens),
                extra=group.extra,
                keyed=sample if group.exact else (),
            )
        )
    return planned


def _code(
    c: RunConfig, survey: Survey, pool: _Pool, artifacts: Artifacts, counter: TokenCounter
) -> list[Planned]:
    """The coder's scoring requests: one per free-text answer that is not empty. The humans' (each
    open question's data ``column``) are known and counted, and so are the personas' where the run
    directory holds them; else, low, every one is empty (none sent), high, every one is sent with
    ``open.max_tokens`` tokens of text. With ``open.coder`` the row is another model's, counted with
    the study model's tokenizer (and not looked up in the cache under the study model's identity)."""
    questions = survey.codebook.open_questions
    if not questions:
        return []
    row = "code" if c.open.coder is None else "code (open.coder)"
    categories, by_id = survey.codebook.open_categories, {q.id: q for q in questions}

    def known(answers: pd.DataFrame) -> list[Planned]:
        said = answers[answers["text"].fillna("").astype(str).str.strip() != ""]
        if not len(said):
            return []
        chosen = said.iloc[evenly(len(said))]
        sample = [
            coding_request(by_id[q].wording, str(text), categories[q], chat=False)
            for q, text in zip(chosen["question_id"], chosen["text"], strict=True)
        ]
        lengths = [counter.text(str(text)) for text in said["text"]]  # short texts: all counted
        extra = Span.of(float(np.mean(lengths) - np.mean([lengths[i] for i in evenly(len(said))])))
        every = Span.of(len(said))
        keyed = sample if c.open.coder is None else ()  # another model's keys are not the study's
        return [Planned(row, sample, every, every, extra=extra, keyed=keyed)]

    if artifacts.open_answers is not None:
        planned = known(artifacts.open_answers)
    else:
        groups = _panel_groups(c, survey, pool, artifacts.matches, counter)[1]
        answers = total([g.members for g in groups]) * len(questions)
        stand_ins = [coding_request(q.wording, "", categories[q.id], chat=False) for q in questions]
        sent = Span(0, answers.high)
        planned = [Planned(row, stand_ins, sent, sent, extra=Span(1, c.open.max_tokens))]
    columns = [q.column for q in questions if q.column]
    if columns and survey.respondents is not None:
        texts = respondent_columns(c.survey.name, c.survey.data, columns)
        planned += known(
            human_texts(texts.loc[texts.index.intersection(survey.respondents.traits.index)], questions)
        )
    return planned


def total(values: Sequence[Span]) -> Span:
    """The sum of ``values``."""
    found = ZERO
    for value in values:
        found += value
    return found
