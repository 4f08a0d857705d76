"""The method's stages from the command line, on a tiny model saved to a local folder, against the
built-in GSS 2018 survey."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

pytest.importorskip("torch")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anthology", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        timeout=600,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def test_stages_end_to_end_skip_when_unchanged_and_rerun_from_cache(tiny_folder, tmp_path):
    run = str(tmp_path / "run")
    ok(
        cli(
            "backstories",
            run,
            "--model",
            tiny_folder,
            "-n",
            "8",
            "--max-tokens",
            "24",
            "--no-preamble",
            "--min-tokens",
            "1",
            "--first-person",
            "off",
            "--seed",
            "3",
        )
    )
    stories = pd.read_parquet(f"{run}/backstories.parquet")
    assert len(stories) == 8 and stories["kept"].sum() >= 6

    # Later stages use the run's model unless told otherwise.
    ok(cli("demographics", run, "--mode", "logprob", "--seed", "3"))
    demographics = pd.read_parquet(f"{run}/demographics.parquet")
    assert set(demographics["trait"]) >= {"age", "gender", "income", "party"}

    matched = ok(cli("match", run, "--survey", "gss2018-spending", "--respondents", "5", "--seed", "3"))
    assert "mean_log_weight" in matched.stdout
    matches = pd.read_parquet(f"{run}/matches.parquet")
    assert set(matches["method"]) == {"greedy", "max-weight", "random"}
    assert len(pd.read_parquet(f"{run}/humans.parquet")) == 5

    args = (
        "ask",
        run,
        "--mode",
        "logprob",
        "--context",
        "independent",
        "--dp-max-tokens",
        "16",
        "--seed",
        "3",
    )
    first = ok(cli(*args))
    answers = pd.read_parquet(f"{run}/answers.parquet")
    assert set(answers["method"]) == {
        "anthology-greedy",
        "anthology-max-weight",
        "anthology-random",
        "qa",
        "bio",
        "portray",
        "nothing",
        "dp",
    }
    assert len(answers[answers["method"] == "qa"]) == 5 * 18
    assert answers["position"].between(1, 3).all()
    assert "model calls" in first.stderr
    again = ok(cli(*args))  # nothing it depends on changed
    assert "ask: done already, skipped" in again.stderr
    forced = ok(cli(*args, "--force"))  # computed again, every model call from the run's cache
    assert "ask: forced" in forced.stderr and " 0 model calls" in forced.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(f"{run}/answers.parquet"), answers)

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"backstories", "demographics", "match", "ask"}
    assert manifest["model"]["name"] == tiny_folder
    assert manifest["stages"]["match"]["survey"]["name"] == "gss2018-spending"


def test_stage_errors_are_one_line(tiny_folder, tmp_path):
    run = str(tmp_path / "empty")
    result = cli("demographics", run, "--model", tiny_folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "run `anthology backstories`" in result.stderr.strip().splitlines()[-1]
    result = cli("ask", run, "--methods", "anthology-greedy,astrology", "--model", tiny_folder)
    assert result.returncode == 2 and "unknown method 'astrology'" in result.stderr


def test_static_cache_decoding_from_the_cli_writes_the_same_backstories(tiny_folder, tmp_path):
    """--decoding reaches the backend: the static-cache loop (with the interview's stop strings and a
    seeded sample per persona) writes the eager loop's backstories."""
    frames = {}
    for decoding in ("eager", "static"):
        run = str(tmp_path / decoding)
        args = (
            "-n",
            "6",
            "--max-tokens",
            "40",
            "--no-preamble",
            "--min-tokens",
            "1",
            "--first-person",
            "off",
        )
        ok(cli("backstories", run, "--model", tiny_folder, "--decoding", decoding, *args))
        frames[decoding] = pd.read_parquet(f"{run}/backstories.parquet")
    pd.testing.assert_frame_equal(frames["static"], frames["eager"])
    assert frames["eager"]["text"].str.len().gt(0).all()
    bad = cli("backstories", str(tmp_path / "bad"), "--model", tiny_folder, "--decoding", "fast")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
