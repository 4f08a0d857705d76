"""Reading respondent data: CSV (and other delimited text), Excel .xlsx, Parquet, SPSS (.sav, .zsav)
and Stata (.dta) files, or a DataFrame.

SPSS and Stata files are read with pyreadstat, keeping their value labels (so a codebook can name
categories by label, and the labels can be checked against the codebook). In CSV and Excel files only
empty cells are missing: text such as "NA" is kept, so that the codebook has to say what it means.

A CSV file's delimiter and encoding are detected unless the codebook's ``read:`` gives them: the
delimiter is the candidate (``,`` ``;`` tab ``|``) that splits the header into the most fields while
splitting the most rows of the file's start into as many; the encoding is the one its byte-order mark
names, else UTF-8 if the whole file is UTF-8, else Windows-1252 (what Excel on Windows exports in
Western Europe and the Americas), else latin-1 (which decodes any bytes), with a warning that names it.
In a file not separated by commas (``;`` is how Excel writes CSV where the comma is the decimal
mark), a column whose every value is a number written with a decimal comma (``0,5``) is read as
numbers; any other text is kept as it is.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import Field, field_validator

from anthology.errors import ConfigError, MissingDependencyError
from anthology.surveys.schema import FrozenModel

#: The delimiters a CSV file is tried with, in the order that breaks ties.
DELIMITERS = (",", ";", "\t", "|")
#: Tried in order on a file without a byte-order mark; latin-1 decodes any bytes, so it comes last.
ENCODINGS = ("utf-8", "cp1252", "latin-1")

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_SAMPLE_BYTES = 1 << 16  # the start of a file that the delimiter is sniffed from
_CHUNK_BYTES = 1 << 20
_SHOWN_HEADER = 80
_DECIMAL_COMMA = r"[+-]?(?:\d+(?:,\d*)?|,\d+)"


class ReadOptions(FrozenModel):
    """How to read the data file, where detection is not enough: the codebook's ``read:`` entry."""

    delimiter: str | None = None
    encoding: str | None = None
    sheet: Annotated[int, Field(ge=0)] | str | None = None

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, delimiter: str | None) -> str | None:
        if delimiter is not None and (len(delimiter) != 1 or delimiter.isalnum() or delimiter in '"\r\n'):
            raise ValueError(
                f"the delimiter is one character such as ',', ';', '|' or \"\\t\" (tab), not {delimiter!r}"
            )
        return delimiter

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str | None) -> str | None:
        if encoding is not None:
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise ValueError(
                    f"unknown encoding {encoding!r}; use a Python codec name such as utf-8, cp1252 or latin-1"
                ) from None
        return encoding


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file was read (delimiter and encoding, detected or given) and its first line, for
    messages."""

    delimiter: str
    encoding: str
    header: str

    def describe(self) -> str:
        return f"CSV with delimiter {self.delimiter!r}, encoding {self.encoding}"


@dataclass(frozen=True)
class Table:
    """Respondent data as read: ``name`` says where from (for messages), ``columns`` lists every column
    the source has, ``frame`` holds the requested ones, ``value_labels`` maps column -> code -> label
    (in the file's order); ``dialect`` says how a CSV file was read and ``warnings`` what the load
    report should mention. SPSS and Stata files also give ``column_labels`` (column -> variable label),
    ``missing_ranges`` (column -> the inclusive ``(low, high)`` ranges of SPSS user-missing codes,
    which are read as empty) and the ``file_label``."""

    name: str
    frame: pd.DataFrame
    columns: tuple[str, ...]
    value_labels: Mapping[str, Mapping[Any, str]] = field(default_factory=dict)
    dialect: CsvDialect | None = None
    warnings: tuple[str, ...] = ()
    column_labels: Mapping[str, str] = field(default_factory=dict)
    missing_ranges: Mapping[str, tuple[tuple[Any, Any], ...]] = field(default_factory=dict)
    file_label: str | None = None


def frame_table(name: str, frame: pd.DataFrame) -> Table:
    """A :class:`Table` over a DataFrame already in memory (no value labels)."""
    return Table(name, frame, tuple(str(c) for c in frame.columns))


def read_table(path: Path, columns: Collection[str] | None, options: ReadOptions | None = None) -> Table:
    """Read the requested ``columns`` (those that exist; ``None``: all of them) from a data file, chosen
    by its extension; ``options`` (the codebook's ``read:``) override what is detected."""
    options = options or ReadOptions()
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        old_excel = "; save an .xls workbook as .xlsx" if suffix == ".xls" else ""
        raise ConfigError(
            f"cannot read {path}: unknown file type {path.suffix!r}; use {', '.join(_READERS)}{old_excel}"
        )
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist; check the path")
    kind, reader = _READERS[suffix]
    _check_options(path, kind, options)
    try:
        return reader(path, columns, options)
    except _read_errors() as exc:
        raise _unreadable(path, kind, exc) from exc


def _check_options(path: Path, kind: str, options: ReadOptions) -> None:
    """Refuse a ``read:`` key that does not apply to this kind of file, rather than ignore it."""
    given = [key for key, value in options.model_dump().items() if value is not None]
    applies = {"CSV": ("delimiter", "encoding"), _EXCEL: ("sheet",)}.get(kind, ())
    for key in given:
        if key not in applies:
            raise ConfigError(
                f"read.{key} in the codebook does not apply to {path} ({kind}); remove it, or use the "
                "data file it was written for"
            )


def _unreadable(path: Path, kind: str, exc: Exception) -> ConfigError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(
        f"cannot read {path} as {kind}: {reason}; check that the file is complete and of that type "
        "(download or export it again)"
    )


def _read_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean "this file cannot be read" (pandas' and pyarrow's are ValueErrors)."""
    import pyreadstat

    return (OSError, UnicodeDecodeError, ValueError, pyreadstat.ReadstatError, pyreadstat.PyreadstatError)


Reader = Callable[[Path, Collection[str] | None, ReadOptions], Table]


def _wanted(header: tuple[str, ...], columns: Collection[str] | None) -> list[str]:
    """The columns of ``header`` to read, in file order: those requested, or all of them."""
    return list(header) if columns is None else [c for c in header if c in columns]


def _read_csv(path: Path, columns: Collection[str] | None, options: ReadOptions) -> Table:
    dialect, warnings = detect_dialect(path, options)
    read: dict[str, Any] = {"sep": dialect.delimiter, "encoding": dialect.encoding}
    try:
        header = tuple(str(c) for c in pd.read_csv(path, nrows=0, **read).columns)
        wanted = _wanted(header, columns)
        frame = pd.read_csv(path, usecols=wanted, keep_default_na=False, na_values=[""], **read)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read {path} as {dialect.encoding} (read.encoding in the codebook): {exc}; fix "
            "read.encoding, or remove it to have the encoding detected"
        ) from exc
    except pd.errors.ParserError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"cannot read {path} as {dialect.describe()}: {reason}; fix that row, or set read.delimiter in "
            "the codebook if that is not the file's delimiter"
        ) from exc
    if dialect.delimiter != ",":
        frame = decimal_commas(frame)
    return Table(str(path), frame, header, dialect=dialect, warnings=warnings)


def detect_dialect(path: Path, options: ReadOptions) -> tuple[CsvDialect, tuple[str, ...]]:
    """The delimiter and encoding of a CSV file (as ``options`` give them, else detected), and a warning
    when the encoding had to be guessed."""
    with path.open("rb") as file:
        head = file.read(_SAMPLE_BYTES)
        complete = not file.read(1)
    encoding = options.encoding or _detect_encoding(path, head)
    sample = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=complete)
    if not complete and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]
    delimiter = options.delimiter or sniff_delimiter(sample, complete)
    first = sample.splitlines()[0] if sample.strip() else ""
    shown = first if len(first) <= _SHOWN_HEADER else first[:_SHOWN_HEADER] + "..."
    warnings: tuple[str, ...] = ()
    if options.encoding is None and encoding in ENCODINGS[1:]:
        warnings = (
            f"{path} is not UTF-8 text: read as {encoding}; if accented letters look wrong, set "
            "read.encoding in the codebook",
        )
    return CsvDialect(delimiter, encoding, shown), warnings


def _detect_encoding(path: Path, head: bytes) -> str:
    """The encoding a byte-order mark names, else the first of :data:`ENCODINGS` the file decodes in;
    a file with NUL bytes and no such mark is not text."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    if b"\0" in head:
        workbook = (
            " and looks like an Excel workbook: give it the .xlsx extension" if head[:2] == b"PK" else ""
        )
        raise ConfigError(
            f"cannot read {path} as CSV: it is not text (it has NUL bytes{workbook}); export the data as CSV "
            "again, or set read.encoding in the codebook (utf-16-le, say) if it is UTF-16 text"
        )
    return next((e for e in ENCODINGS[:-1] if _decodes(path, e)), ENCODINGS[-1])


def _decodes(path: Path, encoding: str) -> bool:
    """Whether the whole file is valid ``encoding`` (read in chunks, so a large file is not held twice)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK_BYTES):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def sniff_delimiter(sample: str, complete: bool = True) -> str:
    """The delimiter of :data:`DELIMITERS` that splits the header into at least two fields and the most
    rows of ``sample`` into as many, the header's field count breaking ties; ``,`` when none splits the
    header (a one-column file). Quoted fields are honoured; ``complete`` is false when ``sample`` is
    only the start of the file, whose last row may then be cut short."""
    best, best_score = ",", (0.0, 1)
    for delimiter in DELIMITERS:
        try:
            rows = [row for row in csv.reader(io.StringIO(sample), delimiter=delimiter) if row]
        except csv.Error:
            continue
        widths = [len(row) for row in (rows if complete else rows[:-1] or rows)]
        if not widths or widths[0] < 2:
            continue
        score = (sum(w == widths[0] for w in widths) / len(widths), widths[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def decimal_commas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns whose every value is a number with a decimal comma (``0,5``, ``12``) as numbers;
    other columns unchanged."""
    converted = {}
    for column in frame.columns:
        values = frame[column].dropna()
        if pd.api.types.is_numeric_dtype(values) or not len(values):
            continue
        text = values.astype(str)
        if text.str.fullmatch(_DECIMAL_COMMA).all() and text.str.contains(",", regex=False).any():
            converted[column] = pd.to_numeric(frame[column].str.replace(",", ".", regex=False))
    return frame.assign(**converted) if converted else frame


def _read_excel(path: Path, columns: Collection[str] | None, options: ReadOptions) -> Table:
    try:
        import openpyxl  # noqa: F401  (pandas reads .xlsx through it)
    except ImportError:
        raise MissingDependencyError(
            f"reading the Excel file {path} needs openpyxl: pip install 'anthology-personas[excel]'"
        ) from None
    try:
        book = pd.ExcelFile(path, engine="openpyxl")
    except (zipfile.BadZipFile, KeyError) as exc:  # not a zip archive, or not a workbook inside
        raise _unreadable(path, _EXCEL, exc) from exc
    with book:
        sheet = _sheet(path, book.sheet_names, options.sheet)
        frame = pd.read_excel(book, sheet_name=sheet, keep_default_na=False, na_values=[""])
    header = tuple(str(c) for c in frame.columns)
    frame.columns = list(header)
    return Table(f"{path}, sheet {sheet!r}", frame[_wanted(header, columns)], header)


def _sheet(path: Path, names: list[str], wanted: int | str | None) -> str:
    """The sheet that ``read.sheet`` names (a name or a 0-based index); the first by default."""
    wanted = 0 if wanted is None else wanted
    if isinstance(wanted, int):
        if wanted < len(names):
            return names[wanted]
    elif wanted in names:
        return wanted
    raise ConfigError(
        f"{path} has no sheet {wanted!r} (its sheets: {', '.join(map(repr, names))}); set read.sheet in "
        "the codebook to a sheet name or a 0-based index"
    )


def _read_parquet(path: Path, columns: Collection[str] | None, options: ReadOptions) -> Table:
    import pyarrow.parquet as pq

    header = tuple(pq.read_schema(path).names)
    return Table(str(path), pd.read_parquet(path, columns=_wanted(header, columns)), header)


def _statistical(read_name: str) -> Reader:
    """A reader for SPSS or Stata files through pyreadstat, keeping value and variable labels and the
    SPSS user-missing ranges (only a read with ``user_missing`` reports them)."""

    def read(path: Path, columns: Collection[str] | None, options: ReadOptions) -> Table:
        import pyreadstat

        read_file = getattr(pyreadstat, read_name)
        _, meta = read_file(str(path), metadataonly=True, user_missing=True)
        header = tuple(meta.column_names)
        missing = {c: tuple((r["lo"], r["hi"]) for r in ranges) for c, ranges in meta.missing_ranges.items()}
        frame, meta = read_file(str(path), usecols=_wanted(header, columns))
        return Table(
            str(path),
            frame,
            header,
            dict(meta.variable_value_labels),
            column_labels={c: label for c, label in meta.column_names_to_labels.items() if label},
            missing_ranges=missing,
            file_label=meta.file_label or None,
        )

    return read


_EXCEL = "an Excel .xlsx workbook"
_READERS: dict[str, tuple[str, Reader]] = {
    ".csv": ("CSV", _read_csv),
    ".tsv": ("CSV", _read_csv),
    ".txt": ("CSV", _read_csv),
    ".xlsx": (_EXCEL, _read_excel),
    ".parquet": ("Parquet", _read_parquet),
    ".sav": ("an SPSS .sav file", _statistical("read_sav")),
    ".zsav": ("an SPSS .zsav file", _statistical("read_sav")),
    ".dta": ("a Stata .dta file", _statistical("read_dta")),
}
