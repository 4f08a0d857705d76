"""``anthology run``: the whole study, from backstories to the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from anthology.cli.common import model_options
from anthology.cli.options import field_type
from anthology.cli.stages import profile_option, yes_option
from anthology.config import BackstoriesSettings, RunConfig, SurveySettings
from anthology.method.settings import PoolConfig

#: Shortcuts for the settings a study changes most, by their dotted config keys.
SHORTCUTS = {
    "survey": "survey.name",
    "data": "survey.data",
    "personas": "backstories.n",
    "respondents": "survey.respondents",
    "seed": "seed",
    "out": "out",
    "backstory_tokens": "backstories.max_tokens",
    "preamble": "backstories.preamble",
    "demographics_mode": "demographics.mode",
    "ask_mode": "ask.mode",
    "context": "ask.context",
    "top_up": "pool.top_up",
}


@click.command()
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@profile_option
@click.option("--survey", help="Built-in survey name or codebook path (default: gss2018-spending).")
@click.option("--data", help="Respondent data file for the survey.")
@click.option(
    "--personas",
    type=field_type(BackstoriesSettings, "n"),
    help="Backstories to generate (the persona pool).",
)
@click.option(
    "--respondents",
    type=field_type(SurveySettings, "respondents"),
    help="A seeded sample of this many respondents.",
)
@click.option("--seed", type=field_type(RunConfig, "seed"), help="Seed of every random step.")
@click.option("--out", help="Run directory (default: runs/default).")
@click.option(
    "--backstory-tokens", type=field_type(BackstoriesSettings, "max_tokens"), help="Max tokens per backstory."
)
@click.option(
    "--preamble",
    metavar="TEXT",
    help='A yes/no question that opens each interview (default: the paper\'s "Are you a US citizen?"; '
    "none for presets that need it, e.g. smollm2-135m).",
)
@click.option("--no-preamble", is_flag=True, help="Open the interview with its question, no preamble.")
@click.option("--demographics-mode", type=click.Choice(["sample", "logprob"]))
@click.option("--ask-mode", type=click.Choice(["sample", "logprob"]))
@click.option("--context", type=click.Choice(["sequential", "independent"]))
@click.option(
    "--top-up",
    type=field_type(PoolConfig, "top_up"),
    metavar="N",
    help="Generate up to N more backstories while the pool's coverage audit fails (docs/pool.md).",
)
@model_options()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print each model stage's requests, tokens, time and cost (with prices) as ranges; run nothing.",
)
@yes_option
def run(
    config_file: Path | None,
    profile: str | None,
    dry_run: bool,
    yes: bool,
    model_flags: dict[str, Any],
    executor_flags: dict[str, Any],
    cache_path: Path | None,
    no_cache: bool,
    no_preamble: bool,
    **shortcuts: Any,
) -> None:
    """Run a whole study into a run directory: backstories, demographic survey, matching (greedy,
    max-weight, random), baselines, answering, evaluation and report. With no arguments: the bundled
    model on the GSS 2018 spending battery with the paper's settings (--profile fast for a quick pilot).
    Run the same command again to resume after an interruption."""
    from anthology.cli.common import open_model, run_cache_path
    from anthology.config import load_config
    from anthology.study import run_study

    overrides: dict[str, Any] = {key: shortcuts[flag] for flag, key in SHORTCUTS.items()}
    if no_preamble:
        overrides["backstories.preamble"] = False
    overrides |= {f"model.{key}": value for key, value in model_flags.items()}
    overrides |= {f"executor.{key}": value for key, value in executor_flags.items()}
    overrides["profile"] = profile
    if model_flags.get("chat"):
        overrides["backstories.style"] = "chat"
    config = load_config(config_file, overrides)

    def opened(c, run_dir):
        return open_model(
            c.model,
            c.executor,
            cache_path=run_cache_path(cache_path, run_dir),
            no_cache=no_cache,
            progress=True,
        )

    run_dir = run_study(config, console=Console(stderr=True), dry_run=dry_run, open_model=opened, huge_ok=yes)
    if dry_run:
        return
    from anthology.cli.evaluate import print_evaluation
    from anthology.evaluation import read_evaluation

    print_evaluation(read_evaluation(run_dir.root), config.evaluate.splits)
    Console().print(f"report: {run_dir.root / 'report.html'}")
