"""Backstory filters: length, a first-person narrative heuristic, and exact and near-duplicate removal.

Near-duplicates are found with MinHash over word 5-shingles and locality-sensitive hashing (16 bands
of 8 rows), then confirmed by the exact Jaccard similarity of the shingle sets, so the work grows with
the number of backstories rather than with the number of pairs the naive way compares (50 million for
10,000 backstories).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

_WORDS = re.compile(r"[a-z0-9']+")
_FIRST_PERSON = {"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"}
_PRIME = (1 << 61) - 1


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def is_first_person(text: str, min_rate: float = 0.02, min_count: int = 2) -> bool:
    """A heuristic for "a first-person narrative": at least ``min_count`` first-person pronouns making
    up at least ``min_rate`` of the words (typical life stories run at 5-10%)."""
    tokens = words(text)
    count = sum(t in _FIRST_PERSON for t in tokens)
    return count >= min_count and count >= min_rate * len(tokens)


def normalise(text: str) -> str:
    return " ".join(words(text))


def shingles(text: str, size: int = 5) -> set[int]:
    """Hashes of the word ``size``-grams (the whole text when shorter)."""
    tokens = words(text)
    grams = [" ".join(tokens[i : i + size]) for i in range(max(1, len(tokens) - size + 1))]
    return {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") >> 3 for g in grams}


def duplicate_of(texts: Sequence[str], threshold: float = 0.8, seed: int = 0) -> list[int | None]:
    """For each text, the index of an earlier text it duplicates (same normalised text, or Jaccard
    similarity of word 5-shingles >= ``threshold``), else ``None``."""
    result: list[int | None] = [None] * len(texts)
    first_seen: dict[str, int] = {}
    for i, text in enumerate(texts):
        key = normalise(text)
        if key in first_seen:
            result[i] = first_seen[key]
        else:
            first_seen[key] = i
    if threshold > 1:
        return result
    sets = [shingles(t) for t in texts]
    bands, rows = 16, 8
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=bands * rows, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=bands * rows, dtype=np.uint64)
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        if result[i] is not None or not s:
            continue
        values = np.fromiter(s, dtype=np.uint64)
        # (a * x + b) mod 2^64 is a fine universal-enough hash for MinHash signatures.
        signature = (values[:, None] * a[None, :] + b[None, :]).min(axis=0)
        keys = [(band, signature[band * rows : (band + 1) * rows].tobytes()) for band in range(bands)]
        candidates = sorted({j for key in keys for j in buckets.get(key, ())})
        result[i] = next(
            (j for j in candidates if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold), None
        )
        if result[i] is None:  # only originals are matched against
            for key in keys:
                buckets[key].append(i)
    return result
