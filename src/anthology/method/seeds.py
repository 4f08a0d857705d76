"""Where every random choice of the method comes from: a stable hash of what it belongs to.

A sampled request's seed is ``stable_int(run seed, stage, unit, item)`` (for example
``(seed, "demographics", persona_id, "age")``), so no two personas, respondents or traits share random
numbers, and a rerun with the same seed gives identical text whatever the order or the batching.
The backends then derive sample k's seed from the request's seed and k
(:func:`anthology.models.base.sample_seed`).
"""

from __future__ import annotations

import hashlib


def stable_int(*parts: object) -> int:
    """A 63-bit integer that depends only on ``parts`` (by their ``str``)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def uniform(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts``."""
    return stable_int(*parts) / 2**63
