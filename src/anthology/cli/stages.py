"""The method's stages as commands, each reading and writing artifacts in a run directory:
``backstories`` -> ``demographics`` -> ``match`` -> ``ask``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from anthology.cli.common import model_options, open_model
from anthology.config import ASK_METHODS

DEFAULT_MODEL = "gemma3-270m"
run_dir_argument = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of every random step."
)


def _records(records: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame(records)


def _frame(mapping: dict[str, Any], key: str, value: str):
    import pandas as pd

    return pd.DataFrame({key: list(mapping), value: list(mapping.values())})


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
        from anthology.pipeline import model_record

        self.run.record(self.name, entry, model=model_record(self.model_name, self.model))
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
    from anthology import pipeline
    from anthology.method.backstories import BackstoryConfig

    config = BackstoryConfig(
        style=style,  # type: ignore[arg-type]
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        preamble=not no_preamble,
        min_tokens=min_tokens,
        min_words=min_words,
        first_person=first_person,  # type: ignore[arg-type]
        near_duplicate=near_duplicate,
    )
    stage = _Stage(run_dir, "backstories", model_spec)
    info = pipeline.backstories(stage.run, stage.model, count, config, seed)
    report = info["summary"]
    Console().print(
        f"backstories: {report['generated']} generated, {report['kept']} kept; dropped: "
        f"{report['dropped'] or 'none'}; {report['stopped_at_max_tokens']} hit --max-tokens"
    )
    stage.finish(**info)


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
@click.option(
    "--agreement",
    is_flag=True,
    help="Also run the other mode and report how far log-prob and sampled estimates agree.",
)
@seed_option
@model_options(default_model=None)
def demographics(
    run_dir: Path,
    mode: str,
    samples: int,
    max_tokens: int,
    agreement: bool,
    seed: int,
    model_spec: dict[str, Any],
) -> None:
    """Stage 3: ask every kept backstory the demographic survey (RUN_DIR/demographics.parquet)."""
    from anthology import pipeline
    from anthology.method.demographics import DemographicsConfig

    config = DemographicsConfig(mode=mode, samples=samples, max_tokens=max_tokens)  # type: ignore[arg-type]
    stage = _Stage(run_dir, "demographics", model_spec)
    info = pipeline.demographics(stage.run, stage.model, config, seed, compare_modes=agreement)
    _print_table("non-compliant share per trait", _frame(info["noncompliant"], "trait", "noncompliant"))
    if agreement:
        _print_table(f"log-prob vs {samples}-sample estimates", _records(info["agreement"]))
    stage.finish(**info)


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
    from anthology import pipeline

    stage = _Stage(run_dir, "match")
    survey = pipeline.open_survey(survey_name, str(data) if data else None, respondents, seed)
    info = pipeline.match(
        stage.run, survey, methods, objective, seed, survey_ref=survey_name, data=str(data) if data else None
    )
    _print_table(f"matching {len(survey.respondents)} respondents of {survey.name}", _records(info["report"]))
    stage.finish(**info)


@click.command()
@run_dir_argument
@click.option(
    "--methods",
    default=",".join(ASK_METHODS),
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
    from anthology import pipeline
    from anthology.method.answering import AskConfig

    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    pipeline.check_methods(chosen)
    config = AskConfig(context=context_mode, mode=mode, max_attempts=max_attempts)  # type: ignore[arg-type]
    stage = _Stage(run_dir, "ask", model_spec)
    info = pipeline.ask(
        stage.run,
        stage.model,
        chosen,
        config,
        seed,
        append=append,
        dp_style=dp_style,
        dp_max_tokens=dp_max_tokens,
    )
    if "dp" in info:
        Console().print(
            f"dp: {info['dp']['kept']} of {info['dp']['generated']} demographics-primed backstories kept"
        )
    _print_table("answers", _records(info["compliance"]))
    stage.finish(**info)
