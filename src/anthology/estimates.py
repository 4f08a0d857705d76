"""What a study will cost before it runs: per model stage, the requests, prompt and completion tokens
as a range (low-high), the model time they take at this machine's measured rates (or a fast
server's assumed ones), the memory they hold, the money at the prices the user gives, and the
refusal of a study beyond reason. ``anthology run --dry-run`` prints the estimate; ``anthology run``
and the stage commands that use a model check it before their first model call.

The requests are built by the stages' own code for a sample of units
(:mod:`anthology.planned_requests`, which states what each end of a range assumes) and their
prompts counted as the backend will count them (:mod:`anthology.token_counts`): once per request
(and per chunk of :attr:`CachedModel.chunk_size` samples) for generation; for scoring, the context
once on a backend that runs the model, every option form's prompt (and a generated token after
each) on a server that scores by echo, the context and a few greedy tokens on one that reads the
top-k. Stages that will be skipped (done, unchanged) cost nothing; for the others the response
cache is asked about the sampled requests, and the share it holds is taken off (off both ends where
the sampled keys are those the stage sends; off the low end only where later keys depend on answers
not given yet, as in sequential answering).

Refused before any work, in one line: over a week of model time or more memory than the machine
has (``--yes`` runs it anyway), and a high end over ``model.max_cost`` (raise the budget: ``--yes``
does not override a budget the user set).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from anthology.config import ModelSettings, RunConfig
from anthology.models.base import GenerateRequest, ScoreRequest
from anthology.pipeline import STAGES
from anthology.planned_requests import ZERO, Artifacts, Planned, Span, evenly, plan, total
from anthology.surveys import Survey
from anthology.token_counts import CharacterCounter, TokenCounter

Rates = dict[str, float]
#: Longest model time a study may take without ``--yes``.
WEEK_S = 7 * 24 * 3600
#: Rates so slow (a large model on a small CPU) that a study fitting a week at them needs no
#: measurement before it runs.
SLOW_RATES: Rates = {"prefill_tokens_per_s": 100.0, "decode_steps_per_s": 2.0, "batch": 16}
#: What a server is assumed to do, since nothing here measures it: a large GPU deployment, so that
#: only studies beyond reason on any server are refused.
SERVER_RATES: Rates = {"prefill_tokens_per_s": 50_000.0, "decode_steps_per_s": 50.0, "batch": 256}
_BYTES_PER_TOKEN = 4  # characters of text per token, held as str
_BYTES_PER_SAMPLE = 1024  # a request, its key and its result object
_FIX = "lower --personas, --respondents or the max tokens, try --profile fast, or pass --yes to run it"


@dataclass(frozen=True)
class Billing:
    """How a backend counts what it is sent: how it scores options (``exact`` on a backend that runs
    the model, ``echo`` or ``top-k`` on a server) and how many samples a chunk of calls holds."""

    scoring: str = "exact"
    chunk_size: int = 256

    @staticmethod
    def of(model: Any) -> Billing:
        return Billing(model.capabilities.scoring, int(getattr(model, "chunk_size", 256)))


@dataclass
class StageEstimate:
    """One stage's estimate (``reused``: it will be skipped, done and unchanged). ``held_tokens``
    is the high end of the prompt and generated tokens it holds (each prompt once);
    ``cache_hits`` of its ``cache_checked`` sampled requests are in the response cache."""

    stage: str
    requests: Span = ZERO
    prompt_tokens: Span = ZERO
    completion_tokens: Span = ZERO
    samples: Span = ZERO
    held_tokens: float = 0.0
    cache_checked: int = 0
    cache_hits: int = 0
    reused: bool = False

    def add(self, other: StageEstimate) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.samples += other.samples
        self.held_tokens += other.held_tokens
        self.cache_checked += other.cache_checked
        self.cache_hits += other.cache_hits


def estimate(
    config: RunConfig,
    stages: Sequence[str],
    survey: Survey | None,
    *,
    artifacts: Artifacts | None = None,
    counter: TokenCounter | None = None,
    billing: Billing | None = None,
    cache: Any = None,
    identity: dict[str, Any] | None = None,
    reused: Sequence[str] = (),
) -> list[StageEstimate]:
    """The estimate of each model stage among ``stages`` (those in ``reused`` cost nothing). The
    answering stage needs the ``survey`` (its respondents and questions). ``counter`` counts tokens
    (default: characters), ``billing`` says how the backend counts them (default: a local model),
    and with a ``cache`` and the model's ``identity`` the sampled requests are looked up in it."""
    counter = counter or CharacterCounter()
    billing = billing or Billing()
    running = [s for s in stages if s not in reused]
    rows: dict[str, StageEstimate] = {
        s: StageEstimate(s, reused=True) for s in stages if s in reused and s in _MODEL_STAGES
    }
    for planned in plan(config, running, survey, artifacts or Artifacts(), counter):
        row = rows.setdefault(planned.row, StageEstimate(planned.row))
        row.add(_tally(planned, counter, billing, cache if identity is not None else None, identity))
    return list(rows.values())


_MODEL_STAGES = tuple(stage.name for stage in STAGES if stage.model)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _per_request(
    requests: Sequence[GenerateRequest | ScoreRequest], counter: TokenCounter, billing: Billing
) -> tuple[float, float, float, Span]:
    """For like requests: the mean prompt tokens billed per request, the mean held (each prompt
    once), the copies of a context billed per request (the echoed option forms), and the
    completion tokens a scoring request costs."""
    if not requests:
        return 0.0, 0.0, 1.0, ZERO
    if isinstance(requests[0], GenerateRequest):
        tokens = counter.prompts([r.prompt for r in requests if isinstance(r, GenerateRequest)])
        return _mean(tokens), _mean(tokens), 1.0, ZERO
    scores = [r for r in requests if isinstance(r, ScoreRequest)]
    contexts = counter.prompts([r.context for r in scores])
    if billing.scoring == "echo":
        billed = [
            len(r.options) * t + sum(counter.text(o) for o in r.options)
            for r, t in zip(scores, contexts, strict=True)
        ]
        forms = _mean([len(r.options) for r in scores])
        return _mean(billed), _mean(contexts), forms, Span.of(forms)
    if billing.scoring == "top-k":
        from anthology.models.openai_compat import top_k_steps

        return _mean(contexts), _mean(contexts), 1.0, Span(1, _mean([top_k_steps(r.options) for r in scores]))
    return _mean(contexts), _mean(contexts), 1.0, ZERO


def _tally(
    p: Planned, counter: TokenCounter, billing: Billing, cache: Any, identity: dict[str, Any] | None
) -> StageEstimate:
    """The tokens of one group of like requests."""
    low, held, copies, score_completion = _per_request(p.sample, counter, billing)
    high = _per_request(p.high_sample, counter, billing)[0] if p.high_sample is not None else low
    per_request = Span(low, high) + p.extra * copies
    sub_requests = Span(p.requests.low, p.requests.high)
    if p.units.high > p.requests.high:  # requests of several samples may be split across chunks
        sub_requests = Span(p.requests.low, p.requests.high + p.units.high / billing.chunk_size)
    spread = Span(*counter.spread)
    prompt = sub_requests * per_request * spread
    completion = p.units * p.completion + p.requests * score_completion
    row = StageEstimate(
        p.row,
        requests=p.requests,
        prompt_tokens=Span(max(0.0, prompt.low), max(0.0, prompt.high)),
        completion_tokens=completion,
        samples=p.units,
        held_tokens=p.requests.high * max(0.0, held + p.extra.high) * spread.high + completion.high,
    )
    if cache is not None and p.keyed:
        assert identity is not None
        row.cache_checked, row.cache_hits = _cached(p.keyed, cache, identity)
        if row.cache_hits:
            left = 1 - row.cache_hits / row.cache_checked
            off = Span(left, left if p.keyed_all else 1.0)
            row.requests, row.samples = row.requests * off, row.samples * off
            row.prompt_tokens, row.completion_tokens = row.prompt_tokens * off, row.completion_tokens * off
    return row


def _cached(
    requests: Sequence[GenerateRequest | ScoreRequest], cache: Any, identity: dict[str, Any]
) -> tuple[int, int]:
    """How many units of ``requests`` were looked up and how many the cache holds (of a request
    of many samples, :data:`_SAMPLES_LOOKED_UP` spread over them)."""
    from anthology.models.response_cache import generate_key, score_key

    keys = [
        key
        for r in requests
        for key in (
            [generate_key(identity, r, r.first_sample + j) for j in evenly(r.n, _SAMPLES_LOOKED_UP)]
            if isinstance(r, GenerateRequest)
            else [score_key(identity, r)]
        )
    ]
    return len(keys), len(cache.get_many(keys))


_SAMPLES_LOOKED_UP = 64


def calibrate(model: Any) -> Rates | None:
    """Prefill tokens/s and decoding steps/s of a local model (one 256-token pass and 8 steps at batch
    16), used to turn token counts into time. ``None`` for HTTP backends."""
    if not (hasattr(model, "tokenizer") and hasattr(model, "model")):
        return None
    import torch

    with torch.inference_mode():
        ids = torch.randint(0, len(model.tokenizer) - 1, (1, 256), device=model.device)
        model.model(input_ids=ids, logits_to_keep=1)
        start = time.perf_counter()
        model.model(input_ids=ids, logits_to_keep=1)
        prefill = 256 / (time.perf_counter() - start)
        start = time.perf_counter()
        model.generate([GenerateRequest("Hello", n=16, max_tokens=8, temperature=1.0, seed=0)])
        steps = 8 / (time.perf_counter() - start)
    return {"prefill_tokens_per_s": prefill, "decode_steps_per_s": steps, "batch": 16}


def seconds(row: StageEstimate, config: RunConfig, rates: Rates) -> Span:
    """Model time of one stage at ``rates``: its prompts prefilled, its tokens decoded in batches."""
    shared = 3 if row.stage == "ask" and config.ask.context == "independent" else 1  # one prefix a member
    prefill = row.prompt_tokens * (1 / (rates["prefill_tokens_per_s"] * shared))
    return prefill + row.completion_tokens * (1 / (rates["decode_steps_per_s"] * rates["batch"]))


def memory_bytes(rows: Sequence[StageEstimate]) -> int:
    """What the largest stage holds at once, at most: its prompts, its generated texts and a
    request, key and result per sample."""
    return max(
        (int(row.held_tokens * _BYTES_PER_TOKEN + row.samples.high * _BYTES_PER_SAMPLE) for row in rows),
        default=0,
    )


def price(prompt_tokens: float, completion_tokens: float, model: ModelSettings) -> float | None:
    """What the tokens cost at the prices the user gave (``None`` without prices)."""
    if model.price_input_per_million is None or model.price_output_per_million is None:
        return None
    return (
        prompt_tokens * model.price_input_per_million + completion_tokens * model.price_output_per_million
    ) / 1e6


def cost(row: StageEstimate, model: ModelSettings) -> Span | None:
    """The stage's cost at the prices the user gave (``None`` without prices)."""
    low = price(row.prompt_tokens.low, row.completion_tokens.low, model)
    high = price(row.prompt_tokens.high, row.completion_tokens.high, model)
    return None if low is None or high is None else Span(low, high)


def physical_memory() -> int | None:
    """This machine's memory in bytes (``None`` where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def beyond_reason(
    rows: Sequence[StageEstimate],
    config: RunConfig,
    rates: Rates | None,
    measure: Callable[[], Rates | None],
) -> str | None:
    """Why a study is beyond reason (``None`` when it is not): more memory than the machine has, or
    a high end over a week of model time at ``rates``. Without ``rates`` a study that fits a week
    even at :data:`SLOW_RATES` needs no measurement; otherwise ``measure()`` gives the rates
    (``None``: a server, taken at :data:`SERVER_RATES`)."""
    needed, memory = memory_bytes(rows), physical_memory()
    if memory is not None and needed > memory:
        return (
            f"this study would hold up to about {needed / 2**30:,.0f} GiB at once, more than this "
            f"machine's {memory / 2**30:,.0f} GiB: {_FIX}"
        )
    if rates is None:
        if sum(seconds(row, config, SLOW_RATES).high for row in rows) <= WEEK_S:
            return None
        rates = measure()
    where = "the rates measured here"
    if rates is None:
        rates, where = SERVER_RATES, "a fast server's rates"
    longest = sum(seconds(row, config, rates).high for row in rows)
    if longest <= WEEK_S:
        return None
    took = duration_text(longest)
    took = took if took == "over a year" else f"up to {took}"
    limit = "more than the week a run may take without --yes"
    return f"this study would take {took} of model time at {where}, {limit}: {_FIX}"


def over_budget(rows: Sequence[StageEstimate], model: ModelSettings) -> str | None:
    """Why a study's cost may exceed ``model.max_cost`` (``None`` when it may not, or no budget)."""
    if model.max_cost is None:
        return None
    spent = total([c for row in rows if (c := cost(row, model)) is not None])
    if spent.high <= model.max_cost:
        return None
    return (
        f"this study may cost up to {money_text(spent.high)} (estimate {span_text(spent, money_text)}), "
        f"over model.max_cost {money_text(model.max_cost)}: raise --max-cost, lower --personas or "
        "--respondents, or try --profile fast"
    )


def duration_text(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``, ``4.2 days``, or ``over a year``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds < 365 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    return "over a year"


def money_text(amount: float) -> str:
    """A cost in the prices' currency: ``0.0042``, ``12.34``, ``1,234``, then as counts (``56.8k``)."""
    if amount >= 10_000:
        return count_text(amount)
    if amount >= 1000:
        return f"{amount:,.0f}"
    if amount >= 1 or amount == 0:
        return f"{amount:,.2f}"
    return f"{amount:.2g}"


_LARGE = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def count_text(value: float) -> str:
    """A count of requests or tokens: ``1,234`` below 10,000, else three figures and a suffix
    (``56.8k``, ``1.2M``, ``340B``, ``12T``)."""
    if value < 10_000:
        return f"{round(value):,}"
    scale, suffix = next((s, x) for s, x in _LARGE if value >= s)
    figures = f"{value / scale:.3g}"
    if "e" in figures:  # beyond a thousand trillion
        figures = f"{value / scale:,.0f}"
    return f"{figures}{suffix}"


def span_text(span: Span, show: Callable[[float], str] = count_text) -> str:
    """``low–high`` (one figure when both ends show the same)."""
    low, high = show(span.low), show(span.high)
    return low if low == high else f"{low}–{high}"
