"""The files an evaluation leaves in the run directory (:data:`FILES`): write them
(:func:`write_evaluation`) and read them back (:func:`read_evaluation`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from anthology.errors import ConfigError
from anthology.evaluation.compute import Evaluation

#: The files :func:`anthology.evaluation.evaluate` writes into the run directory, per
#: :class:`Evaluation` table.
FILES = {
    "metrics": "metrics.csv",
    "per_question": "metrics_per_question.csv",
    "per_subgroup": "metrics_per_subgroup.csv",
    "coverage": "score_coverage.csv",
}


def write_evaluation(evaluation: Evaluation, run_dir: str | Path) -> dict[str, Path]:
    """Write each table of ``evaluation`` as its :data:`FILES` CSV; return the paths."""
    paths = {}
    for key, name in FILES.items():
        paths[key] = Path(run_dir) / name
        getattr(evaluation, key).to_csv(paths[key], index=False)
    return paths


def read_evaluation(run_dir: str | Path) -> Evaluation:
    """The evaluation that :func:`anthology.evaluation.evaluate` wrote into the run directory."""
    root = Path(run_dir)
    frames = {}
    for key, name in FILES.items():
        if not (root / name).exists():
            raise ConfigError(f"{root / name} does not exist: run `anthology evaluate {root}` first")
        frames[key] = pd.read_csv(root / name)
    return Evaluation(**frames)


def file_paths(run_dir: str | Path) -> list[Path]:
    """Where the :data:`FILES` are in the run directory."""
    return [Path(run_dir) / name for name in FILES.values()]
