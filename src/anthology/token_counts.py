"""Counting tokens as a backend will count them, before anything runs: with the model's own tokenizer
when it is here (a local model's, or one found locally for a served or Ray model: a bundled preset, a
local folder, a Hugging Face id in the local cache), else at four characters a token, taken as three
to five (what English prose in the common tokenizers gives) so that the range covers the tokenizer
that is not here."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anthology.models.base import Prompt

logger = logging.getLogger(__name__)

#: Characters per token without the model's tokenizer, and the range it is taken to cover.
CHARS_PER_TOKEN = 4.0
CHARS_PER_TOKEN_RANGE = (5.0, 3.0)
#: Tokens a chat template adds per message (role markers) when the template is not here.
CHAT_TOKENS_PER_MESSAGE = 4
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class TokenizerCounter:
    """Token counts from the model's tokenizer: completion prompts with its special tokens (BOS),
    chat prompts through its chat template, as the backends encode them."""

    exact = True
    spread = (1.0, 1.0)

    def __init__(self, tokenizer: Any) -> None:
        from anthology.models.tokens import PromptEncoder

        self._encoder = PromptEncoder(tokenizer)

    def prompts(self, prompts: Sequence[Prompt]) -> list[int]:
        """The tokens of each prompt."""
        return [len(ids) for ids in self._encoder.prompts(list(prompts))] if prompts else []

    def text(self, text: str) -> int:
        """The tokens of a continuation (no special tokens)."""
        return len(self._encoder.texts([(text, False)])[0])


class CharacterCounter:
    """Token counts at :data:`CHARS_PER_TOKEN` characters a token; ``spread`` is the factor range
    that :data:`CHARS_PER_TOKEN_RANGE` gives around it."""

    exact = False
    spread = (CHARS_PER_TOKEN / CHARS_PER_TOKEN_RANGE[0], CHARS_PER_TOKEN / CHARS_PER_TOKEN_RANGE[1])

    def prompts(self, prompts: Sequence[Prompt]) -> list[int]:
        return [self._prompt(p) for p in prompts]

    def _prompt(self, prompt: Prompt) -> int:
        if isinstance(prompt, str):
            return self.text(prompt) + 1  # a BOS token
        return (
            sum(self.text(m["content"]) + CHAT_TOKENS_PER_MESSAGE for m in prompt) + CHAT_TOKENS_PER_MESSAGE
        )

    def text(self, text: str) -> int:
        return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0


TokenCounter = TokenizerCounter | CharacterCounter


def counter_for(model: Any, name: str) -> TokenCounter:
    """The counter for ``model`` (a backend, or the :class:`CachedModel` around one) named ``name``:
    its tokenizer, one found locally for the name, or characters."""
    inner = getattr(model, "model", model)
    tokenizer = getattr(inner, "tokenizer", None) if model is not None else None
    if tokenizer is None:
        tokenizer = local_tokenizer(name)
    return TokenizerCounter(tokenizer) if tokenizer is not None else CharacterCounter()


def local_tokenizer(name: str) -> Any:
    """The tokenizer of the model ``name`` when it is on this machine and transformers is installed
    (a preset already converted, a local folder, a hub id in the local cache; for ``openai:MODEL``
    and ``vllm:MODEL``, MODEL's), else ``None``. Nothing is downloaded."""
    from anthology.models.presets import PRESETS, cache_dir

    source = name.removeprefix("vllm:").removeprefix("openai:").removeprefix("hf:").split("@", 1)[0]
    if source in PRESETS:
        preset = PRESETS[source]
        folder = cache_dir() / f"{preset.name}-{preset.version()}" if preset.installed() else None
        source = str(folder) if folder is not None and folder.is_dir() else ""
    elif not (Path(source).expanduser().is_dir() or _HUB_ID.match(source)):
        return None
    if not source:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(Path(source).expanduser()), local_files_only=True)
    except Exception as exc:  # no transformers, not in the local cache, not a model folder
        logger.debug("no local tokenizer for %s: %s", name, exc)
        return None
