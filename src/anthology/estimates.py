"""What a study will cost before it runs: model calls and tokens per stage (upper bounds for what is
generated), the time they take at this machine's measured rates (or a fast server's assumed ones), the
memory they hold, and the refusal of a study beyond reason: over a week of model time, or more memory
than the machine has. ``anthology run --dry-run`` prints the estimate; ``anthology run`` and the stage
commands that use a model check it before their first model call, and ``--yes`` runs anyway."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from anthology.config import RunConfig
from anthology.pipeline import study_traits
from anthology.surveys import Survey

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


def estimate(config: RunConfig, stages: Sequence[str], survey: Survey | None) -> list[dict[str, Any]]:
    """Model calls and token counts of the model stages among ``stages`` (upper bounds for generated
    tokens). The answering stage needs the ``survey`` (its respondents and questions); without it the
    estimate covers the backstories and the demographic survey, whose sizes the settings give."""
    c = config
    n = c.backstories.n
    story_tokens = c.backstories.max_tokens + 60
    traits = len(study_traits(c)) if "demographics" in stages else 0
    per_answer = 1 if c.demographics.mode == "logprob" else c.demographics.samples
    rows = []
    if "backstories" in stages:
        drawn = n + (max(8, int(n * 1.5)) if c.backstories.preamble else 0)  # and the preamble's samples
        rows.append(
            {
                "stage": "backstories",
                "requests": drawn,
                "samples": drawn,
                "prompt_tokens": n * 60,
                "max_generated_tokens": n * c.backstories.max_tokens,
            }
        )
    if "demographics" in stages:
        rows.append(
            {
                "stage": "demographics",
                "requests": n * traits,
                "samples": n * traits * per_answer,
                "prompt_tokens": n * traits * (story_tokens + 70),
                "max_generated_tokens": 0
                if per_answer == 1
                else n * traits * per_answer * c.demographics.max_tokens,
            }
        )
    if "ask" in stages and survey is not None:
        rows += _ask_rows(c, survey, story_tokens)
    return rows


def _ask_rows(c: RunConfig, survey: Survey, story_tokens: int) -> list[dict[str, Any]]:
    humans = len(survey.respondents or ())
    questions = len(survey.questionnaire)
    members = humans * len(c.ask.methods)
    answer_prompt = story_tokens + 80
    if c.ask.context == "sequential":
        answer_prompt += questions * 45  # earlier questions and answers stay in the context
    rows = [
        {
            "stage": "ask",
            "requests": members * questions,
            "samples": members * questions,
            "prompt_tokens": members * questions * answer_prompt,
            "max_generated_tokens": 0 if c.ask.mode == "logprob" else members * questions * c.ask.max_tokens,
        }
    ]
    if "dp" in c.ask.methods:
        rows.append(
            {
                "stage": "ask (dp backstories)",
                "requests": humans,
                "samples": humans,
                "prompt_tokens": humans * 120,
                "max_generated_tokens": humans * c.ask.dp_max_tokens,
            }
        )
    return rows


def calibrate(model: Any) -> Rates | None:
    """Prefill tokens/s and decoding steps/s of a local model (one 256-token pass and 8 steps at batch
    16), used to turn token counts into time. ``None`` for HTTP backends."""
    if not (hasattr(model, "tokenizer") and hasattr(model, "model")):
        return None
    import torch

    from anthology.models.base import GenerateRequest

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


def seconds(row: dict[str, Any], config: RunConfig, rates: Rates) -> float:
    """Model time of one stage's row at ``rates``: its prompts prefilled, its tokens decoded in
    batches (at most: generation rarely runs to max tokens)."""
    prefill = row["prompt_tokens"] / rates["prefill_tokens_per_s"]
    if row["stage"] == "ask" and config.ask.context == "independent":
        prefill /= 3  # questions share the persona's prefix
    return prefill + row["max_generated_tokens"] / (rates["decode_steps_per_s"] * rates["batch"])


def memory_bytes(rows: Sequence[dict[str, Any]]) -> int:
    """What the largest stage holds at once, at most: its prompts, its generated texts and a
    request, key and result per sample."""
    return max(
        (
            (row["prompt_tokens"] + row["max_generated_tokens"]) * _BYTES_PER_TOKEN
            + row["samples"] * _BYTES_PER_SAMPLE
            for row in rows
        ),
        default=0,
    )


def physical_memory() -> int | None:
    """This machine's memory in bytes (``None`` where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def beyond_reason(
    rows: Sequence[dict[str, Any]],
    config: RunConfig,
    rates: Rates | None,
    measure: Callable[[], Rates | None],
) -> str | None:
    """Why a study is beyond reason (``None`` when it is not): more memory than the machine has, or
    over a week of model time at ``rates``. Without ``rates`` a study that fits a week even at
    :data:`SLOW_RATES` needs no measurement; otherwise ``measure()`` gives the rates (``None``: a
    server, taken at :data:`SERVER_RATES`)."""
    fix = "lower --personas, --respondents or the max tokens, try --profile fast, or pass --yes to run it"
    needed, memory = memory_bytes(rows), physical_memory()
    if memory is not None and needed > memory:
        return (
            f"this study would hold up to about {needed / 2**30:,.0f} GiB at once, more than this "
            f"machine's {memory / 2**30:,.0f} GiB: {fix}"
        )
    if rates is None:
        if sum(seconds(row, config, SLOW_RATES) for row in rows) <= WEEK_S:
            return None
        rates = measure()
    where = "the rates measured here"
    if rates is None:
        rates, where = SERVER_RATES, "a fast server's rates"
    total = sum(seconds(row, config, rates) for row in rows)
    if total <= WEEK_S:
        return None
    days = total / 86_400
    return f"this study would take up to about {days:,.0f} days of model time at {where}, over a week: {fix}"
