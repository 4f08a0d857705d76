"""The Ray executor on a real local Ray of two CPUs (one ``ray.init`` for the module): replicas loaded by
the workers give the local model's results in request order, the work reaches both workers, ``anthology
run --executor ray`` joining that Ray by address writes the run a local run writes, and misuse is a
one-line error with exit status 2."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("torch")
ray = pytest.importorskip("ray")

from anthology.cli import app  # noqa: E402
from anthology.errors import ConfigError, MissingDependencyError  # noqa: E402
from anthology.models.base import GenerateRequest, ScoreRequest  # noqa: E402
from anthology.models.ray_pool import RayModel, shard_bounds, shard_count  # noqa: E402
from anthology.models.registry import load_model  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """A new local Ray of two CPUs (never one found on the machine); yields its address."""
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_parts) -> Path:
    path = tmp_path_factory.mktemp("ray") / "tiny"
    model, tokenizer = tiny_parts
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anthology", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        timeout=600,
    )


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_shards_are_balanced_and_cut_between_personas():
    keys = [f"persona {p:02d}: " * 30 + f"question {q}" for p in range(13) for q in range(5)]
    bounds = shard_bounds(keys, 4)
    assert len(bounds) == 4 and bounds[0][0] == 0 and bounds[-1][1] == len(keys)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(start % 5 == 0 for start, _ in bounds)  # never inside one persona's questions
    assert all(10 <= stop - start <= 25 for start, stop in bounds)
    assert shard_bounds(["a", "b"], 8) == [(0, 1), (1, 2)]
    assert [shard_count(units, 2) for units in (1, 64, 200, 5000)] == [2, 2, 6, 8]


def test_replicas_give_the_local_results_on_both_workers(cluster, folder):
    import torch

    model = RayModel(str(folder), workers=2, cpus_per_worker=1, device="cpu", dtype="float32")
    try:
        local = load_model(str(folder), device="cpu", dtype="float32")
        assert model.identity == local.identity  # the same cache keys as a local run
        assert model.capabilities == local.capabilities

        generate = [
            GenerateRequest(
                f"Question: Tell me about yourself ({i}).\n\nAnswer:",
                n=1 + i % 3,
                seed=i,
                max_tokens=12,
                first_sample=i,
            )
            for i in range(6)
        ]
        generate.append(
            GenerateRequest(
                "Question: Are you a US citizen?\n\nAnswer:", n=16, max_tokens=6, stop=("\n",), seed=3
            )
        )  # one request spread over both workers
        assert model.generate(generate) == local.generate(generate)

        score = [
            ScoreRequest(
                f"I grew up in town {p}, where my father worked at the mill. " * 4
                + f"\n\nQuestion {q}: How old are you?\n(A) 18-29\n(B) 30-49\nAnswer: (",
                ("A", "B"),
            )
            for p in range(8)
            for q in range(6)
        ]
        got = model.score(score)
        expected = local.score(score)
        for g, e in zip(got, expected, strict=True):
            assert g.logprobs == pytest.approx(e.logprobs, abs=1e-5)
        # Bit for bit the local model's answers for the same shards, with the worker's one thread.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            bounds = shard_bounds([r.context for r in score], shard_count(len(score), 2))
            assert got == [r for lo, hi in bounds for r in local.score(score[lo:hi])]
        finally:
            torch.set_num_threads(threads)

        report = model.report()
        assert len({r["pid"] for r in report}) == 2
        assert all(r["units"] > 0 for r in report)
        assert sum(r["units"] for r in report) == sum(r.n for r in generate) + len(score)

        # A worker's anthology error arrives as itself, with the local message.
        too_long = [GenerateRequest("word " * 3000, max_tokens=2)]
        with pytest.raises(ConfigError) as remote:
            model.generate(too_long)
        with pytest.raises(ConfigError) as here:
            local.generate(too_long)
        assert str(remote.value) == str(here.value)
    finally:
        model.close()


def test_anthology_run_on_a_ray_cluster_writes_the_local_run(cluster, folder, tmp_path):
    config = {
        "seed": 5,
        "profile": "fast",
        "model": {"name": str(folder), "device": "cpu", "dtype": "float32"},
        "survey": {"name": "gss2018-spending", "respondents": 4},
        "backstories": {"n": 8, "max_tokens": 16, "preamble": False, "min_tokens": 1, "first_person": "off"},
        "matching": {"methods": ["greedy", "random"]},
        "ask": {"methods": ["anthology-greedy", "anthology-random", "qa"]},
        "evaluate": {"splits": 5, "resamples": 20},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    local = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    # The module's Ray is a running cluster: join it by its address, as a real one.
    remote = cli(
        "run", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", cluster
    )
    assert remote.returncode == 0, remote.stderr

    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("local", "ray")]
    assert manifests[0]["model"] == manifests[1]["model"]
    assert manifests[1]["config"]["executor"]["kind"] == "ray"
    for name in ("backstories", "demographics", "matches", "humans", "answers", "distributions"):
        expected = pd.read_parquet(tmp_path / "local" / f"{name}.parquet")
        got = pd.read_parquet(tmp_path / "ray" / f"{name}.parquet")
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-5)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "ray" / "metrics.csv"),
        pd.read_csv(tmp_path / "local" / "metrics.csv"),
        check_exact=False,
        rtol=1e-5,
    )
    assert sorted(p.name for p in (tmp_path / "ray").glob("*.sqlite")) == ["cache.sqlite"]


def test_executor_misuse_is_a_one_line_error(cluster, folder, tmp_path, monkeypatch):
    runner = CliRunner()
    server = "openai:m@http://127.0.0.1:9/v1"
    line = one_line_error(
        runner.invoke(app, ["models", "try", server, "--executor", "ray", "--prompt", "hi"])
    )
    assert "already runs requests in parallel" in line
    out = str(tmp_path / "run")
    line = one_line_error(runner.invoke(app, ["run", "--model", server, "--executor", "ray", "--out", out]))
    assert "use the local executor" in line
    line = one_line_error(runner.invoke(app, ["run", "--executor", "ray", "--workers", "0", "--out", out]))
    assert "'--workers': 0 is not in the range" in line

    try_model = ["models", "try", str(folder), "--executor", "ray", "--prompt", "hi"]
    assert "'--workers'" in one_line_error(runner.invoke(app, [*try_model, "--workers", "0"]))
    line = one_line_error(runner.invoke(app, [*try_model, "--workers", "3"]))  # the module's Ray has 2 CPUs
    assert "need 3 CPUs; the cluster has 2:" in line

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    result = cli(*try_model, "--ray-address", f"ray://127.0.0.1:{closed}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"cannot reach the Ray cluster at 'ray://127.0.0.1:{closed}'"
        in result.stderr.strip().splitlines()[-1]
    )

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'anthology-personas\[ray\]'"):
        RayModel(str(folder))


def test_sigterm_during_a_ray_run_is_one_line(cluster, folder, tmp_path):
    """ray.init replaces the SIGTERM handler with a bare exit; the run keeps its own (one line, 143)."""
    config = {
        "profile": "fast",
        "model": {"name": str(folder), "device": "cpu", "dtype": "float32"},
        "survey": {"respondents": 4},
        "backstories": {"n": 8, "max_tokens": 16, "preamble": False, "min_tokens": 1, "first_person": "off"},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["run", str(path), "--out", str(tmp_path / "run"), "--executor", "ray", "--ray-address", cluster]
    process = subprocess.Popen(
        [sys.executable, "-m", "anthology", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("[2/9] demographics"):
            process.send_signal(signal.SIGTERM)
            break
    _, err = process.communicate(timeout=600)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "interrupted (SIGTERM): finished work is kept; run the same command again to resume"
    )
