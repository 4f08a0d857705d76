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

from anthology.errors import BackendError, ConfigError
from anthology.models.base import Capabilities, Prompt, ScoreRequest, split_context_space

_TAIL_CHARS = 32  # context characters re-tokenised with an option to find the boundary tokens
_OPTION_MEMO = 65_536  # (context tail, options) pairs whose option tokens are remembered


Encoded = list[tuple[list[int], list[list[int]]]]
"""Scoring requests as token ids: each request's context and its options' continuation tokens."""


def exact_capabilities(tokenizer: Any, max_context: int | None) -> Capabilities:
    """What a backend that runs the model itself offers: completion prompts, chat where the tokenizer
    has a chat template, exact option scores and seeded samples."""
    return Capabilities(
        completion=True,
        chat=getattr(tokenizer, "chat_template", None) is not None,
        logprobs=True,
        top_logprobs=None,
        max_context=max_context,
        seeded=True,
    )


def check_fits(tokens: int, limit: int | None, kind: str) -> None:
    """Refuse a sequence of ``tokens`` (prompt and at least one more token) longer than the model's
    context of ``limit``, in one line, before any work: a position past the context would give
    made-up log-probabilities, not an error."""
    if limit is not None and tokens > limit:
        raise ConfigError(
            f"a {kind} prompt of {tokens} tokens does not fit the model's context of {limit} tokens: "
            "use shorter backstories (backstories.max_tokens), ask.context: independent, "
            "or a model with a longer context"
        )


def option_rows(encoded: Encoded) -> tuple[list[tuple[int, ...]], list[list[tuple[int, list[int]]]]]:
    """The token rows that score every option once, for an engine that reads the next-token logits
    at every input position, and per request each option's (row, tokens).

    An option's row is its context and all but its last token. A row that is a prefix of another row
    is read off that longer one: " A" needs the logits after the context, which the row for " (A"
    computes anyway; causal attention makes the two identical."""
    rows: dict[tuple[int, ...], int] = {}
    targets = []
    for ctx, conts in encoded:
        own = [tuple(ctx + cont[:-1]) for cont in conts]
        longest = sorted(set(own), key=len, reverse=True)
        per_option = []
        for row, cont in zip(own, conts, strict=True):
            host = next(r for r in longest if r[: len(row)] == row)
            per_option.append((rows.setdefault(host, len(rows)), cont))
        targets.append(per_option)
    return list(rows), targets


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

    def score_requests(self, requests: Sequence[ScoreRequest]) -> Encoded:
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
