"""Loading a survey by built-in name or by codebook path, with respondent data from a file, a
DataFrame, the codebook's own ``data:`` entry, or a built-in's bundled data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from anthology.errors import ConfigError
from anthology.hashing import update_with_file
from anthology.surveys.builtin import BUILTINS
from anthology.surveys.codebook import Codebook, read_codebook
from anthology.surveys.coding import _respondent_ids, code_respondents
from anthology.surveys.datafiles import Table, frame_table, read_table
from anthology.surveys.schema import Survey


def survey_names() -> tuple[str, ...]:
    """The names of the built-in surveys."""
    return tuple(BUILTINS)


def load_survey(name_or_path: str | Path, data: str | Path | pd.DataFrame | None = None) -> Survey:
    """A survey by built-in name (``anthology surveys list``) or by the path of a YAML codebook.

    ``data`` is the respondent data: a CSV, Parquet, SPSS (.sav) or Stata (.dta) file, or a DataFrame.
    Without it, a built-in uses its bundled data and a codebook its ``data:`` entry (relative to the
    codebook's folder); with neither, the survey has questions but no respondents.
    """
    codebook = read_codebook(_codebook_path(name_or_path))
    table = _table(codebook, name_or_path, data)
    if table is None:
        return Survey(codebook)
    respondents, report = code_respondents(codebook, table)
    return Survey(codebook, respondents, report)


def respondent_columns(name_or_path: str | Path, data: str | Path | None, columns: list[str]) -> pd.DataFrame:
    """Some of a survey's data columns as read (free-text answers), indexed by respondent id as
    its respondents are; no rows when the survey has no data."""
    codebook = read_codebook(_codebook_path(name_or_path))
    table = _table(codebook, name_or_path, data)
    if table is None:
        return pd.DataFrame(columns=columns)
    return table.frame[columns].set_index(_respondent_ids(codebook, table))


def load_codebook(name_or_path: str | Path) -> Codebook:
    """A survey's codebook alone, by built-in name or path (no respondent data is read)."""
    return read_codebook(_codebook_path(name_or_path))


def _codebook_path(name_or_path: str | Path) -> Path:
    if str(name_or_path) in BUILTINS:
        return BUILTINS[str(name_or_path)].codebook_path
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        return path
    if path.is_file():
        raise ConfigError(
            f"{path} is not a codebook: pass the YAML codebook, with this file as its `data:` or as --data"
        )
    raise ConfigError(
        f"unknown survey {str(name_or_path)!r}: use a built-in ({', '.join(BUILTINS)}) "
        "or the path of a YAML codebook"
    )


def _table(
    codebook: Codebook, name_or_path: str | Path, data: str | Path | pd.DataFrame | None
) -> Table | None:
    if isinstance(data, pd.DataFrame):
        return frame_table("the DataFrame passed as data", data)
    if data is not None:
        return read_table(Path(data).expanduser(), codebook.columns(), codebook.read)
    builtin = BUILTINS.get(str(name_or_path))
    if builtin is not None and builtin.load is not None:
        return frame_table(builtin.data_source, builtin.load())
    if codebook.data is not None:
        path = Path(codebook.origin.file).parent / codebook.data
        return read_table(path, codebook.columns(), codebook.read)
    return None


def survey_content_hash(name_or_path: str | Path, data: str | Path | None = None) -> str:
    """A sha256 over what a survey is read from: its codebook file's bytes and its data file's bytes
    (a built-in's bundled data as loaded), not their paths, so editing a codebook or replacing its
    data under the same name gives another hash."""
    path = _codebook_path(name_or_path)
    digest = hashlib.sha256(path.read_bytes())
    builtin = BUILTINS.get(str(name_or_path))
    if data is None and builtin is not None and builtin.load is not None:
        digest.update(pd.util.hash_pandas_object(builtin.load(), index=True).values.tobytes())
        return digest.hexdigest()
    codebook = read_codebook(path)
    for included in codebook.origin.includes:
        update_with_file(digest, included)
    if data is None:
        data = path.parent / codebook.data if codebook.data is not None else None
    if data is not None and Path(data).expanduser().is_file():
        update_with_file(digest, Path(data).expanduser())
    return digest.hexdigest()
