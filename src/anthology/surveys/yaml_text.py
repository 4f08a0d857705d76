"""Writing a YAML document with comments (PyYAML, the project's YAML library, writes none): block style
for mappings and lists, flow style (``{label: Male, codes: [1]}``) for a mapping or list of plain
values that fits on its line, comment lines above the entries they are about. The text is parsed back
and compared with the document, so what is written reads as the document it was made from.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

#: A path into the document: mapping keys and list indices, as in ``("traits", "age", "categories", 0)``.
Path = tuple[Any, ...]

_WIDTH = 110
_INDENT = 2
#: Characters YAML does not allow unescaped (PyYAML's reader rejects them).
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: Strings written plain (unquoted) when YAML reads them back unchanged: words, spaces, ' . - _
_PLAIN = re.compile(r"[A-Za-z](?:[A-Za-z0-9_.' -]*[A-Za-z0-9_.])?")


def render_yaml(
    document: Mapping[str, Any],
    comments: Mapping[Path, Sequence[str]] | None = None,
    header: Sequence[str] = (),
    footer: Sequence[str] = (),
) -> str:
    """``document`` as YAML text, with ``comments`` (lines) above the entries their paths name and the
    ``header`` and ``footer`` comment lines around it; raises ``ValueError`` if the text would not
    read back as ``document`` (a value YAML cannot hold, such as a float NaN)."""
    notes = comments or {}
    lines = [*_comment_lines(header, 0), *_mapping(document, 0, (), notes, skip_first=False)]
    lines += _comment_lines(footer, 0)
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != document:
        raise ValueError("the YAML text does not read back as the document it was written from")
    return text


def _comment_lines(texts: Sequence[str], indent: int) -> list[str]:
    """Comment lines at ``indent``, long ones wrapped (a text that is empty gives an empty comment)."""
    pad = " " * indent
    width = max(_WIDTH - indent - 2, 40)
    lines = []
    for text in map(_one_line, texts):
        hanging = "  " if text.startswith("- ") else ""  # a list item's lines under its first word
        wrapped = textwrap.wrap(text, width, subsequent_indent=hanging, break_on_hyphens=False)
        lines += [f"{pad}# {line}".rstrip() for line in wrapped or [""]]
    return lines


def _one_line(text: str) -> str:
    return _NON_PRINTABLE.sub(" ", " ".join(str(text).split()))


def _mapping(
    value: Mapping[Any, Any], indent: int, path: Path, notes: Mapping[Path, Sequence[str]], skip_first: bool
) -> list[str]:
    """The entries of a mapping at ``indent``; ``skip_first`` leaves out the first key's comments (a
    list item puts them above its ``-``)."""
    pad = " " * indent
    lines: list[str] = []
    for i, (key, item) in enumerate(value.items()):
        here = (*path, key)
        if not (skip_first and i == 0):
            lines += _comment_lines(notes.get(here, ()), indent)
        start = f"{pad}{scalar(key)}:"
        inline = _inline(item, here, notes)
        if inline is not None and (_is_scalar(item) or len(start) + 1 + len(inline) <= _WIDTH):
            lines.append(f"{start} {inline}")
        elif isinstance(item, Mapping):
            lines += [start, *_mapping(item, indent + _INDENT, here, notes, skip_first=False)]
        else:
            lines += [start, *_sequence(item, indent + _INDENT, here, notes)]
    return lines


def _sequence(
    value: Sequence[Any], indent: int, path: Path, notes: Mapping[Path, Sequence[str]]
) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for i, item in enumerate(value):
        here = (*path, i)
        inline = _inline(item, here, notes)
        if inline is not None and (_is_scalar(item) or indent + 2 + len(inline) <= _WIDTH):
            lines += [*_comment_lines(notes.get(here, ()), indent), f"{pad}- {inline}"]
        elif isinstance(item, Mapping) and item:
            first = (*here, next(iter(item)))
            lines += _comment_lines([*notes.get(here, ()), *notes.get(first, ())], indent)
            body = _mapping(item, indent + 2, here, notes, skip_first=True)
            lines += [f"{pad}- {body[0].lstrip()}", *body[1:]]
        else:
            raise ValueError(f"cannot write {item!r} at {here} as a list item")
    return lines


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)


def _inline(value: Any, path: Path, notes: Mapping[Path, Sequence[str]]) -> str | None:
    """``value`` on one line: a scalar, or a mapping or list of plain values with no comments inside;
    ``None`` when it must be written in block style."""
    if _is_scalar(value):
        return scalar(value)
    if any(p[: len(path)] == path and len(p) > len(path) for p in notes):
        return None
    if isinstance(value, Mapping):
        parts = []
        for key, item in value.items():
            text = _flat(item)
            if text is None:
                return None
            parts.append(f"{scalar(key)}: {text}")
        return "{" + ", ".join(parts) + "}"
    return _flat(value)


def _flat(value: Any) -> str | None:
    """A scalar or a list of scalars in flow style; ``None`` for anything deeper."""
    if isinstance(value, Mapping):
        return None
    if isinstance(value, list | tuple):
        if not all(map(_is_scalar, value)):
            return None
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    return scalar(value)


def scalar(value: Any) -> str:
    """One YAML scalar: a string plain where YAML reads it back as that string (and not as a number,
    a boolean or null), else double-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write the number {value} in a codebook")
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    return _NON_PRINTABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", quoted)  # all of them are below U+10000
