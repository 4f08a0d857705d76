"""``--dry-run``'s estimate on the terminal: a table of the model stages (requests, prompt and
completion tokens, model time and cost as ranges) and the lines under it that say what the figures
assume (see :mod:`anthology.estimates`)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from anthology import estimates
from anthology.config import RunConfig
from anthology.estimates import StageEstimate, duration_text, money_text, span_text
from anthology.planned_requests import NONCOMPLIANT_HIGH
from anthology.redact import redact
from anthology.token_counts import CHARS_PER_TOKEN_RANGE, TokenCounter

#: Characters a line of the table may take where the output is not a terminal.
WIDE = 140


def print_estimate(
    console: Console,
    config: RunConfig,
    rows: Sequence[StageEstimate],
    rates: estimates.Rates | None,
    *,
    counter: TokenCounter,
    billing: estimates.Billing,
    cached: bool,
) -> None:
    """Print the estimate ``rows`` of a study, its time at ``rates`` (none: a server)."""
    priced = estimates.price(0, 0, config.model) is not None
    table = Table(title=f"dry run: {redact(config.model.name)} on {config.survey.name}")
    columns = ["stage", "requests", "prompt tokens", "completion tokens", "model time"]
    for column in [*columns, *(["cost"] if priced else []), *(["in cache"] if cached else [])]:
        table.add_column(column, justify="right")
    times, costs = [], []
    for row in rows:
        if row.reused:
            cells = ["done: reused", "0", "0", "0"]
            table.add_row(row.stage, *cells, *(["0"] if priced else []), *([""] if cached else []))
            continue
        took = estimates.seconds(row, config, rates or estimates.SERVER_RATES)
        times.append(took)
        cells = [
            row.stage,
            span_text(row.requests),
            span_text(row.prompt_tokens),
            span_text(row.completion_tokens),
            span_text(took, duration_text) if rates else "n/a",
        ]
        if (spent := estimates.cost(row, config.model)) is not None:
            costs.append(spent)
            cells.append(span_text(spent, money_text))
        if cached:
            cells.append(f"{row.cache_hits:,} of {row.cache_checked:,}" if row.cache_checked else "n/a")
        table.add_row(*cells)
    wide = console if console.is_terminal else Console(file=console.file, width=WIDE)  # a pipe has no width
    wide.print(table)
    notes = _notes(config, rates, times, costs, counter=counter, billing=billing, cached=cached)
    for line in notes + _stage_notes(config, {row.stage for row in rows if not row.reused}):
        console.print(line, soft_wrap=True, highlight=False)


def _notes(
    config: RunConfig,
    rates: estimates.Rates | None,
    times: list[estimates.Span],
    costs: list[estimates.Span],
    *,
    counter: TokenCounter,
    billing: estimates.Billing,
    cached: bool,
) -> list[str]:
    lines = []
    if rates:
        lines.append(
            f"measured here: {rates['prefill_tokens_per_s']:.0f} prompt tokens/s, "
            f"{rates['decode_steps_per_s']:.1f} decoding steps/s at batch {rates['batch']:.0f}; "
            f"model time {span_text(estimates.total(times), duration_text)}"
        )
    else:
        lines.append("time depends on the server: divide the token counts by its throughput")
    if costs:
        lines.append(
            f"cost {span_text(estimates.total(costs), money_text)} at the prices given "
            "(per million prompt and completion tokens)"
        )
    elif not rates:
        lines.append(
            "cost: give model.price_input_per_million and model.price_output_per_million "
            "(--price-input-per-million, --price-output-per-million)"
        )
    if counter.exact:
        lines.append(
            "prompt tokens: the model's tokenizer on the prompts of a sample of personas and respondents"
        )
    else:
        fewest, most = CHARS_PER_TOKEN_RANGE
        lines.append(
            f"prompt tokens: no tokenizer of this model here, so {most:g} to {fewest:g} characters a token "
            "on the prompts of a sample of personas and respondents"
        )
    if billing.scoring == "echo":
        lines.append(
            "this server scores options by echo: every answer form of every option is a prompt it bills "
            "(5 per option), with a generated token each"
        )
    elif billing.scoring == "top-k":
        lines.append("this server scores options from the top-k of a few greedy tokens, billed as completion")
    attempts = 1 / (1 - NONCOMPLIANT_HIGH)
    lines.append(
        "low: every sampled answer complies at once and stops at its shortest, half the backstories not "
        f"yet written are kept; high: max tokens, about {attempts:g} attempts per sampled answer "
        "(docs/runs.md#estimates)"
    )
    lines.append(
        "in cache: sampled requests already answered (taken off the estimate)"
        if cached
        else "no response cache: every request is computed"
    )
    return lines


def _stage_notes(config: RunConfig, stages: set[str]) -> list[str]:
    """What the rows of the top-up and the open questions assume, where they are shown."""
    lines = []
    if "pool" in stages:
        lines.append(
            f"pool: the top-up writes none (the audit passes at once) to all pool.top_up "
            f"{config.pool.top_up:,} backstories, planned and surveyed as the backstories and demographics"
        )
    if "open" in stages:
        lines.append(
            "open: a free-text answer per panel member and open question, 1 to open.max_tokens "
            f"{config.open.max_tokens} tokens"
        )
    if "code" in stages or "code (open.coder)" in stages:
        lines.append(
            "code: a score per non-empty answer, the humans' and the personas' (low: every persona's "
            "answer empty, none sent; high: all sent, open.max_tokens long; counted where written)"
        )
    if "code (open.coder)" in stages:
        lines.append(
            f"code (open.coder): another model, {redact(config.open.coder or '')}: its tokens counted "
            "with the study model's tokenizer and priced at the same prices, not looked up in the cache"
        )
    return lines
