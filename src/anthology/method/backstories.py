"""Stage 1: natural ("NA") backstories, written by the model in answer to an open interview question.

The paper prompts a base model as an interview (completion style): a citizenship preamble ("Are you
a US citizen?"; another yes/no question or none with ``preamble``) sampled until the answer says
"yes", then "Tell me about yourself...", sampled at temperature 1.0, top_p 1.0,
stopping at ``Question``, ``Q:`` or ``Interview``. A chat variant sends the same turns as messages.
Backstories of 40 tokens or fewer are dropped, as are texts that do not read as first-person
narratives and exact or near duplicates; every drop is recorded with its reason.

Each backstory keeps its *context*, the interview transcript the later stages condition on.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from anthology.errors import BackendError
from anthology.method import filters, prompts
from anthology.method.seeds import stable_int
from anthology.method.settings import BackstoryConfig, Style
from anthology.models.base import GenerateRequest, LanguageModel, Prompt, ScoreRequest

_YES = re.compile(r"\byes\b", re.I)


def context_prompt(style: str, context: str) -> Prompt:
    """A stored context (text, or JSON messages for chat) as a model prompt."""
    return context if style == "completion" else tuple(json.loads(context))


def _interview(style: Style, turns: list[tuple[str, str | None]]) -> Prompt:
    if style == "chat":
        return prompts.chat_transcript(turns)
    return prompts.transcript(turns)


def stored_prompt(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps([dict(m) for m in prompt])


#: Rounds of preamble answers drawn before the model is taken not to play the interview.
PREAMBLE_ROUNDS = 20
#: Most tokens of a preamble answer.
PREAMBLE_TOKENS = 16


def preamble_draws(missing: int) -> int:
    """How many preamble answers a round draws when ``missing`` "yes" answers are still wanted."""
    return max(8, int(missing * 1.5))


def preamble_request(config: BackstoryConfig, seed: int, want: int, drawn: int) -> GenerateRequest:
    """A round of ``want`` preamble answers after the ``drawn`` ones of earlier rounds."""
    assert config.preamble is not None
    return GenerateRequest(
        _interview(config.style, [(config.preamble, None)]),
        n=want,
        first_sample=drawn,
        temperature=1.0,
        top_p=1.0,
        max_tokens=PREAMBLE_TOKENS,
        stop=("\n",),
        seed=stable_int(seed, "preamble"),
    )


def interview_turns(config: BackstoryConfig, yes: str | None) -> list[tuple[str, str | None]]:
    """A backstory's interview: the preamble answered ``yes`` (when there is a preamble), then the
    question, left for the model."""
    turns: list[tuple[str, str | None]] = [(config.preamble, yes)] if config.preamble else []
    return [*turns, (config.question, None)]


def backstory_request(
    config: BackstoryConfig, turns: list[tuple[str, str | None]], seed: int, index: int
) -> GenerateRequest:
    """The request that writes the ``index``-th backstory after its interview ``turns``. A seed per
    persona: personas whose preamble reads the same still get different stories."""
    return GenerateRequest(
        _interview(config.style, turns),
        n=1,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
        stop=config.stop,
        seed=stable_int(seed, "backstory", persona_id(index)),
    )


def story_context(config: BackstoryConfig, turns: list[tuple[str, str | None]], text: str) -> Prompt:
    """The interview with the backstory ``text`` as its last answer: what later stages condition on."""
    return _interview(config.style, [*turns[:-1], (turns[-1][0], text)])


def _preambles(model: LanguageModel, n: int, config: BackstoryConfig, seed: int) -> list[str]:
    """``n`` answers to the preamble question that contain "yes", sampled in rounds."""
    if config.preamble is None:
        return []
    found: list[str] = []
    drawn = 0
    for _ in range(PREAMBLE_ROUNDS):
        want = preamble_draws(n - len(found))
        [result] = model.generate([preamble_request(config, seed, want, drawn)])
        drawn += want
        found += [t.strip() for t in result.texts if _YES.search(t)]
        if len(found) >= n:
            return found[:n]
    raise BackendError(
        f"only {len(found)} of {drawn} answers to {config.preamble!r} said yes: the model does not play "
        "the interview; turn the preamble off (--no-preamble) or ask another yes/no question (--preamble)"
    )


def persona_id(index: int) -> str:
    """The id of the index-th generated backstory."""
    return f"p{index:05d}"


def generate_backstories(
    model: LanguageModel,
    n: int,
    *,
    seed: int = 0,
    config: BackstoryConfig | None = None,
    start: int = 0,
    earlier: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Generate backstories ``start .. n - 1`` (all ``n`` by default) and filter them. One row per
    generated backstory: ``persona_id``, ``style``, ``context``, ``text``, ``tokens``, ``words``,
    ``finish_reason``, ``kept`` and ``drop_reason`` (empty when kept), and with the critic on
    ``contradiction`` and ``contradicts`` (:func:`drop_reasons`). Each persona's seed and preamble
    answer depend on its index alone, so a pool topped up with ``start = n`` of the first call gets
    new personas, never the same ones again; near duplicates of the kept backstories of ``earlier``
    (such a first pool) are dropped as well."""
    config = config or BackstoryConfig()
    yes = _preambles(model, n, config, seed)
    indices = range(start, n)
    turns_of = [interview_turns(config, yes[i] if config.preamble else None) for i in indices]
    requests = [backstory_request(config, turns, seed, i) for i, turns in zip(indices, turns_of, strict=True)]
    results = model.generate(requests)
    rows = []
    for i, turns, result in zip(indices, turns_of, results, strict=True):
        sample = result.samples[0]
        text = sample.text.strip()
        context = story_context(config, turns, text)
        rows.append(
            {
                "persona_id": persona_id(i),
                "style": config.style,
                "context": stored_prompt(context),
                "text": text,
                "tokens": sample.completion_tokens,
                "words": len(filters.words(text)),
                "finish_reason": sample.finish_reason,
            }
        )
    frame = pd.DataFrame(rows, columns=list(_COLUMNS))
    # Provenance travels with the artifact: which model and parameters wrote each story.
    frame["model"] = json.dumps(model.identity, sort_keys=True)
    frame["params"] = json.dumps({**config.model_dump(), "seed": seed}, sort_keys=True)
    return apply_filters(model, frame, config, earlier=earlier)


def apply_filters(
    model: LanguageModel, frame: pd.DataFrame, config: BackstoryConfig, earlier: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``frame`` with ``drop_reason`` and ``kept`` (:func:`drop_reasons`, then the critic) and, with
    the critic on, each backstory's probability of contradicting itself (``contradiction``, NaN for
    those the other filters dropped, which it does not read) and whether it flags it (``contradicts``:
    P >= 0.5); ``critic: drop`` drops the flagged (:data:`CONTRADICTION`)."""
    reasons = drop_reasons(model, frame, config, earlier=earlier)
    if config.critic != "off":
        alive = [i for i, r in enumerate(reasons) if not r]
        found = np.full(len(frame), np.nan)
        if alive:
            found[alive] = _yes_shares(model, frame["text"].iloc[alive].tolist(), CRITIC_QUESTION)
        frame["contradiction"] = found
        frame["contradicts"] = frame["contradiction"] >= 0.5
        if config.critic == "drop":
            reasons = [
                CONTRADICTION if flagged else r
                for r, flagged in zip(reasons, frame["contradicts"], strict=True)
            ]
    frame["drop_reason"] = reasons
    frame["kept"] = frame["drop_reason"] == ""
    return frame


_COLUMNS = ("persona_id", "style", "context", "text", "tokens", "words", "finish_reason")


def drop_reasons(
    model: LanguageModel, frame: pd.DataFrame, config: BackstoryConfig, earlier: pd.DataFrame | None = None
) -> list[str]:
    """Why each backstory is dropped (empty: kept), filter by filter: length, first person, then exact
    and near duplicates of an earlier one or of a kept one of ``earlier`` (a pool being topped up)."""
    reasons = [""] * len(frame)
    for i, row in enumerate(frame.itertuples()):
        if row.tokens < config.min_tokens:
            reasons[i] = f"too short: {row.tokens} tokens < {config.min_tokens}"
        elif row.words < config.min_words:
            reasons[i] = f"too short: {row.words} words < {config.min_words}"
        elif config.first_person == "heuristic" and not filters.is_first_person(row.text):
            reasons[i] = "not a first-person narrative (heuristic)"
    if config.first_person == "judge":
        candidates = [i for i, r in enumerate(reasons) if not r]
        for i, first_person in zip(
            candidates, _judge(model, frame["text"].iloc[candidates].tolist()), strict=True
        ):
            if not first_person:
                reasons[i] = "not a first-person narrative (LLM judge)"
    if config.near_duplicate <= 1:
        before = earlier[earlier["kept"]] if earlier is not None else frame.iloc[:0]
        alive = [i for i, r in enumerate(reasons) if not r]
        texts = [*before["text"], *frame["text"].iloc[alive]]
        ids = [*before["persona_id"], *frame["persona_id"].iloc[alive]]
        dups = filters.duplicate_of(texts, config.near_duplicate)[len(before) :]
        for i, dup in zip(alive, dups, strict=True):
            if dup is not None:
                reasons[i] = f"duplicate of {ids[dup]}"
    return reasons


JUDGE_QUESTION = "Is the text above a first-person account of the writer's own life?"
#: The LLM critic's question: does a backstory contradict itself?
CRITIC_QUESTION = (
    "Does the story above contradict itself, for example about the writer's age and life events, "
    "places or family?"
)
#: The drop reason of a backstory the critic finds contradicting itself (``critic: drop``).
CONTRADICTION = "contradiction (LLM critic)"


def judge_request(text: str, question: str = JUDGE_QUESTION) -> ScoreRequest:
    """A yes/no question after a backstory's text: the LLM judge's (default) or the critic's."""
    block = prompts.multiple_choice(question, ("Yes", "No"))
    return ScoreRequest(f"{text}\n\n{block}", prompts.option_continuations(2))


def _yes_shares(model: LanguageModel, texts: list[str], question: str) -> list[float]:
    """P(Yes) / (P(Yes) + P(No)) of the yes/no ``question`` after each text (0.5 when both are 0)."""
    scored = model.score([judge_request(t, question) for t in texts])
    shares = []
    for yes, no in (prompts.option_masses(r.logprobs, 2) for r in scored):
        shares.append(yes / (yes + no) if yes + no > 0 else 0.5)
    return shares


def _judge(model: LanguageModel, texts: list[str]) -> list[bool]:
    """An LLM judge: P(Yes) >= 0.5 on a yes/no question after the text."""
    return [share >= 0.5 for share in _yes_shares(model, texts, JUDGE_QUESTION)]


def summary(frame: pd.DataFrame) -> dict[str, object]:
    """How many backstories were generated and kept, and why the rest were dropped; with the critic
    on, also how many it read and how many it flagged as contradicting themselves (``contradictions``;
    with ``critic: drop`` the flagged are among the dropped)."""
    reasons = frame.loc[~frame["kept"], "drop_reason"].str.replace(
        r"duplicate of .*", "duplicate", regex=True
    )
    reasons = reasons.str.replace(r": \d+ (tokens|words) <", r": fewer \1 than", regex=True)
    found: dict[str, object] = {
        "generated": len(frame),
        "kept": int(frame["kept"].sum()),
        "dropped": {str(k): int(v) for k, v in reasons.value_counts().items()},
        "stopped_at_max_tokens": int((frame["finish_reason"] == "length").sum()),
    }
    if "contradiction" in frame:
        found["contradictions"] = {
            "scored": int(frame["contradiction"].notna().sum()),
            "flagged": int(frame["contradicts"].sum()),
            "kept_flagged": int((frame["contradicts"] & frame["kept"]).sum()),
        }
    return found
