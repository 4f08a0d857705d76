"""The evaluation stored in a run directory: make it (:func:`evaluate`: load the run, compute, write
the files and record the stage in the manifest) and tell whether the stored one is still current
(:func:`is_current`)."""

from __future__ import annotations

import time
from pathlib import Path

from anthology.evaluation.compute import Evaluation, compute
from anthology.evaluation.files import file_paths, write_evaluation
from anthology.evaluation.load import load_run
from anthology.store import RunDir


def evaluate(
    run_dir: str | Path, *, n_splits: int = 100, n_resamples: int = 1000, seed: int = 0
) -> Evaluation:
    """Compute every metric of every method in the run directory, write its files there (metrics.csv,
    metrics_per_question.csv, metrics_per_subgroup.csv, score_coverage.csv: ``FILES``) and record the
    stage in the manifest (see :mod:`anthology.evaluation`)."""
    started = time.perf_counter()
    data = load_run(run_dir)
    evaluation = compute(data, n_splits=n_splits, n_resamples=n_resamples, seed=seed)
    write_evaluation(evaluation, data.run.root)
    data.run.record(
        "evaluate",
        {
            "seconds": round(time.perf_counter() - started, 3),
            "seed": seed,
            "n_splits": n_splits,
            "n_resamples": n_resamples,
            "methods": list(data.methods),
        },
    )
    return evaluation


def is_current(run_dir: str | Path) -> bool:
    """Whether the run's metric files exist and are newer than its humans and answers."""
    run = RunDir(run_dir)
    paths = file_paths(run.root)
    if not all(p.exists() for p in paths):
        return False
    inputs = [run.artifact(name) for name in ("humans", "answers") if run.has(name)]
    return min(p.stat().st_mtime for p in paths) >= max((p.stat().st_mtime for p in inputs), default=0)
