"""Click options generated from a settings class, so a stage command's flags and its YAML section
cannot disagree: one flag per field, its type, bounds, choices and help taken from the field, and no
default of its own (an unset flag leaves the value to the run, the profile or the class)."""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal

import click
from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from anthology.settings import Settings

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _unwrap_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _bounds(field: FieldInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, Ge):
            found["min"] = item.ge
        elif isinstance(item, Gt):
            found.update(min=item.gt, min_open=True)
        elif isinstance(item, Le):
            found["max"] = item.le
        elif isinstance(item, Lt):
            found.update(max=item.lt, max_open=True)
    return found


class FiniteFloatRange(click.FloatRange):
    """A float in range that is also a number: click's own range lets ``nan`` and ``inf`` through
    when a bound is open-ended (and ``nan`` through any bounds)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _param_type(annotation: Any, field: FieldInfo) -> click.ParamType | type:
    if typing.get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if annotation is int:
        return click.IntRange(**_bounds(field))
    if annotation is float:
        return FiniteFloatRange(**_bounds(field))
    return str


def field_type(cls: type[Settings], name: str) -> click.ParamType | type:
    """The click type of one field of ``cls`` (its choices or its range), for a flag written by hand
    that sets it, so the flag and a config file accept the same values."""
    field = cls.model_fields[name]
    return _param_type(_unwrap_optional(field.annotation), field)


def _option(name: str, field: FieldInfo, names: tuple[str, ...]) -> tuple[Decorator, Callable[[Any], Any]]:
    """The click option of one field, and how to turn its value into the field's value."""
    annotation = _unwrap_optional(field.annotation)
    dashed = names or ("--" + name.replace("_", "-"),)
    help_text = field.description or ""
    dest = f"_s_{name}"
    if (field.json_schema_extra or {}).get("switch"):  # --preamble TEXT, and --no-preamble for off
        flag = dashed[-1]
        on = click.option(*dashed, dest, default=None, help=help_text)
        off = click.option(f"--no-{flag[2:]}", f"{dest}__off", is_flag=True, help=f"No {flag[2:]}.")
        return (lambda fn: on(off(fn))), (lambda v: v)
    if annotation is bool:
        flag = dashed[-1]
        return click.option(f"{flag}/--no-{flag[2:]}", dest, default=None, help=help_text), bool
    if typing.get_origin(annotation) is tuple:
        (item, *_) = typing.get_args(annotation)
        choice = _param_type(item, field) if typing.get_origin(item) is Literal else None
        option = click.option(
            *dashed,
            dest,
            multiple=True,
            help=f"{help_text} Repeat it or give a comma-separated list."
            + (f" Choices: {', '.join(choice.choices)}." if isinstance(choice, click.Choice) else ""),
        )

        def split(values: Iterable[str]) -> tuple[str, ...] | None:
            items = tuple(v.strip() for value in values for v in value.split(",") if v.strip())
            return items or None

        return option, split
    return click.option(*dashed, dest, type=_param_type(annotation, field), default=None, help=help_text), (
        lambda v: v
    )


def settings_options(
    cls: type[Settings],
    *,
    into: str,
    exclude: Iterable[str] = (),
    flags: dict[str, tuple[str, ...]] | None = None,
) -> Decorator:
    """Add one option per field of ``cls`` (but ``exclude``; ``flags`` renames some); the command
    receives the values given as a dict ``into`` (field name -> value), without the unset ones."""
    skipped = set(exclude)
    fields = {n: f for n, f in cls.model_fields.items() if n not in skipped}
    built = {n: _option(n, f, (flags or {}).get(n, ())) for n, f in fields.items()}

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given: dict[str, Any] = {}
            for name, (_, convert) in built.items():
                value = kwargs.pop(f"_s_{name}")
                if kwargs.pop(f"_s_{name}__off", False):  # a switch field's --no-NAME
                    value = False
                value = convert(value) if value not in (None, ()) else None
                if value is not None:
                    given[name] = value
            return fn(*args, **{into: given}, **kwargs)

        for option, _ in reversed(list(built.values())):
            wrapper = option(wrapper)
        return wrapper

    return decorate
