"""How an option or a category is recognised in a data column: one set of rules for questions and traits.

A code is what a data file holds: a number, or text. A number matches numerically (``1`` matches
``1.0``). Text matches a text cell or, in SPSS and Stata files, a cell's value label; text comparisons
ignore case, punctuation and parenthesised asides (``"Associate’s degree"`` matches
``"associate's degree"``, ``"Mormon (Church of ...)"`` matches ``"Mormon"``). A category may instead
give a numeric range (``[18, 29]``, either end open). An option or category with neither codes nor a
range is recognised by its label text. A numeric value is tried against missing-value codes, then
option or category codes, then ranges; then its text (or value label) against missing-value texts,
then the other texts.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator

#: Why an answer or trait value is absent. Empty cells are ``missing``.
MissingKind = Literal["refused", "dont_know", "missing"]


def _reject_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(
            f"a code was read as the yes/no value {str(value).lower()}; "
            "quote it (e.g. 'yes') to use it as text"
        )
    return value


#: A code in a codebook: a number or a text (YAML yes/no values are refused, not turned into 1/0).
Code = Annotated[int | float | str, BeforeValidator(_reject_bool)]


class CodeProblem(ValueError):
    """A validation problem at ``path`` below the model being validated; the codebook loader turns the
    path into the file, line and column of the offending YAML."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def normalise_text(text: str) -> str:
    """The comparison form of a text code or value label (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    without_asides = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", folded)
    words = re.sub(r"[\W_]+", " ", without_asides).split()
    return " ".join(words) or folded.strip()


def as_number(value: Any) -> float | None:
    """A cell's numeric value: numbers as they are, numeric text parsed, anything else ``None``."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.number):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


@dataclass(frozen=True)
class Matcher:
    """What recognises one option or category; ``index`` is the option's position or the category's
    1-based place in its trait, ``bounds`` its inclusive numeric range (open ends infinite)."""

    index: int
    label: str
    numbers: frozenset[float]
    texts: frozenset[str]
    bounds: tuple[float, float] | None = None

    @classmethod
    def build(
        cls,
        index: int,
        label: str,
        codes: Iterable[int | float | str],
        value_range: tuple[float | None, float | None] | None = None,
    ) -> Matcher:
        codes = tuple(codes)
        numbers = frozenset(float(c) for c in codes if not isinstance(c, str))
        texts = frozenset(normalise_text(c) for c in codes if isinstance(c, str))
        if not codes and value_range is None:
            texts = frozenset({normalise_text(label)})
        bounds = None
        if value_range is not None:
            low, high = value_range
            bounds = (-math.inf if low is None else low, math.inf if high is None else high)
        return cls(index, label, numbers, texts, bounds)

    def in_range(self, number: float) -> bool:
        return self.bounds is not None and self.bounds[0] <= number <= self.bounds[1]

    def agrees_with_label(self, value_label: str) -> bool:
        """Whether a file's value label names this option or category (used to flag codebooks whose
        numeric codes disagree with the data file's own labels)."""
        text = normalise_text(value_label)
        return text == normalise_text(self.label) or text in self.texts


def check_distinct(field: str, matchers: Iterable[Matcher], missing: Mapping[Any, str]) -> None:
    """Refuse a coding where one data value could mean two things: a code shared by two options or
    categories, or by an option and a missing-value code, or overlapping ranges."""
    owner: dict[tuple[str, float | str], str] = {}
    for code in missing:
        key = _key(code)
        owner[key] = "a missing-value code"
    ranged: list[Matcher] = []
    for m in matchers:
        path = (field, m.index - 1)
        for key in [("n", n) for n in sorted(m.numbers)] + [("t", t) for t in sorted(m.texts)]:
            if key in owner:
                raise CodeProblem(
                    path,
                    f"code {_shown(key[1])} of {m.label!r} is also {owner[key]}; "
                    "each code must mean one thing",
                )
            owner[key] = f"the code of {m.label!r}"
        if m.bounds is not None:
            for other in ranged:
                if m.bounds[0] <= other.bounds[1] and other.bounds[0] <= m.bounds[1]:
                    raise CodeProblem(path, f"the range of {m.label!r} overlaps the range of {other.label!r}")
            ranged.append(m)


def _key(code: int | float | str) -> tuple[str, float | str]:
    return ("t", normalise_text(code)) if isinstance(code, str) else ("n", float(code))


def _shown(code: float | str) -> str:
    return repr(code) if isinstance(code, str) else (str(int(code)) if code.is_integer() else str(code))


class Decoder:
    """Turns a column's raw values into option/category indices or missing-value kinds."""

    def __init__(self, matchers: Iterable[Matcher], missing: Mapping[Any, MissingKind]) -> None:
        matchers = tuple(matchers)
        self._numbers = {n: m for m in matchers for n in m.numbers}
        self._texts = {t: m for m in matchers for t in m.texts}
        self._ranged = [m for m in matchers if m.bounds is not None]
        self._missing_numbers = {float(c): k for c, k in missing.items() if not isinstance(c, str)}
        self._missing_texts = {normalise_text(c): k for c, k in missing.items() if isinstance(c, str)}

    def decode(self, value: Any, value_label: str | None) -> tuple[Matcher | MissingKind | None, bool]:
        """What ``value`` means: a :class:`Matcher`, a missing-value kind, or ``None`` when nothing
        covers it; the flag says whether it was matched by an exact numeric code (so that the file's value
        label for it can be checked against the codebook)."""
        number = as_number(value)
        if number is not None:
            if number in self._missing_numbers:
                return self._missing_numbers[number], False
            if number in self._numbers:
                return self._numbers[number], True
            for m in self._ranged:
                if m.in_range(number):
                    return m, False
        texts = [normalise_text(value)] if isinstance(value, str) else []
        if value_label is not None:
            texts.append(normalise_text(value_label))
        for text in texts:
            if text in self._missing_texts:
                return self._missing_texts[text], False
            if text in self._texts:
                return self._texts[text], False
        return None, False
