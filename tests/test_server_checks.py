"""A server that answers nonsense is not believed: every kind of bad answer is retried, then ends in
one line that names the server and what it sent, and never reaches the response cache or an artifact.
A web page where JSON belongs fails at once; retries are shown at the default verbosity; timeout and
retries are settings with flags. All against a real HTTP server on 127.0.0.1 and a real SQLite cache."""

from __future__ import annotations

import logging
import math
import time

import pytest
import yaml
from click.testing import CliRunner
from fake_openai_server import FakeOpenAIServer, ToyModel, client, small_chat_study

from anthology.cli import app
from anthology.errors import BackendError
from anthology.models.base import GenerateRequest, ScoreRequest
from anthology.models.cached_model import CachedModel
from anthology.models.response_cache import ResponseCache

RETRIES = 2  # so each failure takes 3 requests
MESSAGES = {
    "nan": "returned a log-probability of nan for",
    "inf": "returned a log-probability of inf for",
    "positive": "returned a log-probability of 2.0 for",
    "empty-top": "returned no top-k alternatives for",
    "top-sum": "returned top-k probabilities that sum to",
}


def chat_question():
    return ScoreRequest(({"role": "user", "content": "Pick A or B."},), ("A", "B"))


def assert_one_line(error: BaseException, server: FakeOpenAIServer, *phrases: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(server.base_url), message  # names the server
    for phrase in phrases:
        assert phrase in message, message


@pytest.mark.parametrize("form", ["legacy", "content"])
@pytest.mark.parametrize("mode", list(MESSAGES))
def test_bad_logprobs_are_retried_then_one_line_and_never_cached(tmp_path, mode, form):
    with FakeOpenAIServer(corrupt=mode, logprob_form=form) as server:
        cache = ResponseCache(tmp_path / "cache.sqlite")
        model = CachedModel(client(server, scoring="top-k", max_retries=RETRIES), cache)
        with pytest.raises(BackendError) as info:
            model.score([ScoreRequest("Question: pick\nAnswer:", (" A", " B"))])
        assert len(server.requests) == RETRIES + 1
        assert_one_line(info.value, server, MESSAGES[mode], f"({RETRIES + 1} attempts)")
        assert cache.stats()["total"] == 0
        cache.close()


@pytest.mark.parametrize("mode", ["nan", "inf", "positive", "empty-top", "top-sum"])
def test_bad_logprobs_from_a_chat_server(mode):
    with FakeOpenAIServer(corrupt=mode) as server:
        with pytest.raises(BackendError) as info:
            client(server, chat=True, max_retries=RETRIES).score([chat_question()])
        assert len(server.requests) == RETRIES + 1
        assert_one_line(info.value, server, MESSAGES[mode])


@pytest.mark.parametrize("mode", ["nan", "inf", "positive"])
def test_bad_echoed_logprobs(mode):
    with FakeOpenAIServer() as server:
        model = client(server, max_retries=RETRIES)
        assert model.scoring == "echo"
        server.reset()
        server.corrupt = mode
        with pytest.raises(BackendError) as info:
            model.score([ScoreRequest("Q:", (" A", " B"))])
        assert len(server.requests) == RETRIES + 1
        assert_one_line(info.value, server, MESSAGES[mode], "for ' A'")


@pytest.mark.parametrize("mode", ["nan", "empty-top", "positive"])
def test_one_bad_answer_is_retried_and_the_good_one_kept(mode):
    toy = ToyModel({(":", " A"): 4.0})
    with FakeOpenAIServer(model=toy) as server:
        model = client(server, scoring="top-k", max_retries=RETRIES)
        [clean] = model.score([ScoreRequest("Q:", (" A", " B"))])
        server.reset()
        server.inject(("corrupt", mode))
        [again] = model.score([ScoreRequest("Q:", (" A", " B"))])
        assert len(server.requests) == 2
        assert again == clean
        assert all(math.isfinite(lp) and lp <= 0 for lp in again.logprobs) and 0 < again.coverage <= 1


def test_rounding_above_zero_is_read_as_certain():
    """A certain token's log-probability can round to a hair above 0 (float32): read as 0, not an error."""
    from anthology.models.openai_compat import _logprob

    assert _logprob(3e-6, " A") == 0.0
    assert _logprob(-0.5, " A") == -0.5
    with pytest.raises(Exception, match=r"log-probability of 0\.01"):
        _logprob(0.01, " A")


@pytest.mark.parametrize("n", [1, 3])
def test_more_choices_than_asked_are_a_protocol_error(tmp_path, n):
    with FakeOpenAIServer(corrupt="extra-choice") as server:
        cache = ResponseCache(tmp_path / "cache.sqlite")
        model = CachedModel(client(server, scoring="top-k", max_retries=RETRIES), cache)
        with pytest.raises(BackendError) as info:
            model.generate([GenerateRequest("x", n=n, seed=1)])
        assert len(server.requests) == RETRIES + 1
        assert_one_line(info.value, server, f"returned {n + 1} choices for n={n}")
        assert cache.stats()["total"] == 0
        cache.close()


def test_one_choice_for_n_is_a_server_that_ignores_n_not_an_error():
    with FakeOpenAIServer(max_n=1) as server:
        [result] = client(server, scoring="top-k").generate([GenerateRequest("x", n=3, seed=1)])
        assert len(result.samples) == 3


@pytest.mark.parametrize("chat", [False, True])
def test_a_text_that_is_not_a_string_is_a_protocol_error(tmp_path, chat):
    with FakeOpenAIServer(corrupt="number-text") as server:
        cache = ResponseCache(tmp_path / "cache.sqlite")
        model = CachedModel(client(server, chat=chat, scoring="top-k", max_retries=RETRIES), cache)
        prompt = ({"role": "user", "content": "hi"},) if chat else "hi"
        with pytest.raises(BackendError) as info:
            model.generate([GenerateRequest(prompt)])
        assert len(server.requests) == RETRIES + 1
        assert_one_line(info.value, server, "returned a text that is not a string (123)")
        assert cache.stats()["total"] == 0
        cache.close()


@pytest.mark.parametrize("scoring", ["auto", "top-k"])
def test_an_html_page_fails_at_once(scoring):
    with FakeOpenAIServer(corrupt="html") as server:
        with pytest.raises(BackendError) as info:
            client(server, scoring=scoring, max_retries=5).generate([GenerateRequest("x")])
        assert len(server.requests) == 1  # not retried (a probe, or the request itself)
        assert str(info.value) == (
            f"{server.base_url} returned an HTML page, not JSON: "
            "is the base URL right? (it usually ends in /v1)"
        )


def test_retries_are_shown_once_per_interval(caplog):
    with FakeOpenAIServer() as server:
        server.inject(*[("status", 500)] * 4)
        with caplog.at_level(logging.WARNING, logger="anthology"):
            [result] = client(server, scoring="top-k", max_retries=5).generate([GenerateRequest("x")])
        assert len(result.samples) == 1 and len(server.requests) == 5
        base_url = server.base_url
    shown = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # four retries within a fraction of a second: one line, the first, with its count and reason
    assert shown == [
        f"{base_url} is slow or failing: 1 retry so far, last: answered HTTP 500: fake error 500"
    ]


def test_retries_of_the_first_probe_are_shown_too(caplog):
    with FakeOpenAIServer() as server:
        server.inject(("status", 503))
        with caplog.at_level(logging.WARNING, logger="anthology"):
            assert client(server).scoring == "echo"
        base_url = server.base_url
    shown = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert shown == [
        f"{base_url} is slow or failing: 1 retry so far, last: answered HTTP 503: fake error 503"
    ]


def test_a_hung_server_is_reported_while_it_is_waited_for(tmp_path):
    """`anthology models try` at the default verbosity: a warning per retry interval, then one line."""
    with FakeOpenAIServer() as server:
        server.inject(*[("sleep", 1.5)] * 3)
        name = f"openai:fake@{server.base_url}"
        args = ["models", "try", name, "--chat", "--no-cache", "--timeout", "0.3", "--retries", "2"]
        started = time.monotonic()
        result = CliRunner().invoke(app, [*args, "--prompt", "hello", "--max-tokens", "2"])
        elapsed = time.monotonic() - started
        assert len(server.requests) == 3  # --retries 2: three attempts
        base_url = server.base_url
    assert result.exit_code == 2, result.output
    assert elapsed < 5  # --timeout 0.3 (plus a little per token asked for)
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(
        f"warning: {base_url} is slow or failing: 1 retry so far, last: timed out after 0."
    )
    assert lines[-1].startswith(f"error: {base_url}/chat/completions timed out after 0.")
    assert lines[-1].endswith("(3 attempts)") and "Traceback" not in result.output


def test_timeout_and_retries_flags_are_listed():
    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "--timeout" in result.output and "--retries" in result.output
    result = CliRunner().invoke(app, ["run", "--retries", "-1", "--dry-run"])
    assert result.exit_code == 2 and "--retries" in result.output


@pytest.mark.slow  # two whole runs on the fake server
def test_a_run_on_a_server_that_sends_nan_stops_with_one_line_and_writes_no_number(tmp_path):
    """The whole study: the backstories are written (sampling needs no log-probability), the
    demographic survey's NaN scores stop the run with one line and reach neither an artifact nor the
    cache; the rerun on a mended server finishes from what was kept."""
    with FakeOpenAIServer(corrupt="nan") as server:
        run = tmp_path / "run"
        config = small_chat_study(str(run), name=f"openai:fake@{server.base_url}", retries=1)
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(config))
        result = CliRunner().invoke(app, ["run", str(path)])
        assert result.exit_code == 2, result.output
        error = result.output.strip().splitlines()[-1]
        assert error.startswith(
            f"error: {server.base_url}/chat/completions returned a log-probability of nan"
        )
        assert "Traceback" not in result.output
        assert (run / "backstories.parquet").exists() and not (run / "demographics.parquet").exists()
        with ResponseCache(run / "cache.sqlite") as cache:
            assert cache.stats()["score"] == 0 and cache.stats()["generate"] > 0
        server.corrupt = None
        server.reset()
        result = CliRunner().invoke(app, ["run", str(path)])
        assert result.exit_code == 0, result.output
        assert "backstories: done already" in result.output
        assert (run / "answers.parquet").exists() and (run / "report.html").exists()
