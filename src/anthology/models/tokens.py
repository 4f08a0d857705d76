"""Prompts to token ids, shared by the backends that run a Hugging Face tokenizer themselves (the
transformers backend, in-process vLLM), so that both score exactly the same token sequences.

Chat prompts are rendered with the tokenizer's chat template (generation prompt added, no special
tokens added again); completion prompts get the tokenizer's special tokens (BOS). An option's
continuation tokens are found by tokenising the context's tail together with the option, since
tokens can merge across the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anthology.errors import BackendError
from anthology.models.base import Prompt, ScoreRequest, split_context_space

_TAIL_CHARS = 32  # context characters re-tokenised with an option to find the boundary tokens
_OPTION_MEMO = 65_536  # (context tail, options) pairs whose option tokens are remembered


class PromptEncoder:
    """Token ids of prompts and scoring requests for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._option_memo: dict[tuple[str, tuple[str, ...]], list[list[int]]] = {}

    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """Prompt text, and whether the tokenizer should add its special tokens (BOS)."""
        if isinstance(prompt, str):
            return prompt, True
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in prompt], tokenize=False, add_generation_prompt=True
        )
        return text, False

    def prompts(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """The token ids of generation prompts."""
        return self.texts([self.render(p) for p in prompts])

    def texts(self, texts: list[tuple[str, bool]]) -> list[list[int]]:
        """Token ids of (text, add special tokens) pairs, one tokenizer call per flag."""
        out: list[list[int]] = [[] for _ in texts]
        for special in (True, False):
            which = [i for i, (_, s) in enumerate(texts) if s == special]
            if which:
                encoded = self.tokenizer([texts[i][0] for i in which], add_special_tokens=special)[
                    "input_ids"
                ]
                for i, ids in zip(which, encoded, strict=True):
                    out[i] = list(ids)
        return out

    def score_requests(self, requests: Sequence[ScoreRequest]) -> list[tuple[list[int], list[list[int]]]]:
        """Each request's context tokens and its options' continuation tokens.

        Contexts are tokenised in one batch call. Only the context's tail is tokenised together with
        each option (re-tokenising a 2,000-token backstory per option would dominate the cost); a
        tail and its options recur across personas (the end of the same question), so their tokens
        are remembered.
        """
        rendered = []
        for r in requests:
            text, special = self.render(r.context)
            options = r.options
            if isinstance(r.context, str):
                text, options = split_context_space(text, options)
            rendered.append((text, special, tuple(options)))
        contexts = self.texts([(text, special) for text, special, _ in rendered])
        return [
            (ctx_ids, self._option_tokens(text[-_TAIL_CHARS:], options))
            for ctx_ids, (text, _, options) in zip(contexts, rendered, strict=True)
        ]

    def _option_tokens(self, tail: str, options: tuple[str, ...]) -> list[list[int]]:
        key = (tail, options)
        conts = self._option_memo.get(key)
        if conts is not None:
            return conts
        tail_ids = self.tokenizer(tail, add_special_tokens=False)["input_ids"]
        joint = self.tokenizer([tail + option for option in options], add_special_tokens=False)["input_ids"]
        conts = []
        for option, ids in zip(options, joint, strict=True):
            if ids[: len(tail_ids)] == tail_ids and len(ids) > len(tail_ids):
                cont = list(ids[len(tail_ids) :])
            else:
                cont = list(self.tokenizer(option, add_special_tokens=False)["input_ids"])
            if not cont:
                raise BackendError(f"option {option!r} encodes to no tokens")
            conts.append(cont)
        if len(self._option_memo) >= _OPTION_MEMO:
            self._option_memo.clear()
        self._option_memo[key] = conts
        return conts
