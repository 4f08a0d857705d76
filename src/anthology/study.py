"""The runner of a study's stages (:data:`anthology.pipeline.STAGES`) in one run directory, for
``anthology run`` and every stage command alike: validated before any model call, resumable after any
interruption, and locked against a second writer.

A stage is skipped when its outputs exist and its fingerprint is unchanged: the hash of its settings,
the seed, the model's full identity (for stages that use it), the survey's contents (codebook and data
file bytes) and the content hashes and fingerprints of the artifacts it reads. Anything else runs it
again, and the message says what changed. A stage that was interrupted runs again, and every model call
it had finished comes back from the run's response cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from anthology import estimates, pipeline
from anthology.config import ANTHOLOGY_METHODS, RunConfig, preset_settings
from anthology.dry_run import print_estimate
from anthology.errors import CapabilityError, ConfigError
from anthology.evaluation import respondents_advice
from anthology.files import writing
from anthology.hashing import fingerprint
from anthology.models.cached_model import CachedModel, describe_calls
from anthology.models.presets import describe_settings
from anthology.models.response_cache import ResponseCache
from anthology.pipeline import Stage
from anthology.planned_requests import Artifacts
from anthology.pool_summary import pool_lines
from anthology.redact import redact, redact_values
from anthology.store import RunDir
from anthology.surveys import Survey, load_codebook, load_survey, survey_content_hash
from anthology.token_counts import TokenCounter, counter_for


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
    try:
        with writing(path):
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
    except BaseException:
        with contextlib.suppress(OSError):  # closing flushes the unwritten pid again
            handle.close()
        raise
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@dataclass
class Plan:
    """What a validated study will do: its settings and the stages it runs."""

    config: RunConfig
    stages: tuple[Stage, ...]
    survey: Survey | None = None
    available: int | None = None  # the survey's respondents before sampling

    @property
    def uses_model(self) -> bool:
        return any(stage.model for stage in self.stages)


def plan(config: RunConfig, stages: Sequence[str] | None = None) -> Plan:
    """Check everything that can be checked without the model for the ``stages`` to run (default:
    all): the survey and its data when matching runs, and that max-weight matching can succeed."""
    chosen = tuple(pipeline.BY_NAME[name] for name in (stages or [s.name for s in pipeline.STAGES]))
    names = {stage.name for stage in chosen}
    check_out(config.out)
    if {"match", "ask"} <= names:
        matched = [m.removeprefix("anthology-") for m in config.ask.methods if m in ANTHOLOGY_METHODS]
        unmatched = [m for m in matched if m not in config.matching.methods]
        if unmatched:
            raise ConfigError(
                f"ask.methods has anthology-{unmatched[0]} but matching.methods has no {unmatched[0]}: "
                "add it to matching.methods or drop it from ask.methods"
            )
    if "demographics" in names:
        _check_traits(config, match="match" in names)
    if "match" not in names:
        return Plan(config, chosen)
    whole = load_survey(config.survey.name, config.survey.data)
    survey = pipeline.open_survey(config, whole)
    if survey.respondents is None:
        raise ConfigError(
            f"survey {config.survey.name!r} has no respondent data: "
            "give its data file (survey.data or --data)"
        )
    pipeline.study_margins(config, survey)  # a bad margins file is refused before any model call
    humans = len(survey.respondents)
    if "backstories" in names and "max-weight" in config.matching.methods and config.backstories.n < humans:
        raise ConfigError(
            f"max-weight matching needs at least as many personas as respondents ({config.backstories.n} "
            f"backstories < {humans} respondents): raise --personas, lower --respondents, or drop max-weight"
        )
    return Plan(config, chosen, survey, len(whole.respondents or ()))


def _check_traits(config: RunConfig, *, match: bool) -> None:
    """The demographic survey's traits exist and, when matching follows, cover every trait the survey
    matches on."""
    asked = {t.name for t in pipeline.study_traits(config)}
    if not match:
        return
    matched = [t.name for t in load_codebook(config.survey.name).matched_traits]
    left_out = [name for name in matched if name not in asked]
    if left_out:
        raise ConfigError(
            f"demographics.traits leaves out {left_out[0]!r}, which survey {config.survey.name!r} matches "
            "on: add it, or leave demographics.traits unset to ask the traits the survey maps"
        )


def check_out(out: str) -> None:
    """Refuse, before any work, a run directory that cannot be made: under a file, or where the
    system allows no folder (``/proc``, a read-only disk)."""
    path = Path(out).expanduser()
    above = next((p for p in (path, *path.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        where = "is a file" if above == path else f"is under the file {above}"
        raise ConfigError(f"run directory {path} {where}: give a folder path (--out DIR)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot make the run directory {path} ({exc.strerror or exc}): choose another --out"
        ) from None


def check_capabilities(model: Any, config: RunConfig, stages: Sequence[str] | None = None) -> None:
    """Refuse, before any model call, what the backend cannot do for the ``stages`` (default: all)."""
    names = set(stages or [s.name for s in pipeline.STAGES])
    caps = model.capabilities
    if names & {"backstories", "ask", "open"}:
        caps.require(kind="generate", chat=config.backstories.style == "chat")
    needs_scores = ("demographics" in names and config.demographics.mode == "logprob") or (
        "ask" in names and config.ask.mode == "logprob"
    )
    critic = config.backstories.critic != "off" and bool(names & {"backstories", "pool", "ask"})
    if critic and not caps.logprobs:
        raise CapabilityError(
            f"model {redact(config.model.name)!r} returns no log-probabilities, so the backstory critic "
            "cannot score: set backstories.critic: off"
        )
    if needs_scores and not caps.logprobs:
        raise CapabilityError(
            f"model {redact(config.model.name)!r} returns no log-probabilities, so logprob mode cannot run: "
            "use demographics.mode: sample and ask.mode: sample (or --profile paper)"
        )


ModelFactory = Callable[[RunConfig, RunDir], tuple[CachedModel, ResponseCache | None]]


def run_study(
    config: RunConfig,
    *,
    open_model: ModelFactory,
    stages: Sequence[str] | None = None,
    console: Console | None = None,
    dry_run: bool = False,
    force: bool = False,
    compare_modes: bool = False,
    huge_ok: bool = False,
) -> RunDir:
    """Run (or, with ``dry_run``, estimate) the ``stages`` of a study (default: all, in order) into
    ``config.out``; return its run directory. ``force`` runs them even when unchanged; a study beyond
    reason (:func:`anthology.estimates.beyond_reason`) is refused unless ``huge_ok``."""
    console = console or Console(stderr=True)
    study = plan(config, stages)
    run = RunDir(config.out)
    with locked(run):
        model, cache = open_model(config, run) if study.uses_model or dry_run else (None, None)
        try:
            if model is not None:
                check_capabilities(model, config, [stage.name for stage in study.stages])
                if needs := preset_settings(config):
                    console.print(
                        f"{config.model.name} runs with {describe_settings(needs)}, as this model "
                        "needs (set to change)",
                        soft_wrap=True,
                    )
                _check_size(study, run, model, cache, console, dry_run=dry_run, huge_ok=huge_ok, force=force)
            if (advice := _respondents_advice(study)) is not None:
                console.print(f"note: {advice}", soft_wrap=True)
            if dry_run:
                return run
            for number, stage in enumerate(study.stages, 1):
                label = f"[{number}/{len(study.stages)}] {stage.name}" if len(study.stages) > 1 else ""
                # A single stage's first run says nothing before its work (so an error is one line).
                _run_stage(
                    stage, run, config, model, console, label, force=force, compare_modes=compare_modes
                )
                if stage.name == "backstories":  # what was kept, and whether matching can succeed
                    console.print(f"    {pipeline.check_pool(run, config, _respondents(study))}")
                if stage.name == "pool":  # the audit, and what the top-up added
                    for line in pool_lines(run.manifest()["stages"]["pool"]):
                        console.print(f"    {line}", soft_wrap=True, highlight=False)
        finally:
            if model is not None:
                model.close()
            if cache is not None:
                cache.close()
    return run


def _respondents_advice(study: Plan) -> str | None:
    """The line suggesting more respondents, when the study evaluates too few for the human lower
    bound to be read as a bound."""
    size = _respondents(study)
    if size is None or study.available is None or "evaluate" not in {s.name for s in study.stages}:
        return None
    return respondents_advice(size, study.available)


def _respondents(study: Plan) -> int | None:
    """How many respondents the study matches (``None`` when it does not match)."""
    respondents = study.survey.respondents if study.survey is not None else None
    return None if respondents is None else len(respondents)


def _check_size(
    study: Plan,
    run: RunDir,
    model: CachedModel,
    cache: ResponseCache | None,
    console: Console,
    *,
    dry_run: bool,
    huge_ok: bool,
    force: bool,
) -> None:
    """Refuse a study beyond reason before its first model call (``huge_ok``: say so and go on) or
    one that may cost more than its budget; a dry run measures the model and prints the estimate
    first."""
    config = study.config
    counter = counter_for(model, config.model.name)
    billing = estimates.Billing.of(model)
    rows = _estimate(study, run, model, cache, counter, billing, force=force)
    rates = estimates.calibrate(model.model) if dry_run else None
    problem = estimates.beyond_reason(rows, config, rates, lambda: estimates.calibrate(model.model))
    if dry_run:
        shown = {"counter": counter, "billing": billing, "cached": cache is not None}
        print_estimate(console, config, rows, rates, **shown)
    if (budget := estimates.over_budget(rows, config.model)) is not None:
        raise ConfigError(budget)
    if problem and not huge_ok:
        raise ConfigError(problem)
    if problem:
        console.print(f"warning: {problem.split(':')[0]}; running it anyway (--yes)")


def estimate_study(
    config: RunConfig, *, open_model: ModelFactory, stages: Sequence[str] | None = None, force: bool = False
) -> list[estimates.StageEstimate]:
    """The estimate ``anthology run --dry-run`` prints for the ``stages`` of a study (default: all),
    from the run directory as it is, without running anything or measuring the model."""
    study = plan(config, stages)
    run = RunDir(config.out)
    with locked(run):
        model, cache = open_model(config, run)
        try:
            counter = counter_for(model, config.model.name)
            return _estimate(study, run, model, cache, counter, estimates.Billing.of(model), force=force)
        finally:
            model.close()
            if cache is not None:
                cache.close()


def _estimate(
    study: Plan,
    run: RunDir,
    model: CachedModel,
    cache: ResponseCache | None,
    counter: TokenCounter,
    billing: estimates.Billing,
    *,
    force: bool,
) -> list[estimates.StageEstimate]:
    names = [stage.name for stage in study.stages]
    reused = [] if force else _reused(study, run, model)
    return estimates.estimate(
        study.config,
        names,
        study.survey or _matched_survey(run, names),
        artifacts=_artifacts(study, run, reused),
        counter=counter,
        billing=billing,
        cache=cache,
        identity=model.identity,
        reused=reused,
    )


def _reused(study: Plan, run: RunDir, model: CachedModel) -> list[str]:
    """The model stages of the study that will be skipped: done and unchanged, with no stage before
    them that runs (what a stage that runs writes may change what later ones read)."""
    last = max((i for i, stage in enumerate(study.stages) if stage.model), default=-1)
    found = []
    for stage in study.stages[: last + 1]:
        if _why(stage, run, stage_parts(stage, study.config, run, model), False) is not None:
            break
        found.append(stage.name)
    return found


def _artifacts(study: Plan, run: RunDir, reused: Sequence[str]) -> Artifacts:
    """What the run directory holds that the stages will read as it is: the artifacts of stages
    that will not run (again)."""
    planned = {stage.name for stage in study.stages}

    def usable(name: str) -> pd.DataFrame | None:
        writer = _writers()[name]
        if (writer in planned and writer not in reused) or not run.has(name) or run.damage(name):
            return None
        return run.read(name)

    return Artifacts(
        backstories=usable("backstories"), matches=usable("matches"), open_answers=usable("open_answers")
    )


def _matched_survey(run: RunDir, stages: Sequence[str]) -> Survey | None:
    """For a stage command that answers without matching: the survey the run matched."""
    if not {"ask", "open", "code"} & set(stages):
        return None
    try:
        return pipeline.run_survey(run)
    except ConfigError:  # not matched yet: the stage says so when it runs
        return None


def _writers() -> dict[str, str]:
    return {output: stage.name for stage in pipeline.STAGES for output in stage.writes}


def _settings(stage: Stage, dumped: dict[str, Any]) -> dict[str, Any]:
    """The settings a stage's result depends on. The survey counts by its contents (``survey`` part),
    so its name or path and its data file's path are left out here."""
    found = {section: dict(dumped[section]) for section in stage.sections}
    if "survey" in found:
        found["survey"] = {k: v for k, v in found["survey"].items() if k not in ("name", "data")}
    return found


def stage_parts(stage: Stage, config: RunConfig, run: RunDir, model: Any) -> dict[str, Any]:
    """What a stage's result depends on, each part hashed: its settings, the seed, the model's full
    identity, the survey's contents, and the content hash and maker's fingerprint of each input."""
    dumped = config.model_dump()
    done = run.manifest().get("stages", {})
    writers = _writers()
    parts: dict[str, Any] = {
        "settings": fingerprint(_settings(stage, dumped)),
        "seed": config.seed,
    }
    if stage.model:
        parts["model"] = fingerprint(model.identity)
    if stage.survey:
        parts["survey"] = survey_content_hash(config.survey.name, config.survey.data)[:16]
    if stage.parts is not None:
        parts.update(stage.parts(config))
    for name in stage.reads:
        maker = done.get(writers.get(name, ""), {}).get("fingerprint")
        parts[name] = fingerprint([run.content_hash(name), maker])
    return parts


def _why(stage: Stage, run: RunDir, parts: dict[str, Any], force: bool) -> str | None:
    """Why the stage must run (``None``: it need not): forced, never recorded, an output missing,
    damaged or changed since the stage wrote it, or a part of what made it changed."""
    if force:
        return "forced"
    recorded = run.manifest().get("stages", {}).get(stage.name)
    if recorded is None:
        return ""
    missing = [name for name in stage.writes if not run.path(name).exists()]
    if missing:
        return f"runs again: {', '.join(run.path(name).name for name in missing)} missing"
    for name in stage.writes:
        if (problem := run.damage(name)) is not None:
            return f"runs again: {run.path(name).name} is damaged ({problem})"
    written = recorded.get("outputs", {})
    altered = [run.path(n).name for n in stage.writes if n in written and written[n] != run.content_hash(n)]
    if altered:
        return f"runs again: {', '.join(altered)} changed since it was written"
    before = recorded.get("parts", {})
    changed = [key for key, value in parts.items() if before.get(key) != value]
    return f"runs again: {', '.join(changed)} changed" if changed else None


def _run_stage(
    stage: Stage,
    run: RunDir,
    config: RunConfig,
    model: CachedModel | None,
    console: Console,
    label: str,
    *,
    force: bool,
    compare_modes: bool,
) -> None:
    parts = stage_parts(stage, config, run, model)
    why = _why(stage, run, parts, force)
    name = label or f"{stage.name}"
    if why is None:
        console.print(f"{name}: done already, skipped (settings, model and inputs unchanged)")
        return
    if why or label:
        console.print(f"{name}: {why}" if why else label)
    stats = model.stats if model is not None else None
    before = stats.snapshot() if stats is not None else None
    started = time.perf_counter()
    info = stage.execute(pipeline.StageRun(run, config, model if stage.model else None, compare_modes))
    seconds = time.perf_counter() - started
    dumped = redact_values(config.model_dump())  # the manifest (and the report) keep no secret
    entry: dict[str, Any] = {
        **info,
        "fingerprint": fingerprint(parts),
        "parts": parts,
        "seed": config.seed,
        "settings": {section: dumped[section] for section in stage.sections},
        "outputs": {name: run.content_hash(name) for name in stage.writes},
        "shapes": {name: run.shape(name) for name in stage.writes if run.path(name).suffix == ".parquet"},
        "seconds": round(seconds, 3),
    }
    top: dict[str, Any] = {"config": dumped}
    if stage.model and model is not None and stats is not None and before is not None:
        calls = stats.since(before)
        entry["model_calls"] = calls
        entry["model"] = top["model"] = {**dumped["model"], **pipeline.model_record(model)}
        spent = estimates.price(calls["prompt_tokens"], calls["completion_tokens"], config.model)
        paid = f", cost {estimates.money_text(spent)}" if spent is not None else ""
        console.print(f"    {describe_calls(calls)}{paid}, {seconds:.1f}s")
    run.record(stage.name, entry, **top)
