"""Decoding with a static KV cache and a compiled decoding step, through transformers' ``generate``.

Why: the eager loop in ``hf.py`` pays Python and kernel-launch overhead at every step, and on a GPU
that overhead, not memory bandwidth, sets the speed of decoding (an eager step for an 8B model takes
many times its memory-bandwidth floor: the figures are in BENCHMARKS.md). With a static cache every
step has the same shapes, so transformers compiles the model's forward once (``torch.compile``, mode
``reduce-overhead``: CUDA graphs on a GPU) and replays it. That is the path transformers maintains for
each model and version, which is why this goes through ``generate`` instead of a loop of our own.

The text equals the eager loop's for the same request: tokens come from the same seeded sampler (a
logits processor leaves the chosen token the only finite score, and ``generate``'s greedy search takes
it), and rows end by the same end-of-sequence, stop-string and max-tokens rules (a stopping
criterion). Finished rows keep their place in the batch, so shapes stay fixed, until all are done.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import (
    CompileConfig,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from anthology.models.decoding import StopStrings, sample_tokens

_WIDTH_STEP = 64  # prompts are left-padded to a multiple of this, so batches share compiled shapes


class _SeededSampler(LogitsProcessor):
    """Draws each row's token with ``sample_tokens`` and leaves it the only finite score."""

    def __init__(self, temps: torch.Tensor, top_ps: torch.Tensor, seeds: torch.Tensor, width: int) -> None:
        self.temps, self.top_ps, self.seeds, self.width = temps, top_ps, seeds, width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.width
        tokens = sample_tokens(scores.float(), self.temps, self.top_ps, self.seeds, step)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(1, tokens[:, None], 0.0)


class _RowEnds(StoppingCriteria):
    """Ends each row at its end-of-sequence token, its own stop strings or its own max tokens, and
    records the token count at which a stop string ended it."""

    def __init__(
        self,
        width: int,
        budgets: torch.Tensor,
        eos: torch.Tensor,
        stops: StopStrings,
        row_stops: Sequence[tuple[str, ...]],
        marks: torch.Tensor | None,
    ) -> None:
        self.width, self.budgets, self.eos = width, budgets, eos
        self.stops, self.row_stops, self.marks = stops, row_stops, marks
        self.has_stop = torch.tensor([bool(s) for s in row_stops], device=budgets.device)
        self.done = torch.zeros_like(self.has_stop)
        self.stopped_at: dict[int, int] = {}

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        count = input_ids.shape[1] - self.width
        newest = input_ids[:, -1]
        ends = (self.budgets <= count) | torch.isin(newest, self.eos)
        if self.marks is not None:
            candidates = (self.marks[newest] & self.has_stop & ~self.done).nonzero().flatten().tolist()
            if candidates:
                tails = input_ids[
                    candidates, max(self.width, input_ids.shape[1] - self.stops.window) :
                ].tolist()
                for r, tail in zip(candidates, tails, strict=True):
                    if self.stops.hit(tail, self.row_stops[r]):
                        self.stopped_at[r] = count
                        ends[r] = True
        self.done |= ends
        return ends


@contextmanager
def _plain_generation_config(model: Any):
    """Hide the model's own generation defaults (repetition penalty, suppressed tokens ...) so that only
    our sampler and stopping rules shape the output, as in the eager loop."""
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def generate_static(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    temps: Sequence[float],
    top_ps: Sequence[float],
    seeds: Sequence[int],
    budgets: Sequence[int],
    row_stops: Sequence[tuple[str, ...]],
    stops: StopStrings,
    marks: torch.Tensor | None,
    pad_id: int,
    eos_ids: set[int],
    compiled: bool = True,
) -> list[tuple[list[int], str]]:
    """Generate one row per prompt; returns each row's tokens and finish reason (``stop``/``length``).

    ``marks`` flags the token ids after which a stop string may have appeared
    (``StopStrings.ending_tokens``), or is None when no row has stop strings. ``compiled=False`` keeps
    the static cache but runs the step eagerly.
    """
    dev = model.device
    n = len(prompts)
    width = -(-max(len(p) for p in prompts) // _WIDTH_STEP) * _WIDTH_STEP
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for r, toks in enumerate(prompts):
        ids[r, width - len(toks) :] = torch.tensor(toks)
        mask[r, width - len(toks) :] = 1
    eos = torch.tensor(sorted(eos_ids) or [-1], device=dev)
    sampler = _SeededSampler(
        torch.tensor(temps, device=dev),
        torch.tensor(top_ps, device=dev),
        torch.tensor(seeds, dtype=torch.int64, device=dev),
        width,
    )
    ends = _RowEnds(width, torch.tensor(budgets, device=dev), eos, stops, row_stops, marks)
    config = GenerationConfig(
        max_new_tokens=max(budgets),
        do_sample=False,
        pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids) or None,
        cache_implementation="static",
    )
    if not compiled:
        config.disable_compile = True
    elif dev.type != "cuda":
        # transformers compiles the static-cache step by itself only on accelerators; asked for on
        # the CPU, compile it there too (inductor's C++ code; no CUDA graphs).
        config.compile_config = CompileConfig(mode="default")
        config.compile_config._compile_all_devices = True
    with _plain_generation_config(model):
        out = model.generate(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
            stopping_criteria=StoppingCriteriaList([ends]),
        )
    rows = []
    for r, new in enumerate(out[:, width:].tolist()):
        # Each way a row can end, as (step, tokens kept, reason); the earliest wins, a stop string
        # before max tokens at the same step, as in the eager loop.
        events = [(budgets[r] - 1, budgets[r], "length")]
        first_eos = next((i for i, tok in enumerate(new) if tok in eos_ids), None)
        if first_eos is not None:
            events.append((first_eos, first_eos, "stop"))
        if r in ends.stopped_at:
            events.append((ends.stopped_at[r] - 1, ends.stopped_at[r], "stop"))
        _, kept, reason = min(events, key=lambda e: (e[0], e[2] == "length"))
        rows.append((new[:kept], reason))
    return rows
