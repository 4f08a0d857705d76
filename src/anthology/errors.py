"""A small error hierarchy. Every error carries a one-line message that names the problem and the fix;
the CLI prints it and exits with status 2 instead of showing a traceback."""

from __future__ import annotations


class AnthologyError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(AnthologyError):
    """Bad input: an unknown name, a missing file, an invalid option."""


class ModelNotFoundError(ConfigError):
    """The model name resolves to nothing we can load."""


class MissingDependencyError(ConfigError):
    """An optional package (an extra) is needed and not installed."""


class MissingAPIKeyError(ConfigError):
    """The environment variable that should hold the API key is unset."""


class CapabilityError(ConfigError):
    """The backend cannot do what was asked (e.g. option scoring without logprobs)."""


class BackendError(AnthologyError):
    """A model backend failed to produce an answer (after retries where they apply)."""


class ServerUnreachableError(BackendError):
    """An HTTP model server could not be reached."""


class StorageError(AnthologyError):
    """A file could not be written: the disk is full, read-only or not ours (see anthology.files)."""


class DamagedFileError(ConfigError):
    """A file the project wrote cannot be read back as written (truncated, garbled)."""
