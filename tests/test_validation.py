"""Every argument is checked before any work: a bad value, from a flag or a config file, is one line
and exit status 2, never a traceback, and nothing is written or computed before it. Also: a study
beyond reason is refused unless forced, the cache location rule, paths in a config, and the settings a
bundled preset needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from anthology.cli import app

pytest.importorskip("torch")

EXAMPLES = Path(__file__).parents[1] / "examples"
# A backstories stage that takes a second on the tiny model.
QUICK = ("-n", "2", "--max-tokens", "4", "--min-tokens", "1", "--no-preamble", "--first-person", "off")


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def refused(*args: str, match: str) -> str:
    """Run the command; it must exit 2 with one line ``error: ...`` containing ``match``."""
    code, output = cli(*args)
    lines = output.strip().splitlines()
    assert code == 2, output
    assert "Traceback" not in output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert match in lines[0], lines[0]
    return lines[0]


def models_try(model: str, *flags: str) -> tuple[str, ...]:
    """``anthology models try MODEL`` on a short prompt, without a cache, with ``flags``."""
    return ("models", "try", model, "--prompt", "hi", "--no-cache", *flags)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the model's dtype and device ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (("--dtype", "float8"), "'float8' is not one of 'auto', 'float32', 'bfloat16', 'float16'"),
        (("--device", "bogus"), "unknown device 'bogus'"),
        (("--device", "cuda:x"), "unknown device 'cuda:x'"),
    ],
)
def test_bad_dtype_or_device_is_one_line(tiny_folder, tmp_path, flags, match):
    refused(*models_try(tiny_folder, *flags), match=match)
    refused("run", "--model", tiny_folder, "--out", str(tmp_path / "run"), *flags, match=match)
    assert not (tmp_path / "run").exists()


def test_cuda_on_a_torch_without_cuda_says_so(tiny_folder, monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    refused(
        *models_try(tiny_folder, "--device", "cuda"),
        match="this torch has no CUDA build; install a CUDA torch or use --device cpu",
    )


def test_cuda_without_a_gpu_or_past_the_last_gpu_says_so(monkeypatch):
    import torch

    from anthology.errors import ConfigError
    from anthology.models.hf import _resolve_device

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        _resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"no GPU cuda:2: this machine has 2 \(cuda:0 to cuda:1\)"):
        _resolve_device("cuda:2")


def test_device_and_dtype_in_a_config_file(tmp_path):
    for model, match in (
        ("{name: x, device: tpu}", "model.device: unknown device 'tpu'"),
        ("{name: x, dtype: int8}", "model.dtype: Input should be 'auto'"),
    ):
        refused("run", str(write(tmp_path / "c.yaml", f"model: {model}\n")), match=match)


# -- seeds, sizes and temperatures -------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_seed_out_of_range(tiny_folder, tmp_path, seed):
    match = "is not in the range 0<=x<=9223372036854775807"
    refused(*models_try(tiny_folder, "--seed", seed), match=match)
    refused("run", "--seed", seed, "--out", str(tmp_path / "run"), match=match)
    refused("backstories", str(tmp_path / "run"), "--seed", seed, match=match)
    refused("run", str(write(tmp_path / "c.yaml", f"seed: {seed}\n")), match="seed: Input should be")
    assert not (tmp_path / "run").exists()


def test_the_largest_seed_is_accepted():
    from anthology.config import load_config

    assert load_config(None, {"seed": 2**63 - 1}).seed == 2**63 - 1


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_temperature_must_be_finite(tiny_folder, tmp_path, value):
    refused(
        *models_try(tiny_folder, "--temperature", value),
        match="--temperature",
    )
    refused("backstories", str(tmp_path / "run"), "--temperature", value, match="--temperature")
    config = write(tmp_path / "c.yaml", f"ask: {{temperature: .{value.lstrip('-')}}}\n")
    refused("run", str(config), match="ask.temperature: Input should be a finite number")
    assert not (tmp_path / "run").exists()


def test_a_request_refuses_a_temperature_that_is_not_a_number():
    from anthology.models.base import GenerateRequest

    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            GenerateRequest("hi", temperature=value)


@pytest.mark.parametrize(
    ("yaml", "match"),
    [
        ("backstories: {n: 100000000000}", "backstories.n: Input should be less than or equal to 1000000"),
        ("backstories: {max_tokens: 2000000}", "backstories.max_tokens: Input should be less than or equal"),
        ("backstories: {max_tokens: 30}", "backstories.max_tokens (30) < backstories.min_tokens (41) would"),
        ("ask: {dp_max_tokens: 30}", "ask.dp_max_tokens (30) < backstories.min_tokens (41) would drop"),
        ("survey: {respondents: 100000000000}", "survey.respondents: Input should be less than or equal"),
        ("demographics: {traits: [age, age]}", "demographics.traits: 'age' is given twice"),
        ("matching: {methods: [greedy, greedy]}", "matching.methods: 'greedy' is given twice"),
        ("model: {timeout: .inf}", "model.timeout: Input should be a finite number"),
    ],
)
def test_sizes_have_upper_bounds_and_lists_no_repeats(tmp_path, yaml, match):
    refused("run", str(write(tmp_path / "c.yaml", yaml + "\n")), "--out", str(tmp_path / "run"), match=match)
    assert not (tmp_path / "run").exists()


def test_personas_flag_shares_the_config_bound(tmp_path):
    refused("run", "--personas", "100000000000", match="is not in the range 1<=x<=1000000")


def test_duplicate_options_are_refused_before_the_model_loads(tmp_path):
    refused(
        "models",
        "try",
        "no-such-model",
        "--prompt",
        "hi",
        "--options",
        " A",
        " A",
        match="' A' is given twice",
    )


# -- output paths ---------------------------------------------------------------------------------


def test_out_under_a_file_in_proc_or_empty(tiny_folder, tmp_path):
    afile = write(tmp_path / "a-file", "x")
    refused("run", "--model", tiny_folder, "--out", str(afile / "run"), match=f"is under the file {afile}")
    refused("run", "--model", tiny_folder, "--out", str(afile), match="is a file")
    refused("backstories", str(afile / "run"), "--model", tiny_folder, *QUICK, match="is under the file")
    assert Path("/proc").is_dir()  # Linux: a folder where no folder can be made
    refused(
        "run", "--model", tiny_folder, "--out", "/proc/anthology-run", match="cannot make the run directory"
    )
    refused("run", "--model", tiny_folder, "--out", "", match="out: the run directory is empty")
    config = write(tmp_path / "c.yaml", "out: ''\n")
    refused("run", str(config), "--model", tiny_folder, match="out: the run directory is empty")


# -- certain failures refused before work --------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml", "match"),
    [
        ("ask: {methods: []}", "ask.methods: Tuple should have at least 1 item"),
        ("matching: {methods: []}", "matching.methods: Tuple should have at least 1 item"),
        (
            "matching: {methods: [random]}\nask: {methods: [anthology-greedy, qa]}",
            "ask.methods has anthology-greedy but matching.methods has no greedy",
        ),
    ],
)
def test_method_lists_that_cannot_run_are_refused_before_work(tiny_folder, tmp_path, yaml, match):
    config = write(tmp_path / "c.yaml", yaml + "\n")
    refused("run", str(config), "--model", tiny_folder, "--out", str(tmp_path / "run"), match=match)
    assert not (tmp_path / "run" / "backstories.parquet").exists()


def test_a_scoring_prompt_longer_than_the_context_is_refused_before_scoring(tiny_model):
    from anthology.errors import ConfigError
    from anthology.models.base import ScoreRequest

    limit = tiny_model.capabilities.max_context
    long = "I grew up in a small town in Ohio. " * 400
    assert len(tiny_model.tokenizer(long)["input_ids"]) > limit
    ok = ScoreRequest("Question: How old are you?\nAnswer:", (" A", " B"))
    with pytest.raises(
        ConfigError, match=f"a scoring prompt of \\d+ tokens does not fit the model's context of {limit}"
    ):
        tiny_model.score([ok, ScoreRequest(long, (" A", " B"))])
    [scored] = tiny_model.score([ok])  # a prompt that fits is scored as before
    assert len(scored.logprobs) == 2


def test_a_generation_prompt_longer_than_the_context_is_refused(tiny_model):
    from anthology.errors import ConfigError
    from anthology.models.base import GenerateRequest

    with pytest.raises(ConfigError, match=r"a generation prompt of \d+ tokens does not fit"):
        tiny_model.generate([GenerateRequest("I grew up in Ohio. " * 600, max_tokens=2)])


# -- a study beyond reason -----------------------------------------------------------------------


def test_a_study_beyond_reason_is_refused_by_dry_run_and_run_unless_forced(tiny_folder, tmp_path):
    run = tmp_path / "run"
    # The paper's 40 sampled answers per trait: months even at the tiny model's speed on a fast CPU.
    args = ("run", "--model", tiny_folder, "--out", str(run), "--personas", "1000000", "--profile", "paper")
    code, output = cli(*args, "--dry-run")
    assert code == 2 and "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: this study would") and "pass --yes to run it" in last
    assert "dry run:" in output  # the estimate is printed before the refusal
    refused(*args, match="this study would")
    assert not (run / "backstories.parquet").exists()
    code, output = cli(*args, "--dry-run", "--yes")
    assert code == 0, output
    assert "running it anyway (--yes)" in output


def test_the_refusal_rule(monkeypatch):
    from anthology import estimates
    from anthology.config import load_config

    def never() -> None:
        raise AssertionError("a study that fits a week at the slowest rates needs no measurement")

    config = load_config(None, {})
    stages = ("backstories", "demographics", "ask")
    from anthology.pipeline import open_survey

    rows = estimates.estimate(config, stages, open_survey(config))
    assert estimates.beyond_reason(rows, config, None, never) is None  # the default study

    big = load_config(None, {"backstories.n": 300_000, "profile": "fast"})  # 6 traits: those GSS maps
    rows = estimates.estimate(big, ("backstories", "demographics"), None)
    monkeypatch.setattr(estimates, "physical_memory", lambda: 1 << 40)
    fast = {"prefill_tokens_per_s": 1e6, "decode_steps_per_s": 1e3, "batch": 256}
    assert estimates.beyond_reason(rows, big, None, lambda: fast) is None  # measured: fast enough
    slow = {"prefill_tokens_per_s": 1000.0, "decode_steps_per_s": 10.0, "batch": 16}
    line = estimates.beyond_reason(rows, big, None, lambda: slow)
    assert line is not None and "days of model time at the rates measured here, more than the week" in line
    assert estimates.beyond_reason(rows, big, None, lambda: None) is None  # a server: fast rates
    huge = load_config(None, {"backstories.n": 1_000_000})  # 40 sampled answers per question
    rows = estimates.estimate(huge, ("backstories", "demographics"), None)
    line = estimates.beyond_reason(rows, huge, None, lambda: None)
    assert line is not None and "days of model time at a fast server's rates" in line
    monkeypatch.setattr(estimates, "physical_memory", lambda: 1 << 20)
    line = estimates.beyond_reason(rows, huge, fast, never)
    assert line is not None and "more than this machine's" in line


def test_stage_commands_check_their_size_too(tiny_folder, tmp_path):
    refused(
        "backstories",
        str(tmp_path / "run"),
        "--model",
        tiny_folder,
        "-n",
        "1000000",
        "--max-tokens",
        "100000",
        match="this study would",
    )
    assert not (tmp_path / "run" / "backstories.parquet").exists()


# -- the response cache's location ---------------------------------------------------------------


def test_cache_location_rule(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHOLOGY_CACHE", raising=False)
    first = tmp_path / "first"
    code, output = cli("backstories", str(first), "--model", tiny_folder, *QUICK)
    assert code == 0, output
    assert (first / "cache.sqlite").is_file()  # a run directory's own cache by default

    env_cache = tmp_path / "shared" / "responses.sqlite"
    env_cache.parent.mkdir()
    monkeypatch.setenv("ANTHOLOGY_CACHE", str(env_cache))
    second = tmp_path / "second"
    code, output = cli("backstories", str(second), "--model", tiny_folder, *QUICK)
    assert code == 0, output
    assert env_cache.is_file() and not (second / "cache.sqlite").exists()

    flagged = tmp_path / "flag.sqlite"
    third = tmp_path / "third"
    code, output = cli("backstories", str(third), "--model", tiny_folder, "--cache", str(flagged), *QUICK)
    assert code == 0, output
    assert flagged.is_file() and not (third / "cache.sqlite").exists()  # --cache wins

    try_cache = tmp_path / "try.sqlite"
    monkeypatch.setenv("ANTHOLOGY_CACHE", str(try_cache))
    code, output = cli("models", "try", tiny_folder, "--prompt", "hi", "--max-tokens", "2")
    assert code == 0, output
    assert try_cache.is_file()  # models try: the user cache, which $ANTHOLOGY_CACHE names


# -- paths in a config ---------------------------------------------------------------------------


def test_survey_paths_in_a_config_are_relative_to_the_config_file(tmp_path, monkeypatch):
    from anthology.config import load_config
    from anthology.pipeline import open_survey

    folder = tmp_path / "project"
    shutil.copytree(EXAMPLES / "town", folder / "town")
    config = write(
        folder / "study.yaml", "survey: {name: town/town-survey.yaml, data: town/town-survey.csv}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config(config)
    assert Path(loaded.survey.name) == folder / "town" / "town-survey.yaml"
    assert Path(loaded.survey.data) == folder / "town" / "town-survey.csv"
    assert len(open_survey(loaded).respondents) == 11
    assert loaded.out == "runs/default"  # out stays relative to the working directory
    # a flag is relative to the working directory; a built-in name stays a name
    assert load_config(config, {"survey.name": "x/y.yaml"}).survey.name == "x/y.yaml"
    builtin = write(folder / "builtin.yaml", "survey: {name: gss2018-spending}\n")
    assert load_config(builtin).survey.name == "gss2018-spending"


def test_the_own_survey_example_finds_its_codebook_from_anywhere(tmp_path, monkeypatch):
    from anthology.config import load_config
    from anthology.pipeline import open_survey

    monkeypatch.chdir(tmp_path)
    survey = open_survey(load_config(EXAMPLES / "own-survey.yaml"))
    assert survey.codebook.name == "town-survey" and len(survey.respondents) == 11


# -- the settings a bundled preset needs ---------------------------------------------------------


def test_a_preset_brings_the_settings_it_needs_unless_the_user_set_them(tmp_path):
    from anthology.config import load_config, preset_settings

    config = load_config(None, {"model.name": "smollm2-135m"})
    assert config.backstories.preamble is None and config.backstories.style == "chat"
    assert preset_settings(config) == {"backstories.style": "chat", "backstories.preamble": False}
    chosen = load_config(None, {"model.name": "smollm2-135m", "backstories.preamble": True})
    assert chosen.backstories.preamble == CITIZEN and chosen.backstories.style == "chat"
    assert preset_settings(chosen) == {"backstories.style": "chat"}
    in_file = write(tmp_path / "c.yaml", "model: {name: smollm2-135m}\nbackstories: {preamble: true}\n")
    assert load_config(in_file).backstories.preamble == CITIZEN
    default = load_config(None, {})  # other models: the paper's completion interview and preamble
    assert default.backstories.preamble == CITIZEN and default.backstories.style == "completion"
    norway = write(tmp_path / "n.yaml", "backstories:\n  preamble: Do you live in Norway?\n")
    assert load_config(norway).backstories.preamble == "Do you live in Norway?"


CITIZEN = "Are you a US citizen?"


@pytest.mark.parametrize(
    ("flags", "preamble"),
    [
        (["--no-preamble"], None),
        (["--preamble", "Do you live in Norway?"], "Do you live in Norway?"),
        ([], CITIZEN),
    ],
)
def test_run_has_the_preamble_flags(tmp_path, monkeypatch, flags, preamble):
    import anthology.study

    seen = []

    def run_study(config, **kwargs):
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(anthology.study, "run_study", run_study)
    code, output = cli("run", "--out", str(tmp_path / "run"), *flags)
    assert code == 0, output
    assert seen[0].backstories.preamble == preamble


def test_the_backstories_command_has_the_preamble_flag(tiny_folder, tmp_path):
    import pandas as pd

    stories = tmp_path / "stories"
    code, output = cli("backstories", str(stories), "--model", tiny_folder, *QUICK)
    assert code == 0, output
    assert '"preamble": null' in pd.read_parquet(stories / "backstories.parquet")["params"].iloc[0]


@pytest.mark.slow
def test_a_bundled_preset_says_which_settings_it_runs_with(tmp_path):
    code, output = cli(
        "run", "--model", "smollm2-135m", "--out", str(tmp_path / "run"), "--profile", "fast",
        "--personas", "4", "--respondents", "2", "--dry-run",
    )  # fmt: skip
    assert code == 0, output
    assert (
        'smollm2-135m runs with backstories.style: "chat", backstories.preamble: false, as this model needs'
        in output
    )
