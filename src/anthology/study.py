"""``anthology run``: a whole study into one run directory, validated before any model call,
resumable after any interruption, and locked against a second writer.

Resuming works at two levels: a stage whose artifact exists and whose inputs (its settings, the seed,
the model and the stages before it) are unchanged is skipped; a stage that was interrupted runs again,
and every model call it had finished comes back from the run's response cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from anthology import pipeline
from anthology.config import RunConfig
from anthology.errors import CapabilityError, ConfigError
from anthology.method.answering import AskConfig
from anthology.method.backstories import BackstoryConfig
from anthology.method.demographics import DemographicsConfig
from anthology.models.cache import CachedModel, ResponseCache
from anthology.store import RunDir
from anthology.surveys import Survey
from anthology.surveys.traits import CANONICAL_TRAITS

STAGES = ("backstories", "demographics", "match", "ask", "evaluate", "report")


@contextmanager
def locked(run: RunDir) -> Iterator[None]:
    """Hold the run directory's lock; a second writer gets a one-line error at once. The lock dies
    with its process, so a killed run never leaves the directory locked."""
    path = run.root / ".lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"{run.root} is in use by another anthology run (pid {holder}); "
            "wait for it or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """What a validated study will do: its settings per stage and their fingerprints."""

    config: RunConfig
    survey: Survey
    fingerprints: dict[str, str]

    @property
    def backstory_config(self) -> BackstoryConfig:
        b = self.config.backstories
        return BackstoryConfig(
            style=b.style,
            temperature=b.temperature,
            top_p=b.top_p,
            max_tokens=b.max_tokens,
            preamble=b.preamble,
            min_tokens=b.min_tokens,
            min_words=b.min_words,
            first_person=b.first_person,
            near_duplicate=b.near_duplicate,
        )

    @property
    def demographics_config(self) -> DemographicsConfig:
        d = self.config.demographics
        return DemographicsConfig(mode=d.mode, samples=d.samples, max_tokens=d.max_tokens)

    @property
    def ask_config(self) -> AskConfig:
        a = self.config.ask
        return AskConfig(context=a.context, mode=a.mode, max_attempts=a.max_attempts)


def plan(config: RunConfig) -> Plan:
    """Check everything that can be checked without the model: the survey and its data, the methods,
    and that max-weight matching can succeed."""
    pipeline.check_methods(config.ask.methods)
    survey = pipeline.open_survey(
        config.survey.name, config.survey.data, config.survey.respondents, config.seed
    )
    if survey.respondents is None:
        raise ConfigError(
            f"survey {config.survey.name!r} has no respondent data: "
            "give its data file (survey.data or --data)"
        )
    humans = len(survey.respondents)
    if "max-weight" in config.matching.methods and config.backstories.n < humans:
        raise ConfigError(
            f"max-weight matching needs at least as many personas as respondents ({config.backstories.n} "
            f"backstories < {humans} respondents): raise --personas, lower --respondents, or drop max-weight"
        )
    c = config.model_dump()
    prints: dict[str, str] = {}
    prints["backstories"] = _fingerprint(c["model"]["name"], c["seed"], c["backstories"])
    prints["demographics"] = _fingerprint(prints["backstories"], c["demographics"])
    prints["match"] = _fingerprint(prints["demographics"], c["survey"], c["matching"])
    prints["ask"] = _fingerprint(prints["match"], c["ask"])
    prints["evaluate"] = _fingerprint(prints["ask"], c["evaluate"])
    prints["report"] = prints["evaluate"]
    return Plan(config, survey, prints)


def check_capabilities(model: Any, config: RunConfig) -> None:
    """Refuse, before any model call, what the backend cannot do."""
    caps = model.capabilities
    chat = config.backstories.style == "chat"
    caps.require(kind="generate", chat=chat)
    needs_scores = config.demographics.mode == "logprob" or config.ask.mode == "logprob"
    if needs_scores and not caps.logprobs:
        raise CapabilityError(
            f"model {config.model.name!r} returns no log-probabilities, so logprob mode cannot run: "
            "use demographics.mode: sample and ask.mode: sample"
        )


def estimate(plan: Plan) -> list[dict[str, Any]]:
    """Model calls and token counts per stage (upper bounds for generated tokens)."""
    c = plan.config
    n, humans = c.backstories.n, len(plan.survey.respondents or ())
    questions = len(plan.survey.questionnaire)
    story_tokens = c.backstories.max_tokens + 60
    traits = len(CANONICAL_TRAITS)
    per_answer = 1 if c.demographics.mode == "logprob" else c.demographics.samples
    anthology = sum(1 for m in c.ask.methods if m.startswith("anthology-"))
    baselines = len(c.ask.methods) - anthology
    members = humans * (anthology + baselines)
    answer_prompt = story_tokens + 80
    if c.ask.context == "sequential":
        answer_prompt += questions * 45  # earlier questions and answers stay in the context
    rows = [
        {
            "stage": "backstories",
            "requests": n + max(8, int(n * 1.5)),
            "samples": n + max(8, int(n * 1.5)),
            "prompt_tokens": n * 60,
            "max_generated_tokens": n * c.backstories.max_tokens,
        },
        {
            "stage": "demographics",
            "requests": n * traits,
            "samples": n * traits * per_answer,
            "prompt_tokens": n * traits * (story_tokens + 70),
            "max_generated_tokens": 0
            if per_answer == 1
            else n * traits * per_answer * c.demographics.max_tokens,
        },
        {
            "stage": "ask",
            "requests": members * questions,
            "samples": members * questions,
            "prompt_tokens": members * questions * answer_prompt,
            "max_generated_tokens": 0 if c.ask.mode == "logprob" else members * questions * 128,
        },
    ]
    if "dp" in c.ask.methods:
        rows.append(
            {
                "stage": "ask (dp backstories)",
                "requests": humans,
                "samples": humans,
                "prompt_tokens": humans * 120,
                "max_generated_tokens": humans * c.ask.dp_max_tokens,
            }
        )
    return rows


def calibrate(model: Any) -> dict[str, float] | None:
    """Prefill tokens/s and decoding steps/s of a local model (one 256-token pass and 8 steps at batch
    16), used to turn token counts into time. ``None`` for HTTP backends."""
    if not (hasattr(model, "tokenizer") and hasattr(model, "model")):
        return None
    import torch

    from anthology.models.base import GenerateRequest

    with torch.inference_mode():
        ids = torch.randint(0, len(model.tokenizer) - 1, (1, 256), device=model.device)
        model.model(input_ids=ids, logits_to_keep=1)
        start = time.perf_counter()
        model.model(input_ids=ids, logits_to_keep=1)
        prefill = 256 / (time.perf_counter() - start)
        start = time.perf_counter()
        model.generate([GenerateRequest("Hello", n=16, max_tokens=8, temperature=1.0, seed=0)])
        steps = 8 / (time.perf_counter() - start)
    return {"prefill_tokens_per_s": prefill, "decode_steps_per_s": steps, "batch": 16}


def run_study(
    config: RunConfig,
    *,
    console: Console | None = None,
    dry_run: bool = False,
    open_model: Callable[[RunConfig, RunDir], tuple[CachedModel, ResponseCache | None]],
) -> RunDir:
    """Run (or, with ``dry_run``, estimate) the whole study; return its run directory."""
    console = console or Console(stderr=True)
    study = plan(config)
    run = RunDir(config.out)
    with locked(run):
        model, cache = open_model(config, run)
        try:
            check_capabilities(model, config)
            if dry_run:
                _dry_run(study, model, console)
                return run
            _execute(study, run, model, console)
        finally:
            model.close()
            if cache is not None:
                cache.close()
    return run


def _dry_run(study: Plan, model: CachedModel, console: Console) -> None:
    from rich.table import Table

    rates = calibrate(model.model)
    table = Table(title=f"dry run: {study.config.model.name} on {study.config.survey.name}")
    for column in ("stage", "requests", "samples", "prompt tokens", "max generated tokens", "estimate"):
        table.add_column(column, justify="right")
    total = 0.0
    for row in estimate(study):
        seconds = None
        if rates:
            prefill = row["prompt_tokens"] / rates["prefill_tokens_per_s"]
            if row["stage"] == "ask" and study.config.ask.context == "independent":
                prefill /= 3  # questions share the persona's prefix
            decode = row["max_generated_tokens"] / (rates["decode_steps_per_s"] * rates["batch"])
            seconds = prefill + decode
            total += seconds
        table.add_row(
            row["stage"],
            f"{row['requests']:,}",
            f"{row['samples']:,}",
            f"{row['prompt_tokens']:,}",
            f"{row['max_generated_tokens']:,}",
            f"{seconds / 60:.1f} min" if seconds else "n/a",
        )
    console.print(table)
    if rates:
        console.print(
            f"measured here: {rates['prefill_tokens_per_s']:.0f} prompt tokens/s, "
            f"{rates['decode_steps_per_s']:.1f} decoding steps/s at batch {rates['batch']}; "
            f"at most about {total / 60:.0f} min (generation rarely runs to max tokens)"
        )
    else:
        console.print("time depends on the server: divide the token counts by its throughput")


def _execute(study: Plan, run: RunDir, model: CachedModel, console: Console) -> None:
    c = study.config
    done = run.manifest().get("stages", {})
    artifacts = {
        "backstories": ("backstories",),
        "demographics": ("demographics",),
        "match": ("matches", "humans"),
        "ask": ("answers", "distributions"),
        "evaluate": (),
        "report": (),
    }
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "backstories": lambda: pipeline.backstories(
            run, model, c.backstories.n, study.backstory_config, c.seed
        ),
        "demographics": lambda: pipeline.demographics(run, model, study.demographics_config, c.seed),
        "match": lambda: pipeline.match(
            run,
            study.survey,
            c.matching.methods,
            c.matching.objective,
            c.seed,
            survey_ref=c.survey.name,
            data=c.survey.data,
        ),
        "ask": lambda: pipeline.ask(
            run,
            model,
            c.ask.methods,
            study.ask_config,
            c.seed,
            append=c.ask.append,
            dp_style=c.ask.dp_style,
            dp_max_tokens=c.ask.dp_max_tokens,
        ),
        "evaluate": lambda: _evaluate(run, c),
        "report": lambda: {"path": str(_report(run))},
    }
    for number, name in enumerate(STAGES, 1):
        fingerprint = study.fingerprints[name]
        fresh = done.get(name, {}).get("fingerprint") == fingerprint and all(
            run.has(a) for a in artifacts[name]
        )
        if fresh:
            console.print(f"[{number}/{len(STAGES)}] {name}: done already, skipped")
            continue
        console.print(f"[{number}/{len(STAGES)}] {name}")
        before = (
            model.stats.model_calls,
            model.stats.hits,
            model.stats.misses,
            model.stats.prompt_tokens,
            model.stats.completion_tokens,
        )
        started = time.perf_counter()
        info = steps[name]()
        s = model.stats
        calls = {
            "calls": s.model_calls - before[0],
            "cache_hits": s.hits - before[1],
            "computed": s.misses - before[2],
            "prompt_tokens": s.prompt_tokens - before[3],
            "completion_tokens": s.completion_tokens - before[4],
        }
        run.record(
            name,
            {
                **info,
                "fingerprint": fingerprint,
                "seconds": round(time.perf_counter() - started, 3),
                "model_calls": calls,
            },
            model=pipeline.model_record(c.model.name, model),
            config=c.model_dump(),
        )
        console.print(
            f"    {calls['calls']} model calls, {calls['cache_hits']} cache hits, "
            f"{time.perf_counter() - started:.1f}s"
        )


def _evaluate(run: RunDir, config: RunConfig) -> dict[str, Any]:
    from anthology.evaluation import evaluate

    evaluate(
        run.root, n_splits=config.evaluate.splits, n_resamples=config.evaluate.resamples, seed=config.seed
    )
    return run.manifest()["stages"]["evaluate"]  # what evaluate() recorded: seed, splits, resamples


def _report(run: RunDir) -> Path:
    from anthology.report import write_report

    return write_report(run.root)
