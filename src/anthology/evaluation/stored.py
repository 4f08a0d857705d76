"""The evaluation stored in a run directory: make it (:func:`evaluate`: load the run, compute, write
the files and record in the manifest its settings and the digests of the inputs it saw), tell whether
the stored one is still current (:func:`staleness`), and reuse it or make it again with the run's own
settings (:func:`current_evaluation`, what ``anthology report`` uses)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anthology.evaluation.compute import Evaluation, compute
from anthology.evaluation.files import file_paths, read_evaluation, write_evaluation
from anthology.evaluation.load import INPUTS, input_digests, load_run
from anthology.store import RunDir


@dataclass(frozen=True)
class Settings:
    """What an evaluation's numbers depend on besides the run: the humans' split halves for the
    lower bound (also the draws per size of the worth-in-humans curve), the bootstrap resamples and
    the seed of all."""

    n_splits: int = 100
    n_resamples: int = 1000
    seed: int = 0
    persona_weights: str = "equal"  # which rows each method gets (``RunData.rows``)

    def describe(self) -> str:
        weights = "" if self.persona_weights == "equal" else f", persona weights {self.persona_weights}"
        return f"seed {self.seed}, {self.n_splits} splits, {self.n_resamples} resamples{weights}"


DEFAULTS = Settings()

#: The version of what an evaluation computes: raised when its numbers or files change meaning, so a
#: stored evaluation of an older version is made again. 2: undefined statistics are NaN with a reason
#: (the ``note`` column), subgroups cover every trait. 3: each method's worth in humans
#: (``worth_n_humans``) and the curve it is read off (metrics_worth_curve.csv); weighted rows and the
#: raked panel (read from matches.parquet, now an input).
EVALUATION_VERSION = 3


def evaluate(
    run_dir: str | Path,
    *,
    n_splits: int = DEFAULTS.n_splits,
    n_resamples: int = DEFAULTS.n_resamples,
    seed: int = DEFAULTS.seed,
    persona_weights: str = DEFAULTS.persona_weights,
) -> Evaluation:
    """Compute every metric of every method in the run directory, write its files there (metrics.csv,
    metrics_per_question.csv, metrics_per_subgroup.csv, score_coverage.csv, metrics_worth_curve.csv:
    ``FILES``) and record the stage in the manifest (see :mod:`anthology.evaluation`)."""
    started = time.perf_counter()
    data = load_run(run_dir)
    evaluation = compute(
        data, n_splits=n_splits, n_resamples=n_resamples, seed=seed, persona_weights=persona_weights
    )
    write_evaluation(evaluation, data.run.root)
    data.run.record(
        "evaluate",
        {
            "seconds": round(time.perf_counter() - started, 3),
            "seed": seed,
            "n_splits": n_splits,
            "n_resamples": n_resamples,
            "persona_weights": persona_weights,
            "methods": list(data.methods),
            "inputs": data.inputs,  # SHA-256 of answers, humans and matches .parquet as evaluated
            "version": EVALUATION_VERSION,
        },
    )
    return evaluation


def staleness(run_dir: str | Path) -> str | None:
    """Why the run's stored evaluation is not current, ``None`` when it is: every metric file exists,
    it was made by this :data:`EVALUATION_VERSION`, and the answers and humans are those the manifest
    records it was made from (by digest; for an evaluation that recorded none, the metric files are
    newer than the answers and humans)."""
    run = RunDir(run_dir)
    outputs = file_paths(run.root)
    if not all(p.exists() for p in outputs):
        return "it has no metric files"
    stage = _stage(run.manifest())
    made_by = stage.get("version", 1)
    if stage and made_by != EVALUATION_VERSION:
        return f"it was made by an older evaluation (version {made_by}, now {EVALUATION_VERSION})"
    recorded = stage.get("inputs")
    if recorded is not None:
        current = input_digests(run)
        changed = [name for name in INPUTS if recorded.get(name) != current.get(name)]
        return f"its {' and '.join(changed)} changed since it was evaluated" if changed else None
    inputs = [run.artifact(name) for name in INPUTS if run.has(name)]
    if min(p.stat().st_mtime for p in outputs) < max((p.stat().st_mtime for p in inputs), default=0):
        return "its metric files are older than its answers or humans"
    return None


def is_current(run_dir: str | Path) -> bool:
    """Whether the run's metric files exist and were made from its current answers and humans."""
    return staleness(run_dir) is None


def recorded_settings(manifest: dict[str, Any]) -> tuple[Settings, str]:
    """The settings the run records, and where from: its last evaluation (``stages.evaluate``), else
    the run's config (``config.evaluate`` and ``config.seed``), else the defaults."""
    stage = _stage(manifest)
    if stage:
        settings = _settings(
            stage.get("n_splits"), stage.get("n_resamples"), stage.get("seed"), stage.get("persona_weights")
        )
        return settings, "its last evaluation's settings"
    config = manifest.get("config")
    if config:
        section = config.get("evaluate") or {}
        given = (section.get("splits"), section.get("resamples"), config.get("seed"))
        settings = _settings(*given, section.get("persona_weights"))
        return settings, "its config's settings"
    return DEFAULTS, "the default settings"


def current_evaluation(run_dir: str | Path) -> tuple[Evaluation, str]:
    """The run's evaluation and a line saying how it was had: read back when :func:`staleness` finds
    it current, else made again with :func:`recorded_settings`."""
    root = Path(run_dir)
    manifest = RunDir(root).manifest()
    settings, source = recorded_settings(manifest)
    reason = staleness(root)
    if reason is None:
        made = settings.describe() if _stage(manifest) else "its settings are not recorded"
        return read_evaluation(root), f"using the run's evaluation ({made})"
    evaluation = evaluate(root, **asdict(settings))
    return evaluation, f"evaluating the run with {source} ({settings.describe()}): {reason}"


def _stage(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest.get("stages", {}).get("evaluate") or {}


def _settings(n_splits: Any, n_resamples: Any, seed: Any, persona_weights: Any = None) -> Settings:
    """Settings from recorded values, the defaults where one is missing."""
    given = {"n_splits": n_splits, "n_resamples": n_resamples, "seed": seed}
    counts = {k: int(v) for k, v in given.items() if v is not None}
    weights = {"persona_weights": str(persona_weights)} if persona_weights is not None else {}
    return Settings(**{**asdict(DEFAULTS), **counts, **weights})
