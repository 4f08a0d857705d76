"""Content hashes: what a fingerprint counts, so that a file's contents, not its path or size, decide
whether a result is reused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def update_with_file(digest: Any, path: Path) -> None:
    """Feed a file's bytes to ``digest`` (a hashlib object), a megabyte at a time."""
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()


def fingerprint(value: Any) -> str:
    """A short stable hash of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
