"""Read an option off a sampled answer, as the paper does: a lone option letter first, then the option's
text, then a number (ages and incomes) that falls in an option's range. Anything else is
non-compliant (``None``), never a guess."""

from __future__ import annotations

import re
from collections.abc import Sequence

from anthology.method.prompts import LETTERS

# "(B)", "B)", "B.", "B:" or a bare "B"; not the "I" of "I am 27" nor the "A" of "A lot".
_LETTER = re.compile(r"^[^\w(]*(?:\(\s*([A-Za-z])\s*\)|([A-Za-z])(?:\s*[).:](?!\w)|\s*$))")
_NUMBER = re.compile(r"(\$?)\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(k|K|thousand|m|M|million)?(?!\d)")
_WORD = re.compile(r"[a-z0-9$]+")
_OPEN_HIGH = re.compile(r"\bor (above|more|older|over)\b|\+", re.I)
_OPEN_LOW = re.compile(r"\b(less than|under|below|younger than)\b", re.I)


def parse_choice(text: str, options: Sequence[str], numeric: bool = False) -> int | None:
    """The 0-based index of the option ``text`` names, or ``None`` when it names none.

    1. a lone letter at the start: ``"B"``, ``"(B)"``, ``" (b) About right"``;
    2. the text of exactly one option (case-insensitive, longest match wins), e.g. ``"too little"``;
    3. with ``numeric``, a number inside an option's range: ``"I am 27"`` -> ``18-29``,
       ``"$50k"`` -> ``$50,000 to $59,999``, ``"around 70,000 a year"`` -> ``$70,000 to $79,999``.
    """
    first = text.strip().split("\n", 1)[0]
    match = _LETTER.match(first)
    if match:
        index = LETTERS.index((match.group(1) or match.group(2)).upper())
        if index < len(options):
            return index
    by_text = _match_text(first, options)
    if by_text is not None:
        return by_text
    if numeric:
        return _match_number(first, options)
    return None


def _normal(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _match_text(text: str, options: Sequence[str]) -> int | None:
    answer = f" {_normal(text)} "
    hits = [(len(_normal(o)), i) for i, o in enumerate(options) if _normal(o) and f" {_normal(o)} " in answer]
    if not hits:
        return None
    hits.sort(reverse=True)
    # "Strongly agree" contains "agree": the longest match wins, unless two equally long ones tie.
    if len(hits) > 1 and hits[0][0] == hits[1][0]:
        return None
    longest = hits[0][1]
    others = [i for _, i in hits[1:] if _normal(options[i]) not in _normal(options[longest])]
    return None if others else longest


def numbers(text: str) -> list[float]:
    """The numbers in ``text``, with ``k``/``thousand`` and ``m``/``million`` applied; years such as
    ``1985`` (four digits, no ``$``) are skipped: "born in 1985" states no age."""
    found = []
    for dollar, digits, decimals, scale in _NUMBER.findall(text):
        if not dollar and not scale and re.fullmatch(r"(19|20)\d\d", digits):
            continue
        value = float(digits.replace(",", "") + decimals)
        if scale.lower() in ("k", "thousand"):
            value *= 1_000
        elif scale.lower() in ("m", "million"):
            value *= 1_000_000
        found.append(value)
    return found


def option_range(label: str) -> tuple[float, float] | None:
    """The numeric range an option label states: ``18-29``, ``$10,000 to $19,999``, ``65 or Above``,
    ``Less than $10,000``, ``$200,000 or more``; ``None`` for a label without numbers."""
    values = numbers(label)
    if not values:
        return None
    if len(values) >= 2:
        return values[0], values[1] + (0.999 if values[1] == int(values[1]) else 0.0)
    if _OPEN_HIGH.search(label):
        return values[0], float("inf")
    if _OPEN_LOW.search(label):
        return float("-inf"), values[0] - 1e-9
    return values[0], values[0]


def _match_number(text: str, options: Sequence[str]) -> int | None:
    ranges = [option_range(o) for o in options]
    found = numbers(text)
    if not found:
        return None
    value = found[0]
    if _OPEN_LOW.search(text):  # "under 10k" is below the 10k bracket
        value -= 1e-6
    hits = [i for i, r in enumerate(ranges) if r is not None and r[0] <= value <= r[1]]
    return hits[0] if len(hits) == 1 else None
