"""Stage 6: the demographic-prompting baselines and the panels that answer the survey.

Each baseline conditions the model on a respondent's *own* demographics (the survey's category labels)
for the traits matching uses that have a Bio sentence (of the canonical ones, the paper's income, race,
age, gender, education and party; a codebook's own persona traits have one unless it says
``bio: null``), whichever the respondent has, in an order shuffled per respondent:

* ``qa``: each trait's question as a multiple-choice block over the survey's categories,
  answered: ``...Answer with (A), (B), or (C).\\nAnswer: (C)``; blocks separated by blank lines;
* ``bio``: ``BIO_PREAMBLE`` then one first-person sentence per trait ("My age is 30-49.");
* ``portray``: ``PORTRAY_PREAMBLE`` then ``topic: value`` lines;
* ``nothing``: an empty context;
* ``dp``: a backstory the model writes after the demographics (bio or QA style) are stated.

Bio sentences are the trait's ``bio`` with the survey label verbatim, except that traits marked ``lower``
(gender, education) start in lower case ("I consider my gender as male.", "My highest level of
education is high school.") unless the label starts with an acronym, and ``{article}`` is "a" or "an"
("Politically, I consider myself an Independent."); Portray lines are ``topic: label``.

Panels have the columns of :data:`anthology.method.answering.PANEL_COLUMNS`.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from typing import Literal, cast

import pandas as pd

from anthology.errors import ConfigError
from anthology.method import filters, prompts
from anthology.method.answering import PANEL_COLUMNS
from anthology.method.backstories import BackstoryConfig, apply_filters, stored_prompt
from anthology.method.backstories import Style as PromptStyle
from anthology.method.seeds import stable_int
from anthology.method.settings import BASELINES
from anthology.models.base import GenerateRequest, LanguageModel, Prompt
from anthology.surveys.schema import Survey, Trait

Style = Literal["qa", "bio", "portray"]
DP_TEMPERATURE = 1.1


def _respondent_traits(survey: Survey, respondent_id: Hashable, seed: int) -> list[tuple[Trait, str]]:
    """(trait, survey label) for the traits the baselines state (:func:`stated_traits`) that the
    respondent has, shuffled by a hash of (seed, respondent_id)."""
    traits = _respondents(survey)
    if respondent_id not in traits.index:
        raise ConfigError(f"survey {survey.name!r} has no respondent {respondent_id!r}")
    row = traits.loc[respondent_id]
    present = [
        (trait, str(row[trait.name]))
        for trait in stated_traits(survey)
        if trait.name in row.index and pd.notna(row[trait.name])
    ]
    return sorted(present, key=lambda t: stable_int(seed, respondent_id, t[0].name, "trait"))


def stated_traits(survey: Survey) -> tuple[Trait, ...]:
    """The traits the baselines state: those matching uses (the survey's mapped persona traits) that
    have a Bio sentence; for the canonical ones, the paper's six (not religion or region)."""
    return tuple(t for t in survey.codebook.matched_traits if t.bio is not None)


def _respondents(survey: Survey) -> pd.DataFrame:
    if survey.respondents is None:
        raise ConfigError(f"survey {survey.name!r} has no respondent data: load it with data=PATH")
    return survey.respondents.traits


def _sentence(trait: Trait, value: str) -> str:
    assert trait.bio is not None
    first = value.split(" ", 1)[0]
    if trait.lower and not (len(first) > 1 and first.isupper()):  # "BA level degree" stays
        value = value[:1].lower() + value[1:]
    article = "an" if value[:1].lower() in "aeiou" else "a"
    return trait.bio.format(value=value, article=article)


def _qa_block(survey: Survey, trait: Trait, value: str) -> str:
    labels = tuple(c.label for c in survey.codebook.traits[trait.name].categories if not c.exclude)
    wording, _ = trait.asked()
    return prompts.multiple_choice(wording, labels) + prompts.chosen(labels.index(value))


def demographic_text(survey: Survey, respondent_id: Hashable, style: Style = "bio", *, seed: int = 0) -> str:
    """A respondent's own demographics as a ``qa``, ``bio`` or ``portray`` text (see the module doc)."""
    traits = _respondent_traits(survey, respondent_id, seed)
    if style == "qa":
        return "\n\n".join(_qa_block(survey, trait, value) for trait, value in traits)
    if style == "bio":
        return " ".join([prompts.BIO_PREAMBLE, *(_sentence(trait, value) for trait, value in traits)])
    if style == "portray":
        lines = [f"{trait.topic or trait.name}: {value}" for trait, value in traits]
        return "\n".join([prompts.PORTRAY_PREAMBLE, *lines])
    raise ConfigError(f"unknown demographics style {style!r}; use qa, bio or portray")


def _ids(survey: Survey, respondent_ids: Sequence[Hashable] | None) -> list[Hashable]:
    return list(_respondents(survey).index if respondent_ids is None else respondent_ids)


def baseline_contexts(
    survey: Survey,
    methods: Sequence[str] = BASELINES,
    *,
    seed: int = 0,
    respondent_ids: Sequence[Hashable] | None = None,
    style: PromptStyle = "completion",
) -> pd.DataFrame:
    """A panel of baseline personas: one row per method and respondent (all, or ``respondent_ids``),
    ``persona_id`` None. In ``style="chat"`` the demographic text is the system message (and
    ``nothing`` is an empty conversation), so chat-only servers answer baselines too."""
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
    if style not in ("completion", "chat"):
        raise ConfigError(f"style must be 'completion' or 'chat', got {style!r}")
    ids = _ids(survey, respondent_ids)
    rows = [
        (method, rid, None, style, _baseline(survey, method, rid, seed, style))
        for method in methods
        for rid in ids
    ]
    return pd.DataFrame(rows, columns=list(PANEL_COLUMNS))


def _baseline(survey: Survey, method: str, respondent_id: Hashable, seed: int, style: PromptStyle) -> str:
    text = (
        "" if method == "nothing" else demographic_text(survey, respondent_id, cast(Style, method), seed=seed)
    )
    if style == "completion":
        return text
    return stored_prompt(({"role": "system", "content": text},) if text else ())


def _appended(style: str, context: str, text: str) -> str:
    """A stored context followed by ``text``: a new paragraph, or a new user turn in chat."""
    if style == "completion":
        return f"{context}\n\n{text}"
    return stored_prompt((*json.loads(context), {"role": "user", "content": text}))


def anthology_panel(
    matches: pd.DataFrame,
    backstories: pd.DataFrame,
    *,
    survey: Survey | None = None,
    append: Style | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A panel of matched personas (method ``anthology-{matching method}``): each match's backstory
    context, followed when ``append`` is ``"qa"`` or ``"bio"`` by the matched human's demographics
    (rows without a human, the raked panel's, get none)."""
    if append is not None and survey is None:
        raise ConfigError("appending the matched human's demographics needs the survey")
    stories = backstories.set_index("persona_id")[["style", "context"]]
    rows = []
    for match in matches.itertuples(index=False):
        if match.persona_id not in stories.index:
            raise ConfigError(f"matched persona {match.persona_id!r} is not in the backstories table")
        style, context = stories.loc[match.persona_id]
        if append is not None and pd.notna(match.respondent_id):
            assert survey is not None
            context = _appended(
                style, context, demographic_text(survey, match.respondent_id, append, seed=seed)
            )
        rows.append((f"anthology-{match.method}", match.respondent_id, match.persona_id, style, context))
    return pd.DataFrame(rows, columns=list(PANEL_COLUMNS))


def _dp_prompt(style: str, demographics: str, answer: str | None) -> Prompt:
    """The demographics, then the DP question (and the answer, when given)."""
    if style == "chat":
        return prompts.chat_transcript([(f"{demographics}\n\n{prompts.DP_QUESTION}", answer)])
    return f"{demographics}\n\n{prompts.qa_turn(prompts.DP_QUESTION, answer)}"


def dp_request(
    config: BackstoryConfig, demographics: str, seed: int, respondent_id: Hashable
) -> GenerateRequest:
    """The request that writes a respondent's DP backstory after their ``demographics`` text."""
    return GenerateRequest(
        _dp_prompt(config.style, demographics, None),
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
        stop=config.stop,
        seed=stable_int(seed, "dp", respondent_id),
    )


def dp_context(style: str, demographics: str, story: str) -> str:
    """A DP persona's stored context: the demographics, the DP question and its ``story``."""
    return stored_prompt(_dp_prompt(style, demographics, story))


def dp_backstories(
    model: LanguageModel,
    survey: Survey,
    *,
    seed: int = 0,
    style: Style = "bio",
    config: BackstoryConfig | None = None,
    respondent_ids: Sequence[Hashable] | None = None,
) -> pd.DataFrame:
    """Demographics-primed backstories, one per respondent (all, or ``respondent_ids``), in the
    backstories table format plus ``respondent_id``; ``persona_id`` is ``dp-{respondent_id}``.

    Generation and filtering follow ``config`` (default: :class:`BackstoryConfig` at temperature 1.1);
    its question and citizenship preamble are not used: the prompt is the demographics, then
    ``Question: Tell me about yourself.``. Each respondent's sampling seed is a hash of (seed, id).
    """
    config = config or BackstoryConfig(temperature=DP_TEMPERATURE)
    ids = _ids(survey, respondent_ids)
    texts = [demographic_text(survey, rid, style, seed=seed) for rid in ids]
    requests = [dp_request(config, text, seed, rid) for rid, text in zip(ids, texts, strict=True)]
    rows = []
    for rid, text, result in zip(ids, texts, model.generate(requests), strict=True):
        sample = result.samples[0]
        story = sample.text.strip()
        rows.append(
            {
                "persona_id": f"dp-{rid}",
                "respondent_id": rid,
                "style": config.style,
                "context": dp_context(config.style, text, story),
                "text": story,
                "tokens": sample.completion_tokens,
                "words": len(filters.words(story)),
                "finish_reason": sample.finish_reason,
            }
        )
    return apply_filters(model, pd.DataFrame(rows), config)


def dp_panel(dp: pd.DataFrame) -> pd.DataFrame:
    """The kept DP backstories as a panel (method ``dp``)."""
    kept = dp[dp["kept"]]
    return kept.assign(method="dp")[list(PANEL_COLUMNS)].reset_index(drop=True)
