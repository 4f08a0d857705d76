"""The files an evaluation leaves in the run directory (:data:`FILES`): write them
(:func:`write_evaluation`) and read them back (:func:`read_evaluation`)."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from anthology.errors import ConfigError
from anthology.evaluation.compute import Evaluation
from anthology.files import atomic_write

#: The files :func:`anthology.evaluation.evaluate` writes into the run directory, per
#: :class:`Evaluation` table.
FILES = {
    "metrics": "metrics.csv",
    "per_question": "metrics_per_question.csv",
    "per_subgroup": "metrics_per_subgroup.csv",
    "coverage": "score_coverage.csv",
    "worth_curve": "metrics_worth_curve.csv",
    "retest": "retest.csv",
}
#: The tables whose ``note`` column says why a value is undefined.
NOTED = ("metrics", "per_subgroup")


def write_evaluation(evaluation: Evaluation, run_dir: str | Path) -> dict[str, Path]:
    """Write each table of ``evaluation`` as its :data:`FILES` CSV (atomically); return the paths."""
    paths = {}
    for key, name in FILES.items():
        write = functools.partial(getattr(evaluation, key).to_csv, index=False)
        paths[key] = atomic_write(Path(run_dir) / name, write)
    return paths


def read_evaluation(run_dir: str | Path) -> Evaluation:
    """The evaluation that :func:`anthology.evaluation.evaluate` wrote into the run directory."""
    root = Path(run_dir)
    frames = {}
    for key, name in FILES.items():
        if not (root / name).exists():
            raise ConfigError(f"{root / name} does not exist: run `anthology evaluate {root}` first")
        frames[key] = pd.read_csv(root / name)
    for key in NOTED:  # the files of evaluations made before notes have no such column
        if "note" not in frames[key]:
            frames[key]["note"] = None
    return Evaluation(**frames)


def file_paths(run_dir: str | Path) -> list[Path]:
    """Where the :data:`FILES` are in the run directory."""
    return [Path(run_dir) / name for name in FILES.values()]
