"""The study's stages over a run directory, shared by the stage commands and ``anthology run``.

Each stage reads the previous stages' artifacts, writes its own, and returns what the manifest
records about it. Model calls go through the caller's :class:`~anthology.models.cache.CachedModel`,
so a stage started again after an interruption only computes what is not in the cache yet.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pandas as pd

from anthology.config import ASK_METHODS
from anthology.errors import ConfigError
from anthology.method.answering import AskConfig, compliance
from anthology.method.answering import ask as ask_panel
from anthology.method.backstories import BackstoryConfig, generate_backstories, summary
from anthology.method.baselines import BASELINES, anthology_panel, baseline_contexts, dp_backstories, dp_panel
from anthology.method.demographics import DemographicsConfig, agreement, survey_demographics
from anthology.method.matching import METHODS, match_survey
from anthology.models.base import LanguageModel
from anthology.store import RunDir
from anthology.surveys import Survey, load_survey

ANTHOLOGY_METHODS = tuple(f"anthology-{m}" for m in METHODS)


def backstories(
    run: RunDir, model: LanguageModel, n: int, config: BackstoryConfig, seed: int
) -> dict[str, Any]:
    frame = generate_backstories(model, n, seed=seed, config=config)
    run.write("backstories", frame)
    return {"n": n, "seed": seed, "config": asdict(config), "summary": summary(frame)}


def demographics(
    run: RunDir, model: LanguageModel, config: DemographicsConfig, seed: int, *, compare_modes: bool = False
) -> dict[str, Any]:
    stories = run.read("backstories")
    frame = survey_demographics(model, stories, seed=seed, config=config)
    run.write("demographics", frame)
    info: dict[str, Any] = {"seed": seed, "config": asdict(config)}
    info["noncompliant"] = frame.groupby("trait", sort=False)["noncompliant"].mean().round(4).to_dict()
    if compare_modes:
        other = survey_demographics(
            model,
            stories,
            seed=seed,
            config=replace(config, mode="logprob" if config.mode == "sample" else "sample"),
        )
        sampled, scored = (frame, other) if config.mode == "sample" else (other, frame)
        table = agreement(sampled, scored)
        table.to_csv(run.root / "demographics_agreement.csv", index=False)
        info["agreement"] = table.to_dict(orient="records")
    return info


def open_survey(ref: str, data: str | None, respondents: int | None, seed: int) -> Survey:
    """The target survey (a built-in name or a codebook path) and the seeded sample of its respondents
    that a study uses."""
    return load_survey(ref, data).sample(respondents, seed)


def match(
    run: RunDir,
    survey: Survey,
    methods: tuple[str, ...],
    objective: str,
    seed: int,
    *,
    survey_ref: str,
    data: str | None = None,
) -> dict[str, Any]:
    """Match the humans to the personas; ``survey_ref`` and ``data`` are recorded so later stages can
    load the same survey again."""
    matches, report = match_survey(
        survey,
        run.read("demographics"),
        methods or METHODS,
        seed=seed,
        objective=objective,  # type: ignore[arg-type]
    )
    run.write("humans", survey.humans())
    run.write("matches", matches)
    return {
        "seed": seed,
        "survey": {"name": survey_ref, "data": data, "respondents": len(survey.respondents or ())},
        "objective": objective,
        "report": report.to_dict(orient="records"),
    }


def run_survey(run: RunDir) -> Survey:
    """The survey and respondents the run matched (from the manifest and humans.parquet)."""
    info = run.manifest().get("stages", {}).get("match", {}).get("survey")
    if info is None:
        raise ConfigError(f"{run.root} has no matched survey: run `anthology match {run.root}` first")
    humans = run.read("humans")
    return load_survey(info["name"], info["data"]).subset(humans["respondent_id"].tolist())


def check_methods(methods: tuple[str, ...]) -> None:
    unknown = [m for m in methods if m not in ASK_METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}: choose from {', '.join(ASK_METHODS)}")


def model_record(name: str, model: LanguageModel) -> dict[str, Any]:
    """What the manifest keeps about the model: its name, full identity and how it scores options."""
    return {"name": name, "identity": model.identity, "scoring": model.capabilities.scoring}


def ask(
    run: RunDir,
    model: LanguageModel,
    methods: tuple[str, ...],
    config: AskConfig,
    seed: int,
    *,
    append: str | None = None,
    dp_style: str = "bio",
    dp_max_tokens: int = 1500,
) -> dict[str, Any]:
    """Matched personas and the chosen baselines answer the survey."""
    check_methods(methods)
    survey = run_survey(run)
    panels = []
    matching = [m.removeprefix("anthology-") for m in methods if m in ANTHOLOGY_METHODS]
    if matching:
        matches = run.read("matches")
        missing = sorted(set(matching) - set(matches["method"]))
        if missing:
            raise ConfigError(f"no {missing[0]!r} matches in {run.root}: run `anthology match` with it")
        chosen = matches[matches["method"].isin(matching)]
        panels.append(
            anthology_panel(chosen, run.read("backstories"), survey=survey, append=append, seed=seed)  # type: ignore[arg-type]
        )
    natural = run.manifest().get("stages", {}).get("backstories", {}).get("config", {})
    # Baselines follow the run's prompt style, so a chat-only server can answer them too.
    style = natural.get("style") or ("completion" if model.capabilities.completion else "chat")
    baselines = [m for m in methods if m in BASELINES]
    if baselines:
        panels.append(baseline_contexts(survey, baselines, seed=seed, style=style))
    info: dict[str, Any] = {
        "seed": seed,
        "methods": list(methods),
        "config": asdict(config),
        "append": append,
    }
    if "dp" in methods:
        # DP backstories pass the same filters as the run's natural ones, at the paper's temperature 1.1.
        natural = {k: tuple(v) if isinstance(v, list) else v for k, v in natural.items()}
        dp_config = BackstoryConfig(**{**natural, "temperature": 1.1, "max_tokens": dp_max_tokens})
        dp = dp_backstories(model, survey, seed=seed, style=dp_style, config=dp_config)  # type: ignore[arg-type]
        run.write("dp_backstories", dp)
        info["dp"] = summary(dp)
        panels.append(dp_panel(dp))
    answers, dists = ask_panel(
        model, pd.concat(panels, ignore_index=True), survey.questionnaire, seed=seed, config=config
    )
    run.write("answers", answers)
    run.write("distributions", dists)
    info["compliance"] = compliance(answers).to_dict(orient="records")
    return info
