"""Option scoring over HTTP against the fake server's toy model (tests/fake_openai_server.py).

Echo scores are compared with log-probabilities computed directly from the toy model's token ids;
top-k scores with the toy model's own top-k lists, read the way the walk along the greedy path is
documented (exact where the path holds the option, imputed only for the part it does not)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fake_openai_server import FakeOpenAIServer, ToyModel, client

from anthology.errors import CapabilityError, ServerUnreachableError
from anthology.method.prompts import answer_forms
from anthology.models.base import ScoreRequest
from anthology.models.openai_compat import OpenAICompatModel, forget_servers

CONTEXT = "Question: Is the sky blue?\n(A) Yes\n(B) No\nAnswer:"
FORMS = tuple(f for i in range(3) for f in answer_forms(i))  # " (A", " A)", " A.", " A:", " A\n", ...


make = client


def echo_bodies(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    return [b for b in server.bodies() if b.get("echo")]


# -- echo: exact scores ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [
        {},  # vLLM: a BOS token first, text_offset over the tokens' strings, one generated token
        {"echo_offsets": None},  # no text_offset: tokens placed by their string lengths
        {"echo_offsets": "text", "eos_step": False},  # llama-cpp-python: offsets into the text, no BOS
        {"list_prompts": False},  # one request per option
        {"logprob_form": "content"},  # log-probabilities in the chat form
    ],
)
def test_echo_scores_every_answer_form_exactly(mode: dict[str, Any]) -> None:
    with FakeOpenAIServer(**mode) as fake:
        model = make(fake)
        assert model.scoring == "echo"
        contexts = [CONTEXT, "Question: Tell me about yourself.\n\nAnswer: I am 42.\n\n" + CONTEXT]
        results = model.score([ScoreRequest(c, FORMS) for c in contexts])
        for context, result in zip(contexts, results, strict=True):
            expected = [fake.model.score(context, o) for o in FORMS]
            assert None not in expected
            assert result.logprobs == pytest.approx(expected, abs=1e-9)
            assert result.imputed == (False,) * len(FORMS)
            assert result.coverage == pytest.approx(sum(math.exp(v) for v in expected))
            assert result.imputed_mass == 0
        assert model.identity["scoring"] == "echo"
        assert model.capabilities.top_logprobs is None  # exact: any continuation can be scored


def test_echo_sends_all_options_of_a_request_in_one_list_prompt() -> None:
    with FakeOpenAIServer() as fake:
        model = make(fake)
        model.score([ScoreRequest(CONTEXT, FORMS), ScoreRequest(CONTEXT + " ", ("A", "B"))])
        probe, check, *scored = echo_bodies(fake)  # the list probe and its alignment check first
        assert isinstance(probe["prompt"], list) and len(probe["prompt"]) == 2
        assert len(check["prompt"]) == 1 and check["prompt"][0].startswith("The sky is")
        assert len(scored) == 2  # one request per ScoreRequest (they race on the wire)
        first, second = sorted(scored, key=lambda b: len(b["prompt"]), reverse=True)
        assert first["prompt"] == [CONTEXT + o for o in FORMS]
        assert second["prompt"] == [CONTEXT + " A", CONTEXT + " B"]  # the trailing space moved
        assert (first["echo"], first["logprobs"], first["max_tokens"], first["temperature"]) == (
            True,
            1,
            1,
            0,
        )


def test_echo_option_merged_with_the_context_is_imputed_not_misscored() -> None:
    with FakeOpenAIServer() as fake:
        model = make(fake)
        context, options = "Grade: a", ("b", " b", "c")  # the toy tokenises "ab" as one token
        assert fake.model.score(context, "b") is None
        [result] = model.score([ScoreRequest(context, options)])
        exact = [fake.model.score(context, o) for o in options[1:]]
        assert result.imputed == (True, False, False)
        assert result.logprobs[1:] == pytest.approx(exact)
        # filled by the OpinionQA rule over the options that were observed
        share = min(min(math.exp(v) for v in exact), 1 - sum(math.exp(v) for v in exact))
        assert result.logprobs[0] == pytest.approx(math.log(share))
        assert result.coverage == pytest.approx(sum(math.exp(v) for v in exact))
        assert result.imputed_mass == pytest.approx(share)


@pytest.mark.parametrize("offsets", ["cumulative", "text", None])
def test_echo_bytes_split_characters_in_the_context(offsets: str | None) -> None:
    """A character split into byte tokens is shown as "\\ufffd" per byte, which shifts the offsets
    and string lengths before it; the option at the end is still placed exactly."""
    with FakeOpenAIServer(echo_offsets=offsets) as fake:
        model = make(fake)
        for context in ("Café crème, naïve?\nAnswer:", "Answer: é"):
            [result] = model.score([ScoreRequest(context, (" (A", " B)"))])
            expected = [fake.model.score(context, o) for o in (" (A", " B)")]
            assert result.logprobs == pytest.approx(expected)
            assert result.imputed == (False, False)


def test_echo_with_an_end_of_text_as_the_generated_token() -> None:
    """The one generated token may be the end of text: shown as "</s>" (vLLM) or left out
    (llama-cpp-python, which then reports no completion token)."""
    for eos_step in (True, False):
        toy = ToyModel({(")", "</s>"): 20.0, ("A", "</s>"): 20.0})
        with FakeOpenAIServer(model=toy, eos_step=eos_step, echo_offsets="text") as fake:
            model = make(fake)
            [result] = model.score([ScoreRequest(CONTEXT, (" (A", " A)", " B."))])
            expected = [toy.score(CONTEXT, o) for o in (" (A", " A)", " B.")]
            assert result.logprobs == pytest.approx(expected)
            assert result.imputed == (False, False, False)
        forget_servers()


# -- capability detection -------------------------------------------------------------------------


def test_probe_runs_once_per_server_for_every_model_instance() -> None:
    with FakeOpenAIServer() as fake:
        first, second = make(fake), make(fake, concurrency=3)
        assert first.identity["scoring"] == second.identity["scoring"] == "echo"
        first.score([ScoreRequest(CONTEXT, FORMS[:2])])
        second.score([ScoreRequest(CONTEXT, FORMS[:2])])
        probes = [b for b in echo_bodies(fake) if b["prompt"][-1].startswith("The grass")]
        assert len(probes) == 1
        # another model name on the same server is another server as far as scoring goes
        assert make(fake, model="other").scoring == "echo"
        assert len([b for b in echo_bodies(fake) if b["prompt"][-1].startswith("The grass")]) == 2


def test_scoring_top_k_is_never_probed() -> None:
    with FakeOpenAIServer() as fake:
        model = make(fake, scoring="top-k")
        assert model.identity["scoring"] == "top-k" and model.capabilities.scoring == "top-k"
        assert fake.requests == []


def test_scoring_echo_on_a_server_that_cannot_echo_is_a_capability_error() -> None:
    with FakeOpenAIServer(echo="reject") as fake, pytest.raises(CapabilityError, match="does not echo"):
        make(fake, scoring="echo").score([ScoreRequest(CONTEXT, FORMS[:2])])


@pytest.mark.parametrize("status", [400, 500])
def test_server_refusing_list_prompts_gets_one_request_per_option(status: int) -> None:
    """llama-cpp-python's server answers a list prompt with a 500 (an assertion): the probe takes
    that as "no lists" at once instead of retrying it."""
    with FakeOpenAIServer(list_prompts=False, list_status=status) as fake:
        model = make(fake)
        assert model.scoring == "echo"
        # the list probe (refused once, not retried), then one prompt, then the alignment check (2)
        assert len(fake.requests) == 4
        fake.reset()
        [result] = model.score([ScoreRequest(CONTEXT, FORMS[:4])])
        assert sorted(b["prompt"] for b in fake.bodies()) == sorted(CONTEXT + o for o in FORMS[:4])
        assert result.logprobs == pytest.approx([fake.model.score(CONTEXT, o) for o in FORMS[:4]])


@pytest.mark.parametrize("echo", ["reject", "ignore"])
def test_server_without_echo_scores_from_the_top_k(echo: str) -> None:
    """OpenAI's API refuses echo with logprobs (400); llama-server ignores it and answers with the
    generated token's log-probabilities only."""
    with FakeOpenAIServer(echo=echo) as fake:
        model = make(fake, top_logprobs=5)
        assert model.scoring == "top-k"
        assert model.identity["scoring"] == "top-k"
        assert model.capabilities.top_logprobs == 5
        fake.reset()
        model.score([ScoreRequest(CONTEXT, FORMS[:2])])
        [body] = fake.bodies()
        assert "echo" not in body and body["prompt"] == CONTEXT


def test_unreachable_server_is_reported_when_scoring_is_probed() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = OpenAICompatModel(
        model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None, backoff_base=0.01
    )
    with pytest.raises(ServerUnreachableError, match="is the server running"):
        _ = model.identity


# -- top-k: walking the options along the greedy path ---------------------------------------------


def steered() -> ToyModel:
    """After ":" the greedy token is " (", then "B"; " A" and " B" are likely alternatives."""
    return ToyModel(
        {(":", " ("): 16.0, (":", " B"): 9.0, (":", " A"): 8.0, (" (", "B"): 16.0, (" (", "A"): 9.0}
    )


def shown_top(toy: ToyModel, previous: str, k: int) -> dict[str, float]:
    """The top-k after a token as the server shows it (one entry per string)."""
    return {toy.display(t): v for t, v in toy.top(toy.ids[previous], k)}


@pytest.mark.parametrize("form", ["legacy", "content"])
def test_top_k_walk_is_exact_on_the_greedy_path_and_imputes_only_what_is_missing(form: str) -> None:
    toy = steered()
    k = 5
    with FakeOpenAIServer(echo="reject", logprob_form=form, model=toy) as fake:
        model = make(fake, top_logprobs=k)
        options = (" (B", " (A", " (E", " B)", " B.", " A)", " E)")
        [result] = model.score([ScoreRequest("Answer:", options)])
        body = fake.bodies()[-1]
        assert body["max_tokens"] == 3 and body["logprobs"] == k
        step1, step2 = shown_top(toy, ":", k), shown_top(toy, " (", k)
        assert max(step1, key=step1.get) == " (" and max(step2, key=step2.get) == "B"
        assert not {" (E", " E", " "} & set(step1) and "E" not in step2
        on_path = step1[" ("]
        expected = {
            " (B": on_path + step2["B"],  # exact: both tokens on the greedy path
            " (A": on_path + step2["A"],  # exact: greedy " (", then an alternative
        }
        for option, value in expected.items():
            assert result.logprobs[options.index(option)] == pytest.approx(value)
            assert toy.score("Answer:", option) == pytest.approx(value)  # the true score
        # " (E": on the path for " (", then missing from step 2's top-k: OpinionQA there
        probs2 = [math.exp(v) for v in step2.values()]
        fill2 = math.log(min(min(probs2), max(1e-12, 1 - sum(probs2))))
        assert result.logprobs[2] == pytest.approx(on_path + fill2)
        # " B)", " B.": leave the path through the alternative " B"; what follows it is unknown,
        # shared equally by the two; " A)" alone leaves through " A"
        assert result.logprobs[3] == pytest.approx(step1[" B"] + math.log(1 / 2))
        assert result.logprobs[4] == pytest.approx(step1[" B"] + math.log(1 / 2))
        assert result.logprobs[5] == pytest.approx(step1[" A"])
        # " E)": nothing in step 1 starts it: OpinionQA at step 1
        probs1 = [math.exp(v) for v in step1.values()]
        assert result.logprobs[6] == pytest.approx(math.log(min(min(probs1), max(1e-12, 1 - sum(probs1)))))
        assert result.imputed == (False, False, True, True, True, True, True)
        assert result.coverage == pytest.approx(math.exp(expected[" (B"]) + math.exp(expected[" (A"]))


def test_top_k_chat_walk() -> None:
    toy = ToyModel({(":", "B"): 9.0, ("B", ")"): 9.0, (":", "("): 6.0})
    with FakeOpenAIServer(model=toy) as fake:
        model = make(fake, chat=True, top_logprobs=5)
        messages = ({"role": "user", "content": "Pick A or B."},)
        options = ("B)", "(B", "B.")
        [result] = model.score([ScoreRequest(messages, options)])
        step1, step2 = shown_top(toy, ":", 5), shown_top(toy, "B", 5)
        assert result.logprobs[0] == pytest.approx(step1["B"] + step2[")"])
        assert result.logprobs[0] == pytest.approx(toy.score(toy.chat_text(list(messages)), "B)"))
        assert result.logprobs[1] == pytest.approx(step1["("])  # leaves the path alone through "("
        assert result.imputed == (False, True, "." not in step2)


def test_top_k_empty_log_probabilities_at_the_end_of_text_are_read_not_retried() -> None:
    """llama-cpp-python returns empty lists when the likeliest first token is the end of text:
    nothing was observed on the options, so all are imputed and coverage is 0."""
    toy = ToyModel({(":", "</s>"): 20.0})
    with FakeOpenAIServer(echo="ignore", eos_step=False, model=toy) as fake:
        model = make(fake)
        assert model.scoring == "top-k"
        fake.reset()
        [result] = model.score([ScoreRequest("Answer:", (" A", " B"))])
        assert len(fake.requests) == 1
        logprobs = fake.bodies()[0]
        assert logprobs["logprobs"] == 20
        assert result.imputed == (True, True) and result.coverage == 0
        assert result.logprobs == pytest.approx([math.log(1e-12)] * 2)
        assert result.probabilities() == pytest.approx([0.5, 0.5])


def test_top_k_end_of_text_after_the_first_token() -> None:
    """The greedy path is " B" then the end of text: " B" is exact; " B)" continues past what was
    generated and is imputed as having lost to the end of text."""
    toy = ToyModel({(":", " B"): 9.0, (" B", "</s>"): 20.0})
    for eos_step in (False, True):
        with FakeOpenAIServer(echo="ignore", eos_step=eos_step, model=toy) as fake:
            model = make(fake, top_logprobs=5)
            [result] = model.score([ScoreRequest("Answer:", (" B", " B)"))])
            step1 = shown_top(toy, ":", 5)
            assert result.logprobs[0] == pytest.approx(step1[" B"])
            assert result.imputed == (False, True)
            if eos_step:  # the end of text is a step with its own top-k: OpinionQA from it
                step2 = shown_top(toy, " B", 5)
                assert ")" not in step2
                probs = [math.exp(v) for v in step2.values()]
                fill = math.log(min(min(probs), max(1e-12, 1 - sum(probs))))
            else:
                fill = math.log(1e-12)
            assert result.logprobs[1] == pytest.approx(step1[" B"] + fill)
        forget_servers()


# -- literal server answers -----------------------------------------------------------------------


def test_echo_reads_a_vllm_answer() -> None:
    """The shape of a vLLM /v1/completions answer to a two-prompt echo request (Llama 3 tokens):
    a BOS token with a null log-probability, offsets over the shown token strings, one generated
    token per prompt, and vLLM's extra ``prompt_logprobs`` field."""
    from anthology.models.openai_compat import _echo_parse, _echo_result

    bos = "<|begin_of_text|>"

    def choice(index: int, tokens: list[str], values: list[float | None], text: str) -> dict[str, Any]:
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token)
        tops = [None if v is None else {t: v, "\n": -1.25} for t, v in zip(tokens, values, strict=True)]
        return {
            "index": index,
            "text": text,
            "logprobs": {
                "text_offset": offsets,
                "token_logprobs": values,
                "tokens": tokens,
                "top_logprobs": tops,
            },
            "finish_reason": "length",
            "stop_reason": None,
            "prompt_logprobs": [None]
            + [{"1": {"logprob": v, "rank": 1, "decoded_token": "x"}} for v in values[1:]],
        }

    data = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [
            choice(
                0,
                [bos, "The", " answer", " is", ":", " (", "B", ")"],
                [None, -7.1, -5.0, -1.1, -2.2, -1.5, -0.4, -0.3],
                "The answer is: (B)",
            ),
            choice(  # "The answer is:" + " B)": " B" and ")" are the option's tokens
                1,
                [bos, "The", " answer", " is", ":", " B", ")", "\n"],
                [None, -7.1, -5.0, -1.1, -2.2, -2.5, -0.25, -0.1],
                "The answer is: B)\n",
            ),
        ],
        "usage": {"prompt_tokens": 14, "total_tokens": 16, "completion_tokens": 2},
    }
    context = "The answer is:"
    found, billed = _echo_parse(data, [context + " (B", context + " B)"], len(context))
    result = _echo_result(found, billed, 2)
    assert result.logprobs == pytest.approx([-1.9, -2.75])
    assert result.imputed == (False, False)
    # what the server billed: both option prompts (7 tokens each) and a generated token after each
    assert (result.prompt_tokens, result.completion_tokens) == (14, 2)
    unreported = _echo_result(found, (0, 0), 2)
    assert unreported.prompt_tokens == 2 * 5  # BOS and the context's four tokens, once per option


def test_echo_detects_a_token_across_the_end_of_the_context() -> None:
    from anthology.models.openai_compat import _echo_entries, _echo_option

    # "Grade: a" + "b": the tokenizer made " ab" one token, across the end of the context
    tokens, values = ["<s>", "Grade", ":", " ab", "."], [None, -3.0, -1.0, -4.0, -0.5]
    for offsets in ([0, 3, 8, 9, 12], None):
        logprobs: dict[str, Any] = {"tokens": tokens, "token_logprobs": values}
        if offsets is not None:
            logprobs["text_offset"] = offsets
        echo = _echo_entries({"logprobs": logprobs})
        assert _echo_option(echo, "Grade: ab", len("Grade: a"), 1) is None
        assert _echo_option(echo, "Grade: ab", len("Grade:"), 1) == (-4.0, 3)  # " ab" as the option


def test_top_k_reads_llama_cpp_answers() -> None:
    from anthology.models.openai_compat import _steps, _walk_options

    # llama-cpp-python: the end of text is the likeliest first token
    empty = {
        "text": "",
        "index": 0,
        "logprobs": {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []},
        "finish_reason": "stop",
    }
    steps, after = _steps(empty)
    assert steps == [] and after == "eos"
    values, imputed = _walk_options([" A", " B"], steps, after)
    assert imputed == [True, True] and values == pytest.approx([math.log(1e-12)] * 2)
    # llama-server on /v1/completions: the chat form
    content = {
        "text": " (B",
        "index": 0,
        "logprobs": {
            "content": [
                {
                    "id": 320,
                    "token": " (",
                    "logprob": -0.2,
                    "bytes": [32, 40],
                    "top_logprobs": [
                        {"id": 320, "token": " (", "logprob": -0.2, "bytes": [32, 40]},
                        {"id": 426, "token": " B", "logprob": -2.0, "bytes": [32, 66]},
                    ],
                },
                {
                    "id": 33,
                    "token": "B",
                    "logprob": -0.1,
                    "bytes": [66],
                    "top_logprobs": [
                        {"id": 33, "token": "B", "logprob": -0.1, "bytes": [66]},
                        {"id": 32, "token": "A", "logprob": -2.5, "bytes": [65]},
                    ],
                },
            ]
        },
        "finish_reason": "length",
    }
    steps, after = _steps(content)
    values, imputed = _walk_options([" (B", " (A", " B)"], steps, after)
    assert values == pytest.approx([-0.3, -2.7, -2.0])
    assert imputed == [False, False, True]


def test_server_whose_echo_is_misaligned_scores_from_the_top_k(caplog: pytest.LogCaptureFixture) -> None:
    """llama-cpp-python 0.3.36 echoed prompt log-probabilities that were off by orders of magnitude
    (0.0005 of mass on an age question's answer forms where the local backend had 0.58): the probe
    checks the echo against the log-probability of a token the server generated, and an echo that
    disagrees is not used."""
    with FakeOpenAIServer(echo="misaligned") as fake:
        model = make(fake)
        assert model.scoring == "top-k"
        assert "differs from the generated one" in caplog.text
    with FakeOpenAIServer() as fake:
        assert make(fake).scoring == "echo"  # the same probe on an aligned echo
