"""Stage 3: the demographic survey of each backstory.

Each persona is asked the multiple-choice question of each trait the survey maps (its codebook's
persona traits: the canonical ones and any it declares), after its backstory::

    <context>

    Question: What is your age?
    (A) 18-29
    ...
    Answer with (A), (B), (C), (D), or (E).
    Answer:

* ``sample`` (the paper): 40 answers per question at temperature 1.0 (up to 128 tokens, stop at a
  newline or ``Question``), each parsed by letter, then option text, then a number; answers that name
  no option fall in a non-compliant bucket.
* ``logprob`` (fast): one scoring pass reads the probability of each option's answer forms
  (`` (A`` and `` A)``, `` A.``, `` A:``, `` A\n``: see :func:`anthology.method.prompts.answer_forms`);
  the mass on anything else is the non-compliant share. Each (persona, trait) keeps ``coverage``, the
  probability mass the backend observed, and ``imputed``, the mass it filled in (top-k servers).

Every sampled request's seed is a hash of (seed, stage, persona, trait), so no two personas or traits
share random numbers.

A trait's swapped pair (party's Democrat/Republican) is put in a random order per persona (seeded), and
answers are mapped back to the trait's option order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from anthology.errors import ConfigError
from anthology.method import prompts
from anthology.method.backstories import context_prompt
from anthology.method.parsing import parse_choice
from anthology.method.seeds import stable_int
from anthology.method.settings import DemographicsConfig
from anthology.models.base import GenerateRequest, LanguageModel, Prompt, ScoreRequest
from anthology.surveys.schema import Trait
from anthology.surveys.traits import CANONICAL_TRAITS

#: About how many prompts are built and answered at a time (whole personas: all their traits), or
#: four of the model's cache chunks where that is more (Ray: 512 per worker).
BLOCK_REQUESTS = 16_384


def swapped(seed: int, persona_id: str) -> bool:
    """Whether this persona sees the swap pair (Democrat/Republican) in reverse order: a fair coin
    that depends only on the seed and the persona."""
    return bool(hashlib.sha256(f"{seed}:{persona_id}:swap".encode()).digest()[0] & 1)


def question_prompt(context: Prompt, block: str) -> Prompt:
    """The context followed by a question block: a new paragraph, or a new user turn in chat."""
    if isinstance(context, str):
        return f"{context}\n\n{block}" if context else block
    return (*context, {"role": "user", "content": block})


def continuations(context: Prompt, n_options: int) -> tuple[str, ...]:
    """Scored option continuations for a prompt: both answer forms, as a completion or a chat answer."""
    return prompts.option_continuations(n_options, chat=not isinstance(context, str))


def asked_traits(
    config: DemographicsConfig, definitions: Mapping[str, Trait], matched: Sequence[Trait]
) -> tuple[Trait, ...]:
    """The traits the demographic survey asks: ``config.traits`` (names among ``definitions``, the
    survey's persona traits) or, by default, the ``matched`` ones, those matching will use."""
    if config.traits is None:
        return tuple(matched)
    unknown = [name for name in config.traits if name not in definitions]
    if unknown:
        raise ConfigError(
            f"demographics.traits names {unknown[0]!r}, which is not a persona trait of this survey "
            f"({', '.join(definitions)}); declare it under the codebook's persona_traits: or drop it"
        )
    return tuple(definitions[name] for name in config.traits)


def survey_demographics(
    model: LanguageModel,
    backstories: pd.DataFrame,
    *,
    seed: int = 0,
    config: DemographicsConfig | None = None,
    traits: Sequence[Trait] | None = None,
) -> pd.DataFrame:
    """Tidy trait distributions: one row per (persona, trait, option) with ``probability``, the
    (persona, trait)'s ``noncompliant`` share, ``mode`` and ``swapped``. ``traits`` are the traits to
    ask (default: ``config.traits`` among the canonical ones, or all eight)."""
    config = config or DemographicsConfig()
    if traits is None:
        traits = asked_traits(config, CANONICAL_TRAITS, tuple(CANONICAL_TRAITS.values()))
    kept = backstories[backstories["kept"]] if "kept" in backstories else backstories
    # Personas in blocks of about BLOCK_REQUESTS prompts: a block's prompts and replies are dropped once
    # its rows are a frame (100,000 backstories x 8 traits would be 800,000 prompts, each holding its
    # backstory, and 6.5 million row dicts at once).
    step = max(1, max(BLOCK_REQUESTS, 4 * getattr(model, "chunk_size", 0)) // max(1, len(traits)))
    frames = [
        _survey_block(model, kept.iloc[start : start + step], seed, config, traits)
        for start in range(0, len(kept), step)
    ]
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _survey_block(
    model: LanguageModel,
    kept: pd.DataFrame,
    seed: int,
    config: DemographicsConfig,
    traits: Sequence[Trait],
) -> pd.DataFrame:
    """The tidy rows of some personas (see :func:`survey_demographics`)."""
    jobs = demographic_jobs(kept, seed, traits)
    requests = demographic_requests(jobs, seed, config)
    nan = float("nan")
    seen = [(nan, nan)] * len(jobs)  # (observed, imputed) probability mass per job, logprob mode
    if config.mode == "logprob":
        scored = model.score(requests)
        masses = [
            np.array(prompts.option_masses(r.logprobs, len(opts)))
            for r, (_, _, _, opts, _) in zip(scored, jobs, strict=True)
        ]
        seen = [(r.coverage, r.imputed_mass) for r in scored]
    else:
        masses = [
            _counts(result.texts, opts, trait.numeric) / config.samples
            for result, (_, trait, _, opts, _) in zip(model.generate(requests), jobs, strict=True)
        ]
    rows = []
    for (persona_id, trait, _, options, flip), mass, (observed, imputed) in zip(
        jobs, masses, seen, strict=True
    ):
        rows += _rows(persona_id, trait, options, mass, flip, config.mode, observed, imputed)
    return pd.DataFrame(rows)


Job = tuple[str, Trait, Prompt, tuple[str, ...], bool]
"""One demographic question put to one persona: persona id, trait, prompt, options as asked, and
whether the trait's swapped pair is reversed."""


def demographic_jobs(kept: pd.DataFrame, seed: int, traits: Sequence[Trait]) -> list[Job]:
    """Every trait's question after every persona's context (personas in order, traits in order)."""
    jobs = []
    for row in kept.itertuples():
        context = context_prompt(row.style, row.context)
        flip = swapped(seed, row.persona_id)
        for trait in traits:
            wording, options = trait.asked(flip)
            block = prompts.multiple_choice(wording, options)
            jobs.append(
                (row.persona_id, trait, question_prompt(context, block), options, flip and bool(trait.swap))
            )
    return jobs


def demographic_requests(
    jobs: Sequence[Job], seed: int, config: DemographicsConfig
) -> list[ScoreRequest] | list[GenerateRequest]:
    """The model request of each job: its options scored (logprob mode) or ``config.samples``
    answers sampled, seeded by (seed, persona, trait)."""
    if config.mode == "logprob":
        return [ScoreRequest(p, continuations(p, len(opts))) for _, _, p, opts, _ in jobs]
    return [
        GenerateRequest(
            p,
            n=config.samples,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            stop=config.stop,
            seed=stable_int(seed, "demographics", persona_id, trait.name),
        )
        for persona_id, trait, p, _, _ in jobs
    ]


def _counts(texts: Sequence[str], options: Sequence[str], numeric: bool) -> np.ndarray:
    counts = np.zeros(len(options))
    for text in texts:
        choice = parse_choice(text, options, numeric=numeric)
        if choice is not None:
            counts[choice] += 1
    return counts


def _rows(
    persona_id: str,
    trait: Trait,
    asked: Sequence[str],
    mass: np.ndarray,
    flip: bool,
    mode: str,
    observed: float,
    imputed: float,
) -> list[dict[str, object]]:
    by_label = dict(zip(asked, mass, strict=True))
    noncompliant = max(0.0, 1.0 - float(mass.sum()))
    return [
        {
            "persona_id": persona_id,
            "trait": trait.name,
            "option": label,
            "position": k,
            "probability": float(by_label[label]),
            "noncompliant": noncompliant,
            "coverage": observed,
            "imputed": imputed,
            "mode": mode,
            "swapped": flip,
        }
        for k, label in enumerate(trait.categories, 1)
    ]


def agreement(sampled: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """How far the log-prob mode agrees with the 40-sample estimate, per trait: the share of personas
    whose most likely option is the same, and the mean total-variation distance between the two
    distributions (each renormalised over the options)."""

    def normalised(frame: pd.DataFrame) -> pd.DataFrame:
        wide = frame.pivot_table(index=["trait", "persona_id"], columns="position", values="probability")
        return wide.div(wide.sum(axis=1).where(lambda s: s > 0, 1.0), axis=0).fillna(0.0)

    a, b = normalised(sampled), normalised(scored)
    a, b = a.align(b, join="inner", fill_value=0.0)
    same_top = (a.to_numpy().argmax(axis=1) == b.to_numpy().argmax(axis=1)).astype(float)
    tv = 0.5 * np.abs(a.to_numpy() - b.to_numpy()).sum(axis=1)
    table = pd.DataFrame({"trait": a.index.get_level_values("trait"), "same_top": same_top, "tv": tv})
    return (
        table.groupby("trait", sort=False)
        .agg(personas=("tv", "size"), top_agreement=("same_top", "mean"), mean_tv_distance=("tv", "mean"))
        .reset_index()
    )
