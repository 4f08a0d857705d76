"""``--dry-run``'s estimate: its token ranges hold the tokens real runs used (on the tiny model, and
through an OpenAI-compatible server that scores by echo), costs follow the prices given, a study
beyond its budget or past the settings' bounds is refused in one line, and figures read as people
write them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from anthology.cli import app
from anthology.config import load_config
from anthology.estimates import (
    Billing,
    StageEstimate,
    cost,
    count_text,
    duration_text,
    estimate,
    money_text,
    over_budget,
)
from anthology.method import prompts
from anthology.planned_requests import Span
from anthology.token_counts import CharacterCounter

pytest.importorskip("torch")

#: A study the tiny model runs in seconds: short unfiltered backstories, log-prob modes.
TINY = {
    "profile": "fast",
    "survey.respondents": 4,
    "backstories.n": 6,
    "backstories.max_tokens": 12,
    "backstories.min_tokens": 1,
    "backstories.preamble": False,
    "backstories.first_person": "off",
    "backstories.near_duplicate": 2.0,
    "ask.dp_max_tokens": 12,
    "evaluate.splits": 5,
    "evaluate.resamples": 20,
}


def opener(c, run):
    from anthology.cli.common import open_model

    return open_model(c.model, c.executor, cache_path=run.cache_path)


def used(out: Path) -> dict[str, tuple[int, int]]:
    """The prompt and completion tokens each model stage's calls used, as the run recorded them."""
    import json

    stages = json.loads((out / "manifest.json").read_text())["stages"]
    calls = {name: entry["model_calls"] for name, entry in stages.items() if "model_calls" in entry}
    return {name: (c["prompt_tokens"], c["completion_tokens"]) for name, c in calls.items()}


def by_stage(rows: list[StageEstimate]) -> dict[str, StageEstimate]:
    """The rows by the stage whose manifest entry holds their tokens (DP backstories: ask's)."""
    merged: dict[str, StageEstimate] = {}
    for row in rows:
        stage = "ask" if row.stage.startswith("ask") else row.stage
        if stage in merged:
            merged[stage].add(row)
        else:
            merged[stage] = row
    return merged


def inside(span: Span, value: int) -> bool:
    return span.low - 1e-6 <= value <= span.high + 1e-6


def test_the_ranges_hold_what_a_tiny_run_used(tiny_folder, tmp_path):
    from anthology.study import estimate_study, run_study

    config = load_config(None, {**TINY, "model.name": tiny_folder, "out": str(tmp_path / "run")})
    fresh = by_stage(estimate_study(config, open_model=opener))
    run_study(config, open_model=opener, stages=["backstories"])
    made = used(tmp_path / "run")["backstories"]
    assert inside(fresh["backstories"].prompt_tokens, made[0])
    assert fresh["backstories"].prompt_tokens.low == made[0]  # one known prompt, counted by its tokenizer
    assert inside(fresh["backstories"].completion_tokens, made[1])

    # With the backstories written, the later stages are estimated from their real texts.
    written = by_stage(estimate_study(config, open_model=opener))
    assert written["backstories"].reused and written["backstories"].prompt_tokens == Span(0, 0)
    run_study(config, open_model=opener)
    spent = used(tmp_path / "run")
    demographics = written["demographics"]
    # Log-prob scoring of every kept persona (all six in the sample): exactly the tokens used.
    assert demographics.prompt_tokens.low == demographics.prompt_tokens.high == spent["demographics"][0]
    assert demographics.completion_tokens == Span(0, 0) and spent["demographics"][1] == 0
    ask = written["ask"]
    assert inside(ask.prompt_tokens, spent["ask"][0]) and inside(ask.completion_tokens, spent["ask"][1])
    assert ask.prompt_tokens.high / ask.prompt_tokens.low < 2

    # Done and unchanged: nothing left to spend.
    again = estimate_study(config, open_model=opener)
    assert all(row.reused and row.requests == Span(0, 0) for row in again)


def test_the_cache_is_asked_about_the_requests(tiny_folder, tmp_path):
    from anthology.study import estimate_study, run_study

    config = load_config(None, {**TINY, "model.name": tiny_folder, "out": str(tmp_path / "run")})
    run_study(config, open_model=opener, stages=["backstories", "demographics"])
    forced = by_stage(estimate_study(config, open_model=opener, stages=["demographics"], force=True))
    row = forced["demographics"]
    assert row.cache_checked == 6 * 6 and row.cache_hits == row.cache_checked  # 6 personas x 6 traits
    assert row.prompt_tokens == Span(0, 0)  # all of it answered by the cache


def test_an_echo_server_bills_every_option_form(tmp_path):
    """Through a real HTTP server that scores by echo, as vLLM does: every option form is a prompt it
    bills. The server counts four characters a token; the estimate, with no tokenizer for the
    served model, three to five."""
    from fake_openai_server import FakeOpenAIServer, _tokens

    from anthology.study import estimate_study, run_study

    with FakeOpenAIServer(count_tokens=_tokens) as server:
        name = f"openai:served@{server.base_url}"
        smaller = {
            "backstories.n": 2,
            "survey.respondents": 2,
            "ask.methods": ["nothing", "dp"],
        }
        config = load_config(None, {**TINY, **smaller, "model.name": name, "out": str(tmp_path / "run")})
        rows = estimate_study(config, open_model=opener)
        run_study(config, open_model=opener)
    spent = used(tmp_path / "run")
    for stage, row in by_stage(rows).items():
        assert inside(row.prompt_tokens, spent[stage][0]), (stage, row.prompt_tokens, spent[stage])
        assert inside(row.completion_tokens, spent[stage][1]), (stage, row.completion_tokens, spent[stage])
    # demographics: per persona and trait, each option's 5 answer forms, a generated token each
    assert spent["demographics"][1] > 0 and spent["demographics"][1] % 5 == 0


def test_tokens_and_cost_by_hand():
    """Backstories without a preamble: one prompt per persona, at four characters a token (taken as
    three to five) plus BOS; half the pool kept at the shortest kept length, the rest one token,
    up to max tokens each; the cost at the prices per million."""
    config = load_config(
        None,
        {
            "backstories.n": 10,
            "backstories.preamble": False,
            "backstories.max_tokens": 100,
            "model.price_input_per_million": 2.0,
            "model.price_output_per_million": 8.0,
        },
    )
    [row] = estimate(config, ["backstories"], None, counter=CharacterCounter(), billing=Billing())
    prompt = prompts.transcript([(prompts.BACKSTORY_QUESTION, None)])
    tokens = round(len(prompt) / 4) + 1
    assert row.requests == Span(10, 10)
    assert row.prompt_tokens.low == pytest.approx(10 * tokens * 4 / 5)
    assert row.prompt_tokens.high == pytest.approx(10 * tokens * 4 / 3)
    assert row.completion_tokens == Span(10 * (0.5 * 41 + 0.5), 10 * 100)
    spent = cost(row, config.model)
    assert spent is not None
    assert spent.low == pytest.approx((10 * tokens * 0.8 * 2.0 + 10 * 21 * 8.0) / 1e6)
    assert spent.high == pytest.approx((10 * tokens * 4 / 3 * 2.0 + 1000 * 8.0) / 1e6)
    assert cost(row, load_config(None, {}).model) is None  # no prices, no cost
    budget = load_config(
        None,
        {
            "model.price_input_per_million": 2.0,
            "model.price_output_per_million": 8.0,
            "model.max_cost": 0.001,
        },
    )
    line = over_budget([row], budget.model)
    assert line is not None and line.startswith(f"this study may cost up to {money_text(spent.high)}")
    assert over_budget([row], config.model) is None  # no budget


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--personas", "1000000000000"), "1000000000000 is not in the range 1<=x<=1000000"),
        (("--backstory-tokens", "99999999999"), "is not in the range 1<=x<=1048576"),
        (("--max-cost", "5"), "model.max_cost needs the prices"),
        (("--price-input-per-million", "1"), "give both model.price_input_per_million"),
        (("--price-input-per-million", "-1", "--price-output-per-million", "1"), "not in the range 0<=x"),
        (("--price-input-per-million", "nan", "--price-output-per-million", "1"), "not a finite number"),
    ],
)
def test_sizes_and_prices_out_of_bounds_are_one_line(args, match, tmp_path):
    code, output = cli("run", "--dry-run", "--out", str(tmp_path / "run"), *args)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), output
    assert match in lines[0]
    assert not (tmp_path / "run").exists()


def test_prices_from_flags_and_config_and_a_budget_refused(tiny_folder, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(
        "model:\n  price_input_per_million: 3\n  price_output_per_million: 15\n"
        "backstories: {n: 4, max_tokens: 8, min_tokens: 1, preamble: false}\n"
    )
    base = (str(config), "--model", tiny_folder, "--profile", "fast", "--respondents", "2")
    code, output = cli("run", *base, "--out", str(tmp_path / "a"), "--dry-run")
    assert code == 0, output
    assert "at the prices given" in output and "cost" in output
    flags = ("--price-input-per-million", "300", "--price-output-per-million", "1500", "--max-cost", "0.0001")
    code, output = cli("run", *base, "--out", str(tmp_path / "b"), *flags)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "over model.max_cost 0.0001" in lines[0], output
    assert not (tmp_path / "b" / "backstories.parquet").exists()


def test_a_dry_run_prints_ranges_and_says_what_it_assumes(tiny_folder, tmp_path):
    code, output = cli(
        "run", "--model", tiny_folder, "--profile", "fast", "--personas", "4", "--respondents", "2",
        "--backstory-tokens", "60", "--no-preamble", "--out", str(tmp_path / "run"), "--dry-run",
    )  # fmt: skip
    assert code == 0, output
    assert "completion" in output and "the model's tokenizer" in output
    assert "about 2 attempts per sampled answer" in output
    # backstories: half of 4 kept at the shortest kept length (41 tokens), the others one token each,
    # to 4 x 60 tokens
    assert "84–240" in output


def test_figures_read_as_people_write_them():
    assert [duration_text(s) for s in (42, 600, 3 * 3600, 3 * 86_400, 400 * 86_400)] == [
        "42 s",
        "10 min",
        "3.0 h",
        "3.0 days",
        "over a year",
    ]
    assert [count_text(n) for n in (999, 9_999, 56_789, 1.2e6, 3.4e11, 1.2e13, 5e17)] == [
        "999",
        "9,999",
        "56.8k",
        "1.2M",
        "340B",
        "12T",
        "500,000T",
    ]
    assert [money_text(x) for x in (0, 0.00423, 12.345, 1234.5, 5.4e6)] == [
        "0.00",
        "0.0042",
        "12.35",
        "1,234",
        "5.4M",
    ]


def test_open_code_and_top_up_rows_count_by_hand_and_hold_a_tiny_run(tiny_folder, tmp_path):
    """Open questions and a top-up budget: ``open`` asks every member each open question, ``code``
    scores the non-empty answers (up to all the personas') and the humans' texts, ``pool`` writes
    none to all of the budget's backstories and surveys them; a tiny run stays inside the ranges."""
    import pandas as pd
    from test_open_answers import town_with_open

    from anthology.pipeline import open_survey, study_traits
    from anthology.study import estimate_study, run_study

    settings = {
        **TINY,
        "model.name": tiny_folder,
        "survey.name": str(town_with_open(tmp_path)),
        "ask.methods": ["anthology-greedy", "qa"],
        "matching.methods": ["greedy"],
        "open.max_tokens": 8,
        "pool.top_up": 3,
        "pool.batch": 2,
        "out": str(tmp_path / "run"),
    }
    config = load_config(None, settings)
    fresh = by_stage(estimate_study(config, open_model=opener))
    assert {"pool", "open", "code"} <= set(fresh)
    # With the pool written, the later stages are estimated from its real texts (as in the test above).
    run_study(config, open_model=opener, stages=["backstories", "demographics"])
    rows = by_stage(estimate_study(config, open_model=opener))
    members, questions = 2 * 4, 2  # anthology-greedy and qa, 4 respondents each; 2 open questions
    assert rows["open"].requests == Span(members * questions, members * questions)
    ids = {str(i) for i in open_survey(config).respondents.traits.index}
    data = pd.read_csv(tmp_path / "town-survey.csv", dtype=str)
    said = data[data["resp_id"].isin(ids)]["parks_text"].fillna("").str.strip()
    humans = int((said != "").sum())
    assert rows["code"].requests == Span(humans, humans + members * questions)
    critic = 3 if config.backstories.critic != "off" else 0
    assert rows["pool"].requests == Span(0, 3 + critic + 3 * len(study_traits(config)))

    # With the free-text answers written, the coder's requests are counted on them.
    run_study(
        config, open_model=opener, stages=["backstories", "demographics", "pool", "match", "ask", "open"]
    )
    rows["code"] = by_stage(estimate_study(config, open_model=opener))["code"]
    run_study(config, open_model=opener)
    spent = used(tmp_path / "run")
    for stage in ("pool", "open", "code"):
        made = spent.get(stage, (0, 0))
        assert inside(rows[stage].prompt_tokens, made[0]), (stage, rows[stage].prompt_tokens, made)
        assert inside(rows[stage].completion_tokens, made[1]), (stage, rows[stage].completion_tokens, made)


def test_no_open_questions_and_no_budget_plan_no_requests():
    config = load_config(None, {"survey.respondents": 4})
    from anthology.pipeline import open_survey

    rows = estimate(config, ["pool", "open", "code"], open_survey(config), counter=CharacterCounter())
    assert rows == []


def test_another_coder_has_its_own_row_and_the_notes_say_what_the_rows_assume(tmp_path):
    from rich.console import Console
    from test_open_answers import town_with_open

    from anthology.dry_run import print_estimate
    from anthology.pipeline import open_survey

    settings = {
        "survey.name": str(town_with_open(tmp_path)),
        "survey.respondents": 4,
        "ask.methods": ["qa"],
        "open.coder": "some-coder",
        "pool.top_up": 5,
        "model.price_input_per_million": 1.0,
        "model.price_output_per_million": 2.0,
    }
    config = load_config(None, settings)
    stages = ["backstories", "demographics", "pool", "ask", "open", "code"]
    rows = estimate(config, stages, open_survey(config), counter=CharacterCounter())
    named = {row.stage: row for row in rows}
    assert {"pool", "open", "code (open.coder)"} <= set(named) and "code" not in named
    assert named["open"].requests == Span(4 * 2, 4 * 2)  # qa: 4 respondents, 2 open questions
    assert named["code (open.coder)"].cache_checked == 0  # another model's keys are not looked up
    assert (spent := cost(named["code (open.coder)"], config.model)) is not None and spent.high > 0
    console = Console(record=True, width=200)
    print_estimate(console, config, rows, None, counter=CharacterCounter(), billing=Billing(), cached=False)
    text = console.export_text()
    assert "to all pool.top_up 5 backstories" in text and "1 to open.max_tokens 96 tokens" in text
    assert "another model, some-coder" in text and "priced at the same prices" in text
