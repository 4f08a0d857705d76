"""What both local decoding loops share: seeded per-row sampling and per-row stop strings.

The eager loop (``hf.py``) and the static-cache loop (``hf_static.py``) must produce the same text for
the same request, so they draw tokens with one sampler and end rows with one stop check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts signed values arithmetically)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _gumbel(seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Gumbel noise for every (row, token) at one decoding step, from a counter-based hash
    (splitmix64) of the row's seed, the step and the token id: the same numbers on any device and in
    any batch, with no random-generator state to carry."""
    counter = torch.arange(vocab, device=seeds.device, dtype=torch.int64) + step * vocab
    z = seeds[:, None] + (counter[None, :] + 1) * _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    z = z ^ _shift_right(z, 31)
    u = (_shift_right(z, 11).double() + 0.5) * 2.0**-53
    return -torch.log(-torch.log(u))


def sample_tokens(
    logits: torch.Tensor, temps: torch.Tensor, top_ps: torch.Tensor, seeds: torch.Tensor, step: int
) -> torch.Tensor:
    """One token per row by the Gumbel-max trick: argmax of logits / T plus the row's own noise.

    Each row's result depends only on its own logits, parameters and seed, never on the other rows
    in the batch. Unlike inverse-CDF sampling, whose cumulative sum over the vocabulary lets tiny
    float differences (batched vs single matmuls) move the sampled token, the argmax only changes
    when two perturbed scores are within that difference. Temperature 0 is greedy; top_p masks the
    tokens outside the nucleus.
    """
    greedy = temps <= 0
    scaled = logits.double() / torch.where(greedy, torch.ones_like(temps), temps).double()[:, None]
    nucleus = top_ps < 1
    if nucleus.any():
        probs = torch.softmax(scaled[nucleus], dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = (sorted_p.cumsum(-1) - sorted_p) > top_ps[nucleus, None]
        drop = torch.zeros_like(outside).scatter(1, order, outside)
        scaled[nucleus] = scaled[nucleus].masked_fill(drop, float("-inf"))
    tokens = (scaled + _gumbel(seeds, step, logits.shape[-1])).argmax(-1)
    return torch.where(greedy, logits.argmax(-1), tokens)


class StopStrings:
    """Per-row stop-string checks over the decoded tail of each row's generated tokens.

    A stop string is found when it appears in the text of the last ``window`` tokens: long enough to
    hold the longest stop string with room for tokens that merge across its edges.
    """

    def __init__(self, tokenizer: Any, stops: Iterable[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = sorted(set(stops))
        longest = max(
            (len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in self.stops), default=0
        )
        self.window = longest + 4

    def hit(self, generated: Sequence[int], stop: tuple[str, ...]) -> bool:
        """Whether one of ``stop`` appears in the tail of ``generated``."""
        tail = self.tokenizer.decode(list(generated[-self.window :]), skip_special_tokens=True)
        return any(s in tail for s in stop)

    def ending_tokens(self, vocab: int) -> torch.Tensor:
        """A bool per token id: whether a stop string can end inside that token's text.

        A stop string first appears in the tail at the step whose token holds its last character, so
        the exact check need only run for rows whose newest token is marked. A token marks when its
        text contains a stop string or starts with the end of one. Each token is decoded after a
        plain one, so that a leading space it carries is kept; a token whose text is not clean on its
        own (part of a multi-byte character) marks too.
        """
        anchor = list(self.tokenizer("a", add_special_tokens=False)["input_ids"][-1:])
        head = self.tokenizer.decode(anchor)
        decoded = self.tokenizer.batch_decode([[*anchor, i] for i in range(vocab)])
        marks = []
        for full in decoded:
            text = full[len(head) :]
            marks.append(
                not full.startswith(head)
                or "\ufffd" in text
                or any(
                    s in text or any(s.endswith(text[:j]) for j in range(1, len(text) + 1))
                    for s in self.stops
                )
            )
        return torch.tensor(marks, dtype=torch.bool)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to the first stop string in it."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]
