"""Options every model-using command shares, generated from the model and executor settings, and
opening the model they describe."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from anthology.cli.options import settings_options
from anthology.config import ExecutorSettings, ModelSettings

if TYPE_CHECKING:
    from anthology.store import RunDir
from anthology.errors import ConfigError
from anthology.redact import has_redaction

#: The flags whose names differ from their fields'.
MODEL_FLAGS = {"name": ("--model",)}
EXECUTOR_FLAGS = {"kind": ("--executor",), "address": ("--ray-address",)}


def executor_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the executor options; the command receives the ones given as ``executor_flags``."""
    return settings_options(ExecutorSettings, into="executor_flags", flags=EXECUTOR_FLAGS)(fn)


def model_options(*, positional: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the model options (the model as ``--model``, or a MODEL argument with ``positional``),
    the executor options and the cache options. The command receives ``model_flags`` and
    ``executor_flags`` (the settings given, by field name), ``cache_path`` and ``no_cache``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        wrapped = fn
        if positional:

            @functools.wraps(fn)
            def with_name(*args: Any, name: str, model_flags: dict[str, Any], **kwargs: Any) -> Any:
                return fn(*args, model_flags={**model_flags, "name": name}, **kwargs)

            wrapped = click.argument("name", metavar="MODEL")(with_name)
        options = [
            settings_options(
                ModelSettings, into="model_flags", flags=MODEL_FLAGS, exclude=("name",) if positional else ()
            ),
            click.option(
                "--cache",
                "cache_path",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Response cache file (default: $ANTHOLOGY_CACHE if set, else the run directory's "
                "cache.sqlite; for `models try` the user cache).",
            ),
            click.option("--no-cache", is_flag=True, help="Do not read or write the response cache."),
            executor_options,
        ]
        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped

    return decorate


def run_cache_path(given: Path | None, run: RunDir) -> Path:
    """The response cache of a command on a run directory: ``--cache``, else ``$ANTHOLOGY_CACHE``,
    else the directory's own ``cache.sqlite`` (so a run directory carries everything it needs)."""
    from anthology.models.response_cache import default_cache_path

    if given is not None:
        return given
    return default_cache_path() if os.environ.get("ANTHOLOGY_CACHE") else run.cache_path


def open_model(
    model: ModelSettings,
    executor: ExecutorSettings,
    *,
    cache_path: Path | None,
    no_cache: bool = False,
    progress: str | bool = False,
):
    """Load ``model`` wrapped in the response cache at ``cache_path`` (default: the user cache).
    Returns (cached model, cache or None).

    With ``executor.kind == "ray"`` the model is a :class:`RayModel` of replicas on Ray workers; the
    cache, and every write, stay in this process."""
    from anthology.models.cached_model import CachedModel
    from anthology.models.registry import load_model
    from anthology.models.response_cache import ResponseCache, default_cache_path

    _refuse_redacted(model, executor)
    if model.name.startswith("openai:"):
        backend = {
            "base_url": model.base_url,
            "api_key_env": model.api_key_env,
            "chat": model.chat or None,
            "scoring": model.scoring,
            "timeout": model.timeout,
            "max_retries": model.retries,
        }
    elif model.name.startswith("vllm:"):
        backend = {
            "dtype": model.dtype,
            "revision": model.revision,
            "tensor_parallel_size": model.tensor_parallel_size,
            "gpu_memory_utilization": model.gpu_memory_utilization,
            "max_model_len": model.max_model_len,
            "kv_cache_gib": model.kv_cache_gib,
        }
    else:
        backend = {
            "device": model.device,
            "dtype": model.dtype,
            "decoding": model.decoding,
            "revision": model.revision,
            "prefix_cache": model.prefix_cache,
        }
    chunking: dict[str, int] = {}
    if executor.kind == "ray":
        from anthology.models.ray_pool import RayModel

        given = executor.model_dump(exclude={"kind"}, exclude_none=True)
        pool = RayModel(model.name, **given, **backend)
        chunking["chunk_size"] = pool.chunk_size  # enough units per chunk to keep every worker busy
        loaded: Any = pool
    else:
        loaded = load_model(model.name, **backend)
    cache = None if no_cache else ResponseCache(cache_path or default_cache_path())
    return CachedModel(loaded, cache, progress=progress, **chunking), cache


def _refuse_redacted(model: ModelSettings, executor: ExecutorSettings) -> None:
    """A run records its settings without secrets (:mod:`anthology.redact`): a URL recorded with one
    cannot be used again, and the stage command must be given it again."""
    for value, what, flag in (
        (model.name, "model name", "--model"),
        (model.base_url, "base URL", "--base-url"),
        (executor.address, "Ray address", "--ray-address"),
    ):
        if has_redaction(value):
            raise ConfigError(f"the recorded {what} had a secret that was not stored: give {flag} again")
