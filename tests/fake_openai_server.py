"""A real, deterministic OpenAI-compatible HTTP server for tests (not a test module).

``FakeOpenAIServer`` listens on 127.0.0.1 (a port the OS picks) in a daemon thread and serves
``/v1/completions`` and ``/v1/chat/completions``:

* sampling (no log-probabilities asked): choice ``i`` is :func:`completion_text` of the prompt, the
  seed and ``i``, cut at the first stop string (``finish_reason`` "stop") or at ``4 * max_tokens``
  characters ("length");
* log-probability requests are answered from :class:`ToyModel`, a small language model with its own
  tokeniser, the way real servers answer them:

  - ``echo: true`` on ``/v1/completions`` (vLLM): the prompt's own tokens come back with their
    log-probabilities (the first one ``null``, a ``<s>`` BOS token first, ``text_offset`` counted over
    the tokens' strings from 0, BOS included), followed by ``max_tokens`` greedy tokens;
  - otherwise ``max_tokens`` greedy (temperature 0) tokens, each with its top-k alternatives, in the
    legacy completions form (``logprobs.tokens / token_logprobs / top_logprobs / text_offset``) or the
    chat form (``logprobs.content[]``, also what llama.cpp's ``llama-server`` sends on completions).

Server behaviours to imitate (constructor arguments): ``echo`` ("vllm" answers echo, "reject" answers
HTTP 400 like OpenAI's API, "ignore" drops it like llama-server), ``list_prompts`` (False: a list in
``prompt`` is refused with ``list_status``), ``max_n`` (a server that ignores ``n``, like
llama-cpp-python's, which returns one choice), ``logprob_form`` ("legacy" or "content"), ``eos_step``
(False: the end of text is not a token of the answer, so a prompt whose likeliest next token is the end
of text gets empty log-probability lists, like llama-cpp-python), ``echo_offsets`` ("cumulative" as
vLLM, "text" for offsets into the prompt without BOS, None for no ``text_offset``).

Every request is recorded (path, JSON body, lower-cased headers, requests in flight on arrival).
Scripted faults are consumed one per request, in arrival order::

    ("status", 429, {"Retry-After": "1"})  # status with headers
    ("status", 500)                        # status with a default message
    ("status", 400, "bad request message") # status with an error message
    ("sleep", 1.0)                         # sleep, then answer normally (to trigger timeouts)
    ("malformed",)                         # 200 with a body that is not JSON
    ("corrupt", "nan")                     # 200 with a nonsense answer, see below

A nonsense answer (``("corrupt", MODE)`` for one request, ``corrupt=MODE`` for every one) is the
normal answer with one thing wrong: ``"nan"``, ``"inf"`` or ``"positive"`` (every log-probability NaN,
+infinity or +2.0), ``"empty-top"`` (no top-k alternatives), ``"extra-choice"`` (one choice more than
asked), ``"number-text"`` (texts that are numbers), ``"top-sum"`` (alternatives holding 1.5 of the
probability mass), or ``"html"`` (a web page with status 200, as a site's front page answers).
Requests may carry a query string (``?api-key=...``): it is recorded and ignored.

``delay`` adds a sleep to every request; ``max_in_flight`` counts the most concurrent requests.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = tuple[Any, ...]

BOS = "<s>"
EOS = "</s>"
WORDS = (
    "Answer",
    "Question",
    "The",
    " the",
    " is",
    " sky",
    " blue",
    " grass",
    " green",
    " (",
    " A",
    " B",
    " C",
    " D",
    " E",
    "ab",
    "\n\n",
    " yes",
    " no",
)
"""Multi-character tokens on top of one token per printable ASCII character and one per byte
0x80-0xFF. ``" ("`` and ``"A"`` are separate tokens; ``"ab"`` is one, so a context ending in ``a``
merges with an option starting with ``b``."""


class ToyModel:
    """A deterministic bigram language model with a greedy longest-match tokeniser.

    Token 0 is ``<s>`` (BOS), token 1 ``</s>`` (EOS), then :data:`WORDS`, the printable ASCII
    characters and ``"\\n"``, and byte tokens ``<0x80>``..``<0xFF>`` for the UTF-8 bytes of any other
    character. A server shows a byte token as ``"\\ufffd"`` (as vLLM does when it decodes tokens one by
    one). The next-token distribution depends on the previous token only: a fixed pseudo-random logit in
    [-3, 3] per pair, plus ``boosts[(previous token, next token)]``.
    """

    def __init__(self, boosts: dict[tuple[str, str], float] | None = None) -> None:
        pieces: list[str] = [BOS, EOS, *WORDS]
        pieces += [chr(c) for c in range(32, 127) if chr(c) not in pieces] + ["\n"]
        self.pieces = pieces
        self.n_text = len(pieces)
        self.byte_base = len(pieces)
        self.size = self.byte_base + 128
        self.ids = {p: i for i, p in enumerate(pieces)}
        lengths: dict[str, set[int]] = {}
        for piece in pieces[2:]:
            lengths.setdefault(piece[0], set()).add(len(piece))
        self._lengths = {c: sorted(ls, reverse=True) for c, ls in lengths.items()}
        self.boosts: dict[tuple[str, str], float] = dict(boosts or {})
        self._cache: dict[int, list[float]] = {}
        self._order: dict[int, list[tuple[int, float]]] = {}

    # -- tokens ----------------------------------------------------------------------------------

    def display(self, token: int) -> str:
        """The token's string as a server shows it."""
        return self.pieces[token] if token < self.n_text else "\ufffd"

    def raw(self, token: int) -> bytes:
        """The bytes the token stands for (empty for BOS and EOS)."""
        if token in (0, 1):
            return b""
        return self.pieces[token].encode() if token < self.n_text else bytes([token - self.byte_base + 0x80])

    def tokenize(self, text: str) -> list[int]:
        """Greedy longest match, left to right; other characters become their UTF-8 byte tokens."""
        out: list[int] = []
        i = 0
        while i < len(text):
            for length in self._lengths.get(text[i], ()):
                token = self.ids.get(text[i : i + length])
                if token is not None:
                    out.append(token)
                    i += length
                    break
            else:
                out.extend(self.byte_base + b - 0x80 for b in text[i].encode())
                i += 1
        return out

    # -- distribution -----------------------------------------------------------------------------

    def _token_string(self, token: int) -> str:
        return self.pieces[token] if token < self.n_text else f"<0x{token - self.byte_base + 0x80:02X}>"

    def logprobs(self, previous: int) -> list[float]:
        """Log-probabilities of every next token after ``previous`` (BOS is never next)."""
        cached = self._cache.get(previous)
        if cached is not None:
            return cached
        before = self._token_string(previous)
        logits = [-math.inf]
        for token in range(1, self.size):
            h = ((previous * 1_000_003 + token * 7_919 + 12_345) * 2_654_435_761) % 2**32
            logit = h / 2**32 * 6.0 - 3.0
            logits.append(logit + self.boosts.get((before, self._token_string(token)), 0.0))
        top = max(logits)
        norm = top + math.log(sum(math.exp(x - top) for x in logits if x > -math.inf))
        values = [x - norm for x in logits]
        self._cache[previous] = values
        return values

    def top(self, previous: int, k: int) -> list[tuple[int, float]]:
        order = self._order.get(previous)
        if order is None:
            values = self.logprobs(previous)
            ranked = sorted(range(1, self.size), key=lambda t: (-values[t], t))
            order = self._order[previous] = [(t, values[t]) for t in ranked]
        return order[:k]

    def greedy(self, previous: int) -> int:
        return self.top(previous, 1)[0][0]

    def set_boost(self, previous: str, token: str, value: float) -> None:
        self.boosts[(previous, token)] = value
        self._cache.clear()
        self._order.clear()

    # -- reference scores -------------------------------------------------------------------------

    def score(self, context: str, option: str) -> float | None:
        """log P(option | context) computed directly from token ids: the prompt ``context + option``
        is tokenised as a server would; ``None`` when no token boundary falls at the end of the
        context (the option's first characters merged into a context token)."""
        tokens = [0, *self.tokenize(context + option)]
        target = len(context.encode())
        done = 0
        for i, token in enumerate(tokens):
            if done == target:
                return sum(self.logprobs(tokens[j - 1])[tokens[j]] for j in range(i, len(tokens)))
            done += len(self.raw(token))
            if done > target:
                return None
        return 0.0 if done == target else None

    def chat_text(self, messages: list[dict[str, str]]) -> str:
        """The toy chat template."""
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def completion_text(prompt: Any, seed: int | None, index: int) -> str:
    """The full (before stop/length) text of choice ``index`` for a prompt (str or messages)."""
    key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    digest = hashlib.sha1(f"{key}|{seed}|{index}".encode()).hexdigest()
    return f"echo:{digest[:8]} {digest[8:16]}"


CORRUPTIONS = ("nan", "inf", "positive", "empty-top", "extra-choice", "number-text", "top-sum", "html")
_BAD_LOGPROB = {"nan": math.nan, "inf": math.inf, "positive": 2.0}
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>It works!</body></html>"


def corrupt(payload: dict[str, Any], mode: str) -> dict[str, Any]:
    """``payload`` (an answer) with the fault ``mode`` (see the module docstring; not "html")."""
    if mode not in CORRUPTIONS or mode == "html":
        raise ValueError(f"unknown corruption {mode!r}")
    out = json.loads(json.dumps(payload))
    choices = out["choices"]
    if mode == "extra-choice":
        choices.append({**choices[-1], "index": len(choices)})
        return out
    for choice in choices:
        if mode == "number-text":
            if "message" in choice:
                choice["message"]["content"] = 123
            else:
                choice["text"] = 123
            continue
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            _corrupt_logprobs(logprobs, mode)
    return out


def _corrupt_logprobs(logprobs: dict[str, Any], mode: str) -> None:
    bad = _BAD_LOGPROB.get(mode)
    if "content" in logprobs:
        for item in logprobs["content"]:
            if mode == "empty-top":
                item["top_logprobs"] = []
            elif mode == "top-sum":
                item["top_logprobs"] = [{"token": t, "logprob": math.log(0.75)} for t in ("x", "y")] + [
                    {"token": item["token"], "logprob": math.log(0.75)}
                ]
                item["logprob"] = math.log(0.75)
            else:
                item["logprob"] = bad if item["logprob"] is not None else None
                for alt in item["top_logprobs"]:
                    alt["logprob"] = bad
        return
    if mode == "empty-top":
        logprobs["top_logprobs"] = [{} for _ in logprobs["tokens"]]
    elif mode == "top-sum":
        logprobs["top_logprobs"] = [{"x": math.log(0.75), t: math.log(0.75)} for t in logprobs["tokens"]]
        logprobs["token_logprobs"] = [math.log(0.75) for _ in logprobs["tokens"]]
    else:
        logprobs["token_logprobs"] = [bad if v is not None else None for v in logprobs["token_logprobs"]]
        logprobs["top_logprobs"] = [
            {t: bad for t in entry} if entry is not None else None for entry in logprobs["top_logprobs"]
        ]


def _tokens(text: str) -> int:
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    body: Any
    headers: dict[str, str]
    in_flight: int = 0
    """Requests in flight at the server when this one arrived (itself included)."""
    query: str = ""
    """The request's query string (without ``?``)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out close their sockets; keep test output quiet


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.path, _, query = self.path.partition("?")
        fault = fake._enter(self.path, body, {k.lower(): v for k, v in self.headers.items()}, query)
        self._counted = True
        try:
            if fake.delay:
                time.sleep(fake.delay)
            self._answer(fake, body, fault)
        finally:
            self._done()

    def _done(self) -> None:
        """Leave the in-flight count (before the answer is written, so that a client sending its
        next request as soon as it reads this answer never sees more in flight than it allows)."""
        if getattr(self, "_counted", False):
            self._counted = False
            self.server.fake._leave()

    def _answer(self, fake: FakeOpenAIServer, body: Any, fault: Fault | None) -> None:
        if fault is not None:
            kind = fault[0]
            if kind == "sleep":
                time.sleep(float(fault[1]))
            elif kind == "malformed":
                self._send(200, b'{"choices": [ {"text": "trunc', "application/json")
                return
            elif kind == "corrupt":
                pass  # answered below
            elif kind == "status":
                status = int(fault[1])
                extra = fault[2] if len(fault) > 2 else None
                headers = extra if isinstance(extra, dict) else {}
                message = extra if isinstance(extra, str) else f"fake error {status}"
                self._error(status, message, headers)
                return
            else:
                raise ValueError(f"unknown fault {fault!r}")
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        expected = None if fake.api_key is None else f"Bearer {fake.api_key}"
        if expected is not None and self.headers.get("Authorization") != expected:
            self._error(401, "Incorrect API key provided")
            return
        if not isinstance(body, dict):
            self._error(400, "body is not a JSON object")
            return
        chat = self.path == "/v1/chat/completions"
        try:
            payload = fake.respond(body, chat)
        except _Refusal as refusal:
            self._error(refusal.status, refusal.message)
            return
        mode = fault[1] if fault is not None and fault[0] == "corrupt" else fake.corrupt
        if mode == "html":
            self._send(200, HTML_PAGE, "text/html; charset=utf-8")
            return
        self._json(200, corrupt(payload, mode) if mode else payload)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        payload = {"error": {"message": message, "type": "fake", "code": status}}
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._done()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client went away (e.g. it timed out)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class FakeOpenAIServer:
    """A deterministic OpenAI-compatible server on 127.0.0.1; use as a context manager."""

    api_key: str | None = None
    """When set, requests without ``Authorization: Bearer <api_key>`` get a 401."""
    delay: float = 0.0
    max_n: int | None = None
    """When set, at most this many choices come back (a server that ignores ``n``)."""
    logprobs_supported: bool = True
    """When False, log-probability requests get ``"logprobs": null`` (like servers without)."""
    echo: str = "vllm"
    """"vllm": echo prompt log-probabilities; "reject": HTTP 400; "ignore": answer as without echo;
    "misaligned": echo each prompt token with the log-probability of the token before it (a server
    whose echo is off by one position)."""
    list_prompts: bool = True
    """When False, a list in ``prompt`` (of more than one string) is refused with ``list_status``."""
    list_status: int = 400
    logprob_form: str = "legacy"
    """How completions carry log-probabilities: "legacy" or "content" (llama-server)."""
    eos_step: bool = True
    """True: a generated end of text is a token ``</s>`` of the answer (vLLM). False: it is not, so
    the lists stop before it and are empty when it comes first (llama-cpp-python)."""
    echo_offsets: str | None = "cumulative"
    """"cumulative": ``text_offset`` sums the tokens' strings from 0, BOS included (vLLM); "text":
    offsets into the prompt, no BOS token (llama-cpp-python); None: no ``text_offset``."""
    corrupt: str | None = None
    """When set, every answer is a nonsense one of this kind (see the module docstring)."""
    model: ToyModel = field(default_factory=ToyModel)
    count_tokens: Callable[[str], int] | None = None
    """When set, the ``usage`` prompt tokens (and sampled completion tokens) are counted by it, e.g.
    a real tokenizer's; by default four characters a token when sampling and the toy model's tokens
    when scoring."""

    def __post_init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.faults: deque[Fault] = deque()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and records ------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each is consumed by one request, in arrival order."""
        with self._lock:
            self.faults.extend(faults)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    def reset(self) -> None:
        """Forget the recorded requests and the in-flight maximum."""
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def _enter(self, path: str, body: Any, headers: dict[str, str], query: str = "") -> Fault | None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests.append(RecordedRequest(path, body, headers, self.in_flight, query))
            return self.faults.popleft() if self.faults else None

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    # -- answers --------------------------------------------------------------------------------

    def respond(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        """The JSON answer to a well-formed request (raises :class:`_Refusal` for an error)."""
        if chat:
            prompts: list[Any] = [body.get("messages")]
        else:
            prompt = body.get("prompt")
            prompts = list(prompt) if isinstance(prompt, list) else [prompt]
            if not all(isinstance(p, str) for p in prompts) or not prompts:
                raise _Refusal(400, "prompt must be a string or a list of strings")
            if len(prompts) > 1 and not self.list_prompts:
                raise _Refusal(self.list_status, "only one prompt per request is supported")
        wants_logprobs = bool(body.get("logprobs")) if chat else body.get("logprobs") is not None
        if wants_logprobs:
            if not chat and body.get("echo") and self.echo == "reject":
                raise _Refusal(400, "echo is not supported with logprobs for this model")
            echo = not chat and bool(body.get("echo")) and self.echo in ("vllm", "misaligned")
            return self._logprobs_answer(body, prompts, chat, echo)
        return self._sample_answer(body, prompts, chat)

    def _sample_answer(self, body: dict[str, Any], prompts: list[Any], chat: bool) -> dict[str, Any]:
        n = int(body.get("n") or 1)
        if self.max_n is not None:
            n = min(n, self.max_n)
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        max_chars = 4 * int(body.get("max_tokens") or 16)
        choices, total, prompt_tokens = [], 0, 0
        for prompt in prompts:
            prompt_tokens += self._count(prompt if isinstance(prompt, str) else json.dumps(prompt))
            for i in range(n):
                text = completion_text(prompt, body.get("seed"), i)
                finish = "stop"
                cuts = [text.index(s) for s in stops if s and s in text]
                if cuts:
                    text = text[: min(cuts)]
                elif len(text) > max_chars:
                    text, finish = text[:max_chars], "length"
                total += self._count(text)
                if chat:
                    choice = {"index": len(choices), "message": {"role": "assistant", "content": text}}
                else:
                    choice = {"index": len(choices), "text": text, "logprobs": None}
                choice["finish_reason"] = finish
                choices.append(choice)
        return self._envelope(chat, choices, prompt_tokens, total)

    def _count(self, text: str) -> int:
        return self.count_tokens(text) if self.count_tokens else _tokens(text)

    def _generate(self, previous: int, max_tokens: int) -> tuple[list[int], str]:
        """Greedy tokens after ``previous`` and the finish reason."""
        out: list[int] = []
        for _ in range(max_tokens):
            token = self.model.greedy(previous)
            if token == 1:
                if self.eos_step:
                    out.append(token)
                return out, "stop"
            out.append(token)
            previous = token
        return out, "length"

    def _logprobs_answer(
        self, body: dict[str, Any], prompts: list[Any], chat: bool, echo: bool
    ) -> dict[str, Any]:
        k = int(body.get("top_logprobs") or 0) if chat else int(body["logprobs"])
        max_tokens = int(body.get("max_tokens") if body.get("max_tokens") is not None else 16)
        model = self.model
        choices, prompt_total, completion_total = [], 0, 0
        for prompt in prompts:
            text = model.chat_text(prompt) if chat else prompt
            prompt_ids = [0, *model.tokenize(text)]
            generated, finish = self._generate(prompt_ids[-1], max_tokens)
            prompt_total += self.count_tokens(text) if self.count_tokens else len(prompt_ids)
            completion_total += len(generated)
            out_text = "".join(model.display(t) for t in generated if t != 1)
            # (token, its logprob, top-k entries) per position; None logprob for the first prompt token
            ids = prompt_ids + generated if echo else generated
            first = 0 if echo else len(prompt_ids)
            every = prompt_ids + generated
            rows: list[tuple[int, float | None, list[tuple[int, float]]]] = []
            for pos in range(first, len(every)):
                token = every[pos]
                if pos == 0:
                    rows.append((token, None, []))
                    continue
                lp = model.logprobs(every[pos - 1])[token]
                if self.echo == "misaligned" and echo and pos >= 2:
                    lp = model.logprobs(every[pos - 2])[every[pos - 1]]
                rows.append((token, lp, model.top(every[pos - 1], k)))
            assert len(rows) == len(ids)
            if not self.logprobs_supported:
                logprobs: Any = None
            elif chat or self.logprob_form == "content":
                logprobs = {"content": [self._content_entry(t, lp, top) for t, lp, top in rows]}
            else:
                logprobs = self._legacy(rows, text, echo)
            if chat:
                choice: dict[str, Any] = {
                    "index": len(choices),
                    "message": {"role": "assistant", "content": out_text},
                }
            else:
                choice = {"index": len(choices), "text": (text if echo else "") + out_text}
            choice["logprobs"] = logprobs
            choice["finish_reason"] = finish
            choices.append(choice)
        return self._envelope(chat, choices, prompt_total, completion_total)

    def _content_entry(self, token: int, lp: float | None, top: list[tuple[int, float]]) -> dict[str, Any]:
        model = self.model
        entries = [{"token": model.display(t), "logprob": v, "bytes": list(model.raw(t))} for t, v in top]
        return {
            "token": model.display(token),
            "logprob": lp,
            "bytes": list(model.raw(token)),
            "top_logprobs": entries,
        }

    def _legacy(
        self, rows: list[tuple[int, float | None, list[tuple[int, float]]]], text: str, echo: bool
    ) -> dict[str, Any]:
        model = self.model
        if echo and self.echo_offsets == "text":
            rows = rows[1:]  # no BOS token, and the first real token gets no logprob
            if rows:
                rows[0] = (rows[0][0], None, [])
        tokens = [model.display(t) for t, _, _ in rows]
        tops: list[dict[str, float] | None] = []
        for token, lp, top in rows:
            if lp is None:
                tops.append(None)
                continue
            entry = {model.display(t): v for t, v in top}
            entry.setdefault(model.display(token), lp)  # the chosen token is always included
            tops.append(entry)
        out: dict[str, Any] = {
            "tokens": tokens,
            "token_logprobs": [lp for _, lp, _ in rows],
            "top_logprobs": tops,
        }
        if self.echo_offsets == "cumulative" or not echo:
            offsets, at = [], 0 if echo else len(text)
            for token in tokens:
                offsets.append(at)
                at += len(token)
            out["text_offset"] = offsets
        elif self.echo_offsets == "text":
            # character offsets into the text, as the decoded bytes before each token give them
            offsets, done = [], b""
            for token, _, _ in rows:
                offsets.append(len(done.decode("utf-8", "ignore")))
                done += model.raw(token)
            out["text_offset"] = offsets
        return out

    @staticmethod
    def _envelope(
        chat: bool, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int
    ) -> dict[str, Any]:
        return {
            "id": "fake-1",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0,
            "model": "fake",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def client(server: FakeOpenAIServer, **kwargs: Any) -> Any:
    """An ``OpenAICompatModel`` for ``server`` with quick retries; ``kwargs`` override any argument."""
    from anthology.models.openai_compat import OpenAICompatModel

    options: dict[str, Any] = {
        "model": "fake-model",
        "base_url": server.base_url,
        "api_key_env": None,
        "timeout": 5.0,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "max_retries": 3,
    }
    return OpenAICompatModel(**{**options, **kwargs})


def small_chat_study(out: str, *, seed: int = 2, **model: Any) -> dict[str, Any]:
    """A whole study that a chat server runs in seconds: six tiny unfiltered backstories, four
    respondents, log-prob answers; ``model`` are the model settings besides ``chat``."""
    return {
        "seed": seed,
        "out": out,
        "model": {"chat": True, **model},
        "survey": {"name": "gss2018-spending", "respondents": 4},
        "backstories": {
            "style": "chat",
            "n": 6,
            "max_tokens": 8,
            "preamble": False,
            "min_tokens": 1,
            "first_person": "off",
            "near_duplicate": 2.0,
        },
        "demographics": {"mode": "logprob"},
        "ask": {"mode": "logprob", "context": "independent", "dp_max_tokens": 8},
        "evaluate": {"splits": 5, "resamples": 20},
    }
