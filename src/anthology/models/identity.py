"""What identifies a local model's outputs, shared by the backends that load model files themselves
(transformers, in-process vLLM): the revision of the files loaded and the kind of device.

torch is imported only by :func:`device_kind`, so the engines that bring their own stay importable
without it at module level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anthology.models.file_hashes import content_revision


def loaded_revision(source: str, revision: str | None, gguf_file: str | None = None) -> str | None:
    """What names the files just loaded from ``source``. A local folder: the hash of its files'
    contents (of the GGUF file alone with ``gguf_file``), unless ``revision`` is given (presets give
    their package version and GGUF hash). A hub model: the commit its files in the local Hugging Face
    cache came from, so a new upstream commit is a new model."""
    folder = Path(source)
    if folder.is_dir():
        if revision is not None:
            return revision
        if gguf_file:
            files = [folder / gguf_file]
        else:
            files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        return content_revision(files)
    from huggingface_hub import try_to_load_from_cache
    from transformers.utils.hub import extract_commit_hash

    cached = try_to_load_from_cache(source, gguf_file or "config.json", revision=revision)
    commit = extract_commit_hash(cached, None) if isinstance(cached, str) else None
    return commit or revision


def device_kind(device: Any) -> str:
    """What a torch device's numerics depend on: ``cpu``, or ``cuda`` and the GPU's name (not its
    index)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
