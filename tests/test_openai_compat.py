"""OpenAICompatModel against a real HTTP server on 127.0.0.1 (tests/fake_openai_server.py)."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai_server import DEFAULT_TOP_LOGPROBS, FakeOpenAIServer, completion_text

from anthology.errors import BackendError, MissingAPIKeyError, ServerUnreachableError
from anthology.models.base import (
    GenerateRequest,
    LanguageModel,
    ScoreRequest,
    sample_seed,
)
from anthology.models.openai_compat import OpenAICompatModel, impute_option_logprobs

SECRET = "sk-test-SECRET-value-123"
KEY_ENV = "ANTHOLOGY_TEST_OPENAI_KEY"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def make(server: FakeOpenAIServer, **kwargs: Any) -> OpenAICompatModel:
    options: dict[str, Any] = {
        "model": "fake-model",
        "base_url": server.base_url,
        "api_key_env": None,
        "timeout": 0.5,
        "backoff_base": 0.01,
        "backoff_max": 2.0,
        "max_retries": 3,
    }
    options.update(kwargs)
    return OpenAICompatModel(**options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- protocol, identity, generation -------------------------------------------------------------


def test_protocol_identity_and_capabilities(server: FakeOpenAIServer) -> None:
    model = make(server, top_logprobs=5, max_context=4096)
    assert isinstance(model, LanguageModel)
    assert model.identity == {
        "backend": "openai",
        "base_url": server.base_url,
        "model": "fake-model",
        "top_logprobs": 5,
    }
    caps = model.capabilities
    assert (caps.completion, caps.chat, caps.logprobs) == (True, False, True)
    assert (caps.top_logprobs, caps.max_context, caps.seeded) == (5, 4096, True)
    chat_caps = make(server, chat=True).capabilities
    assert (chat_caps.completion, chat_caps.chat) == (False, True)
    model.close()
    model.close()


def test_identity_strips_credentials_from_url() -> None:
    model = OpenAICompatModel(model="m", base_url="http://user:pw@localhost:8000/v1/", api_key_env=None)
    assert model.identity["base_url"] == "http://localhost:8000/v1"
    assert "pw" not in repr(model)


def test_completion_generate_many_requests_in_order(server: FakeOpenAIServer) -> None:
    model = make(server, concurrency=8)
    prompts = [f"Question {i}: what do you think?" for i in range(40)]
    results = model.generate([GenerateRequest(p, max_tokens=32) for p in prompts])
    assert [r.texts for r in results] == [[completion_text(p, None, 0)] for p in prompts]
    assert set(server.paths()) == {"/v1/completions"}
    assert all(r.prompt_tokens > 0 for r in results)
    assert all(s.finish_reason == "stop" and s.completion_tokens > 0 for r in results for s in r.samples)
    body = server.bodies()[0]
    assert body["model"] == "fake-model" and body["n"] == 1 and body["max_tokens"] == 32
    assert "stop" not in body and "seed" not in body


def test_n_samples_stop_and_length(server: FakeOpenAIServer) -> None:
    model = make(server)
    [result] = model.generate([GenerateRequest("hello", n=3, max_tokens=64, stop=(" ",))])
    assert result.texts == [completion_text("hello", None, i).split(" ")[0] for i in range(3)]
    assert server.bodies()[0]["stop"] == [" "]
    # completion tokens are split across choices and add up to the reported total
    assert sum(s.completion_tokens for s in result.samples) == sum((len(t) + 3) // 4 for t in result.texts)
    [short] = model.generate([GenerateRequest("hello", max_tokens=1)])
    assert short.samples[0].finish_reason == "length"
    assert short.texts == [completion_text("hello", None, 0)[:4]]


def test_fewer_choices_than_n_is_an_error() -> None:
    with FakeOpenAIServer(max_n=1) as fake:
        model = make(fake)
        with pytest.raises(BackendError, match="1 choices for n=2"):
            model.generate([GenerateRequest("hello", n=2)])


def test_chat_generate_hits_chat_completions(server: FakeOpenAIServer) -> None:
    model = make(server, chat=True)
    messages = ({"role": "user", "content": "Hi there"},)
    [result] = model.generate([GenerateRequest(messages, n=2)])
    assert server.paths() == ["/v1/chat/completions"]
    body = server.bodies()[0]
    assert body["messages"] == [{"role": "user", "content": "Hi there"}]
    assert "prompt" not in body
    expected = [completion_text([dict(m) for m in messages], None, i) for i in range(2)]
    assert result.texts == expected


def test_seed_is_derived_with_sample_seed(server: FakeOpenAIServer) -> None:
    model = make(server)
    [result] = model.generate([GenerateRequest("p", seed=7, first_sample=3)])
    seed = sample_seed(7, 3)
    assert server.bodies()[0]["seed"] == seed
    assert result.texts == [completion_text("p", seed, 0)]


# -- scoring ------------------------------------------------------------------------------------


def test_score_exact_options_in_top_k(server: FakeOpenAIServer) -> None:
    model = make(server, top_logprobs=5)
    [result] = model.score([ScoreRequest("Answer:", (" A", " B", " C"))])
    assert result.logprobs == (-0.5, -1.5, -2.5)
    assert result.imputed == (False, False, False)
    assert result.coverage == pytest.approx(math.exp(-0.5) + math.exp(-1.5) + math.exp(-2.5))
    body = server.bodies()[0]
    assert body["prompt"] == "Answer:" and body["max_tokens"] == 1
    assert body["temperature"] == 0 and body["logprobs"] == 5


def test_score_moves_trailing_space_and_matches_stripped_tokens(server: FakeOpenAIServer) -> None:
    model = make(server, top_logprobs=5)
    [result] = model.score([ScoreRequest("Answer: ", ("A", "B"))])
    assert server.bodies()[0]["prompt"] == "Answer:"
    assert result.logprobs == (-0.5, -1.5)
    server.top_logprobs = {"A": -0.4, " A": -2.0, "B": -1.0}
    [result] = model.score([ScoreRequest("Answer:", ("A", "B"))])
    assert result.logprobs == (-0.4, -1.0)  # the best of "A" and " A"
    assert result.coverage == pytest.approx(math.exp(-0.4) + math.exp(-1.0))


def test_score_imputes_missing_option(server: FakeOpenAIServer) -> None:
    model = make(server, top_logprobs=5)
    [result] = model.score([ScoreRequest("Answer:", (" A", " B", " D"))])
    assert result.imputed == (False, False, True)
    assert result.logprobs[:2] == (-0.5, -1.5)
    top = [math.exp(v) for v in DEFAULT_TOP_LOGPROBS.values()]
    expected = min(min(top), 1 - sum(top))
    assert result.logprobs[2] == pytest.approx(math.log(expected))
    assert result.coverage == pytest.approx(math.exp(-0.5) + math.exp(-1.5))


def test_score_top_k_is_truncated_and_imputation_capped(server: FakeOpenAIServer) -> None:
    [result] = make(server, top_logprobs=2).score([ScoreRequest("Q", (" A", " B", " C"))])
    assert server.bodies()[0]["logprobs"] == 2
    assert result.imputed == (False, False, True)
    # only " A" and " B" came back: " C" gets the mass they leave (0.17 < p(" B") = 0.22)
    assert result.logprobs[2] == pytest.approx(math.log(1 - math.exp(-0.5) - math.exp(-1.5)))
    [result] = make(server, top_logprobs=3).score([ScoreRequest("Q", (" A", " D"))])
    # 1 - p(A, B, C) = 0.088 is more than p(" C") = 0.082: " D" is capped at p(" C")
    assert result.logprobs == (-0.5, pytest.approx(-2.5))
    assert result.imputed == (False, True)


def test_chat_score(server: FakeOpenAIServer) -> None:
    model = make(server, chat=True, top_logprobs=3)
    messages = ({"role": "user", "content": "Pick A, B or C."},)
    [result] = model.score([ScoreRequest(messages, ("A", "B", "C"))])
    body = server.bodies()[0]
    assert server.paths() == ["/v1/chat/completions"]
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and body["max_tokens"] == 1
    assert result.logprobs == (-0.5, -1.5, -2.5)
    assert result.imputed == (False, False, False)


@pytest.mark.parametrize("chat", [False, True])
def test_server_without_logprobs_fails_at_once(chat: bool) -> None:
    with FakeOpenAIServer(logprobs_supported=False) as fake:
        model = make(fake, chat=chat)
        context = ({"role": "user", "content": "Q"},) if chat else "Q"
        with pytest.raises(BackendError, match="does the server support logprobs"):
            model.score([ScoreRequest(context, (" A",))])
        assert len(fake.requests) == 1


def test_impute_option_logprobs_rule() -> None:
    top = [math.log(0.5), math.log(0.3), math.log(0.1)]  # 0.1 left over
    values, imputed = impute_option_logprobs([math.log(0.5), None, None], top)
    assert imputed == [False, True, True]
    assert values[0] == pytest.approx(math.log(0.5))
    assert values[1] == values[2] == pytest.approx(math.log(0.05))  # 0.1 shared by two
    values, _ = impute_option_logprobs([None], [math.log(0.5), math.log(0.45)])
    assert values[0] == pytest.approx(math.log(0.05))
    values, _ = impute_option_logprobs([None], [math.log(0.7), math.log(0.02)])
    assert values[0] == pytest.approx(math.log(0.02))  # capped at the smallest top-k probability
    values, _ = impute_option_logprobs([None], [0.0])  # the top-k holds all the mass
    assert math.isfinite(values[0])
    assert impute_option_logprobs([-1.0, -2.0], [-1.0]) == ([-1.0, -2.0], [False, False])


# -- retries and errors -------------------------------------------------------------------------


def test_429_honours_retry_after(server: FakeOpenAIServer) -> None:
    server.inject(("status", 429, {"Retry-After": "1"}))
    model = make(server, backoff_base=0.01)
    start = time.monotonic()
    [result] = model.generate([GenerateRequest("x")])
    elapsed = time.monotonic() - start
    assert result.texts == [completion_text("x", None, 0)]
    assert elapsed >= 0.95
    assert len(server.requests) == 2


def test_500_then_success(server: FakeOpenAIServer) -> None:
    server.inject(("status", 500))
    [result] = make(server).generate([GenerateRequest("x")])
    assert result.texts == [completion_text("x", None, 0)]
    assert len(server.requests) == 2


def test_malformed_json_then_success(server: FakeOpenAIServer) -> None:
    server.inject(("malformed",))
    [result] = make(server).score([ScoreRequest("Q", (" A",))])
    assert result.logprobs == (-0.5,)
    assert len(server.requests) == 2


def test_timeout_then_success(server: FakeOpenAIServer) -> None:
    server.inject(("sleep", 1.0))
    start = time.monotonic()
    [result] = make(server, timeout=0.3).generate([GenerateRequest("x")])
    assert result.texts == [completion_text("x", None, 0)]
    assert time.monotonic() - start < 1.0
    assert len(server.requests) == 2


def test_persistent_500_gives_up(server: FakeOpenAIServer) -> None:
    server.inject(*[("status", 500)] * 10)
    with pytest.raises(BackendError) as info:
        make(server, max_retries=2).generate([GenerateRequest("x")])
    message = str(info.value)
    assert len(server.requests) == 3
    assert "\n" not in message
    assert "/v1/completions" in message and "500" in message and "3 attempts" in message
    assert not isinstance(info.value, ServerUnreachableError)


def test_400_fails_at_once_with_server_message(server: FakeOpenAIServer) -> None:
    server.inject(("status", 400, "max_tokens is too large for this model"))
    with pytest.raises(BackendError, match="max_tokens is too large for this model"):
        make(server).generate([GenerateRequest("x")])
    assert len(server.requests) == 1


def test_401_names_the_env_var_not_the_key(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.inject(("status", 401, f"Incorrect API key provided: {SECRET}"))
    with pytest.raises(BackendError) as info:
        make(server, api_key_env=KEY_ENV).generate([GenerateRequest("x")])
    message = str(info.value)
    assert KEY_ENV in message and "401" in message
    assert SECRET not in message
    assert len(server.requests) == 1


def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with FakeOpenAIServer(api_key=SECRET) as fake:
        model = make(fake, api_key_env=KEY_ENV)
        model.generate([GenerateRequest("x")])
        assert fake.requests[0].headers["authorization"] == f"Bearer {SECRET}"
        shown = [repr(model), str(model.identity), repr(vars(model)), repr(model.capabilities)]
        assert not any(SECRET in s for s in shown)
        fake.inject(*[("status", 503, f"overloaded {SECRET}")] * 3)
        with pytest.raises(BackendError) as info:
            make(fake, api_key_env=KEY_ENV, max_retries=2).generate([GenerateRequest("x")])
        assert SECRET not in str(info.value)


def test_local_server_needs_no_key(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    model = make(server, api_key_env=KEY_ENV)
    model.generate([GenerateRequest("x")])
    assert "authorization" not in server.requests[0].headers


def test_missing_key_for_remote_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(MissingAPIKeyError, match=KEY_ENV) as info:
        OpenAICompatModel(model="m", base_url="https://api.example.com/v1", api_key_env=KEY_ENV)
    assert "\n" not in str(info.value)
    # servers without keys opt out explicitly
    OpenAICompatModel(model="m", base_url="https://api.example.com/v1", api_key_env=None)


def test_unreachable_server() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAICompatModel(
        model="m", base_url=base_url, api_key_env=None, max_retries=2, backoff_base=0.01
    )
    with pytest.raises(ServerUnreachableError, match="is the server running") as info:
        model.generate([GenerateRequest("x")])
    assert f"cannot reach {base_url}" in str(info.value)
    assert "\n" not in str(info.value)


# -- concurrency and event loops ----------------------------------------------------------------


def test_concurrency_limit(server: FakeOpenAIServer) -> None:
    server.delay = 0.2
    model = make(server, concurrency=4, timeout=5.0)
    start = time.monotonic()
    results = model.generate([GenerateRequest(f"p{i}") for i in range(20)])
    elapsed = time.monotonic() - start
    assert [r.texts[0] for r in results] == [completion_text(f"p{i}", None, 0) for i in range(20)]
    assert server.max_in_flight == 4
    assert elapsed < 0.6 * 20 * 0.2  # sequential would take 4 s; 4 at a time about 1 s


def test_requests_are_sent_in_submission_order(server: FakeOpenAIServer) -> None:
    model = make(server, concurrency=1)
    prompts = [f"shared backstory\nQuestion {i}" for i in range(10)]
    model.generate([GenerateRequest(p) for p in prompts])
    assert [b["prompt"] for b in server.bodies()] == prompts


def test_generate_inside_running_event_loop(server: FakeOpenAIServer) -> None:
    model = make(server)

    async def main() -> list[str]:
        [result] = model.generate([GenerateRequest("inside")])
        [score] = model.score([ScoreRequest("Q", (" A",))])
        assert score.logprobs == (-0.5,)
        return result.texts

    assert asyncio.run(main()) == [completion_text("inside", None, 0)]


def test_empty_batches_make_no_requests(server: FakeOpenAIServer) -> None:
    model = make(server)
    assert model.generate([]) == [] and model.score([]) == []
    assert server.requests == []


def test_ask_keeps_a_server_saturated_with_each_backstorys_questions_together(
    server: FakeOpenAIServer,
) -> None:
    """A whole stage through the response cache, with the default concurrency: at least 64 requests
    in flight at the server, and the questions of one backstory sent one after another, so a server's
    prefix cache holds the backstory while they run."""
    import httpx
    import pandas as pd

    from anthology.method.answering import AskConfig, ask
    from anthology.models.cache import CachedModel
    from anthology.surveys import load_survey

    sent: list[str] = []

    class Recording(httpx.AsyncHTTPTransport):
        """The real transport, noting the order in which requests go out on the wire."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(json.loads(request.content)["prompt"])
            return await super().handle_async_request(request)

    server.delay = 0.1
    full = load_survey("gss2018-spending").questionnaire
    questionnaire = full.model_copy(update={"questions": full.questions[:6]})
    stories = [f"Question: Tell me about yourself.\n\nAnswer: I am person number {i}." for i in range(40)]
    panel = pd.DataFrame(
        {
            "method": "anthology",
            "respondent_id": range(40),
            "persona_id": None,
            "style": "completion",
            "context": stories,
        }
    )
    model = CachedModel(make(server, timeout=10.0, transport=Recording()), None)
    answers, _ = ask(model, panel, questionnaire, config=AskConfig(context="independent", mode="logprob"))
    assert len(answers) == 40 * len(questionnaire)
    assert server.max_in_flight >= 64
    person = [next(i for i, story in enumerate(stories) if p.startswith(story)) for p in sent]
    assert len(person) == 40 * len(questionnaire)
    assert person == sorted(person)  # each backstory's questions together, backstories in turn
