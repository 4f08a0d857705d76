"""Helpers for the survey tests: run the CLI as a user does, write the documented codebook example to a
folder, and build a small synthetic Pew-style SPSS file for a codebook."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat

from anthology.surveys import Codebook

DOCS = Path(__file__).resolve().parents[1] / "docs" / "codebook.md"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m anthology ARGS`` with a wide terminal, so that table cells do not wrap."""
    return subprocess.run(
        [sys.executable, "-m", "anthology", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "250"},
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a CLI run that must fail cleanly (exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def write_doc_example(folder: Path) -> Path:
    """Write the worked example of docs/codebook.md (its csv and yaml blocks) into ``folder``; return
    the codebook's path."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = dict(re.findall(r"```(csv|yaml)\n(.*?)```", text, flags=re.S))
    (folder / "town-survey.csv").write_text(blocks["csv"], encoding="utf-8")
    codebook = folder / "town-survey.yaml"
    codebook.write_text(blocks["yaml"], encoding="utf-8")
    return codebook


def write_pew_sav(
    path: Path,
    codebook: Codebook,
    n: int = 80,
    seed: int = 0,
    label_only_codes: dict[str, list[int]] | None = None,
    relabel: dict[str, dict[float, str]] | None = None,
) -> pd.DataFrame:
    """A synthetic ATP-style .sav for ``codebook``: QKEY, positive weights, traits and answers as numeric
    codes with value labels, some 99 (refused) codes and one respondent who answered nothing.

    Categories matched by label get codes 1..K, or the codes given in ``label_only_codes[column]``;
    ``relabel[column]`` overrides value labels. Returns the frame as written.
    """
    rng = np.random.default_rng(seed)
    frame: dict[str, np.ndarray] = {
        "QKEY": np.arange(100001, 100001 + n, dtype=float),
        codebook.weight: rng.uniform(0.2, 3.0, n).round(4),
    }
    labels: dict[str, dict[float, str]] = {}
    for trait in codebook.traits.values():
        numeric = [next((c for c in cat.codes if not isinstance(c, str)), None) for cat in trait.categories]
        if None in numeric:  # categories matched by their value label: any codes will do
            numeric = (label_only_codes or {}).get(trait.column) or range(1, len(trait.categories) + 1)
        codes = [float(c) for c in numeric]
        frame[trait.column] = rng.choice([*codes, 99.0], n, p=[0.95 / len(codes)] * len(codes) + [0.05])
        labels[trait.column] = {c: cat.label for c, cat in zip(codes, trait.categories, strict=True)}
        labels[trait.column][99.0] = "Refused"
    for question in codebook.questions:
        codes = [float(o.code) for o in question.options]
        answers = rng.choice([*codes, 99.0, np.nan], n, p=[0.9 / len(codes)] * len(codes) + [0.05, 0.05])
        answers[-1] = np.nan
        frame[question.data_column] = answers
        labels[question.data_column] = {c: o.label for c, o in zip(codes, question.options, strict=True)}
        labels[question.data_column][99.0] = "Refused"
    for column, overrides in (relabel or {}).items():
        labels[column] = {**labels[column], **overrides}
    data = pd.DataFrame(frame)
    pyreadstat.write_sav(data, str(path), variable_value_labels=labels)
    return data
