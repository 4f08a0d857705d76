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
from fake_openai_server import FakeOpenAIServer, ToyModel, client, completion_text

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
    return client(server, **{"timeout": 0.5, "backoff_max": 2.0, **kwargs})


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
        "chat": False,  # the completions endpoint
        "top_logprobs": 5,
        "scoring": "echo",  # the fake echoes prompt log-probabilities, as vLLM does
    }
    caps = model.capabilities
    assert (caps.completion, caps.chat, caps.logprobs) == (True, False, True)
    assert (caps.top_logprobs, caps.max_context, caps.seeded, caps.scoring) == (None, 4096, True, "echo")
    chat = make(server, chat=True, top_logprobs=5)
    chat_caps = chat.capabilities
    assert (chat_caps.completion, chat_caps.chat) == (False, True)
    assert (chat_caps.scoring, chat_caps.top_logprobs) == ("top-k", 5)
    assert chat.identity["scoring"] == "top-k"
    model.close()
    model.close()


def test_identity_strips_credentials_from_url() -> None:
    model = OpenAICompatModel(
        model="m", base_url="http://user:pw@localhost:8000/v1/", api_key_env=None, scoring="top-k"
    )
    assert model.identity["base_url"] == "http://***@localhost:8000/v1"  # redacted, not dropped
    assert model.identity["scoring"] == "top-k"  # told, not probed: nothing is sent
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


def test_fewer_choices_than_n_asks_for_the_rest_one_by_one() -> None:
    with FakeOpenAIServer(max_n=1) as fake:
        model = make(fake)
        [result] = model.generate([GenerateRequest("hello", n=2, seed=4)])
        assert result.texts == [completion_text("hello", sample_seed(4, k), 0) for k in range(2)]
        assert [b["n"] for b in fake.bodies()] == [2, 1]
        assert model.honours_n is False


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


def test_score_is_exact_by_echo(server: FakeOpenAIServer) -> None:
    model = make(server)
    context = "Question: Is the sky blue?\nAnswer:"
    options = (" (A", " A)", " (B", " B.")
    [result] = model.score([ScoreRequest(context, options)])
    toy = server.model
    expected = [toy.score(context, o) for o in options]
    assert result.logprobs == pytest.approx(expected)
    assert result.imputed == (False,) * 4
    assert result.coverage == pytest.approx(sum(math.exp(v) for v in expected))
    assert result.imputed_mass == 0
    body = server.bodies()[-1]  # one request for all the options, after the probe
    assert body["prompt"] == [context + o for o in options]
    assert (body["echo"], body["logprobs"], body["max_tokens"], body["temperature"]) == (True, 1, 1, 0)
    assert len(server.requests) == 4  # the probe (list echo, then its alignment check: 2), the scores


def test_score_moves_trailing_space_onto_the_options(server: FakeOpenAIServer) -> None:
    model = make(server)
    [result] = model.score([ScoreRequest("Answer: ", ("A", "B"))])
    assert server.bodies()[-1]["prompt"] == ["Answer: A", "Answer: B"]
    assert result.logprobs == pytest.approx([server.model.score("Answer:", o) for o in (" A", " B")])


def test_score_from_the_top_k_when_the_server_cannot_echo() -> None:
    toy = ToyModel({(":", " A"): 9.0, (":", " B"): 8.0, (":", " C"): 7.0})
    with FakeOpenAIServer(echo="reject", model=toy) as fake:
        model = make(fake, top_logprobs=5)
        assert model.capabilities.scoring == "top-k" and model.capabilities.top_logprobs == 5
        [result] = model.score([ScoreRequest("Answer:", (" A", " B", " C", " D"))])
        colon = toy.ids[":"]
        lp = toy.logprobs(colon)
        assert result.logprobs[:3] == pytest.approx([lp[toy.ids[t]] for t in (" A", " B", " C")])
        assert result.imputed == (False, False, False, True)
        top = list({toy.display(t): v for t, v in toy.top(colon, 5)}.values())  # as the server shows it
        expected = min(min(math.exp(v) for v in top), 1 - sum(math.exp(v) for v in top))
        assert result.logprobs[3] == pytest.approx(math.log(expected))
        assert result.coverage == pytest.approx(sum(math.exp(v) for v in result.logprobs[:3]))
        body = fake.bodies()[-1]
        assert body["prompt"] == "Answer:" and body["logprobs"] == 5 and body["temperature"] == 0
        assert "echo" not in body and body["max_tokens"] == 2  # enough steps for the longest option


def test_chat_score() -> None:
    toy = ToyModel({(":", "A"): 9.0, (":", "B"): 8.0, (":", "C"): 7.0})
    with FakeOpenAIServer(model=toy) as fake:
        model = make(fake, chat=True, top_logprobs=3)
        messages = ({"role": "user", "content": "Pick A, B or C."},)
        [result] = model.score([ScoreRequest(messages, ("A", "B", "C"))])
        body = fake.bodies()[0]
        assert fake.paths() == ["/v1/chat/completions"]  # no probe for chat
        assert body["logprobs"] is True and body["top_logprobs"] == 3 and body["max_tokens"] == 1
        lp = toy.logprobs(toy.ids[":"])
        assert result.logprobs == pytest.approx([lp[toy.ids[t]] for t in "ABC"])
        assert result.imputed == (False, False, False)


@pytest.mark.parametrize("chat", [False, True])
def test_server_without_logprobs_fails_at_once(chat: bool) -> None:
    with FakeOpenAIServer(logprobs_supported=False) as fake:
        model = make(fake, chat=chat)
        assert model.capabilities.scoring == "top-k"  # the probe saw no echoed log-probabilities
        fake.reset()
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
    model = make(server)
    assert model.scoring == "echo"
    server.reset()
    server.inject(("malformed",))
    [result] = model.score([ScoreRequest("Q:", (" A",))])
    assert result.logprobs == pytest.approx([server.model.score("Q:", " A")])
    assert len(server.requests) == 2


def test_timeout_then_success(server: FakeOpenAIServer) -> None:
    server.inject(("sleep", 1.0))
    start = time.monotonic()
    [result] = make(server, timeout=0.3, timeout_per_1k_tokens=0).generate([GenerateRequest("x")])
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
        [score] = model.score([ScoreRequest("Q:", (" A",))])
        assert score.logprobs == pytest.approx([server.model.score("Q:", " A")])
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
    from anthology.models.cached_model import CachedModel
    from anthology.surveys import load_survey

    sent: list[str] = []

    class Recording(httpx.AsyncHTTPTransport):
        """The real transport, noting the order in which requests go out on the wire."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            prompt = json.loads(request.content)["prompt"]
            sent.append(prompt[0] if isinstance(prompt, list) else prompt)  # one list per question
            return await super().handle_async_request(request)

    server.delay = 0.3  # long enough that 64 requests overlap even on a loaded machine
    full = load_survey("gss2018-spending").questionnaire
    questionnaire = full.model_copy(update={"questions": full.questions[:3]})
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
    # A generous timeout: a timed-out request would halve the in-flight limit (adaptive concurrency).
    model = CachedModel(make(server, timeout=120.0, transport=Recording()), None)
    answers, _ = ask(model, panel, questionnaire, config=AskConfig(context="independent", mode="logprob"))
    assert len(answers) == 40 * len(questionnaire)
    assert server.max_in_flight >= 64
    probes = [p for p in sent if not any(p.startswith(story) for story in stories)]
    assert len(probes) == 3 and probes == sent[:3]  # the echo probe, once, before any question
    person = [next(i for i, story in enumerate(stories) if p.startswith(story)) for p in sent[3:]]
    assert len(person) == 40 * len(questionnaire)
    assert person == sorted(person)  # each backstory's questions together, backstories in turn
