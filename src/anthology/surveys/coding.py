"""Turning a data table into respondents by following a codebook: ids, weights, trait categories and
answer positions.

Problems the user can fix are one-line :class:`ConfigError` messages that name the data column and the
codebook line. Respondents are never dropped silently: the :class:`LoadReport` says who was excluded
and why, and refused, don't-know and missing answers are kept as such.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from anthology.errors import ConfigError
from anthology.surveys.codebook import Codebook
from anthology.surveys.codes import Decoder, Matcher, MissingKind, as_number
from anthology.surveys.datafiles import Table
from anthology.surveys.schema import Exclusion, LoadReport, Respondents

_NONRESPONSE = pd.CategoricalDtype(["refused", "dont_know", "missing"])
_SHOWN_VALUES = 5


@dataclass(frozen=True)
class _Coded:
    """One decoded column: option/category index (1-based, NA when absent), why it is absent, and
    warnings about value labels that disagree with the codebook."""

    index: pd.Series
    nonresponse: pd.Series
    warnings: list[str]


def code_respondents(codebook: Codebook, table: Table) -> tuple[Respondents, LoadReport]:
    """Read ids, weights, traits and answers from ``table`` as ``codebook`` says; exclude (and report)
    respondents in a category the codebook excludes and those who answered none of the questions."""
    _check_columns(codebook, table)
    ids = _respondent_ids(codebook, table)
    weights = _weights(codebook, table, ids)
    warnings: list[str] = []
    traits: dict[str, Any] = {}
    for name, trait in codebook.traits.items():
        coded = _decode(
            table,
            trait.column,
            trait.matchers(),
            {**codebook.missing, **trait.missing},
            codebook.locate("traits", name, "categories"),
            "categories",
        )
        warnings += coded.warnings
        codes = coded.index.fillna(0).to_numpy(dtype=int) - 1
        traits[name] = pd.Categorical.from_codes(codes, categories=list(trait.labels), ordered=True)
    answers: dict[str, Any] = {}
    nonresponse: dict[str, Any] = {}
    for i, question in enumerate(codebook.questions):
        if question.personas_only:  # no human answers: every respondent's is missing
            answers[question.id] = pd.array([pd.NA] * len(ids), dtype="Int64")
            nonresponse[question.id] = pd.Series("missing", index=ids).astype(_NONRESPONSE).array
            continue
        coded = _decode(
            table,
            question.data_column,
            question.matchers(),
            {**codebook.missing, **question.missing},
            codebook.locate("questions", i, "options"),
            "options",
        )
        warnings += coded.warnings
        answers[question.id] = coded.index.array
        nonresponse[question.id] = coded.nonresponse.array
    answers_frame = pd.DataFrame(answers, index=ids)
    trait_frame = pd.DataFrame(traits, index=ids)
    kept = np.ones(len(ids), dtype=bool)
    exclusions: list[Exclusion] = []
    for reason, mask in _left_out(codebook, trait_frame, answers_frame):
        mask = mask & kept  # each respondent is counted under the first reason that leaves them out
        if mask.any():
            exclusions.append(Exclusion(reason, int(mask.sum()), tuple(ids[mask][:_SHOWN_VALUES].tolist())))
            kept &= ~mask
    people = Respondents(
        weights=weights[kept],
        traits=trait_frame[kept],
        answers=answers_frame[kept],
        nonresponse=pd.DataFrame(nonresponse, index=ids)[kept],
        weighted=codebook.weight is not None,
    )
    _check_every_question_answered(codebook, table, people)
    return people, LoadReport(table.name, len(table.frame), tuple(exclusions), (*table.warnings, *warnings))


def _left_out(
    codebook: Codebook, traits: pd.DataFrame, answers: pd.DataFrame
) -> list[tuple[str, np.ndarray]]:
    """Why respondents are left out, each reason with its mask: a category the codebook excludes from
    matching, then no answer to any question."""
    reasons = []
    for name, trait in codebook.traits.items():
        for i, category in enumerate(trait.categories):
            if category.exclude:
                where = codebook.locate("traits", name, "categories", i)
                mask = (traits[name] == category.label).to_numpy(dtype=bool, na_value=False)
                reason = f"are in {name} category {category.label!r}, excluded from matching ({where})"
                reasons.append((reason, mask))
    asked = [q.id for q in codebook.questions if not q.personas_only]
    nothing = f"answered none of the {len(asked)} questions"
    reasons.append((nothing, ~answers[asked].notna().any(axis=1).to_numpy()))
    return reasons


def _check_columns(codebook: Codebook, table: Table) -> None:
    """Every column the codebook names exists in the data (else: which one, where it is named, the
    closest existing name and, for a CSV file, how it was split and decoded)."""
    for column, path in codebook.columns().items():
        if column not in table.frame.columns:
            close = difflib.get_close_matches(column, table.columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            read_as, or_read = "", ""
            if (dialect := table.dialect) is not None:
                read_as = f" (read as {dialect.describe()}; its header is {dialect.header!r})"
                or_read = f", or set read.delimiter in the codebook if it is not {dialect.delimiter!r}"
            raise ConfigError(
                f"{table.name} has no column {column!r}{hint}, named at {codebook.locate(*path)}{read_as}; "
                f"fix the codebook or use the data file that has it{or_read}"
            )


def _respondent_ids(codebook: Codebook, table: Table) -> pd.Index:
    """Respondent ids from the id column (unique, none empty), or the data row numbers 1..N."""
    if codebook.respondent_id is None:
        return pd.RangeIndex(1, len(table.frame) + 1, name="respondent_id")
    column = codebook.respondent_id
    ids = table.frame[column]
    where = codebook.locate("respondent_id")
    empty = ids.isna().to_numpy()
    if empty.any():
        raise ConfigError(
            f"{table.name}, column {column!r}: the respondent id is empty in {empty.sum()} row(s) "
            f"(first: data row {int(np.argmax(empty)) + 1}); give every respondent an id ({where})"
        )
    repeated = ids[ids.duplicated()]
    if len(repeated):
        first = repeated.iloc[0]
        raise ConfigError(
            f"{table.name}, column {column!r}: respondent id {_show(first)} appears "
            f"{(ids == first).sum()} times ({len(repeated)} repeats in all); ids must be unique ({where})"
        )
    if pd.api.types.is_float_dtype(ids) and (ids % 1 == 0).all():
        ids = ids.astype("int64")
    return pd.Index(ids, name="respondent_id")


def _weights(codebook: Codebook, table: Table, ids: pd.Index) -> pd.Series:
    """Survey weights: finite, non-negative numbers with a positive total (1 each without a weight column)."""
    if codebook.weight is None:
        return pd.Series(1.0, index=ids, name="weight")
    column = codebook.weight
    raw = table.frame[column]
    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    kinds = {
        "missing": raw.isna().to_numpy(),
        "non-numeric": (numbers.isna() & raw.notna()).to_numpy(),
        "negative": (numbers < 0).to_numpy(),
        "infinite": np.isinf(numbers).to_numpy(),
    }
    bad = np.logical_or.reduce(list(kinds.values()))
    where = codebook.locate("weight")
    if bad.any():
        counts = ", ".join(f"{mask.sum()} {kind}" for kind, mask in kinds.items() if mask.any())
        raise ConfigError(
            f"{table.name}, weight column {column!r}: {counts} value(s) (first: respondent "
            f"{_show(ids[int(np.argmax(bad))])}); weights must be non-negative numbers: "
            f"fix those rows ({where})"
        )
    if numbers.sum() <= 0:
        raise ConfigError(f"{table.name}, weight column {column!r}: every weight is zero ({where})")
    return pd.Series(numbers.to_numpy(), index=ids, name="weight")


def _decode(
    table: Table,
    column: str,
    matchers: list[Matcher],
    missing: Mapping[Any, MissingKind],
    where: str,
    what: str,
) -> _Coded:
    """Decode one column; values that nothing in the codebook covers are an error."""
    values = table.frame[column]
    if isinstance(values.dtype, (pd.CategoricalDtype, pd.api.extensions.ExtensionDtype)):
        values = values.astype(object)  # categorical and nullable (Int64...) columns decode like the rest
    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        values = values.mask(values.map(lambda v: isinstance(v, str) and not v.strip()))  # blank text: empty
    labels = table.value_labels.get(column, {})
    decoder = Decoder(matchers, missing)
    index_of: dict[Any, int] = {}
    kind_of: dict[Any, str] = {}
    uncovered: list[tuple[Any, int]] = []
    warnings: list[str] = []
    for value, count in values.value_counts(sort=False).items():
        label = labels.get(value)
        meaning, by_number = decoder.decode(value, label)
        if meaning is None:
            uncovered.append((value, count))
        elif isinstance(meaning, str):
            kind_of[value] = meaning
        else:
            index_of[value] = meaning.index
            if by_number and label is not None and not meaning.agrees_with_label(label):
                warnings.append(
                    f"{table.name}, column {column!r}: code {_show(value)} is labelled {label!r} in the file "
                    f"but means {meaning.label!r} in the codebook ({where})"
                )
    if uncovered:
        raise ConfigError(_uncovered_message(table, column, uncovered, labels, where, what))
    index = values.map(index_of).astype("Int64")
    nonresponse = values.map(kind_of).where(values.notna(), "missing").astype(_NONRESPONSE)
    return _Coded(index, nonresponse, warnings)


def _uncovered_message(
    table: Table,
    column: str,
    uncovered: list[tuple[Any, int]],
    labels: Mapping[Any, str],
    where: str,
    what: str,
) -> str:
    uncovered = sorted(uncovered, key=lambda item: -item[1])
    shown = []
    for value, count in uncovered[:_SHOWN_VALUES]:
        label = f" labelled {labels[value]!r}" if value in labels else ""
        shown.append(f"{_show(value)}{label} ({count} row{'s' if count != 1 else ''})")
    more = f" and {len(uncovered) - _SHOWN_VALUES} more" if len(uncovered) > _SHOWN_VALUES else ""
    return (
        f"{table.name}, column {column!r}: value(s) {', '.join(shown)}{more} not covered by the codebook "
        f"({where}); add them to the {what} or list them under `missing:`"
    )


def _check_every_question_answered(codebook: Codebook, table: Table, people: Respondents) -> None:
    """A question with no answers (or only zero-weight ones) has no human distribution: refuse it."""
    for i, question in enumerate(codebook.questions):
        if question.personas_only:
            continue
        answered = people.answers[question.id].notna().to_numpy()
        if not answered.any() or people.weights.to_numpy()[answered].sum() <= 0:
            nobody = "nobody" if not answered.any() else "only respondents of weight zero"
            raise ConfigError(
                f"{table.name}, column {question.data_column!r}: {nobody} answered question {question.id!r} "
                f"({codebook.locate('questions', i)}); remove it from the codebook or check the column"
            )


def _show(value: Any) -> str:
    """A data value as a person would write it: 7 rather than 7.0, text quoted."""
    number = as_number(value) if not isinstance(value, str) else None
    if number is not None and number.is_integer():
        return str(int(number))
    return repr(value) if isinstance(value, str) else str(value)
