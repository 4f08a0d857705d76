"""A real, deterministic OpenAI-compatible HTTP server for tests (not a test module).

``FakeOpenAIServer`` listens on 127.0.0.1 (a port the OS picks) in a daemon thread and serves
``/v1/completions`` and ``/v1/chat/completions``:

* generation: choice ``i`` is :func:`completion_text` of the prompt, the seed and ``i``, cut at the
  first stop string (``finish_reason`` "stop") or at ``4 * max_tokens`` characters ("length");
* log-probability requests get ``top_logprobs`` (a token -> logprob dict) cut to the requested k.

Every request is recorded (path, JSON body, lower-cased headers). Scripted faults are consumed one
per request, in arrival order::

    ("status", 429, {"Retry-After": "1"})  # status with headers
    ("status", 500)                        # status with a default message
    ("status", 400, "bad request message") # status with an error message
    ("sleep", 1.0)                         # sleep, then answer normally (to trigger timeouts)
    ("malformed",)                         # 200 with a body that is not JSON

``delay`` adds a sleep to every request; ``max_in_flight`` counts the most concurrent requests.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TOP_LOGPROBS: dict[str, float] = {
    " A": -0.5,
    " B": -1.5,
    " C": -2.5,
    "\n": -3.0,
    " The": -3.5,
}

Fault = tuple[Any, ...]


def completion_text(prompt: Any, seed: int | None, index: int) -> str:
    """The full (before stop/length) text of choice ``index`` for a prompt (str or messages)."""
    key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    digest = hashlib.sha1(f"{key}|{seed}|{index}".encode()).hexdigest()
    return f"echo:{digest[:8]} {digest[8:16]}"


def _tokens(text: str) -> int:
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    body: Any
    headers: dict[str, str]


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
        fault = fake._enter(self.path, body, {k.lower(): v for k, v in self.headers.items()})
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
            elif kind == "status":
                status = int(fault[1])
                extra = fault[2] if len(fault) > 2 else None
                headers = extra if isinstance(extra, dict) else {}
                message = extra if isinstance(extra, str) else f"fake error {status}"
                payload = {"error": {"message": message, "type": "fake", "code": status}}
                self._send(status, json.dumps(payload).encode(), "application/json", headers)
                return
            else:
                raise ValueError(f"unknown fault {fault!r}")
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        expected = None if fake.api_key is None else f"Bearer {fake.api_key}"
        if expected is not None and self.headers.get("Authorization") != expected:
            self._json(401, {"error": {"message": "Incorrect API key provided"}})
            return
        if not isinstance(body, dict):
            self._json(400, {"error": {"message": "body is not a JSON object"}})
            return
        chat = self.path == "/v1/chat/completions"
        self._json(200, fake.respond(body, chat))

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


class FakeOpenAIServer:
    """A deterministic OpenAI-compatible server on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        *,
        top_logprobs: dict[str, float] | None = None,
        api_key: str | None = None,
        delay: float = 0.0,
        max_n: int | None = None,
        logprobs_supported: bool = True,
    ) -> None:
        self.top_logprobs = dict(DEFAULT_TOP_LOGPROBS if top_logprobs is None else top_logprobs)
        self.api_key = api_key
        """When set, requests without ``Authorization: Bearer <api_key>`` get a 401."""
        self.delay = delay
        self.max_n = max_n
        """When set, at most this many choices come back (a server that ignores ``n``)."""
        self.logprobs_supported = logprobs_supported
        """When False, log-probability requests get ``"logprobs": null`` (like servers without)."""
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

    def _enter(self, path: str, body: Any, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.requests.append(RecordedRequest(path, body, headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.faults.popleft() if self.faults else None

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    # -- answers --------------------------------------------------------------------------------

    def respond(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        """The JSON answer to a well-formed request."""
        prompt = body.get("messages") if chat else body.get("prompt")
        prompt_tokens = _tokens(prompt if isinstance(prompt, str) else json.dumps(prompt))
        wants_logprobs = bool(body.get("logprobs")) if chat else body.get("logprobs") is not None
        if wants_logprobs and self.logprobs_supported:
            k = int(body.get("top_logprobs") or 0) if chat else int(body["logprobs"])
            return self._logprobs_answer(k, chat, prompt_tokens)
        n = int(body.get("n") or 1)
        if self.max_n is not None:
            n = min(n, self.max_n)
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        max_chars = 4 * int(body.get("max_tokens") or 16)
        choices, total = [], 0
        for i in range(n):
            text = completion_text(prompt, body.get("seed"), i)
            finish = "stop"
            cuts = [text.index(s) for s in stops if s and s in text]
            if cuts:
                text = text[: min(cuts)]
            elif len(text) > max_chars:
                text, finish = text[:max_chars], "length"
            total += _tokens(text)
            if chat:
                choice = {"index": i, "message": {"role": "assistant", "content": text}}
            else:
                choice = {"index": i, "text": text, "logprobs": None}
            choice["finish_reason"] = finish
            choices.append(choice)
        return self._envelope(chat, choices, prompt_tokens, total)

    def _logprobs_answer(self, k: int, chat: bool, prompt_tokens: int) -> dict[str, Any]:
        top = sorted(self.top_logprobs.items(), key=lambda kv: kv[1], reverse=True)[:k]
        token, logprob = top[0] if top else ("", 0.0)
        if chat:
            entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
            logprobs: dict[str, Any] = {
                "content": [
                    {
                        "token": token,
                        "logprob": logprob,
                        "bytes": list(token.encode()),
                        "top_logprobs": entries,
                    }
                ]
            }
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": token},
                "logprobs": logprobs,
                "finish_reason": "length",
            }
        else:
            logprobs = {
                "tokens": [token],
                "token_logprobs": [logprob],
                "top_logprobs": [dict(top)],
                "text_offset": [0],
            }
            choice = {"index": 0, "text": token, "logprobs": logprobs, "finish_reason": "length"}
        return self._envelope(chat, [choice], prompt_tokens, 1)

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
