"""The method's stages as commands, each reading and writing artifacts in a run directory:
``backstories`` -> ``demographics`` -> ``match`` -> ``ask``."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from anthology.cli.common import model_options, open_model
from anthology.errors import ConfigError

DEFAULT_MODEL = "gemma3-270m"
ANTHOLOGY_METHODS = ("anthology-greedy", "anthology-max-weight", "anthology-random")
ALL_METHODS = (*ANTHOLOGY_METHODS, "qa", "bio", "portray", "nothing", "dp")
run_dir_argument = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of every random step."
)


def _print_table(title: str, frame) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


class _Stage:
    """A stage run: the run directory, the model (the one the run already used unless --model is
    given), timing and the manifest entry."""

    def __init__(self, run_dir: Path, name: str, model_spec: dict[str, Any] | None = None) -> None:
        from anthology.store import RunDir

        self.run = RunDir(run_dir)
        self.name = name
        self.started = time.perf_counter()
        self.model = self.cache = None
        if model_spec is not None:
            recorded = self.run.manifest().get("model", {}).get("name")
            model_spec = {**model_spec, "model": model_spec["model"] or recorded or DEFAULT_MODEL}
            self.model, self.cache = open_model(model_spec, default_cache=self.run.cache_path, progress=name)
            self.model_name = model_spec["model"]

    def finish(self, **info: Any) -> None:
        entry = {"seconds": round(time.perf_counter() - self.started, 3), **info}
        if self.model is None:
            self.run.record(self.name, entry)
            return
        s = self.model.stats
        entry["model_calls"] = {
            "calls": s.model_calls,
            "cache_hits": s.hits,
            "computed": s.misses,
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
        }
        self.run.record(self.name, entry, model={"name": self.model_name, "identity": self.model.identity})
        self.model.close()
        if self.cache is not None:
            self.cache.close()
        took = entry["seconds"]
        Console(stderr=True).print(
            f"[dim]{self.name}: {s.model_calls} model calls, {s.hits} cache hits, {took:.1f}s[/dim]"
        )


@click.command()
@run_dir_argument
@click.option(
    "-n",
    "--n",
    "count",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Backstories to generate.",
)
@click.option(
    "--style",
    type=click.Choice(["completion", "chat"]),
    default="completion",
    show_default=True,
    help="Interview as completion text (base models, the paper) or chat turns.",
)
@click.option("--max-tokens", type=click.IntRange(1), default=1500, show_default=True)
@click.option("--temperature", type=click.FloatRange(0), default=1.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--no-preamble", is_flag=True, help='Skip the "Are you a US citizen?" turn.')
@click.option("--min-tokens", type=int, default=41, show_default=True, help="Drop shorter backstories.")
@click.option("--min-words", type=int, default=0, show_default=True, help="Drop shorter backstories.")
@click.option(
    "--first-person",
    type=click.Choice(["heuristic", "judge", "off"]),
    default="heuristic",
    show_default=True,
    help="First-person narrative check.",
)
@click.option(
    "--near-duplicate",
    type=float,
    default=0.8,
    show_default=True,
    help="Jaccard similarity above which a backstory duplicates an earlier one (>1: off).",
)
@seed_option
@model_options()
def backstories(
    run_dir: Path,
    count: int,
    style: str,
    max_tokens: int,
    temperature: float,
    top_p: float,
    no_preamble: bool,
    min_tokens: int,
    min_words: int,
    first_person: str,
    near_duplicate: float,
    seed: int,
    model_spec: dict[str, Any],
) -> None:
    """Stage 1: generate a pool of backstories into RUN_DIR/backstories.parquet."""
    from anthology.method.backstories import BackstoryConfig, generate_backstories, summary

    config = BackstoryConfig(
        style=style,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,  # type: ignore[arg-type]
        preamble=not no_preamble,
        min_tokens=min_tokens,
        min_words=min_words,
        first_person=first_person,
        near_duplicate=near_duplicate,
    )  # type: ignore[arg-type]
    stage = _Stage(run_dir, "backstories", model_spec)
    frame = generate_backstories(stage.model, count, seed=seed, config=config)
    stage.run.write("backstories", frame)
    report = summary(frame)
    Console().print(
        f"backstories: {report['generated']} generated, {report['kept']} kept; "
        f"dropped: {report['dropped'] or 'none'}; {report['stopped_at_max_tokens']} hit --max-tokens"
    )
    stage.finish(seed=seed, config=asdict(config), summary=report)


@click.command()
@run_dir_argument
@click.option(
    "--mode",
    type=click.Choice(["sample", "logprob"]),
    default="sample",
    show_default=True,
    help="40 parsed samples per question (the paper) or one scoring pass.",
)
@click.option("--samples", type=click.IntRange(1), default=40, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), default=128, show_default=True)
@seed_option
@model_options(default_model=None)
def demographics(
    run_dir: Path, mode: str, samples: int, max_tokens: int, seed: int, model_spec: dict[str, Any]
) -> None:
    """Stage 3: ask every kept backstory the demographic survey (RUN_DIR/demographics.parquet)."""
    from anthology.method.demographics import DemographicsConfig, survey_demographics

    config = DemographicsConfig(mode=mode, samples=samples, max_tokens=max_tokens)  # type: ignore[arg-type]
    stage = _Stage(run_dir, "demographics", model_spec)
    stories = stage.run.read("backstories")
    frame = survey_demographics(stage.model, stories, seed=seed, config=config)
    stage.run.write("demographics", frame)
    per_trait = (
        frame.groupby("trait", sort=False)
        .agg(personas=("persona_id", "nunique"), noncompliant=("noncompliant", "mean"))
        .reset_index()
    )
    _print_table("demographic survey", per_trait)
    stage.finish(seed=seed, config=asdict(config))


@click.command()
@run_dir_argument
@click.option(
    "--survey",
    "survey_name",
    default="gss2018-spending",
    show_default=True,
    help="Built-in survey name or a codebook YAML path.",
)
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), help="Respondent data file.")
@click.option(
    "--respondents", type=click.IntRange(1), help="A seeded random sample of this many respondents."
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(["greedy", "max-weight", "random"]),
    help="Matching methods (default: all three).",
)
@click.option(
    "--objective",
    type=click.Choice(["weight", "log"]),
    default="weight",
    show_default=True,
    help="max-weight: maximise the sum of weights (the paper) or of log-weights.",
)
@seed_option
def match(
    run_dir: Path,
    survey_name: str,
    data: Path | None,
    respondents: int | None,
    methods: tuple[str, ...],
    objective: str,
    seed: int,
) -> None:
    """Stage 4: match personas to the survey's respondents (RUN_DIR/matches.parquet, humans.parquet)."""
    from anthology.method.matching import METHODS, match_survey
    from anthology.surveys import load_survey

    stage = _Stage(run_dir, "match")
    survey = load_survey(survey_name, data).sample(respondents, seed)
    demographics_frame = stage.run.read("demographics")
    matches, report = match_survey(
        survey, demographics_frame, methods or METHODS, seed=seed, objective=objective
    )  # type: ignore[arg-type]
    stage.run.write("humans", survey.humans())
    stage.run.write("matches", matches)
    _print_table(f"matching {len(survey.respondents)} respondents of {survey.name}", report)
    stage.finish(
        seed=seed,
        survey={"name": survey_name, "data": str(data) if data else None, "respondents": respondents},
        objective=objective,
        report=report.to_dict(orient="records"),
    )


@click.command()
@run_dir_argument
@click.option(
    "--methods",
    default=",".join(ALL_METHODS),
    show_default=True,
    help="Comma-separated personas to ask: anthology-greedy, anthology-max-weight, "
    "anthology-random, qa, bio, portray, nothing, dp.",
)
@click.option(
    "--context",
    "context_mode",
    type=click.Choice(["sequential", "independent"]),
    default="sequential",
    show_default=True,
    help="Earlier answers kept in context (the paper), or each question on its own.",
)
@click.option("--mode", type=click.Choice(["sample", "logprob"]), default="sample", show_default=True)
@click.option("--append", type=click.Choice(["qa", "bio"]), help="Append the matched human's demographics.")
@click.option(
    "--max-attempts",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Samples per question before an answer counts as non-compliant.",
)
@click.option("--dp-style", type=click.Choice(["bio", "qa"]), default="bio", show_default=True)
@click.option("--dp-max-tokens", type=click.IntRange(1), default=1500, show_default=True)
@seed_option
@model_options(default_model=None)
def ask(
    run_dir: Path,
    methods: str,
    context_mode: str,
    mode: str,
    append: str | None,
    max_attempts: int,
    dp_style: str,
    dp_max_tokens: int,
    seed: int,
    model_spec: dict[str, Any],
) -> None:
    """Stage 5: matched personas and baselines answer the survey (RUN_DIR/answers.parquet,
    distributions.parquet)."""
    import pandas as pd

    from anthology.method.answering import AskConfig, compliance
    from anthology.method.answering import ask as ask_panel
    from anthology.method.backstories import BackstoryConfig
    from anthology.method.baselines import (
        BASELINES,
        anthology_panel,
        baseline_contexts,
        dp_backstories,
        dp_panel,
    )

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in ALL_METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} in --methods: choose from {', '.join(ALL_METHODS)}")
    stage = _Stage(run_dir, "ask", model_spec)
    survey = _run_survey(stage.run)
    config = AskConfig(context=context_mode, mode=mode, max_attempts=max_attempts)  # type: ignore[arg-type]
    panels = []
    matching = [m.removeprefix("anthology-") for m in chosen if m in ANTHOLOGY_METHODS]
    if matching:
        matches = stage.run.read("matches")
        missing = sorted(set(matching) - set(matches["method"]))
        if missing:
            raise ConfigError(f"no {missing[0]!r} matches in {stage.run.root}: run `anthology match` with it")
        panels.append(
            anthology_panel(
                matches[matches["method"].isin(matching)],
                stage.run.read("backstories"),
                survey=survey,
                append=append,
                seed=seed,
            )
        )  # type: ignore[arg-type]
    baselines = [m for m in chosen if m in BASELINES]
    if baselines:
        panels.append(baseline_contexts(survey, baselines, seed=seed))
    if "dp" in chosen:
        # DP backstories pass the same filters as the run's natural ones, at the paper's temperature 1.1.
        natural = stage.run.manifest().get("stages", {}).get("backstories", {}).get("config", {})
        natural = {k: tuple(v) if isinstance(v, list) else v for k, v in natural.items()}
        dp_config = BackstoryConfig(**{**natural, "temperature": 1.1, "max_tokens": dp_max_tokens})
        dp = dp_backstories(stage.model, survey, seed=seed, style=dp_style, config=dp_config)  # type: ignore[arg-type]
        stage.run.write("dp_backstories", dp)
        Console().print(f"dp: {int(dp['kept'].sum())} of {len(dp)} demographics-primed backstories kept")
        panels.append(dp_panel(dp))
    answers, dists = ask_panel(
        stage.model, pd.concat(panels, ignore_index=True), survey.questionnaire, seed=seed, config=config
    )
    stage.run.write("answers", answers)
    stage.run.write("distributions", dists)
    _print_table("answers", compliance(answers))
    stage.finish(seed=seed, methods=chosen, config=asdict(config), append=append)


def _run_survey(run) -> Any:
    """The survey and respondents the run matched (from the manifest and humans.parquet)."""
    from anthology.surveys import load_survey

    info = run.manifest().get("stages", {}).get("match", {}).get("survey")
    if info is None:
        raise ConfigError(f"{run.root} has no matched survey: run `anthology match {run.root}` first")
    humans = run.read("humans")
    return load_survey(info["name"], info["data"]).subset(humans["respondent_id"].tolist())
