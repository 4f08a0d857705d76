"""The one model protocol every backend implements, and its request and result types.

Two request kinds, both batch-first with results in request order:

* :class:`GenerateRequest` -> :class:`GenerateResult`: sample ``n`` texts from a completion prompt or
  chat messages.
* :class:`ScoreRequest` -> :class:`ScoreResult`: the log-probability of each candidate continuation
  (e.g. ``" A"``, ``" B"``) after a context. Backends that run the model themselves compute a prefix that
  many requests share (one backstory, many questions) only once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from anthology.errors import CapabilityError

Message = Mapping[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""

Prompt = str | tuple[Message, ...]
"""A completion prompt (a string) or a chat conversation (a tuple of messages)."""


def as_prompt(prompt: str | Sequence[Message]) -> Prompt:
    """Normalise a prompt: strings stay, message lists become tuples of plain dicts."""
    if isinstance(prompt, str):
        return prompt
    return tuple({"role": str(m["role"]), "content": str(m["content"])} for m in prompt)


def is_chat(prompt: Prompt) -> bool:
    return not isinstance(prompt, str)


def sample_seed(seed: int | None, sample_index: int) -> int | None:
    """The seed of one sample: a stable function of the request seed and the sample's index, so that
    sample k is the same text whether it was drawn alone, in a batch, or after samples 0..k-1."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class GenerateRequest:
    """Sample ``n`` texts. Samples are numbered ``first_sample .. first_sample + n - 1``; with a seed,
    sample k of a request is reproducible on backends that support seeding."""

    prompt: Prompt
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    first_sample: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", as_prompt(self.prompt))
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not self.temperature >= 0 or self.temperature == float("inf"):  # NaN fails both
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Sample:
    """One generated text. ``finish_reason`` is "stop" (stop string or end of text) or "length"."""

    text: str
    finish_reason: FinishReason
    completion_tokens: int


@dataclass(frozen=True)
class GenerateResult:
    samples: tuple[Sample, ...]
    prompt_tokens: int

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.samples]


@dataclass(frozen=True)
class ScoreRequest:
    """Score each option as a continuation of ``context``. Whitespace belongs to the option: write
    ``" A"``, not a context ending in a space (a trailing space on the context is moved onto the
    options by the backends, since ``" A"`` and ``"A"`` are different tokens)."""

    context: Prompt
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", as_prompt(self.context))
        object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise ValueError("a ScoreRequest needs at least one option")
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"options must be distinct, got {self.options!r}")


@dataclass(frozen=True)
class ScoreResult:
    """Log-probability of each option, in the request's option order.

    ``imputed`` marks options whose log-probability the backend could not observe (a top-k list that
    did not hold it) and that were filled in by a rule; ``coverage`` is the *observed* probability mass
    on the options (``sum(exp(lp))`` over the options not imputed) and :attr:`imputed_mass` the mass
    that was filled in, so that made-up mass is never counted as seen.

    ``prompt_tokens`` and ``completion_tokens`` are what scoring cost the backend: the context's
    tokens for a backend that runs the model itself; what a server billed (every option's prompt
    when it echoes, the greedy tokens it generated for top-k).
    """

    logprobs: tuple[float, ...]
    coverage: float
    imputed: tuple[bool, ...] = field(default=())
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.imputed:
            object.__setattr__(self, "imputed", (False,) * len(self.logprobs))

    @property
    def imputed_mass(self) -> float:
        """The probability mass of the imputed options (0 for exact scores)."""
        import math

        return sum(math.exp(lp) for lp, filled in zip(self.logprobs, self.imputed, strict=True) if filled)

    def probabilities(self) -> list[float]:
        """The options' probabilities renormalised to sum to one."""
        import math

        top = max(self.logprobs)
        weights = [math.exp(lp - top) for lp in self.logprobs]
        total = sum(weights)
        return [w / total for w in weights]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so callers can check before spending compute.

    ``top_logprobs`` is ``None`` when option scores are exact (the backend can score any continuation),
    or the number of alternatives the backend returns per position when only the top-k come back.
    ``scoring`` says how options are scored: ``"exact"`` (the backend runs the model itself),
    ``"echo"`` (an HTTP server returns the log-probabilities of the prompt's own tokens, so every
    continuation is scored exactly) or ``"top-k"`` (read off the top-k alternatives of generated tokens,
    step by step; what is not in them is imputed). It is recorded in each run's manifest.
    """

    completion: bool
    chat: bool
    logprobs: bool
    top_logprobs: int | None
    max_context: int | None
    seeded: bool
    scoring: Literal["exact", "echo", "top-k"] = "exact"

    def require(self, *, kind: Literal["generate", "score"], chat: bool) -> None:
        """Raise :class:`CapabilityError` when a request of this kind and style is unsupported."""
        style = "chat" if chat else "completion"
        if chat and not self.chat:
            raise CapabilityError(
                "this model has no chat template; use a completion prompt or a chat/instruct model"
            )
        if not chat and not self.completion:
            raise CapabilityError(
                "this backend only serves chat; use chat messages (e.g. --chat) or a completions endpoint"
            )
        if kind == "score" and not self.logprobs:
            raise CapabilityError(
                f"this backend returns no log-probabilities for {style} requests; "
                "use sampling mode or a backend with logprobs"
            )


@runtime_checkable
class LanguageModel(Protocol):
    """The protocol every backend implements."""

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that identifies the model's answers (backend, model, revision, dtype...).
        Part of every cache key; never contains secrets."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]: ...

    def close(self) -> None: ...


def check_requests(model: LanguageModel, kind: Literal["generate", "score"], requests: Sequence[Any]) -> None:
    """Validate a batch against the model's capabilities before any work is done."""
    caps = model.capabilities
    styles = {is_chat(r.prompt if kind == "generate" else r.context) for r in requests}
    for chat in styles:
        caps.require(kind=kind, chat=chat)


def split_context_space(context: str, options: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """Move trailing whitespace of a completion context onto every option."""
    stripped = context.rstrip(" ")
    moved = context[len(stripped) :]
    if not moved:
        return context, tuple(options)
    return stripped, tuple(moved + o for o in options)
