"""A backend for OpenAI-compatible HTTP servers: vLLM, SGLang, Ollama, llama.cpp server, OpenAI.

Completion prompts go to ``/completions``, chat prompts to ``/chat/completions``. Option scoring
asks for one token with the top-k log-probabilities and reads the options off that list; options
outside the top-k are imputed with :func:`impute_option_logprobs` (the OpinionQA rule).

Requests run concurrently (up to ``concurrency`` in flight) on an ``httpx.AsyncClient``; the public
methods are synchronous. Transient failures (429, 5xx, timeouts, connection errors, malformed
bodies) are retried with exponential backoff and jitter; other 4xx answers fail at once. The API
key is read from an environment variable and never appears in identity, repr, logs or errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from anthology.errors import BackendError, MissingAPIKeyError, ServerUnreachableError
from anthology.models.base import (
    Capabilities,
    FinishReason,
    GenerateRequest,
    GenerateResult,
    Sample,
    ScoreRequest,
    ScoreResult,
    check_requests,
    sample_seed,
    split_context_space,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_SERVER_MESSAGE = 300
_CONNECT_RETRIES = 2  # retries for a server that refuses every connection (it may be starting)


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


class _Secret:
    """Holds the API key; its repr never shows the value."""

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
    (no log-probabilities, fewer choices than asked); raised as :class:`BackendError` at once."""


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
    """``url`` without any ``user:password@`` part and without a trailing slash."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)).rstrip("/")


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
        raise _BadResponse("response body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        error = data.get("error")
        if error is not None:
            raise _BadResponse(f"server error in body: {_one_line(json.dumps(error))}")
        raise _BadResponse("response has no 'choices' list")
    if all(isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    return choices


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadResponse(f"log-probability is not a number: {value!r}")
    return float(value)


class OpenAICompatModel:
    """A model served by an OpenAI-compatible HTTP server (completion or chat)."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        chat: bool = False,
        concurrency: int = 64,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        top_logprobs: int = 20,
        max_context: int | None = None,
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
        self._model = model
        self._base_url = base_url.rstrip("/")
        self._public_base_url = _public_url(base_url)
        self._local = _is_local(base_url)
        self._api_key_env = api_key_env
        self._chat = chat
        self._concurrency = concurrency
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._top_logprobs = top_logprobs
        self._max_context = max_context
        self._transport = transport
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
        # top_logprobs changes imputed option scores, so it is part of what identifies an answer.
        return {
            "backend": "openai",
            "base_url": self._public_base_url,
            "model": self._model,
            "top_logprobs": self._top_logprobs,
        }

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            completion=not self._chat,
            chat=self._chat,
            logprobs=True,
            top_logprobs=self._top_logprobs,
            max_context=self._max_context,
            seeded=True,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAICompatModel(model={self._model!r}, base_url={self._public_base_url!r}, chat={self._chat})"
        )

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Sample ``n`` texts per request; results in request order."""
        requests = list(requests)
        if not requests:
            return []
        check_requests(self, "generate", requests)
        jobs = [self._generate_job(r) for r in requests]
        return self._run_sync(lambda: self._run_all(jobs))

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-probability of each option after its context, from the server's top-k."""
        requests = list(requests)
        if not requests:
            return []
        check_requests(self, "score", requests)
        jobs = [self._score_job(r) for r in requests]
        return self._run_sync(lambda: self._run_all(jobs))

    def close(self) -> None:
        """Release resources. Each call opens its own client (one per event-loop run) and closes
        it before returning, so nothing stays open between calls; safe to call more than once."""

    # -- request building -----------------------------------------------------------------------

    def _generate_job(
        self, request: GenerateRequest
    ) -> tuple[str, dict[str, Any], Callable[[Any], GenerateResult]]:
        body: dict[str, Any] = {"model": self._model}
        if isinstance(request.prompt, str):
            path = "/completions"
            body["prompt"] = request.prompt
        else:
            path = "/chat/completions"
            body["messages"] = [dict(m) for m in request.prompt]
        body.update(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            n=request.n,
        )
        if request.stop:
            body["stop"] = list(request.stop)
        seed = sample_seed(request.seed, request.first_sample)
        if seed is not None:
            body["seed"] = seed
        chat = path == "/chat/completions"

        def parse(data: Any) -> GenerateResult:
            choices = _choices(data)
            texts: list[str] = []
            for choice in choices:
                if chat:
                    message = choice.get("message")
                    if not isinstance(message, dict):
                        raise _BadResponse("a choice has no 'message' object")
                    text = message.get("content")
                    text = "" if text is None else text
                else:
                    text = choice.get("text")
                if not isinstance(text, str):
                    raise _BadResponse("a choice has no text")
                texts.append(text)
            if len(texts) < request.n:
                raise _Unusable(
                    f"returned {len(texts)} choices for n={request.n}; "
                    "the server may not support n > 1 (request one sample at a time)"
                )
            texts = texts[: request.n]
            prompt_tokens, completion_tokens = _usage(data)
            per_choice = [
                c["usage"].get("completion_tokens") if isinstance(c.get("usage"), dict) else None
                for c in choices[: request.n]
            ]
            if all(isinstance(x, int) for x in per_choice):
                counts = [int(x) for x in per_choice]  # some servers report per-choice usage
            else:
                counts = _split_tokens(completion_tokens, texts)
            samples = tuple(
                Sample(
                    text=t,
                    finish_reason=_finish_reason(c.get("finish_reason")),
                    completion_tokens=k,
                )
                for t, c, k in zip(texts, choices, counts, strict=False)
            )
            return GenerateResult(samples=samples, prompt_tokens=prompt_tokens)

        return path, body, parse

    def _score_job(self, request: ScoreRequest) -> tuple[str, dict[str, Any], Callable[[Any], ScoreResult]]:
        k = self._top_logprobs
        context = request.context
        options = request.options
        body: dict[str, Any] = {"model": self._model}
        if isinstance(context, str):
            context, options = split_context_space(context, options)
            path = "/completions"
            body.update(prompt=context, max_tokens=1, temperature=0, logprobs=k)
        else:
            path = "/chat/completions"
            body.update(
                messages=[dict(m) for m in context],
                max_tokens=1,
                temperature=0,
                logprobs=True,
                top_logprobs=k,
            )
        chat = path == "/chat/completions"

        def parse(data: Any) -> ScoreResult:
            choices = _choices(data)
            if not choices:
                raise _BadResponse("response has no choices")
            top = _chat_top(choices[0]) if chat else _completion_top(choices[0])
            return _score_options(options, top, _usage(data)[0])

        return path, body, parse

    # -- async machinery ------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        return urlsplit(self._public_base_url + path).path

    def _scrub(self, text: str) -> str:
        if self._key is not None and self._key.reveal():
            text = text.replace(self._key.reveal(), "***")
        return text

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

    async def _run_all(self, jobs: list[tuple[str, dict[str, Any], Callable[[Any], T]]]) -> list[T]:
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
        semaphore = asyncio.Semaphore(self._concurrency)
        try:
            # Tasks are created (and so acquire the semaphore) in submission order, which keeps
            # requests sharing a prompt prefix together for servers with prefix caching.
            tasks = [
                asyncio.create_task(self._post(client, semaphore, path, body, parse))
                for path, body, parse in jobs
            ]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            await client.aclose()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            delay = min(retry_after, self._backoff_max)
            return delay + random.uniform(0, 0.1 * delay)
        delay = min(self._backoff_base * 2**attempt, self._backoff_max)
        return delay + random.uniform(0, 0.25 * delay)

    async def _post(
        self,
        client: httpx.AsyncClient,
        semaphore: asyncio.Semaphore,
        path: str,
        body: dict[str, Any],
        parse: Callable[[Any], T],
    ) -> T:
        """POST ``body`` to ``path`` and parse the answer, retrying transient failures."""
        url = self._base_url + path
        url_path = self._path(path)
        attempts = self._max_retries + 1
        last = ""
        never_connected = True
        for attempt in range(attempts):
            retry_after: float | None = None
            async with semaphore:
                try:
                    response = await client.post(url, json=body)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    last = f"connection failed ({type(exc).__name__}: {_one_line(str(exc), 120)})"
                except httpx.TimeoutException:
                    never_connected = False
                    last = f"timed out after {self._timeout:g}s"
                except httpx.TransportError as exc:
                    never_connected = False
                    last = f"{type(exc).__name__}: {_one_line(str(exc), 120)}"
                else:
                    never_connected = False
                    status = response.status_code
                    if 200 <= status < 300:
                        try:
                            return parse(response.json())
                        except _Unusable as exc:
                            raise BackendError(f"{url_path} {self._scrub(str(exc))}") from None
                        except (ValueError, _BadResponse) as exc:
                            kind = "malformed JSON" if isinstance(exc, ValueError) else str(exc)
                            last = f"HTTP {status} with an unexpected body ({kind})"
                    elif status == 429 or status >= 500:
                        retry_after = _retry_after(response)
                        last = f"HTTP {status}: {_server_message(response)}"
                    else:
                        raise self._client_error(url_path, status, _server_message(response))
            last = self._scrub(last)
            if never_connected and attempt >= _CONNECT_RETRIES:
                attempts = attempt + 1
                break  # nothing listens there: say so quickly rather than back off for a minute
            if attempt + 1 < attempts:
                delay = self._delay(attempt, retry_after)
                logger.debug(
                    "%s: %s; retry %d/%d in %.2fs",
                    url_path,
                    last,
                    attempt + 1,
                    self._max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
        if never_connected:
            raise ServerUnreachableError(
                f"cannot reach {self._public_base_url}: is the server running? ({last}; {attempts} attempts)"
            )
        raise BackendError(f"{url_path} failed after {attempts} attempts: {last}")

    def _client_error(self, url_path: str, status: int, message: str) -> BackendError:
        """The error for a 4xx answer that retrying will not fix."""
        text = f"{url_path} answered HTTP {status}: {self._scrub(message)}"
        if status in (401, 403):
            if self._api_key_env:
                text += f"; check the API key in the {self._api_key_env} environment variable"
            else:
                text += "; the server wants an API key: set api_key_env to the variable holding it"
        return BackendError(text)


def _completion_top(choice: dict[str, Any]) -> dict[str, float]:
    """The top-k of the first generated token, legacy ``/completions`` form."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        raise _Unusable("returned no log-probabilities: does the server support logprobs?")
    if not isinstance(logprobs, dict):
        raise _BadResponse("choice 'logprobs' is not an object")
    top_list = logprobs.get("top_logprobs")
    if not isinstance(top_list, list) or not top_list or not isinstance(top_list[0], dict):
        raise _BadResponse("choice has no 'logprobs.top_logprobs[0]' object")
    top = {str(token): _number(lp) for token, lp in top_list[0].items()}
    if not top:
        raise _BadResponse("empty top_logprobs")
    return top


def _chat_top(choice: dict[str, Any]) -> dict[str, float]:
    """The top-k of the first generated token, ``/chat/completions`` form."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        raise _Unusable("returned no log-probabilities: does the server support logprobs?")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise _BadResponse("choice has no 'logprobs.content[0]' (does the server support logprobs?)")
    first = content[0]
    entries = first.get("top_logprobs")
    if not isinstance(entries, list):
        raise _BadResponse("choice has no 'logprobs.content[0].top_logprobs' list")
    if "token" in first and "logprob" in first:
        entries = [*entries, first]
    top: dict[str, float] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise _BadResponse("a top_logprobs entry has no token")
        lp = _number(entry.get("logprob"))
        top[entry["token"]] = max(lp, top.get(entry["token"], -math.inf))
    if not top:
        raise _BadResponse("empty top_logprobs")
    return top


def _score_options(options: Sequence[str], top: dict[str, float], prompt_tokens: int) -> ScoreResult:
    """Match options to the top-k tokens (exactly, or equal after stripping whitespace)."""
    found: list[float | None] = []
    for option in options:
        key = option.strip()
        matches = [lp for token, lp in top.items() if token == option or (key and token.strip() == key)]
        found.append(max(matches) if matches else None)
    logprobs, imputed = impute_option_logprobs(found, list(top.values()))
    coverage = sum(math.exp(lp) for lp in found if lp is not None)
    return ScoreResult(
        logprobs=tuple(logprobs),
        coverage=coverage,
        imputed=tuple(imputed),
        prompt_tokens=prompt_tokens,
    )
