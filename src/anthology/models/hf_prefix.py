"""KV caches kept between calls of the transformers backend (``hf.py``), so that a prompt that
extends an earlier one is computed from where the earlier one ended.

The paper's sequential answering asks a member question after question, each prompt the previous one
followed by the answer and the next question block: without a cache, every question prefills the
backstory and the whole conversation again. A :class:`PrefixCache` keeps the keys and values of
recent prompts (tokens that were prefilled or scored), least recently used first out, within a token
budget; a new prompt takes the cached prefix it shares the most tokens with, and only the rest is
computed. Keys and values of a token depend only on the tokens before it and their positions, so the
result is that of the whole prompt run at once, up to the last bits of the floating-point sums.

:func:`past_batch` lays the cached prefixes of a batch out as a transformers ``DynamicCache``, each
row's prefix right-aligned in a block of the longest.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: A prefix shorter than this is computed again rather than copied from the cache.
MIN_REUSE = 32

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values, [heads, tokens, dim]


@dataclass
class Hit:
    """The cached keys and values of a prompt's first ``length`` tokens (``layers`` may hold more)."""

    length: int
    layers: Layers


class PrefixCache:
    """Keys and values of recent token sequences, at most ``budget`` tokens in all (LRU)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.tokens = 0
        self._entries: OrderedDict[tuple[int, ...], tuple[np.ndarray, Layers]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, tokens: Sequence[int], limit: int) -> Hit | None:
        """The cached prefix of ``tokens`` with the most tokens, at most ``limit`` of them; ``None``
        when none reaches :data:`MIN_REUSE`."""
        query = np.asarray(tokens[:limit], dtype=np.int64)
        best, best_key = 0, None
        for key, (array, _) in self._entries.items():
            n = min(len(array), len(query))
            if n <= best:
                continue
            differ = np.flatnonzero(array[:n] != query[:n])
            shared = int(differ[0]) if len(differ) else n
            if shared > best:
                best, best_key = shared, key
        if best_key is None or best < MIN_REUSE:
            return None
        self._entries.move_to_end(best_key)
        return Hit(best, self._entries[best_key][1])

    def put(self, tokens: Sequence[int], layers: Layers) -> None:
        """Keep the keys and values of ``tokens``; a cached sequence that is a prefix of them is
        dropped (the new entry serves all it served)."""
        key = tuple(tokens)
        if len(key) < MIN_REUSE or len(key) > self.budget:
            return
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        for old in [k for k in self._entries if len(k) < len(key) and key[: len(k)] == k]:
            self._drop(old)
        self._entries[key] = (np.asarray(key, dtype=np.int64), layers)
        self.tokens += len(key)
        while self.tokens > self.budget:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[int, ...]) -> None:
        del self._entries[key]
        self.tokens -= len(key)


def returned_cache(out: Any) -> Any:
    """The cache a forward pass returned (transformers renamed ``past_key_values`` to ``cache``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def row_layers(cache: Any, row: int, columns: torch.Tensor) -> Layers:
    """One batch row's keys and values at ``columns`` (the row's tokens, in order), copied out of a
    transformers cache (indexing by a tensor copies) so the batch's tensors can be freed."""
    return [(layer.keys[row][:, columns], layer.values[row][:, columns]) for layer in cache.layers]


def past_batch(hits: Sequence[Hit | None], lengths: Sequence[int]) -> Any:
    """A ``DynamicCache`` of the first ``lengths[row]`` tokens of each row's hit, right-aligned in a
    block as wide as the longest (rows without one: masked-out zeros); without any, an empty cache
    whose layers all keep every token they are given (the model's own would drop what falls out of a
    sliding window), so that the keys and values can be stored afterwards."""
    from transformers import DynamicCache

    width = max(lengths, default=0)
    if not width:
        return DynamicCache()
    template = next(hit for hit in hits if hit is not None).layers
    layers = []
    for index, (keys, values) in enumerate(template):
        k = keys.new_zeros((len(hits), keys.shape[0], width, keys.shape[2]))
        v = values.new_zeros((len(hits), values.shape[0], width, values.shape[2]))
        for row, (hit, length) in enumerate(zip(hits, lengths, strict=True)):
            if hit is not None and length:
                k[row, :, width - length :] = hit.layers[index][0][:, :length]
                v[row, :, width - length :] = hit.layers[index][1][:, :length]
        layers.append((k, v))
    return DynamicCache(ddp_cache_data=layers)
