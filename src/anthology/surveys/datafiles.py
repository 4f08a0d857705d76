"""Reading respondent data: CSV, Parquet, SPSS (.sav, .zsav) and Stata (.dta) files, or a DataFrame.

SPSS and Stata files are read with pyreadstat, keeping their value labels (so a codebook can name
categories by label, and the labels can be checked against the codebook). In CSV files only empty cells
are missing: text such as "NA" is kept, so that the codebook has to say what it means.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from anthology.errors import ConfigError


@dataclass(frozen=True)
class Table:
    """Respondent data as read: ``name`` says where from (for messages), ``columns`` lists every column
    the source has, ``frame`` holds the requested ones, ``value_labels`` maps column -> code -> label."""

    name: str
    frame: pd.DataFrame
    columns: tuple[str, ...]
    value_labels: Mapping[str, Mapping[Any, str]] = field(default_factory=dict)


def frame_table(name: str, frame: pd.DataFrame) -> Table:
    """A :class:`Table` over a DataFrame already in memory (no value labels)."""
    return Table(name, frame, tuple(str(c) for c in frame.columns))


def read_table(path: Path, columns: Collection[str]) -> Table:
    """Read the requested ``columns`` (those that exist) from a data file, chosen by its extension."""
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ConfigError(
            f"cannot read {path}: unknown file type {path.suffix!r}; use .csv, .parquet, .sav, .zsav or .dta"
        )
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist; check the path")
    kind, reader = _READERS[suffix]
    try:
        frame, all_columns, labels = reader(path, columns)
    except _read_errors() as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot read {path} as {kind}: {reason}; check that the file is complete and of that type "
            "(download or export it again)"
        ) from exc
    return Table(str(path), frame, all_columns, labels)


def _read_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean "this file cannot be read" (pandas' and pyarrow's are ValueErrors)."""
    import pyreadstat

    return (OSError, UnicodeDecodeError, ValueError, pyreadstat.ReadstatError, pyreadstat.PyreadstatError)


#: What a reader returns: the requested columns, every column name, and value labels by column.
ReadResult = tuple[pd.DataFrame, tuple[str, ...], dict[str, dict[Any, str]]]
Reader = Callable[[Path, Collection[str]], ReadResult]


def _read_csv(path: Path, columns: Collection[str]) -> ReadResult:
    header = tuple(str(c) for c in pd.read_csv(path, nrows=0).columns)
    wanted = [c for c in header if c in columns]
    frame = pd.read_csv(path, usecols=wanted, keep_default_na=False, na_values=[""])
    return frame, header, {}


def _read_parquet(path: Path, columns: Collection[str]) -> ReadResult:
    import pyarrow.parquet as pq

    header = tuple(pq.read_schema(path).names)
    return pd.read_parquet(path, columns=[c for c in header if c in columns]), header, {}


def _statistical(read_name: str) -> Reader:
    """A reader for SPSS or Stata files through pyreadstat, keeping value labels."""

    def read(path: Path, columns: Collection[str]) -> ReadResult:
        import pyreadstat

        read_file = getattr(pyreadstat, read_name)
        _, meta = read_file(str(path), metadataonly=True)
        header = tuple(meta.column_names)
        frame, meta = read_file(str(path), usecols=[c for c in header if c in columns])
        return frame, header, dict(meta.variable_value_labels)

    return read


_READERS: dict[str, tuple[str, Reader]] = {
    ".csv": ("CSV", _read_csv),
    ".parquet": ("Parquet", _read_parquet),
    ".sav": ("an SPSS .sav file", _statistical("read_sav")),
    ".zsav": ("an SPSS .zsav file", _statistical("read_sav")),
    ".dta": ("a Stata .dta file", _statistical("read_dta")),
}
