"""Stage 4: match personas to a survey's respondents by demographics.

The weight of (human i, persona j) is the product over traits of the probability that persona j has
human i's category, with the persona's distribution mapped onto the survey's categories (fine persona
bins summed into the survey's bins; "Prefer not to answer", unmapped and non-compliant mass dropped
and the rest renormalised; all zero: uniform). A human whose category is missing or refused counts as
uniform, which multiplies every persona's weight by the same 1/K. Weights are kept in log space.

* ``greedy``: each human gets the persona of largest weight; a persona may serve several humans.
* ``max-weight``: a one-to-one assignment maximising the total weight (Hungarian algorithm), which
  needs at least as many personas as humans. ``objective="log"`` maximises the sum of log-weights
  (the product of the matched weights) instead of the paper's sum of weights.
* ``random``: a persona drawn at random for each human (the paper's ablation).

Greedy and random stream over humans in chunks, so they never hold the whole humans x personas
matrix; max-weight needs it (n_humans x n_personas float64).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from anthology.errors import ConfigError
from anthology.surveys.schema import Survey, SurveyTrait
from anthology.surveys.traits import CANONICAL_TRAITS

Method = Literal["greedy", "max-weight", "random"]
METHODS: tuple[Method, ...] = ("greedy", "max-weight", "random")
_CHUNK = 2048  # humans per block of the weight matrix


@dataclass(frozen=True)
class TraitTable:
    """One trait's side of matching: the personas' probabilities over the survey's categories
    (``personas``, shape [n_personas, K]) and each human's category index (``humans``, -1 unknown)."""

    name: str
    labels: tuple[str, ...]
    personas: np.ndarray
    humans: np.ndarray


def persona_probabilities(
    demographics: pd.DataFrame, trait: str, survey_trait: SurveyTrait, persona_ids: Sequence[str]
) -> np.ndarray:
    """[n_personas, K] probabilities of the survey's K categories for one canonical trait.

    ``demographics`` is the tidy stage-3 table (``persona_id``, ``trait``, ``option``, ``probability``).
    """
    canonical = CANONICAL_TRAITS[trait].categories
    rows = demographics[demographics["trait"] == trait]
    wide = rows.pivot_table(
        index="persona_id", columns="option", values="probability", aggfunc="sum", observed=True
    )
    wide = wide.reindex(index=list(persona_ids), columns=list(canonical)).fillna(0.0)
    answered = set(rows["persona_id"])
    missing = [p for p in persona_ids if p not in answered]
    if missing:
        raise ConfigError(
            f"no {trait!r} answers for {len(missing)} persona(s) (e.g. {missing[0]!r}); "
            "run the demographic survey on every backstory first"
        )
    fine = wide.to_numpy(dtype=np.float64)
    column = {label: i for i, label in enumerate(canonical)}
    mapped = np.zeros((len(persona_ids), len(survey_trait.categories)))
    for k, category in enumerate(survey_trait.categories):
        for label in category.persona:
            mapped[:, k] += fine[:, column[label]]
    totals = mapped.sum(axis=1, keepdims=True)
    uniform = np.full_like(mapped, 1.0 / mapped.shape[1])
    return np.where(totals > 0, mapped / np.where(totals > 0, totals, 1.0), uniform)


def trait_tables(survey: Survey, demographics: pd.DataFrame, persona_ids: Sequence[str]) -> list[TraitTable]:
    """The traits both sides know: canonical traits the survey maps and its respondents carry."""
    if survey.respondents is None:
        raise ConfigError(f"survey {survey.name!r} has no respondents to match: give its data file")
    people = survey.respondents.traits
    tables = []
    for name, survey_trait in survey.codebook.traits.items():
        if name not in CANONICAL_TRAITS or name not in people.columns:
            continue
        if not any(c.persona for c in survey_trait.categories):
            continue
        index = {label: k for k, label in enumerate(survey_trait.labels)}
        humans = people[name].astype(object).map(index).fillna(-1).to_numpy(dtype=np.int64)
        tables.append(
            TraitTable(
                name=name,
                labels=survey_trait.labels,
                personas=persona_probabilities(demographics, name, survey_trait, persona_ids),
                humans=humans,
            )
        )
    if not tables:
        raise ConfigError(f"survey {survey.name!r} maps no persona trait; nothing to match on")
    return tables


def log_weight_blocks(tables: Sequence[TraitTable], chunk: int = _CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks (first human, [chunk, n_personas] log-weights) of the humans x personas matrix."""
    with np.errstate(divide="ignore"):
        logs = [np.log(t.personas).T for t in tables]  # [K, n_personas]
    n_humans = len(tables[0].humans)
    for start in range(0, n_humans, chunk):
        block = np.zeros((min(chunk, n_humans - start), logs[0].shape[1]))
        for table, log in zip(tables, logs, strict=True):
            codes = table.humans[start : start + chunk]
            known = codes >= 0
            block[known] += log[codes[known]]
            block[~known] += np.log(1.0 / log.shape[0])
        yield start, block


def match(
    tables: Sequence[TraitTable],
    method: Method,
    *,
    seed: int = 0,
    objective: Literal["weight", "log"] = "weight",
) -> tuple[np.ndarray, np.ndarray]:
    """Persona index and log-weight for every human."""
    n_humans, n_personas = len(tables[0].humans), tables[0].personas.shape[0]
    if method == "max-weight" and n_personas < n_humans:
        raise ConfigError(
            f"max-weight matching is one-to-one and needs at least as many personas as humans "
            f"({n_personas} personas < {n_humans} humans): generate more backstories, sample fewer "
            "respondents, or use greedy matching"
        )
    chosen = np.empty(n_humans, dtype=np.int64)
    weights = np.empty(n_humans)
    if method == "random":
        chosen[:] = np.random.default_rng(seed).integers(n_personas, size=n_humans)
        for start, block in log_weight_blocks(tables):
            rows = np.arange(len(block))
            weights[start : start + len(block)] = block[rows, chosen[start : start + len(block)]]
        return chosen, weights
    if method == "greedy":
        for start, block in log_weight_blocks(tables):
            best = block.argmax(axis=1)
            chosen[start : start + len(block)] = best
            weights[start : start + len(block)] = block[np.arange(len(block)), best]
        return chosen, weights
    if method == "max-weight":
        from scipy.optimize import linear_sum_assignment

        full = np.concatenate([block for _, block in log_weight_blocks(tables)])
        gain = (
            np.exp(full) if objective == "weight" else np.maximum(full, -1e4)
        )  # a zero weight: far below any real one
        rows, cols = linear_sum_assignment(gain, maximize=True)
        chosen[rows] = cols
        weights[rows] = full[rows, cols]
        return chosen, weights
    raise ConfigError(f"unknown matching method {method!r}: use one of {', '.join(METHODS)}")


def agreement(tables: Sequence[TraitTable], chosen: np.ndarray) -> dict[str, float]:
    """Per trait, the share of humans (with a known category) whose matched persona's most likely
    category is theirs."""
    shares = {}
    for table in tables:
        known = table.humans >= 0
        top = table.personas.argmax(axis=1)[chosen]
        shares[table.name] = (
            float((top[known] == table.humans[known]).mean()) if known.any() else float("nan")
        )
    return shares


def match_survey(
    survey: Survey,
    demographics: pd.DataFrame,
    methods: Sequence[Method] = METHODS,
    *,
    seed: int = 0,
    objective: Literal["weight", "log"] = "weight",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match every respondent by each method.

    Returns ``matches`` (method, respondent_id, persona_id, log_weight) and a ``report`` with one row
    per method: the mean log-weight and, per trait, the share of humans whose matched persona's most
    likely category equals theirs.
    """
    persona_ids = list(dict.fromkeys(demographics["persona_id"]))
    tables = trait_tables(survey, demographics, persona_ids)
    respondent_ids = survey.respondents.traits.index.to_numpy()  # type: ignore[union-attr]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown matching method {unknown[0]!r}: use one of {', '.join(METHODS)}")
    if "max-weight" in methods and len(persona_ids) < len(respondent_ids):
        match(tables, "max-weight")  # raises the one-line error before any other work
    frames, report = [], []
    for method in methods:
        chosen, log_w = match(tables, method, seed=seed, objective=objective)
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "respondent_id": respondent_ids,
                    "persona_id": np.asarray(persona_ids, dtype=object)[chosen],
                    "log_weight": log_w,
                }
            )
        )
        report.append(
            {
                "method": method,
                "mean_log_weight": float(np.mean(log_w)),
                **{f"agree_{k}": v for k, v in agreement(tables, chosen).items()},
            }
        )
    return pd.concat(frames, ignore_index=True), pd.DataFrame(report)
