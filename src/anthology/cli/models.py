"""``anthology models``: list the bundled models and try any model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
from pydantic import Field
from rich.console import Console
from rich.table import Table

from anthology.cli.common import model_options, open_model
from anthology.cli.options import settings_options
from anthology.errors import ConfigError
from anthology.method.settings import TOKENS_MAX
from anthology.settings import SEED_MAX, Settings


class TrySettings(Settings):
    """How ``models try`` samples: the ranges a study's settings have."""

    max_tokens: int = Field(64, ge=1, le=TOKENS_MAX, description="Max tokens to generate (default 64).")
    temperature: float = Field(1.0, ge=0, le=10, description="Sampling temperature (default 1).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (default 1).")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of the sample (default 0).")


@click.group()
def models() -> None:
    """Language models: bundled presets, local Hugging Face models, OpenAI-compatible servers."""


@models.command("list")
def list_models() -> None:
    """Show the bundled offline models and whether they are installed."""
    from anthology.models.presets import PRESETS, describe_settings

    table = Table(title="Bundled models (use the name with --model)")
    for column in ("name", "style", "source package", "licence", "size", "installed"):
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "size"))
    for p in PRESETS.values():
        installed = "yes" if p.installed() else f"no: {p.install_hint}"
        table.add_row(p.name, p.style, p.package, p.licence, f"{p.size_mb} MB", installed)
    console = Console()
    console.print(table)
    for p in PRESETS.values():
        if p.settings:  # what a run applies unless the study sets it
            console.print(
                f"{p.name} runs with {describe_settings(p.settings)} unless a study sets them.",
                soft_wrap=True,
            )
    console.print(
        "Other models: a local folder or .gguf file, hf:ORG/NAME (from the local Hugging Face cache), "
        "or openai:MODEL@URL for vLLM, SGLang, Ollama, llama.cpp and OpenAI."
    )


@models.command("try")
@model_options(positional=True)
@click.argument("more_options", nargs=-1, metavar="")
@click.option(
    "--prompt", required=True, help="Prompt text (a completion prompt, or with --chat a user message)."
)
@click.option(
    "--options",
    "options",
    multiple=True,
    help='Candidate continuations to score, e.g. --options " A" " B" " C".',
)
@settings_options(TrySettings, into="sampling")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
def try_model(
    more_options: tuple[str, ...],
    prompt: str,
    options: tuple[str, ...],
    stop: tuple[str, ...],
    sampling: dict[str, Any],
    model_flags: dict[str, Any],
    executor_flags: dict[str, Any],
    cache_path: Path | None,
    no_cache: bool,
) -> None:
    """Generate from MODEL and, with --options, print each option's probability."""
    from anthology.models.base import GenerateRequest, ScoreRequest

    if more_options and not options:
        raise ConfigError(f"unexpected argument {more_options[0]!r}: candidates go after --options")
    candidates = (*options, *more_options)
    twice = next((c for i, c in enumerate(candidates) if c in candidates[:i]), None)
    if twice is not None:
        raise ConfigError(f"option {twice!r} is given twice: give each candidate once")
    from anthology.config import ExecutorSettings, ModelSettings

    spec = ModelSettings(**model_flags)
    settings = TrySettings(**sampling)
    executor = ExecutorSettings(**executor_flags)
    cached, cache = open_model(spec, executor, cache_path=cache_path, no_cache=no_cache)
    text_prompt = ({"role": "user", "content": prompt},) if spec.chat else prompt
    console = Console()
    try:
        [result] = cached.generate(
            [
                GenerateRequest(
                    text_prompt,
                    max_tokens=settings.max_tokens,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    stop=stop,
                    seed=settings.seed,
                )
            ]
        )
        console.print("[bold]generated[/bold]", style="cyan")
        console.print(result.samples[0].text, markup=False, highlight=False)
        if candidates:
            [scored] = cached.score([ScoreRequest(text_prompt, candidates)])
            table = Table(title="options")
            for column in ("option", "log-prob", "probability", "renormalised"):
                table.add_column(column, justify="right")
            rows = zip(candidates, scored.logprobs, scored.probabilities(), scored.imputed, strict=True)
            for option, lp, p, imputed in rows:
                mark = " (imputed)" if imputed else ""
                table.add_row(repr(option), f"{lp:.4f}", f"{math.exp(lp):.4f}", f"{p:.4f}{mark}")
            console.print(table)
            console.print(f"coverage (probability mass on these options): {scored.coverage:.4f}")
        s = cached.stats
        console.print(f"[dim]cache hits {s.hits}, model calls {s.model_calls}[/dim]")
    finally:
        if cache is not None:
            cache.close()
        cached.close()
