"""The base of every settings class: frozen, typed, no unknown keys, and a one-line error for a bad
value. A stage's settings class is the only place its settings and their defaults are written; the
YAML sections of ``anthology run`` and the stage commands' flags are derived from it."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from anthology.errors import ConfigError

S = TypeVar("S", bound="Settings")


def describe_error(exc: ValidationError, source: str = "") -> str:
    """The first problem of a validation error, in one line naming the key."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    prefix = f"{source}: " if source else ""
    return f"{prefix}{where}: {error['msg']}" if where else f"{prefix}{error['msg']}"


class Settings(BaseModel):
    """Frozen settings; building one from bad values raises a one-line :class:`ConfigError`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe_error(exc, type(self).__name__)) from None

    def narrow(self, cls: type[S]) -> S:
        """These settings as ``cls``, a class whose fields are a subset of these (a stage's settings
        as the method's own configuration)."""
        return cls.model_validate(self.model_dump(include=set(cls.model_fields)))

    def updated(self: S, **changes: Any) -> S:
        """A validated copy with ``changes``."""
        return type(self)(**{**self.model_dump(), **changes})
