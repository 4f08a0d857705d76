"""The base of every settings class: frozen, typed, no unknown keys, finite numbers, and a one-line
error for a bad value. A stage's settings class is the only place its settings, their defaults and
their ranges are written; the YAML sections of ``anthology run`` and the stage commands' flags are
derived from it, so a config file and a flag accept the same values."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from anthology.errors import ConfigError

S = TypeVar("S", bound="Settings")
_INSIDE = contextvars.ContextVar("anthology_settings_inside", default=0)

#: The largest seed: seeds are non-negative 64-bit signed integers, what a server's JSON ``seed``,
#: SQLite and Parquet hold (numpy and torch accept more).
SEED_MAX = 2**63 - 1


def distinct(values: Sequence[Any] | None) -> Sequence[Any] | None:
    """A list setting's values, refused when one is given twice (a field validator)."""
    seen: set[Any] = set()
    for value in values or ():
        if value in seen:
            raise ValueError(f"{value!r} is given twice")
        seen.add(value)
    return values


@contextmanager
def validation_errors() -> Iterator[None]:
    """Inside, building settings raises pydantic's :class:`ValidationError` (whose location is the
    full dotted key, e.g. ``backstories.n``) for the caller to describe, instead of a
    :class:`ConfigError` named after the innermost class."""
    token = _INSIDE.set(_INSIDE.get() + 1)
    try:
        yield
    finally:
        _INSIDE.reset(token)


def describe_error(exc: ValidationError, source: str = "") -> str:
    """The first problem of a validation error, in one line naming the key."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    prefix = f"{source}: " if source else ""
    message = error["msg"].removeprefix("Value error, ")  # our validators' own messages, as written
    return f"{prefix}{where}: {message}" if where else f"{prefix}{message}"


class Settings(BaseModel):
    """Frozen settings; building one from bad values (NaN and infinite numbers included) raises a
    one-line :class:`ConfigError`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        outermost = _INSIDE.get() == 0
        try:
            with validation_errors():  # a section inside this one: its error keeps its full location
                super().__init__(**data)
        except ValidationError as exc:
            if not outermost:
                raise
            raise ConfigError(describe_error(exc, type(self).__name__)) from None

    def narrow(self, cls: type[S]) -> S:
        """These settings as ``cls``, a class whose fields are a subset of these (a stage's settings
        as the method's own configuration)."""
        return cls.model_validate(self.model_dump(include=set(cls.model_fields)))

    def updated(self: S, **changes: Any) -> S:
        """A validated copy with ``changes``."""
        return type(self)(**{**self.model_dump(), **changes})
