"""``anthology run`` end to end on a tiny model: every stage, a kill -9 and resume that ends with the
same results, the run-directory lock, and validation before any model call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from anthology.pipeline import STAGES

pytest.importorskip("torch")


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "anthology", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    process = start(*args)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, tiny_parts) -> Path:
    folder = tmp_path_factory.mktemp("study")
    model, tokenizer = tiny_parts
    model.save_pretrained(folder / "tiny")
    tokenizer.save_pretrained(folder / "tiny")
    config = {
        "seed": 5,
        "profile": "fast",
        "model": {"name": str(folder / "tiny")},
        "survey": {"name": "gss2018-spending", "respondents": 6},
        "backstories": {"n": 10, "max_tokens": 16, "preamble": False, "min_tokens": 1, "first_person": "off"},
        "ask": {"dp_max_tokens": 8},
        "evaluate": {"splits": 10, "resamples": 50},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def artifacts(run: Path) -> dict[str, pd.DataFrame]:
    names = ("backstories", "demographics", "matches", "answers", "distributions", "humans")
    frames = {name: pd.read_parquet(run / f"{name}.parquet") for name in names}
    frames["metrics"] = pd.read_csv(run / "metrics.csv")
    return frames


def test_run_kill_and_resume_gives_the_uninterrupted_result(config_file, tmp_path):
    straight = tmp_path / "straight"
    done = cli("run", str(config_file), "--out", str(straight))
    assert done.returncode == 0, done.stderr
    assert (straight / "report.html").exists()
    assert "report:" in done.stdout
    manifest = json.loads((straight / "manifest.json").read_text())
    assert set(manifest["stages"]) == {stage.name for stage in STAGES}
    assert manifest["versions"]["anthology-personas"]

    resumed = tmp_path / "resumed"
    process = start("run", str(config_file), "--out", str(resumed))
    deadline = time.time() + 300
    while time.time() < deadline:
        manifest_path = resumed / "manifest.json"
        if manifest_path.exists() and "demographics" in json.loads(manifest_path.read_text()).get(
            "stages", {}
        ):
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    again = cli("run", str(config_file), "--out", str(resumed))
    assert again.returncode == 0, again.stderr
    assert "backstories: done already, skipped" in again.stderr
    assert "demographics: done already, skipped" in again.stderr
    expected, got = artifacts(straight), artifacts(resumed)
    for name in expected:
        pd.testing.assert_frame_equal(got[name], expected[name], check_exact=False, rtol=1e-9)

    # A third run has nothing left to do and makes no model call.
    third = cli("run", str(config_file), "--out", str(resumed))
    assert third.returncode == 0, third.stderr
    assert third.stderr.count("done already, skipped") == len(STAGES)


def test_second_writer_is_refused_while_a_run_holds_the_directory(config_file, tmp_path):
    run = tmp_path / "busy"
    first = start("run", str(config_file), "--out", str(run))
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / ".lock").exists() and (run / ".lock").read_text().strip()):
        time.sleep(0.05)
    second = cli("run", str(config_file), "--out", str(run))
    first.kill()
    first.wait()
    assert second.returncode == 2
    assert "in use by another anthology run" in second.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--survey", "no-such-survey"), "unknown survey 'no-such-survey'"),
        (("--model", "no-such-model"), "unknown model 'no-such-model'"),
        (("--survey", "pew-atp-w34"), "has no respondent data"),
        (("--survey", "pew-atp-w34", "--data", "/nonexistent/ATP_W34.sav"), "/nonexistent/ATP_W34.sav"),
        (("--personas", "3"), "at least as many personas as respondents"),
    ],
)
def test_invalid_configs_fail_fast_and_clean(config_file, tmp_path, args, message):
    result = cli("run", str(config_file), "--out", str(tmp_path / "bad"), *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad" / "backstories.parquet").exists()  # refused before any model call


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: [unclosed\n")
    result = cli("run", str(path))
    assert result.returncode == 2
    assert f"{path}:" in result.stderr and "not valid YAML" in result.stderr


def test_logprob_mode_needs_a_backend_with_logprobs():
    from anthology.config import load_config
    from anthology.errors import CapabilityError
    from anthology.models.base import Capabilities
    from anthology.study import check_capabilities

    class NoLogprobs:
        capabilities = Capabilities(True, False, False, None, None, True)

    with pytest.raises(CapabilityError, match="no log-probabilities"):
        check_capabilities(NoLogprobs(), load_config(None, {"profile": "fast"}))
    check_capabilities(NoLogprobs(), load_config(None, {"profile": "paper"}))  # sampled modes only


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[1] / "examples").glob("*.yaml")))
def test_example_configs_are_valid(example):
    from anthology.config import load_config

    config = load_config(example)
    assert config.out.startswith("runs/")
