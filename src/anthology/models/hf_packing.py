"""Packed shared-prefix scoring for the transformers backend (``hf.py``).

A *row* is a token sequence whose next-token log-probs are needed at some positions (``needs``:
position -> the tokens whose log-probs are wanted there). Rows that share a long token prefix (one
backstory, many questions) are scored together in one *pack*: the prefix once, then the members'
suffixes laid out as a tree (the tokens a suffix shares with the previous member's, at the same
positions, are laid once: the question block that a question's answer forms share). An attention mask
lets each token see exactly the tokens of its own row before it, and position ids are the row's, so
each member's log-probs are those of its whole row run alone: one forward pass per backstory, no
padding between questions of different lengths, no KV cache to copy. Only the positions whose
log-probs are needed reach the output layer.

The layout (:func:`lay_out`, :func:`pack_columns`, :func:`ancestors`) is plain Python and numpy and
needs no model; :func:`attention_mask` needs the model's config, :func:`score_packs` the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from anthology.models.hf_prefix import MIN_REUSE, PrefixCache, past_batch, returned_cache, row_layers

Rows = list[tuple[int, ...]]
Needs = list[dict[int, list[int]]]  # per row: position -> tokens whose log-probs are needed there
Found = list[dict[tuple[int, int], float]]  # per row: (position, token) -> log-prob


@dataclass
class Pack:
    """Rows scored in one packed sequence: their shared prefix, then each member's suffix."""

    prefix_len: int
    members: list[int]
    length: int


@dataclass
class Columns:
    """A batch of packs laid out column by column, padded to the longest pack."""

    ids: np.ndarray  # [batch, width] token ids (the pad id after a pack's end)
    positions: np.ndarray  # [batch, width] each column's position in its row
    parents: np.ndarray  # [batch, width] the column of the token before it in its row; -1: none
    coords: list[tuple[int, int, int, int]]  # needed log-probs: (pack, column, row, position)


def lay_out(
    rows: Rows, needs: Needs, *, share_prefix: bool, min_shared_prefix: int, pack_tokens: int
) -> list[Pack]:
    """Every row in a pack, longest packs first. With ``share_prefix``, rows (sorted by tokens) that
    share at least ``min_shared_prefix`` tokens go in packs of up to ``pack_tokens`` tokens."""
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    groups = prefix_groups(order, rows, needs, min_shared_prefix) if share_prefix else [(0, order)]
    packs = [
        pack for prefix_len, members in groups for pack in group_packs(prefix_len, members, rows, pack_tokens)
    ]
    packs.sort(key=lambda pack: -pack.length)
    return packs


def group_packs(prefix_len: int, members: list[int], rows: Rows, pack_tokens: int) -> list[Pack]:
    """Lay a prefix group's rows out as packed sequences: the prefix once, then the members'
    suffixes as a tree (a suffix's tokens shared with the previous member's, in token order, are
    laid once: the question block that a question's answer forms share), up to ``pack_tokens`` (a
    group too big for one pack repeats its prefix). Rows that share no prefix are packs of their
    own."""
    if not prefix_len:
        return [Pack(0, [i], len(rows[i])) for i in members]
    limit = max(pack_tokens, prefix_len + max(len(rows[i]) - prefix_len for i in members))
    packs: list[Pack] = []
    previous: tuple[int, ...] = ()
    for i in sorted(members, key=lambda i: rows[i]):
        new = len(rows[i]) - max(prefix_len, common_prefix(rows[i], previous))
        if not packs or packs[-1].length + new > limit:
            packs.append(Pack(prefix_len, [], prefix_len))
            new = len(rows[i]) - prefix_len
        packs[-1].members.append(i)
        packs[-1].length += new
        previous = rows[i]
    return packs


def prefix_groups(
    order: list[int], rows: Rows, needs: Needs, min_shared_prefix: int
) -> list[tuple[int, list[int]]]:
    """Group rows (``order``: sorted by tokens) that share a long token prefix. Each group's prefix
    stops before the first position whose log-probs any member needs; rows in no group come last, in
    a group of prefix length 0."""
    groups: list[tuple[int, list[int]]] = []
    solo: list[int] = []

    def close(members: list[int], prefix_len: int) -> None:
        if len(members) > 1 and prefix_len >= min_shared_prefix:
            groups.append((prefix_len, members))
        else:
            solo.extend(members)

    members: list[int] = []
    prefix_len = 0
    for i in order:
        first_need = min(needs[i])
        if not members:
            members, prefix_len = [i], first_need
            continue
        common = common_prefix(rows[members[0]], rows[i])
        shared = min(prefix_len, common, first_need)
        # Join only while most of the group's prefix stays shared: two backstories that open
        # with the same interview question must not shrink every member's prefix to it.
        if shared >= max(min_shared_prefix, prefix_len // 2):
            members.append(i)
            prefix_len = shared
        else:
            close(members, prefix_len)
            members, prefix_len = [i], first_need
    if members:
        close(members, prefix_len)
    if solo:
        groups.append((0, solo))
    return groups


def pack_columns(batch: list[Pack], rows: Rows, needs: Needs, pad_id: int) -> Columns:
    """Lay packs out as columns: each pack is its prefix followed by its members' suffixes as a tree
    (tokens a member shares with the previous one, at the same positions, are laid once)."""
    width = max(pack.length for pack in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    positions = np.zeros((len(batch), width), dtype=np.int64)
    parents = np.full((len(batch), width), -1, dtype=np.int64)
    coords: list[tuple[int, int, int, int]] = []
    for b, pack in enumerate(batch):
        p = pack.prefix_len
        laid: list[int] = []  # token ids laid in this pack, column by column
        path: list[int] = []  # the previous member's columns, position by position
        previous: tuple[int, ...] = ()
        for i in pack.members:
            row = rows[i]
            if not laid:
                laid += row[:p]
                path = list(range(p))
                previous = row[:p]
            keep = max(p, common_prefix(row, previous))
            path = path[:keep]
            for pos in range(keep, len(row)):
                parents[b, len(laid)] = path[-1] if path else -1
                positions[b, len(laid)] = pos
                path.append(len(laid))
                laid.append(row[pos])
            coords += [(b, path[pos], i, pos) for pos in sorted(needs[i])]
            previous = row
        ids[b, : len(laid)] = laid
        positions[b, :p] = np.arange(p)
        parents[b, 1:p] = np.arange(p - 1)
    return Columns(ids, positions, parents, coords)


def ancestors(parents: np.ndarray) -> np.ndarray:
    """[batch, query, key] booleans: key is query itself or a token before it in its row, following
    ``parents`` (each column's previous token in its row, always an earlier column; -1 for none)."""
    batch, width = parents.shape
    allowed = np.zeros((batch, width, width), dtype=bool)
    index = np.arange(batch)
    for column in range(width):
        parent = parents[:, column]
        has = parent >= 0
        allowed[index[has], column] = allowed[index[has], parent[has]]
        allowed[:, column, column] = True
    return allowed


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def attention_mask(
    config: Any,
    positions: torch.Tensor,
    allowed: torch.Tensor,
    dtype: torch.dtype,
    *,
    key_positions: torch.Tensor | None = None,
) -> Any:
    """The attention mask of packed sequences, [batch, 1, query, key], from ``allowed`` [batch,
    query, key] (each token sees its own row's tokens up to itself; padding only itself), for a model
    of ``config`` computing in ``dtype``. Models with sliding-window layers get one mask per layer
    type, the window measured in position ids (``key_positions``: the keys', when the keys include
    cached ones before the queries)."""
    keys = positions if key_positions is None else key_positions
    attention = getattr(config, "_attn_implementation", "sdpa")
    window = getattr(config, "sliding_window", None)
    types = set(getattr(config, "layer_types", None) or [])
    if "sliding_attention" not in types:
        if window and not types:  # Mistral-style: one window for every layer
            allowed &= positions[:, :, None] - keys[:, None, :] < window
        return _as_mask(allowed, attention, dtype)
    sliding = allowed & (positions[:, :, None] - keys[:, None, :] < window)
    return {t: _as_mask(sliding if t == "sliding_attention" else allowed, attention, dtype) for t in types}


def _as_mask(allowed: torch.Tensor, attention: str, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask for SDPA; an additive one (0 or the dtype's minimum) for eager attention."""
    allowed = allowed[:, None]
    if attention == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


@torch.inference_mode()
def score_packs(
    model: Any,
    batch: list[Pack],
    rows: Rows,
    needs: Needs,
    found: Found,
    *,
    pad_id: int,
    prefix: PrefixCache | None = None,
    cache_kw: str = "past_key_values",
) -> None:
    """One forward pass of ``model`` over a batch of packs; the needed log-probs of each member go
    into ``found``. With a ``prefix`` cache, each pack's stem (the tokens before its first needed
    position: its shared prefix, or a lone row's context) starts from the longest cached prefix of
    it, and is cached afterwards for the prompts that extend it (the next question of a member)."""
    columns = pack_columns(batch, rows, needs, pad_id)
    dev = model.device
    stems = [pack.prefix_len or min(needs[pack.members[0]]) for pack in batch]
    hits = (
        [prefix.longest(rows[p.members[0]], n) for p, n in zip(batch, stems, strict=True)] if prefix else []
    )
    skip = [hit.length if hit else 0 for hit in hits] or [0] * len(batch)
    lengths = [pack.length - k for pack, k in zip(batch, skip, strict=True)]
    ids, positions, parents, coords = _skip_columns(columns, [p.length for p in batch], skip, pad_id)
    bi = torch.tensor([c[0] for c in coords], device=dev)
    ci = torch.tensor([c[1] for c in coords], device=dev)
    queries = torch.from_numpy(positions).to(dev)
    allowed = torch.from_numpy(ancestors(parents)).to(dev)
    keys, past, width = queries, None, max(skip)
    if prefix is not None:
        past = past_batch(hits, skip)
        seen = torch.zeros((len(batch), queries.shape[1], width), dtype=torch.bool, device=dev)
        before = torch.zeros((len(batch), width), dtype=torch.long, device=dev)
        for b, (k, n) in enumerate(zip(skip, lengths, strict=True)):
            seen[b, :n, width - k :] = True  # every token of a pack sees its cached stem
            before[b, width - k :] = torch.arange(k, device=dev)
        allowed = torch.cat([seen, allowed], dim=2)
        keys = torch.cat([before, queries], dim=1)
    mask = attention_mask(model.config, queries, allowed, model.dtype, key_positions=keys)
    logits, cache = logits_at(model, torch.from_numpy(ids).to(dev), queries, mask, bi, ci, past, cache_kw)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    for k, (_, _, i, pos) in enumerate(coords):
        for token in needs[i][pos]:
            found[i][(pos, token)] = float(logprobs[k, token])
    if prefix is not None:
        for b, (pack, n) in enumerate(zip(batch, stems, strict=True)):
            if n < MIN_REUSE:
                continue
            kept = torch.cat([torch.arange(width - skip[b], width), width + torch.arange(n - skip[b])])
            prefix.put(rows[pack.members[0]][:n], row_layers(cache, b, kept.to(dev)))


def _skip_columns(
    columns: Columns, lengths: list[int], skip: list[int], pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
    """The columns of each pack after its first ``skip`` (a chain of its stem's first tokens, taken
    from the cache), shifted to the left; a parent among the skipped columns becomes -1."""
    if not any(skip):
        return columns.ids, columns.positions, columns.parents, columns.coords
    width = max(n - k for n, k in zip(lengths, skip, strict=True))
    batch = len(lengths)
    ids = np.full((batch, width), pad_id, dtype=np.int64)
    positions = np.zeros((batch, width), dtype=np.int64)
    parents = np.full((batch, width), -1, dtype=np.int64)
    for b, (n, k) in enumerate(zip(lengths, skip, strict=True)):
        ids[b, : n - k] = columns.ids[b, k:n]
        positions[b, : n - k] = columns.positions[b, k:n]
        shifted = columns.parents[b, k:n] - k
        parents[b, : n - k] = np.where(shifted >= 0, shifted, -1)
    coords = [(b, c - skip[b], i, pos) for b, c, i, pos in columns.coords]
    return ids, positions, parents, coords


def logits_at(
    model: Any,
    ids: torch.Tensor,
    positions: torch.Tensor,
    mask: Any,
    bi: torch.Tensor,
    ci: torch.Tensor,
    past: Any = None,
    cache_kw: str = "past_key_values",
) -> tuple[torch.Tensor, Any]:
    """The model's logits at the columns (bi, ci) only, and the cache when ``past`` is given (the
    keys and values of the past, then of ``ids``): the hidden states are gathered just before the
    output layer (a pre-hook on it), so the vocabulary projection and whatever the model does to its
    logits afterwards (soft-capping, scaling) run on the needed positions."""
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][bi, ci],))
    cached = {"use_cache": True, cache_kw: past} if past is not None else {"use_cache": False}
    try:
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=0, **cached)
    finally:
        handle.remove()
    cache = returned_cache(out) if past is not None else None
    if out.logits.dim() == 3:  # the output layer was not called as a module: full logits came back
        return out.logits[bi, ci], cache
    return out.logits, cache
