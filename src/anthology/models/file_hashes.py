"""Content hashes of model files, remembered between runs.

A local model's revision is a hash of its files' bytes, weights included, so that new weights saved
over old ones (same names, same sizes) are a new model. Reading a 500 MB folder on every load would be
slow, so each file's sha256 is kept in a small JSON store next to the response cache
(``file-hashes.json`` in the directory of :func:`~anthology.models.response_cache.default_cache_path`),
keyed by the file's absolute path and trusted while its size and modification time (in nanoseconds)
are unchanged. A file modified in the last two seconds is hashed but not remembered: on a file system
with coarse timestamps (a clock tick, or two seconds) a rewrite could keep the same time. The store is
replaced atomically (a temporary file renamed over it); a store that cannot be read is ignored, and
the hashes are computed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anthology.hashing import file_sha256
from anthology.models.response_cache import default_cache_path

STORE_NAME = "file-hashes.json"
_FORMAT = 1
_SETTLED_NS = 2_000_000_000  # a file modified longer ago than this keeps its time until it changes


def store_path() -> Path:
    """Where the remembered hashes live: ``file-hashes.json`` beside the response cache."""
    return default_cache_path().parent / STORE_NAME


def content_revision(files: Sequence[Path]) -> str:
    """``sha256:`` and 16 hex digits over the names and contents of ``files``."""
    digest = hashlib.sha256()
    for path, sha in zip(files, file_hashes(files), strict=True):
        digest.update(f"{path.name}:{sha}\n".encode())
    return "sha256:" + digest.hexdigest()[:16]


def file_hashes(files: Sequence[Path]) -> list[str]:
    """The sha256 of each file: remembered in the store (:func:`store_path`) while the file's
    size and modification time are those it had when hashed, computed (and remembered, unless the
    file was just modified) otherwise."""
    store = store_path()
    known = _read(store)
    fresh: dict[str, dict[str, Any]] = {}
    out = []
    for path in files:
        key = str(path.resolve())
        now = time.time_ns()
        stat = os.stat(key)  # before reading: a file changed while hashed is hashed again next time
        entry = known.get(key)
        if entry is not None and (entry["size"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            out.append(entry["sha256"])
            continue
        sha = file_sha256(Path(key))
        if stat.st_mtime_ns < now - _SETTLED_NS:
            fresh[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
        out.append(sha)
    if fresh:
        _write(store, fresh)
    return out


def _read(store: Path) -> dict[str, dict[str, Any]]:
    """The remembered entries that are well formed; none when the store is missing or unreadable."""
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("files"), dict):
        return {}
    return {
        path: entry
        for path, entry in data["files"].items()
        if isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("mtime_ns"), int)
    }


def _write(store: Path, fresh: dict[str, dict[str, Any]]) -> None:
    """Add ``fresh`` entries to the store as it is now (another process may have added its own), drop
    those of files that are gone, and replace the store atomically. A store that cannot be written
    only means hashing again next time."""
    files = {path: entry for path, entry in _read(store).items() if os.path.exists(path)}
    files.update(fresh)
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=store.parent, prefix=f".{STORE_NAME}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"format": _FORMAT, "files": files}, handle, indent=1, sort_keys=True)
        os.replace(tmp, store)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if not isinstance(exc, OSError):
            raise
