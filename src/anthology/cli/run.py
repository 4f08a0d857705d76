"""``anthology run``: the whole study, from backstories to the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from anthology.cli.common import DECODING_OPTION, executor_options


@click.command()
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", help="Model (default: the bundled gemma3-270m).")
@click.option("--survey", help="Built-in survey name or codebook path (default: gss2018-spending).")
@click.option("--data", help="Respondent data file for the survey.")
@click.option("--personas", type=click.IntRange(1), help="Backstories to generate (the persona pool).")
@click.option("--respondents", type=click.IntRange(1), help="A seeded sample of this many respondents.")
@click.option("--seed", type=int, help="Seed of every random step.")
@click.option("--out", help="Run directory (default: runs/default).")
@click.option("--backstory-tokens", type=click.IntRange(1), help="Max tokens per backstory.")
@click.option("--demographics-mode", type=click.Choice(["sample", "logprob"]))
@click.option("--ask-mode", type=click.Choice(["sample", "logprob"]))
@click.option("--context", type=click.Choice(["sequential", "independent"]))
@click.option("--chat", is_flag=True, default=None, help="Chat model or server (interview as chat turns).")
@click.option("--base-url", help="Base URL of an OpenAI-compatible server.")
@click.option("--api-key-env", help="Environment variable holding the API key.")
@click.option(
    "--scoring",
    type=click.Choice(["auto", "echo", "top-k"]),
    help="How a server scores options: echo (exact), top-k, or auto (probe once).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="Base seconds per server request."
)
@click.option("--device", help="Device for local models: auto, cpu, cuda ...")
@click.option("--dtype", help="dtype for local models: auto, float32, bfloat16, float16.")
@DECODING_OPTION
@executor_options
@click.option("--dry-run", is_flag=True, help="Print model calls, tokens and a time estimate; run nothing.")
def run(config_file: Path | None, dry_run: bool, chat: bool | None, **flags: Any) -> None:
    """Run a whole study into a run directory: backstories, demographic survey, matching (greedy,
    max-weight, random), baselines, answering, evaluation and report. With no arguments: the bundled
    model on the GSS 2018 spending battery. Run the same command again to resume after an interruption."""
    from anthology.config import load_config
    from anthology.study import run_study

    overrides = {
        "model.name": flags["model"],
        "survey.name": flags["survey"],
        "survey.data": flags["data"],
        "backstories.n": flags["personas"],
        "survey.respondents": flags["respondents"],
        "seed": flags["seed"],
        "out": flags["out"],
        "backstories.max_tokens": flags["backstory_tokens"],
        "demographics.mode": flags["demographics_mode"],
        "ask.mode": flags["ask_mode"],
        "ask.context": flags["context"],
        "model.chat": chat,
        "model.base_url": flags["base_url"],
        "model.api_key_env": flags["api_key_env"],
        "model.scoring": flags["scoring"],
        "model.timeout": flags["timeout"],
        "model.device": flags["device"],
        "model.dtype": flags["dtype"],
        "model.decoding": flags["decoding"],
        "executor.kind": flags["executor"],
        "executor.address": flags["ray_address"],
        "executor.workers": flags["workers"],
        "executor.cpus_per_worker": flags["cpus_per_worker"],
        "executor.gpus_per_worker": flags["gpus_per_worker"],
    }
    if chat:
        overrides["backstories.style"] = "chat"
    config = load_config(config_file, overrides)
    console = Console(stderr=True)
    run_dir = run_study(config, console=console, dry_run=dry_run, open_model=_open)
    if dry_run:
        return
    from anthology.cli.evaluate import print_evaluation
    from anthology.evaluation import read_evaluation

    print_evaluation(read_evaluation(run_dir.root), config.evaluate.splits)
    Console().print(f"report: {run_dir.root / 'report.html'}")


def _open(config, run):  # the study's model factory
    from anthology.cli.common import open_model

    m = config.model
    spec = {
        "model": m.name,
        "chat": m.chat,
        "base_url": m.base_url,
        "api_key_env": m.api_key_env,
        "scoring": m.scoring,
        "timeout": m.timeout,
        "device": m.device,
        "dtype": m.dtype,
        "decoding": m.decoding,
        "cache_path": run.cache_path,
        "no_cache": False,
        "executor": config.executor.model_dump(),
    }
    return open_model(spec, progress=True)
