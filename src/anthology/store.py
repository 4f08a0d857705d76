"""The run directory: one folder per study holding each stage's Parquet artifact, the response cache
and ``manifest.json`` (versions, parameters, seeds, timings per stage).

Artifacts are written atomically (a temporary file renamed into place), so a killed process leaves
either the old artifact or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pandas as pd

from anthology.errors import ConfigError
from anthology.hashing import file_sha256

#: Which command writes each artifact, for the error that names the missing one.
PRODUCERS = {
    "backstories": "anthology backstories",
    "demographics": "anthology demographics",
    "humans": "anthology match",
    "matches": "anthology match",
    "answers": "anthology ask",
    "distributions": "anthology ask",
}


class RunDir:
    """A study's folder of artifacts."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"run directory {self.root} is a file; give a folder path")
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def cache_path(self) -> Path:
        return self.root / "cache.sqlite"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def artifact(self, name: str) -> Path:
        return self.root / f"{name}.parquet"

    def has(self, name: str) -> bool:
        return self.artifact(name).exists()

    def write(self, name: str, frame: pd.DataFrame) -> Path:
        """Write ``frame`` as ``{name}.parquet`` atomically."""
        target = self.artifact(name)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, target)
        return target

    def read(self, name: str) -> pd.DataFrame:
        """Read ``{name}.parquet``; a missing artifact names the command that makes it."""
        path = self.artifact(name)
        if not path.exists():
            maker = PRODUCERS.get(name, "the stage that writes it")
            raise ConfigError(f"{path} does not exist: run `{maker}` on {self.root} first")
        return pd.read_parquet(path)

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text())

    def path(self, name: str) -> Path:
        """An artifact's path (``backstories``) or a file's (``metrics.csv``)."""
        return self.root / name if "." in name else self.artifact(name)

    def content_hash(self, name: str) -> str | None:
        """The sha256 of an artifact's or file's bytes (see :meth:`path`); ``None`` if it is absent."""
        path = self.path(name)
        return file_sha256(path) if path.is_file() else None

    def record(self, stage: str, info: dict[str, Any], **top_level: Any) -> None:
        """Merge ``info`` under ``stages.{stage}`` of the manifest (with the library versions that made
        it and a timestamp) and set any ``top_level`` keys, e.g. the run's ``model``."""
        manifest = self.manifest()
        found = versions()
        manifest["versions"] = found
        manifest.setdefault("stages", {})[stage] = {"finished_at": time.time(), "versions": found, **info}
        manifest.update(top_level)
        tmp = self.manifest_path.with_name(f".manifest.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, self.manifest_path)


def versions() -> dict[str, str]:
    """Versions of Python, this package and the libraries that shape results."""
    import importlib.metadata

    found = {"python": platform.python_version()}
    for dist in ("anthology-personas", "torch", "transformers", "numpy", "pandas", "scipy", "httpx"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
