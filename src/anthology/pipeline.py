"""The study's stages over a run directory: what each reads, writes and needs, and how it runs. This
table is the one definition of a stage; :mod:`anthology.study` runs its entries for ``anthology run``
and for the stage commands alike.

Each stage reads the previous stages' artifacts, writes its own, and returns what the manifest
records about it. Model calls go through the caller's :class:`~anthology.models.cached_model.CachedModel`,
so a stage started again after an interruption only computes what is not in the cache yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from anthology.config import ANTHOLOGY_METHODS, RunConfig
from anthology.errors import ConfigError
from anthology.evaluation import EVALUATION_VERSION, FILES
from anthology.hashing import file_sha256, fingerprint
from anthology.method.answering import AskConfig, compliance
from anthology.method.answering import ask as ask_panel
from anthology.method.backstories import BackstoryConfig, generate_backstories, summary
from anthology.method.baselines import BASELINES, anthology_panel, baseline_contexts, dp_backstories, dp_panel
from anthology.method.demographics import agreement, asked_traits, survey_demographics
from anthology.method.margins import Margins, read_margins
from anthology.method.matching import match_survey
from anthology.method.settings import RAKED
from anthology.method.topup import audit_frame, top_up
from anthology.models.base import LanguageModel
from anthology.persona_pool import read_pool
from anthology.redact import redact_values
from anthology.store import RunDir
from anthology.surveys import Survey, Trait, load_codebook, load_survey


@dataclass
class StageRun:
    """What a stage runs with: the run directory, the study's settings, the model (for stages that
    use one) and the stage's own options that are not settings (``compare_modes``)."""

    run: RunDir
    config: RunConfig
    model: LanguageModel | None = None
    compare_modes: bool = False

    def need_model(self) -> LanguageModel:
        assert self.model is not None, "this stage runs with a model"
        return self.model


@dataclass(frozen=True)
class Stage:
    """One stage of the method: its config sections, the artifacts (or files) it reads and writes,
    whether it uses the model and the survey, the function that runs it, and what else its result
    depends on (``parts``: named values for its fingerprint)."""

    name: str
    sections: tuple[str, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    model: bool
    survey: bool
    execute: Callable[[StageRun], dict[str, Any]]
    parts: Callable[[RunConfig], dict[str, Any]] | None = None


def backstories(stage: StageRun) -> dict[str, Any]:
    c = stage.config
    config = c.backstories.narrow(BackstoryConfig)
    frame = generate_backstories(stage.need_model(), c.backstories.n, seed=c.seed, config=config)
    stage.run.write("backstories", frame)
    return {"summary": summary(frame)}


def kept_line(found: dict[str, Any]) -> str:
    """``kept 9 of 12 backstories (dropped: 2 too short: fewer tokens than 41, 1 duplicate)`` from a
    backstories :func:`~anthology.method.backstories.summary`."""
    dropped = ", ".join(f"{count} {reason}" for reason, count in found["dropped"].items())
    flagged = found.get("contradictions", {}).get("kept_flagged", 0)
    return (
        f"kept {found['kept']} of {found['generated']} backstories"
        + (f" (dropped: {dropped})" if dropped else "")
        + (f"; {flagged} kept flagged as contradicting themselves (LLM critic)" if flagged else "")
    )


def check_pool(run: RunDir, config: RunConfig, respondents: int | None) -> str:
    """The backstories kept, read back from the artifact, as :func:`kept_line`; raise ``ConfigError``,
    before the demographic survey spends model calls, when none was kept or when max-weight matching
    (one persona per respondent) cannot succeed with the ``respondents`` (``None``: not checked)."""
    found = summary(run.read("backstories"))
    line = kept_line(found)
    kept, n = found["kept"], config.backstories.n
    one_each = "max-weight" in config.matching.methods and respondents is not None and kept < respondents
    if kept and not one_each:
        return line
    problem = (
        f"fewer than the {respondents} respondents max-weight matching gives one persona each"
        if one_each
        else "no persona to survey"
    )
    more = max(n + 1, math.ceil(1.25 * n * (respondents or 1) / kept)) if kept else 2 * n
    fixes = [f"generate more (--personas {more}: the {n} made so far come back from the cache)"]
    if any(reason.startswith("too short") for reason in found["dropped"]):
        fixes.append("let them run longer (--backstory-tokens) or lower backstories.min_tokens")
    if one_each:
        fixes.append("drop max-weight from matching.methods and ask.methods, or lower --respondents")
    raise ConfigError(f"{line}: {problem}; {', '.join(fixes)}")


def study_traits(config: RunConfig) -> tuple[Trait, ...]:
    """The traits the study's demographic survey asks: ``demographics.traits``, or those its survey
    maps (the canonical ones and any its codebook declares)."""
    codebook = load_codebook(config.survey.name)
    return asked_traits(config.demographics, codebook.persona_definitions, codebook.matched_traits)


def trait_parts(config: RunConfig) -> dict[str, Any]:
    """The demographic survey's result depends on the traits' definitions, not on the rest of the
    survey (its data, its questions)."""
    return {"traits": fingerprint([t.model_dump() for t in study_traits(config)])}


def demographics(stage: StageRun) -> dict[str, Any]:
    c, model = stage.config, stage.need_model()
    stories = stage.run.read("backstories")
    traits = study_traits(c)
    frame = survey_demographics(model, stories, seed=c.seed, config=c.demographics, traits=traits)
    stage.run.write("demographics", frame)
    info: dict[str, Any] = {"traits": [t.name for t in traits]}
    info["noncompliant"] = frame.groupby("trait", sort=False)["noncompliant"].mean().round(4).to_dict()
    if stage.compare_modes:
        other_mode = "logprob" if c.demographics.mode == "sample" else "sample"
        other = survey_demographics(
            model, stories, seed=c.seed, config=c.demographics.updated(mode=other_mode), traits=traits
        )
        sampled, scored = (frame, other) if c.demographics.mode == "sample" else (other, frame)
        table = agreement(sampled, scored)
        table.to_csv(stage.run.root / "demographics_agreement.csv", index=False)
        info["agreement"] = table.to_dict(orient="records")
    return info


def open_survey(config: RunConfig, whole: Survey | None = None) -> Survey:
    """The target survey (a built-in name or a codebook path) and the seeded sample of its respondents
    that a study uses (from ``whole``, the survey with all its respondents, when given)."""
    s = config.survey
    return (whole or load_survey(s.name, s.data)).sample(s.respondents, config.seed)


def match(stage: StageRun) -> dict[str, Any]:
    """Match the humans to the personas; the survey is recorded so later stages load the same one."""
    c = stage.config
    survey = open_survey(c)
    if survey.respondents is None:
        raise ConfigError(
            f"survey {c.survey.name!r} has no respondent data: give its data file (survey.data or --data)"
        )
    matches, report = match_survey(
        survey,
        read_pool(stage.run, "demographics"),
        c.matching.methods,
        seed=c.seed,
        objective=c.matching.objective,
        margins=study_margins(c, survey),
    )
    stage.run.write("humans", survey.humans())
    stage.run.write("matches", matches)
    return {
        "survey": {"name": c.survey.name, "data": c.survey.data, "respondents": len(survey.respondents)},
        "report": report.to_dict(orient="records"),
    }


def study_margins(config: RunConfig, survey: Survey) -> Margins | None:
    """The margins file's margins for the raked panel, checked against the survey; ``None`` when
    there is no raked panel or no file (the survey's own margins)."""
    path = config.matching.margins
    return read_margins(path, survey) if path is not None and RAKED in config.matching.methods else None


def margins_parts(config: RunConfig) -> dict[str, Any]:
    """The raked panel depends on its margins file's contents, not on its path."""
    path = config.matching.margins
    if path is None or RAKED not in config.matching.methods:
        return {}
    return {"margins": file_sha256(Path(path))[:16] if Path(path).is_file() else "missing"}


def run_survey(run: RunDir) -> Survey:
    """The survey and respondents the run matched (from the manifest and humans.parquet)."""
    info = run.manifest().get("stages", {}).get("match", {}).get("survey")
    if info is None:
        raise ConfigError(f"{run.root} has no matched survey: run `anthology match {run.root}` first")
    humans = run.read("humans")
    return load_survey(info["name"], info["data"]).subset(humans["respondent_id"].tolist())


def model_record(model: LanguageModel) -> dict[str, Any]:
    """What the manifest keeps about the model besides its settings: its full identity and how it
    scores options."""
    return redact_values({"identity": model.identity, "scoring": model.capabilities.scoring})


def natural_style(run: RunDir, config: RunConfig, model: LanguageModel) -> BackstoryConfig:
    """The run's natural backstory settings, in chat style for baselines only from a chat-only server."""
    natural = config.backstories.narrow(BackstoryConfig)
    if not run.has("backstories") and not model.capabilities.completion:
        natural = natural.updated(style="chat")  # baselines only, from a chat-only server
    return natural


def study_panel(
    run: RunDir, config: RunConfig, survey: Survey, style: str, dp: pd.DataFrame | None
) -> pd.DataFrame:
    """Every member the study asks (``ask.methods``): the matched personas, the baselines (in the
    prompt ``style``) and the kept ``dp`` backstories; the same panel for closed and open questions."""
    a = config.ask
    panels = []
    matching = [m.removeprefix("anthology-") for m in a.methods if m in ANTHOLOGY_METHODS]
    if matching:
        matches = run.read("matches")
        missing = sorted(set(matching) - set(matches["method"]))
        if missing:
            raise ConfigError(f"no {missing[0]!r} matches in {run.root}: run `anthology match` with it")
        chosen = matches[matches["method"].isin(matching)]
        panels.append(
            anthology_panel(
                chosen, read_pool(run, "backstories"), survey=survey, append=a.append, seed=config.seed
            )
        )
    # Baselines follow the run's prompt style, so a chat-only server can answer them too.
    baselines = [m for m in a.methods if m in BASELINES]
    if baselines:
        panels.append(baseline_contexts(survey, baselines, seed=config.seed, style=style))
    if dp is not None:
        panels.append(dp_panel(dp))
    return pd.concat(panels, ignore_index=True)


def ask(stage: StageRun) -> dict[str, Any]:
    """Matched personas and the chosen baselines answer the survey."""
    run, c, model = stage.run, stage.config, stage.need_model()
    a = c.ask
    survey = run_survey(run)
    natural = natural_style(run, c, model)
    info: dict[str, Any] = {}
    dp = None
    if "dp" in a.methods:
        # DP backstories pass the same filters as the run's natural ones, at the paper's temperature 1.1.
        dp_config = natural.updated(temperature=1.1, max_tokens=a.dp_max_tokens)
        dp = dp_backstories(model, survey, seed=c.seed, style=a.dp_style, config=dp_config)
        run.write("dp_backstories", dp)
        info["dp"] = summary(dp)
    answers, dists = ask_panel(
        model,
        study_panel(run, c, survey, natural.style, dp),
        survey.questionnaire,
        seed=c.seed,
        config=a.narrow(AskConfig),
    )
    run.write("answers", answers)
    run.write("distributions", dists)
    info["compliance"] = compliance(answers).to_dict(orient="records")
    return info


def pool(stage: StageRun) -> dict[str, Any]:
    """Audit the pool's coverage of the survey's (sampled) respondents and, with a budget
    (``pool.top_up``), top it up until the audit passes (:mod:`anthology.method.topup`). The new
    personas are written apart (``topup_backstories``, ``topup_demographics``; empty without a
    top-up), and match and ask read them after the first pool's (:func:`read_pool`)."""
    c, run = stage.config, stage.run
    survey = open_survey(c)
    if survey.respondents is None:
        raise ConfigError(
            f"survey {c.survey.name!r} has no respondent data to audit the pool against: give its data "
            "file (survey.data or --data)"
        )
    stories = run.read("backstories")
    made = top_up(
        stage.need_model(),  # called only to top up: without a budget the stage only audits
        survey,
        stories,
        run.read("demographics"),
        seed=c.seed,
        config=c.pool,
        backstory_config=c.backstories.narrow(BackstoryConfig),
        demographics_config=c.demographics,
        traits=study_traits(c),
        batch=c.backstories.n,
    )
    run.write("topup_backstories", made.backstories)
    run.write("topup_demographics", made.demographics)
    run.write("audit", audit_frame(made.audits))
    first, last = made.audits[0], made.audits[-1]
    return {
        "critic": {"pool": summary(stories).get("contradictions")}
        | ({"topup": summary(made.backstories).get("contradictions")} if made.rounds else {}),
        "rounds": made.rounds,
        "added": {"generated": len(made.backstories), "kept": int(made.backstories["kept"].sum())},
        "topup": summary(made.backstories) if made.rounds else None,
        "budget": c.pool.top_up,
        "passed": last.passed,
        "before": first.summary(),
        "after": last.summary(),
    }


def open_answers(stage: StageRun) -> dict[str, Any]:
    from anthology.open_stages import answer_stage

    return answer_stage(stage)


def coder_parts(config: RunConfig) -> dict[str, Any]:
    """The codes depend on another coder's full identity, not only on its spec (``open.coder``)."""
    from anthology.open_stages import coder_identity

    spec = config.open.coder
    return {} if spec is None else {"coder": fingerprint(coder_identity(spec))}


def code_answers(stage: StageRun) -> dict[str, Any]:
    from anthology.open_stages import code_stage

    return code_stage(stage)


def evaluate(stage: StageRun) -> dict[str, Any]:
    from anthology.evaluation import evaluate as run_evaluation

    e = stage.config.evaluate
    run_evaluation(
        stage.run.root,
        n_splits=e.splits,
        n_resamples=e.resamples,
        seed=stage.config.seed,
        persona_weights=e.persona_weights,
    )
    return dict(stage.run.manifest()["stages"]["evaluate"])  # what evaluate() recorded


def report(stage: StageRun) -> dict[str, Any]:
    from anthology.report import write_report

    return {"path": str(write_report(stage.run.root))}


EVALUATION_FILES = tuple(FILES.values())
STAGES: tuple[Stage, ...] = (
    Stage(
        "backstories", ("backstories",), (), ("backstories",), model=True, survey=False, execute=backstories
    ),
    Stage(
        "demographics",
        ("demographics",),
        ("backstories",),
        ("demographics",),
        model=True,
        survey=False,
        execute=demographics,
        parts=trait_parts,
    ),
    Stage(
        "pool",
        ("survey", "backstories", "demographics", "pool"),
        ("backstories", "demographics"),
        ("topup_backstories", "topup_demographics", "audit"),
        model=True,
        survey=True,
        execute=pool,
        parts=trait_parts,
    ),
    Stage(
        "match",
        ("survey", "matching"),
        ("demographics", "topup_demographics"),
        ("matches", "humans"),
        model=False,
        survey=True,
        execute=match,
        parts=margins_parts,
    ),
    Stage(
        "ask",
        ("backstories", "ask"),
        ("backstories", "topup_backstories", "matches", "humans"),
        ("answers", "distributions"),
        model=True,
        survey=True,
        execute=ask,
    ),
    Stage(
        "open",
        ("backstories", "ask", "open"),
        ("backstories", "topup_backstories", "matches", "humans", "answers", "dp_backstories"),
        ("open_answers",),
        model=True,
        survey=True,
        execute=open_answers,
    ),
    Stage(
        "code",
        ("open",),
        ("open_answers", "humans"),
        ("open_codes",),
        model=True,
        survey=True,
        execute=code_answers,
        parts=coder_parts,
    ),
    Stage(
        "evaluate",
        ("evaluate",),
        ("answers", "distributions", "humans", "matches"),
        EVALUATION_FILES,
        model=False,
        survey=True,
        execute=evaluate,
        parts=lambda config: {"evaluation": EVALUATION_VERSION},
    ),
    Stage(
        "report",
        ("evaluate",),
        (
            "answers",
            "distributions",
            "humans",
            "matches",
            "backstories",
            "topup_backstories",
            "audit",
            *EVALUATION_FILES,
            "open_codes",
        ),
        ("report.html",),
        model=False,
        survey=True,
        execute=report,
    ),
)
BY_NAME = {stage.name: stage for stage in STAGES}
