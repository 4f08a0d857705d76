"""The run directory: one folder per study holding each stage's Parquet artifact, the response cache
and ``manifest.json`` (versions, parameters, seeds, timings per stage).

Artifacts and the manifest are written atomically (:func:`anthology.files.atomic_write`), so a killed
process or a full disk leaves either the old file or the new one, never half of one. What is read back
is checked: an artifact must open (its Parquet footer) and have the rows and columns the manifest
recorded, or it is damaged (:class:`DamagedFileError`); a manifest that is not a JSON object of the
expected shape is set aside and the run goes on as if no stage had been recorded.
"""

from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from anthology.errors import ConfigError, DamagedFileError
from anthology.files import atomic_write, disk_problem, set_aside, warn
from anthology.hashing import file_sha256

#: Which command writes each artifact, for the error that names the missing one.
PRODUCERS = {
    "backstories": "anthology backstories",
    "demographics": "anthology demographics",
    "humans": "anthology match",
    "matches": "anthology match",
    "answers": "anthology ask",
    "distributions": "anthology ask",
    "topup_backstories": "anthology pool",
    "topup_demographics": "anthology pool",
    "audit": "anthology pool",
    "open_answers": "anthology run",
    "open_codes": "anthology run",
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
        return atomic_write(self.artifact(name), lambda tmp: frame.to_parquet(tmp, index=False))

    def read(self, name: str) -> pd.DataFrame:
        """Read ``{name}.parquet``, checked against the rows and columns the manifest recorded; a missing
        or damaged artifact names the command that makes it again."""
        path = self.artifact(name)
        maker = PRODUCERS.get(name, "anthology run")
        if not path.exists():
            raise ConfigError(f"{path} does not exist: run `{maker}` on {self.root} first")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # anything a damaged file makes pyarrow or pandas raise
            if disk_problem(exc, path) is not None:
                raise
            problem = _reason(exc)
        else:
            problem = _shape_problem(_shape_of(frame), self.recorded_shape(name))
        if problem is not None:
            raise DamagedFileError(f"{path} is damaged ({problem}): rerun `{maker} {self.root}` to remake it")
        return frame

    def shape(self, name: str) -> dict[str, Any]:
        """The rows and columns of an artifact as written (from its Parquet footer), for the manifest."""
        import pyarrow.parquet as pq

        metadata = pq.read_metadata(self.artifact(name))
        return {"rows": metadata.num_rows, "columns": list(metadata.schema.to_arrow_schema().names)}

    def recorded_shape(self, name: str) -> dict[str, Any] | None:
        """The rows and columns the manifest recorded for an artifact when its stage wrote it."""
        for info in self.manifest().get("stages", {}).values():
            shape = info.get("shapes", {}).get(name)
            if isinstance(shape, dict):
                return shape
        return None

    def damage(self, name: str) -> str | None:
        """Why an artifact (or file) cannot be believed, ``None`` when it can: a Parquet artifact must
        open and have the rows and columns recorded for it."""
        path = self.path(name)
        if path.suffix != ".parquet" or not path.is_file():
            return None
        try:
            found = self.shape(name)
        except Exception as exc:  # a damaged footer
            if disk_problem(exc, path) is not None:
                raise
            return _reason(exc)
        return _shape_problem(found, self.recorded_shape(name))

    def manifest(self) -> dict[str, Any]:
        """The manifest, ``{}`` when there is none. One that is not JSON or not of the expected shape is
        set aside (renamed ``manifest.json.damaged-<time>``, never deleted), with a warning, and the run
        goes on without it: every stage runs again, its model calls answered by the response cache."""
        path = self.manifest_path
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem: str | None = f"not JSON: {exc}"
        else:
            problem = _manifest_problem(data)
        if problem is None:
            return data
        moved = set_aside(path)
        warn(
            f"{path} is damaged ({problem}); set it aside as {moved.name} and carrying on without it "
            "(every stage runs again, from the response cache)"
        )
        return {}

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
        text = json.dumps(manifest, indent=2, default=str)
        atomic_write(self.manifest_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _reason(exc: BaseException) -> str:
    """The first sentence of an error, for a one-line message (without pyarrow's "Could not open
    Parquet input source '<path>': ", as the message names the path)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Could not open Parquet input source '[^']*': ", "", text)
    return text.split(". ")[0][:160]


def _shape_of(frame: pd.DataFrame) -> dict[str, Any]:
    return {"rows": len(frame), "columns": [str(c) for c in frame.columns]}


def _shape_problem(found: dict[str, Any], recorded: dict[str, Any] | None) -> str | None:
    """What differs between an artifact's rows and columns and those recorded for it."""
    if recorded is None:
        return None
    if found["rows"] != recorded.get("rows"):
        return f"{found['rows']} rows where {recorded.get('rows')} were written"
    missing = [c for c in recorded.get("columns", []) if c not in found["columns"]]
    return f"no column {missing[0]!r}" if missing else None


#: Manifest entries that must be JSON objects where present: top level, and in each stage.
_OBJECTS = ("stages", "config", "model", "versions")
_STAGE_OBJECTS = ("parts", "outputs", "shapes", "settings", "model_calls", "model", "survey", "inputs")


def _is_shape(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("rows"), int)
        and isinstance(value.get("columns"), list)
    )


def _manifest_problem(data: Any) -> str | None:
    """Why a decoded manifest is not one this package wrote, ``None`` when it is."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for key in _OBJECTS:
        if key in data and not isinstance(data[key], dict):
            return f"its {key!r} is not an object"
    for stage, info in data.get("stages", {}).items():
        if not isinstance(info, dict):
            return f"stage {stage!r} is not an object"
        for key in _STAGE_OBJECTS:
            if key in info and not isinstance(info[key], dict):
                return f"stage {stage!r} has a {key!r} that is not an object"
        shapes = info.get("shapes", {}).values()
        if not all(_is_shape(s) for s in shapes):
            return f"stage {stage!r} has a malformed 'shapes'"
    survey = data.get("stages", {}).get("match", {}).get("survey")
    if survey is not None and not isinstance(survey.get("name"), str):
        return "its matched survey has no name"
    return None


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
