"""Drafting a codebook from a data file (``anthology surveys init``): the columns of a labelled SPSS or
Stata file (or of a CSV or Parquet file, with its raw values) become the questions, the demographics
mapped onto the persona traits, the weight, the respondent id and the missing-value codes of a YAML
codebook, every guess marked in a comment for the user to check.

Variable labels become wordings, value labels ordered options with their codes, SPSS user-missing codes
and labels such as "Refused" or "Don't know" missing-value codes; the recognisers of
:mod:`anthology.surveys.recognise` propose the id, the weight and the canonical trait columns with
their mapping. :func:`draft_document` is pure (a table in, a codebook document and its comments out);
:func:`draft_codebook` reads the file, writes the YAML text and checks that the draft loads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anthology.errors import ConfigError
from anthology.surveys.codebook import RESERVED_NAMES, Codebook, parse_codebook
from anthology.surveys.codes import Code, MissingKind, normalise_text
from anthology.surveys.coding import code_respondents
from anthology.surveys.datafiles import Table, read_table
from anthology.surveys.recognise import (
    Category,
    TraitMapping,
    Value,
    id_score,
    is_demographic_name,
    map_numbers,
    map_values,
    missing_kind,
    missing_number,
    trait_score,
    weight_score,
)
from anthology.surveys.traits import CANONICAL_TRAITS
from anthology.surveys.yaml_text import Path as DocPath
from anthology.surveys.yaml_text import render_yaml

#: An unlabelled column with at most this many distinct values is drafted as a question to confirm.
MAX_RAW_OPTIONS = 12
_SHOWN = 8  # values or columns named in one comment
_NO_ANSWERS = "no answers in the data (every cell is empty or a missing-value code)"


@dataclass(frozen=True)
class Draft:
    """A drafted codebook: its YAML ``text`` (guesses marked ``# GUESS:``), what could not be guessed
    (``todo``, also listed at the end of the text), the columns ``left_out`` with why, the number of
    marked ``guesses``, and the checked :class:`Codebook` (``None`` if the draft does not load yet:
    ``todo`` then says why)."""

    text: str
    todo: tuple[str, ...]
    left_out: tuple[str, ...]
    guesses: int
    codebook: Codebook | None


def draft_codebook(data: str | Path, codebook: str | Path | None = None) -> Draft:
    """Draft a codebook for the data file ``data`` (.sav, .zsav, .dta, .csv, .parquet, ...), to be
    written at ``codebook`` (default: next to the data, with the extension .yaml), which its ``data:``
    entry is relative to. The draft is checked by loading the data with it."""
    data = Path(data).expanduser()
    target = Path(codebook).expanduser() if codebook is not None else data.with_suffix(".yaml")
    table = read_table(data, None)
    relative = Path(os.path.relpath(data.resolve(), target.resolve().parent)).as_posix()
    drafted = draft_document(table, data.stem, relative)
    todo = list(drafted.todo)
    checked: Codebook | None = None
    text = _text(drafted, todo, target, data)
    try:
        checked = parse_codebook(text, target)
        code_respondents(checked, table)
    except ConfigError as exc:
        checked = None
        todo.append(f"the draft does not load yet: {exc}")
        text = _text(drafted, todo, target, data)
    guesses = sum(1 for line in text.splitlines() if line.lstrip().startswith("# GUESS:"))
    return Draft(text, tuple(todo), drafted.left_out, guesses, checked)


def _text(drafted: DraftedDocument, todo: Sequence[str], target: Path, data: Path) -> str:
    header = [
        f"A codebook drafted by `anthology surveys init` from {data.name} (format: docs/codebook.md).",
        'Lines marked "GUESS:" were guessed from the column names and labels: check them. What could not',
        "be guessed is listed at the end. Options are in the order of the file's value labels (a Stata",
        "file keeps them in the order of their codes): metrics read that order as the scale's order.",
        f"Then check the survey with: anthology surveys show {target.name} --data {data.name}",
    ]
    footer = ["", "TO DO (what could not be guessed):", *(f"- {item}" for item in todo)] if todo else []
    if drafted.left_out:
        footer += ["", "Left out (neither questions nor demographics):"]
        footer += [f"- {item}" for item in drafted.left_out]
    return render_yaml(drafted.document, drafted.comments, header, footer)


@dataclass(frozen=True)
class DraftedDocument:
    """A codebook document (what its YAML holds), the comment lines of its entries by path, what
    could not be guessed and the columns left out."""

    document: dict[str, Any]
    comments: dict[DocPath, list[str]]
    todo: tuple[str, ...]
    left_out: tuple[str, ...]


@dataclass(frozen=True)
class _Column:
    """What a column holds, as the draft sees it: its answers (``values``, in order; none listed for a
    numeric column with too many, ``too_many`` saying so), the codes that mean no answer (code -> kind
    and why), whether the values come from value labels (and those are listed in the order of their
    codes), a numeric column's answers as ``numbers``, and notes for its entry."""

    name: str
    label: str | None
    values: list[Value]
    missing: dict[Code, tuple[MissingKind, str]]
    labelled: bool
    numbers: np.ndarray | None
    notes: list[str] = field(default_factory=list)
    in_code_order: bool = True
    too_many: str | None = None


def draft_document(table: Table, name: str, data: str) -> DraftedDocument:
    """The codebook document drafted from ``table`` (read with all its columns), named after ``name``,
    its ``data:`` entry ``data``."""
    columns: dict[str, _Column] = {}
    left_out: dict[str, str] = {}
    for column in table.columns:
        profile = _profile(table, column)
        if isinstance(profile, str):
            left_out[column] = profile
        else:
            columns[column] = profile
    comments: dict[DocPath, list[str]] = {}
    todo: list[str] = []
    document: dict[str, Any] = {"name": _survey_name(name), "title": table.file_label or name, "data": data}
    what = "the file's label" if table.file_label else "the file's name"
    comments[("title",)] = [f"GUESS: {what}; give the survey its title (and a source: line)"]
    used: set[str] = set()
    ident = _respondent_id(table)
    if ident is not None:
        document["respondent_id"] = ident
        used.add(ident)
        comments[("respondent_id",)] = ["GUESS: recognised by its name or label; unique in every row"]
    else:
        todo.append(
            "no respondent id column recognised: rows are numbered 1..N; name the id column under "
            "`respondent_id:` if the file has one"
        )
    weight, weight_note = _weight(table, used)
    if weight is not None:
        document["weight"] = weight
        used.add(weight)
        comments[("weight",)] = [f"GUESS: the survey weight, recognised by its name or label{weight_note}"]
    else:
        todo.append(
            f"no survey weight recognised{weight_note}: every respondent counts once; name the weight "
            "column under `weight:` if the survey has one"
        )
    whys: dict[DocPath, dict[Code, str]] = {}
    traits, absent = _traits(columns, used, left_out, comments, todo, whys)
    questions = _questions(columns, used, left_out, comments, todo, set(traits), whys)
    if not questions:
        reasons = "; ".join(f"{c}: {why}" for c, why in list(left_out.items())[:_SHOWN])
        raise ConfigError(
            f"{table.name} has no column that can be a question (one with at least two answers, labelled "
            f"or few): {reasons or 'no columns'}; draft the codebook from the file that holds the answers"
        )
    shared = _shared_missing(traits, questions, whys, comments)
    if shared:
        document["missing"] = shared
    document["traits"] = traits
    if absent:
        document["absent"] = absent
    document["questions"] = questions
    return DraftedDocument(
        document, comments, tuple(todo), tuple(f"{c}: {why}" for c, why in left_out.items())
    )


def _survey_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")
    return name if name and name[0].isalnum() else f"survey-{name}".rstrip("-")


# --- what each column holds ---------------------------------------------------------------------


def _profile(table: Table, column: str) -> _Column | str:
    """A column's answers, missing codes and numbers; or, for a column that cannot be a question or a
    trait at all, why."""
    series = table.frame[column]
    if isinstance(series.dtype, pd.CategoricalDtype):  # a Parquet file's categories: their values
        series = series.astype(series.cat.categories.dtype)
    if pd.api.types.is_bool_dtype(series):
        return "true/false values: write them as 0/1 or as text to use the column"
    if pd.api.types.is_datetime64_any_dtype(series) or isinstance(series.dtype, pd.PeriodDtype):
        return "dates or times"
    numeric = pd.api.types.is_numeric_dtype(series)
    if not numeric:
        series = series.astype(object).where(series.notna(), None)
        if not all(isinstance(v, str) or v is None for v in series):
            return "values of mixed types"
        series = series.map(lambda v: None if v is None or not v.strip() else v).dropna()
    present = series.dropna()
    label = table.column_labels.get(column)
    labels = dict(table.value_labels.get(column, {}))
    notes: list[str] = []
    if numeric:
        extended = {k: v for k, v in labels.items() if isinstance(k, str)}
        if extended:
            shown = ", ".join(f".{k} {v!r}" for k, v in extended.items())
            notes.append(f"Stata extended missing values {shown} are read as empty (counted as missing)")
        labels = {_code(k): v for k, v in labels.items() if not isinstance(k, str)}
    missing = _labelled_missing(labels, table.missing_ranges.get(column, ()))
    if not len(present):
        return _NO_ANSWERS
    if numeric:
        return _numeric_profile(column, label, present, labels, missing, notes)
    return _text_profile(column, label, present, labels, missing, notes)


def _labelled_missing(
    labels: Mapping[Code, str], ranges: Sequence[tuple[Any, Any]]
) -> dict[Code, tuple[MissingKind, str]]:
    """The codes that mean no answer: SPSS user-missing ones (with their labels), and those whose
    value label says so."""
    missing: dict[Code, tuple[MissingKind, str]] = {}
    for low, high in ranges:
        if low == high and _code(low) not in labels:
            missing[_code(low)] = ("missing", "user-missing in the file")
    for code, text in labels.items():
        kind = missing_kind(text)
        user = any(_within(code, r) for r in ranges)
        if user:
            missing[code] = (kind or "missing", f"{text!r}, user-missing in the file")
        elif kind is not None:
            missing[code] = (kind, f"GUESS: {text!r} by its label")
    return missing


def _within(code: Code, bounds: tuple[Any, Any]) -> bool:
    if isinstance(code, str) or isinstance(bounds[0], str):
        return code == bounds[0]
    return float(bounds[0]) <= float(code) <= float(bounds[1])


def _numeric_profile(
    column: str,
    label: str | None,
    present: pd.Series,
    labels: dict[Code, str],
    missing: dict[Code, tuple[MissingKind, str]],
    notes: list[str],
) -> _Column | str:
    """Numeric answers: the labelled codes in the file's order (with the few unlabelled ones that occur,
    all then in the order of their codes), or the distinct values of an unlabelled column with few."""
    observed = sorted({_code(v) for v in present.unique()}, key=float)
    unlabelled = [v for v in observed if v not in labels and v not in missing]
    others = [float(v) for v in [*observed, *labels] if v not in missing]
    for value in list(unlabelled):
        kind = missing_number(float(value), [o for o in others if o != float(value)])
        if kind is not None:
            missing[value] = (kind, "GUESS: by its value (it has no label)")
            unlabelled.remove(value)
    answers = {code: text for code, text in labels.items() if code not in missing}
    numbers = present[~present.isin(list(missing))].to_numpy(dtype=float)
    if not len(numbers):
        return _NO_ANSWERS
    if answers and len(unlabelled) <= MAX_RAW_OPTIONS:
        values = [Value((code,), text or str(code)) for code, text in answers.items()]
        in_order = list(answers) == sorted(answers, key=float)
        if unlabelled:
            values = sorted(
                [*values, *(Value((v,), str(v)) for v in unlabelled)], key=lambda v: float(v.codes[0])
            )
            in_order = True
            notes.append(f"GUESS: codes {_list(unlabelled)} have no value label: labelled by their code")
        return _Column(column, label, values, missing, True, numbers, notes, in_order)
    if len(unlabelled) > MAX_RAW_OPTIONS:
        labelled = "labelled only in part" if answers else "no value labels"
        too_many = f"numeric, {len(unlabelled)} distinct values, {labelled}"
        return _Column(column, label, [], missing, False, numbers, notes, too_many=too_many)
    if len(unlabelled) < 2:
        return f"one value only ({unlabelled[0]})"
    return _Column(column, label, [Value((v,), str(v)) for v in unlabelled], missing, False, numbers, notes)


def _text_profile(
    column: str,
    label: str | None,
    present: pd.Series,
    labels: dict[Code, str],
    missing: dict[Code, tuple[MissingKind, str]],
    notes: list[str],
) -> _Column | str:
    """Text answers, one per spelling group (case and punctuation aside), the commonest spelling as the
    label; text that says no answer ("Refused", "NA") becomes a missing code."""
    groups: dict[str, list[str]] = {}
    for text, _ in present.value_counts().items():
        groups.setdefault(normalise_text(text), []).append(text)
    values: list[Value] = []
    for spellings in groups.values():
        shown = labels.get(spellings[0], spellings[0])
        kind = missing_kind(shown)
        if kind is not None:
            for spelling in spellings:
                missing[spelling] = (kind, "GUESS: by its text")
        else:
            values.append(Value(tuple(spellings), shown))
    values.sort(key=lambda v: normalise_text(v.label))
    if len(values) > MAX_RAW_OPTIONS:
        return f"free text ({len(values)} distinct answers)"
    if len(values) < 2:
        return f"one answer only ({values[0].label!r})" if values else _NO_ANSWERS
    return _Column(column, label, values, missing, bool(labels), None, notes)


def _code(value: Any) -> Code:
    """A data value as a codebook code: 1 rather than 1.0, plain Python numbers."""
    if isinstance(value, str):
        return value
    number = float(value)
    return int(number) if number.is_integer() else number


def _list(items: Sequence[Any]) -> str:
    shown = ", ".join(map(str, items[:_SHOWN]))
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


# --- id and weight --------------------------------------------------------------------------------


def _respondent_id(table: Table) -> str | None:
    """The best-named column whose values are all present and unique."""
    best: tuple[int, int, str] | None = None
    for index, column in enumerate(table.columns):
        score = id_score(column, table.column_labels.get(column))
        values = table.frame[column]
        if not score or values.isna().any() or values.duplicated().any():
            continue
        if isinstance(values.dtype, pd.CategoricalDtype) or table.value_labels.get(column):
            continue
        if best is None or (-score, index) < best[:2]:
            best = (-score, index, column)
    return best[2] if best else None


def _weight(table: Table, used: set[str]) -> tuple[str | None, str]:
    """The best-named column that holds valid weights (finite, non-negative, a positive total), and a
    note naming the other candidates or why a named one was not taken."""
    valid: list[tuple[int, int, str]] = []
    refused: list[str] = []
    for index, column in enumerate(table.columns):
        score = weight_score(column, table.column_labels.get(column))
        if not score or column in used:
            continue
        values = table.frame[column]
        why = _not_weights(values)
        if why is None and not table.value_labels.get(column):
            valid.append((-score, index, column))
        elif score >= 2:
            refused.append(f"{column} ({why or 'has value labels'})")
    valid.sort()
    notes = []
    if len(valid) > 1:
        notes.append(f"other candidates: {', '.join(c for *_, c in valid[1:])}")
    if refused:
        notes.append(f"not taken: {'; '.join(refused)}")
    note = f" ({'; '.join(notes)})" if notes else ""
    return (valid[0][2] if valid else None), note


def _not_weights(values: pd.Series) -> str | None:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "not numbers"
    numbers = values.to_numpy(dtype=float)
    if np.isnan(numbers).any():
        return f"{int(np.isnan(numbers).sum())} empty"
    if (numbers < 0).any() or not np.isfinite(numbers).all() or numbers.sum() <= 0:
        return "negative, infinite or all zero"
    return None


# --- traits ---------------------------------------------------------------------------------------


def _traits(
    columns: Mapping[str, _Column],
    used: set[str],
    left_out: dict[str, str],
    comments: dict[DocPath, list[str]],
    todo: list[str],
    whys: dict[DocPath, dict[Code, str]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """The canonical traits' columns and mappings (the best-named column that maps), and the traits
    not found, under ``absent:``. A column named like a trait whose values do not map is left out
    (and listed to do) rather than drafted as a question."""
    traits: dict[str, Any] = {}
    absent: dict[str, str] = {}
    for trait in CANONICAL_TRAITS.values():
        candidates = sorted(
            (-score, index, name)
            for index, (name, column) in enumerate(columns.items())
            if name not in used and (score := trait_score(trait.name, name, column.label))
        )
        chosen: tuple[str, TraitMapping, int] | None = None
        for score, _, name in candidates:
            mapping = _map(trait.name, columns[name])
            if mapping is not None:
                chosen = (name, mapping, -score)
                break
        if chosen is not None:
            name, mapping, score = chosen
            used.add(name)
            traits[trait.name] = _trait_entry(trait.name, columns[name], mapping, score, comments, whys)
            others = [n for score, _, n in candidates if n != name and -score >= 2]
            if others:
                comments[("traits", trait.name)].append(f"also named like {trait.name}: {', '.join(others)}")
        elif candidates:
            score, _, name = candidates[0]
            by = "its name" if -score >= 2 else "its variable label"
            absent[trait.name] = f"column {name} not mapped yet"
            comments[("absent", trait.name)] = [f"TO DO: map column {name} (see the end of the file)"]
            todo.append(
                f"column {name} looks like {trait.name} (by {by}), but its values "
                f"({_describe(columns[name])}) could not be matched to the persona categories: map them "
                f"under `traits: {trait.name}:` (docs/codebook.md, Traits) and remove `absent: {trait.name}`"
            )
            if -score >= 2:
                used.add(name)
                left_out[name] = f"named like {trait.name}, not mapped yet (see TO DO)"
        else:
            absent[trait.name] = "not in the data"
            comments[("absent", trait.name)] = [f"GUESS: no column recognised as {trait.name}"]
    return traits, absent


def _describe(column: _Column) -> str:
    """A column's values in a few words, for a message."""
    if column.values:
        return _list([v.label for v in column.values])
    numbers = column.numbers if column.numbers is not None else np.array([])
    if not len(numbers):
        return "none"
    return f"numbers from {_code(numbers.min())} to {_code(numbers.max())}"


def _map(trait: str, column: _Column) -> TraitMapping | None:
    definition = CANONICAL_TRAITS[trait]
    if column.values and (column.labelled or column.numbers is None):
        return map_values(definition, column.values)
    if column.numbers is not None and not column.labelled:
        return map_numbers(definition, column.numbers)
    return None


def _trait_entry(
    trait: str,
    column: _Column,
    mapping: TraitMapping,
    score: int,
    comments: dict[DocPath, list[str]],
    whys: dict[DocPath, dict[Code, str]],
) -> dict[str, Any]:
    how = "its name" if score >= 2 else "its variable label"
    described = f"{column.name} ({column.label!r})" if column.label else column.name
    matched = (
        "ranges of the persona categories"
        if any(c.range for c in mapping.categories)
        else "persona categories matched to its labels"
    )
    where: DocPath = ("traits", trait)
    comments[where] = [f"GUESS: {trait} is column {described}, recognised by {how}; {matched}"]
    entry: dict[str, Any] = {"column": column.name}
    missing = dict(column.missing)
    for value, why in mapping.no_value:
        for code in value.codes:
            missing[code] = ("missing", f"GUESS: {why}")
    if missing:
        entry["missing"] = {code: kind for code, (kind, _) in missing.items()}
        whys[where] = {code: why for code, (_, why) in missing.items()}
    entry["categories"] = [_category(c) for c in mapping.categories]
    for i, category in enumerate(mapping.categories):
        if category.guess:
            comments[(*where, "categories", i)] = [f"GUESS: {category.guess}"]
    if mapping.unmapped:
        entry["unmapped"] = list(mapping.unmapped)
        comments[(*where, "unmapped")] = [
            "GUESS: no category of the survey for these persona categories: dropped before matching"
        ]
    return entry


def _category(category: Category) -> dict[str, Any]:
    entry: dict[str, Any] = {"label": category.label}
    if category.codes:
        entry["codes"] = list(category.codes)
    if category.range is not None:
        entry["range"] = list(category.range)
    if category.exclude:
        entry["exclude"] = True
    else:
        entry["persona"] = list(category.persona)
    return entry


def _missing_comment(whys: Mapping[Code, str]) -> str:
    """One line on a ``missing:`` entry: each code with why it means no answer."""
    guessed = any(why.startswith("GUESS: ") for why in whys.values())
    parts = [f"{code}: {why.removeprefix('GUESS: ')}" for code, why in whys.items()]
    return ("GUESS: " if guessed else "") + "no answer: " + "; ".join(parts)


# --- questions ------------------------------------------------------------------------------------


def _questions(
    columns: Mapping[str, _Column],
    used: set[str],
    left_out: dict[str, str],
    comments: dict[DocPath, list[str]],
    todo: list[str],
    trait_names: set[str],
    whys: dict[DocPath, dict[Code, str]],
) -> list[dict[str, Any]]:
    questions: list[dict[str, Any]] = []
    unworded: list[str] = []
    raw: list[str] = []
    for name, column in columns.items():
        if name in used:
            continue
        if len(column.values) < 2:
            left_out[name] = _why_not_a_question(column)
            continue
        where: DocPath = ("questions", len(questions))
        notes: list[str] = []
        question_id = name if name not in trait_names and name not in RESERVED_NAMES else f"{name}_q"
        entry: dict[str, Any] = {"id": question_id}
        if question_id != name:
            entry["column"] = name
        entry["wording"] = column.label or name
        if not column.label:
            unworded.append(name)
            notes.append("TO DO: no variable label: the wording is the column's name")
        if is_demographic_name(name):
            notes.append(
                "GUESS: a demographic (Pew's F_ prefix)? Keep it, move it under traits:, or remove it"
            )
        if not column.labelled:
            raw.append(name)
            notes.append(
                "TO DO: no value labels: the options are the column's distinct values; give each its "
                "label, put them in the scale's order, and move codes that mean no answer to missing:"
            )
        elif not column.in_code_order:
            notes.append("GUESS: options in the file's label order, which is not the order of their codes")
        notes += column.notes
        entry["options"] = _options(column)
        if column.missing:
            entry["missing"] = {code: kind for code, (kind, _) in column.missing.items()}
            whys[where] = {code: why for code, (_, why) in column.missing.items()}
        if notes:
            comments[where] = notes
        questions.append(entry)
    if unworded:
        todo.append(
            f"questions worded by their column name (no variable label): {_list(unworded)}; write each "
            "wording"
        )
    if raw:
        todo.append(
            f"questions whose options are raw values (no value labels): {_list(raw)}; label the options, "
            "order them, and move no-answer codes to `missing:`"
        )
    return questions


def _options(column: _Column) -> list[dict[str, Any]]:
    """A question's options: label and code (text without labels: the label alone, which is how it is
    recognised); a label the file gives two codes is told apart by its code."""
    options: list[dict[str, Any]] = []
    seen: set[str] = set()
    for value in column.values:
        label = value.label
        if label.strip().casefold() in seen:
            label = f"{label} (code {value.codes[0]})"
        seen.add(label.strip().casefold())
        if column.numbers is None and not column.labelled:
            options.append({"label": label})
        else:
            options.append({"label": label, "code": value.codes[0]})
    return options


def _why_not_a_question(column: _Column) -> str:
    return column.too_many or "fewer than two answers"


# --- missing codes shared by every column -----------------------------------------------------------


def _shared_missing(
    traits: dict[str, Any],
    questions: list[dict[str, Any]],
    whys: Mapping[DocPath, Mapping[Code, str]],
    comments: dict[DocPath, list[str]],
) -> dict[Code, MissingKind]:
    """Numeric missing codes that mean the same wherever they are listed (two columns or more) and
    nothing else anywhere, moved from the columns to the top-level ``missing:``; each remaining
    ``missing:`` entry gets its comment."""
    entries: list[tuple[DocPath, dict[str, Any]]] = [(("traits", n), e) for n, e in traits.items()]
    entries += [(("questions", i), q) for i, q in enumerate(questions)]
    kinds: dict[Code, set[str]] = {}
    counts: dict[Code, int] = {}
    for _, entry in entries:
        for code, kind in entry.get("missing", {}).items():
            if not isinstance(code, str):
                kinds.setdefault(code, set()).add(kind)
                counts[code] = counts.get(code, 0) + 1
    shared = {
        code: next(iter(found))
        for code, found in kinds.items()
        if len(found) == 1 and counts[code] >= 2 and not any(_means_something(code, e) for _, e in entries)
    }
    reasons: dict[Code, str] = {}
    for where, entry in entries:
        kept = {c: k for c, k in entry.get("missing", {}).items() if c not in shared}
        for code in entry.get("missing", {}):
            if code in shared:
                reasons.setdefault(code, whys[where][code])
        if kept:
            entry["missing"] = kept
            comments[(*where, "missing")] = [_missing_comment({c: whys[where][c] for c in kept})]
        else:
            entry.pop("missing", None)
    if shared:
        comments[("missing",)] = [
            _missing_comment({c: reasons[c] for c in shared}) + " (in every column that lists them)"
        ]
    return shared


def _means_something(code: Code, entry: Mapping[str, Any]) -> bool:
    """Whether a code is an answer or a category of this question or trait (or in one's range)."""
    for item in entry.get("options", entry.get("categories", [])):
        codes = [item["code"]] if "code" in item else item.get("codes", [])
        if any(not isinstance(c, str) and float(c) == float(code) for c in codes):
            return True
        low, high = item.get("range") or (None, None)
        if "range" in item and (low is None or low <= code) and (high is None or code <= high):
            return True
    return False
