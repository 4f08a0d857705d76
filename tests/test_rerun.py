"""The rerun rule, end to end through the CLI against real HTTP servers on 127.0.0.1: a stage is reused
only if everything that made it is unchanged (its settings, the seed, the model's full identity, the
survey's contents and the artifacts it reads), and a change reruns exactly the stages downstream of it.
Stage commands go through the same runner: they reopen the run's recorded model, take the lock, and
start from the same defaults as ``anthology run``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fake_openai_server import FakeOpenAIServer
from surveys_support import write_doc_example

from anthology.cli import app
from anthology.pipeline import STAGES

ALL = [stage.name for stage in STAGES]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def ran(output: str) -> list[str]:
    """The stages a run computed (not skipped), in order."""
    found = re.findall(r"\[\d+/\d+\] (\w+)(: done already, skipped)?", output)
    return [name for name, skipped in found if not skipped]


@pytest.fixture(scope="module")
def servers():
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        yield first, second


@pytest.fixture(scope="module")
def study(tmp_path_factory, servers) -> Path:
    """A finished run (fake server A, the documented town survey) and its config file."""
    folder = tmp_path_factory.mktemp("study")
    codebook = write_doc_example(folder)
    config = {
        "profile": "fast",
        "seed": 1,
        "out": str(folder / "run"),
        "model": {"name": "openai:fake", "base_url": servers[0].base_url},
        "survey": {"name": str(codebook), "respondents": 6},
        "backstories": {"n": 8, "max_tokens": 8, "preamble": False, "min_tokens": 1, "first_person": "off"},
        "ask": {"methods": ["anthology-greedy", "anthology-max-weight", "qa"]},
        "evaluate": {"splits": 4, "resamples": 10},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert ran(invoke("run", str(path)).output) == ALL
    return path


@pytest.fixture
def copy(study, tmp_path) -> tuple[Path, Path]:
    """The finished run, its codebook and data copied apart, with a config pointing at the copies."""
    shutil.copytree(study.parent, tmp_path, dirs_exist_ok=True)
    config = yaml.safe_load((tmp_path / "study.yaml").read_text())
    config["out"] = str(tmp_path / "run")
    config["survey"]["name"] = str(tmp_path / "town-survey.yaml")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    manifest["config"]["out"] = config["out"]
    manifest["config"]["survey"]["name"] = config["survey"]["name"]
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    # The copy's survey path is another string: only its contents count, so nothing reruns.
    assert ran(invoke("run", str(path)).output) == []
    return path, tmp_path


def edit(path: Path, **changes) -> None:
    config = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            config.setdefault(section, {})[key] = value
        else:
            config[section] = value
    path.write_text(yaml.safe_dump(config))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"seed": 2}, ALL),
        ({"model__chat": True, "backstories__style": "chat"}, ALL),
        ({"ask__max_attempts": 3}, ["ask", "open", "code", "evaluate", "report"]),
        ({"matching__objective": "log"}, ["match", "ask", "open", "code", "evaluate", "report"]),
        ({"evaluate__splits": 5}, ["evaluate", "report"]),
        ({"demographics__mode": "sample", "demographics__samples": 2}, ALL[1:]),
        ({"survey__respondents": 5}, ["pool", "match", "ask", "open", "code", "evaluate", "report"]),
    ],
    ids=[
        "seed",
        "chat",
        "ask-setting",
        "matching-setting",
        "evaluate-setting",
        "demographics-setting",
        "survey",
    ],
)
def test_a_change_reruns_exactly_the_stages_downstream(copy, changes, expected):
    path, _ = copy
    edit(path, **changes)
    assert ran(invoke("run", str(path)).output) == expected
    assert ran(invoke("run", str(path)).output) == []  # and then nothing


def test_another_server_reruns_every_model_stage_and_what_follows(copy, servers):
    path, _ = copy
    edit(path, model__base_url=servers[1].base_url)
    servers[1].reset()
    output = invoke("run", str(path)).output
    assert ran(output) == ALL
    assert "model changed" in output and servers[1].requests


def test_editing_the_codebook_or_replacing_the_data_reruns_from_matching(copy):
    path, folder = copy
    codebook = folder / "town-survey.yaml"
    codebook.write_text(codebook.read_text().replace("the parks in your neighbourhood", "your local parks"))
    output = invoke("run", str(path)).output
    assert (
        ran(output) == ["pool", "match", "ask", "open", "code", "evaluate", "report"]
        and "survey changed" in output
    )
    data = folder / "town-survey.csv"
    data.write_text(
        data.read_text().replace(
            "T01,1.10,34,Woman,3,3,D,north,2,2,yes", "T01,1.10,34,Woman,3,3,D,north,4,2,no"
        )
    )
    assert ran(invoke("run", str(path)).output) == [
        "pool",
        "match",
        "ask",
        "open",
        "code",
        "evaluate",
        "report",
    ]
    report = (folder / "run" / "report.html").read_text()
    assert "your local parks" in report and "the parks in your neighbourhood" not in report


def test_an_artifact_overwritten_by_a_stage_command_reruns_what_read_it(copy):
    path, folder = copy
    run = str(folder / "run")
    output = invoke("backstories", run, "--n", "9", "--max-tokens", "8").output
    assert "runs again: settings changed" in output
    # The stages after it read other backstories now, although their own settings did not change.
    assert ran(invoke("run", str(path), "--personas", "9").output) == ALL[1:]


def test_a_stage_command_resumes_against_the_runs_server(copy, servers):
    _, folder = copy
    run = str(folder / "run")
    first, second = servers
    first.reset()
    second.reset()
    output = invoke("demographics", run, "--force", "--no-cache").output  # computed, not replayed
    assert "demographics: forced" in output
    assert first.requests and not second.requests  # the recorded base URL, not the default
    first.reset()
    invoke("demographics", run, "--base-url", second.base_url)
    assert second.requests and not first.requests
    manifest = json.loads((folder / "run" / "manifest.json").read_text())
    assert manifest["stages"]["demographics"]["model"]["base_url"] == second.base_url
    assert manifest["stages"]["demographics"]["versions"]["anthology-personas"]


def test_a_stage_command_into_a_locked_run_is_refused(copy):
    from anthology.store import RunDir
    from anthology.study import locked

    _, folder = copy
    run = folder / "run"
    before = (run / "answers.parquet").read_bytes()
    with locked(RunDir(run)):
        result = CliRunner().invoke(app, ["ask", str(run), "--force"])
    assert result.exit_code == 2
    assert "in use by another anthology run" in result.output
    assert (run / "answers.parquet").read_bytes() == before


def test_run_and_stage_commands_start_from_the_same_settings(tmp_path):
    from anthology.cli.stages import stage_config
    from anthology.config import RunConfig, load_config

    fresh = tmp_path / "fresh"
    assert stage_config(fresh, {}, profile=None, seed=None) == load_config(None, {"out": str(fresh)})
    assert load_config(None, {}) == RunConfig(profile="paper")
    paper = load_config(None, {"profile": "paper"})
    assert (paper.demographics.mode, paper.ask.context, paper.ask.mode) == ("sample", "sequential", "sample")
    assert paper.backstories.max_tokens == 1500 == paper.ask.dp_max_tokens
    fast = stage_config(fresh, {}, profile="fast", seed=None)
    assert (fast.demographics.mode, fast.ask.context, fast.ask.mode) == ("logprob", "independent", "logprob")
    # A stage command's flags have no defaults of their own: unset, the settings class decides.
    command = app.commands["ask"]
    parsed = command.make_context("ask", [str(fresh)]).params
    flags = {name: value for name, value in parsed.items() if name.startswith("_s_")}
    assert len(flags) > 20 and all(value in (None, ()) for value in flags.values())


def test_a_local_models_dtype_and_weights_are_part_of_its_stages(tmp_path, tiny_parts):
    """The model's full identity, not its name: another dtype, or new weights saved under the same
    folder (same file names and sizes), reruns the stage that used it."""
    import torch

    model, tokenizer = tiny_parts
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    run = str(tmp_path / "run")
    args = ("backstories", run, "--model", str(folder), "-n", "2", "--max-tokens", "4", "--no-preamble")
    args += ("--min-tokens", "1", "--first-person", "off", "--dtype", "float32")
    invoke(*args)
    assert "done already, skipped" in invoke(*args).output
    assert "backstories: runs again: model changed" in invoke(*args[:-1], "bfloat16").output
    assert "backstories: runs again: model changed" in invoke(*args).output  # back to float32
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    other = type(model)(model.config)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.normal_()
    other.save_pretrained(folder)
    assert {p.name: p.stat().st_size for p in folder.iterdir()} == sizes
    assert "backstories: runs again: model changed" in invoke(*args).output
