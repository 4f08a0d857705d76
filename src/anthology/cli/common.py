"""Options every model-using command shares, and opening the model they describe."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DECODING_OPTION = click.option(
    "--decoding",
    type=click.Choice(["auto", "eager", "static", "compiled"]),
    help="Generation loop for local models: auto (a compiled static-cache step on a GPU for long "
    "generations), eager, static or compiled.",
)


def executor_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the executor options; each is ``None`` unless given."""
    options = [
        click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            help="Run model calls here (local, the default) or on Ray workers, each with a model replica.",
        ),
        click.option(
            "--ray-address",
            help="Ray cluster: auto, HEAD:6379 or ray://HEAD:10001 (default: as ray.init()).",
        ),
        click.option("--workers", type=int, help="Ray workers, one model replica each (default 2)."),
        click.option("--cpus-per-worker", type=float, help="CPUs each Ray worker holds (default 1)."),
        click.option("--gpus-per-worker", type=float, help="GPUs each Ray worker holds (default 0)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def model_options(
    default_model: str | None = None, *, positional: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the model (``--model``, or a MODEL argument with ``positional``), backend, executor and cache
    options; the command receives them as ``model_spec`` (a dict)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        model = (
            click.argument("model")
            if positional
            else click.option(
                "--model",
                "model",
                default=default_model,
                show_default=True,
                help="Preset, local path, hf:ORG/NAME or openai:MODEL@URL (see `anthology models`).",
            )
        )
        options = [
            model,
            click.option("--chat", is_flag=True, help="Use chat messages (instruct models, chat servers)."),
            click.option("--base-url", help="Base URL of an OpenAI-compatible server (for openai:MODEL)."),
            click.option(
                "--api-key-env", help="Environment variable holding the API key (default OPENAI_API_KEY)."
            ),
            click.option(
                "--scoring",
                type=click.Choice(["auto", "echo", "top-k"]),
                help="How a server scores options: echo (exact, from the prompt's own log-probabilities), "
                "top-k (from generated tokens' alternatives) or auto (probe the server once).",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                help="Base seconds per server request (default 60; longer work gets more).",
            ),
            click.option("--device", help="Device for local models: auto, cpu, cuda, cuda:1 ..."),
            click.option("--dtype", help="dtype for local models: auto, float32, bfloat16, float16."),
            DECODING_OPTION,
            click.option(
                "--cache",
                "cache_path",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Response cache file (default: the run directory's, or the user cache).",
            ),
            click.option("--no-cache", is_flag=True, help="Do not read or write the response cache."),
        ]

        @functools.wraps(fn)
        def wrapper(
            *args: Any,
            model: str,
            chat: bool,
            base_url: str | None,
            api_key_env: str | None,
            scoring: str | None,
            timeout: float | None,
            device: str | None,
            dtype: str | None,
            decoding: str | None,
            cache_path: Path | None,
            no_cache: bool,
            executor: str | None,
            ray_address: str | None,
            workers: int | None,
            cpus_per_worker: float | None,
            gpus_per_worker: float | None,
            **kwargs: Any,
        ) -> Any:
            spec = {
                "model": model,
                "chat": chat,
                "base_url": base_url,
                "api_key_env": api_key_env,
                "scoring": scoring,
                "timeout": timeout,
                "device": device,
                "dtype": dtype,
                "decoding": decoding,
                "cache_path": cache_path,
                "no_cache": no_cache,
                "executor": {
                    "kind": executor or "local",
                    "address": ray_address,
                    "workers": workers,
                    "cpus_per_worker": cpus_per_worker,
                    "gpus_per_worker": gpus_per_worker,
                },
            }
            return fn(*args, model_spec=spec, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return executor_options(wrapper)

    return decorate


def open_model(spec: dict[str, Any], *, default_cache: Path | None = None, progress: str | bool = False):
    """Load the model of ``spec`` wrapped in the response cache. Returns (cached model, cache or None).

    With ``spec["executor"]["kind"] == "ray"`` the model is a :class:`RayModel` of replicas on Ray
    workers; the cache, and every write, stay in this process."""
    from anthology.models.cache import CachedModel, ResponseCache, default_cache_path
    from anthology.models.registry import load_model

    name = spec["model"]
    if name.startswith("openai:"):
        backend = {
            "base_url": spec["base_url"],
            "api_key_env": spec["api_key_env"],
            "chat": spec["chat"] or None,
            "scoring": spec.get("scoring"),
            "timeout": spec.get("timeout"),
        }
    else:
        backend = {"device": spec["device"], "dtype": spec["dtype"], "decoding": spec["decoding"]}
    executor = spec["executor"]
    chunking: dict[str, int] = {}
    if executor["kind"] == "ray":
        from anthology.models.ray_pool import RayModel

        given = {k: v for k, v in executor.items() if k != "kind" and v is not None}
        model = RayModel(name, **given, **backend)
        chunking["chunk_size"] = model.chunk_size  # enough units per chunk to keep every worker busy
    else:
        model = load_model(name, **backend)
    cache = None
    if not spec["no_cache"]:
        cache = ResponseCache(spec["cache_path"] or default_cache or default_cache_path())
    return CachedModel(model, cache, progress=progress, **chunking), cache
