"""Run by tests/test_vllm_local.py in the vLLM environment (.venv-vllm), not a test module: loads
``vllm:smollm2-135m`` in this process through the registry, as a user does, and prints one JSON object
of what the tests check. Logs go to stderr.

Usage: python vllm_local_checks.py REQUESTS.json  (the scoring requests, as [[context, [options]]])
       python vllm_local_checks.py REQUESTS.json FOLDER TP  (``vllm:FOLDER`` across TP tensor-parallel
       ranks: its identity, scores and a seeded sample)"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from anthology.models.base import GenerateRequest, ScoreRequest
from anthology.models.registry import load_model

PROMPT = "Question: Tell me about yourself.\n\nAnswer:"
CHAT = ({"role": "user", "content": "Where did you grow up?"},)


def texts(model, requests: list[GenerateRequest]) -> list[list[str]]:
    return [result.texts for result in model.generate(requests)]


def tensor_parallel(folder: str, ranks: int, scoring: list[ScoreRequest]) -> dict:
    model = load_model(f"vllm:{folder}", dtype="float32", kv_cache_gib=1, max_model_len=2048,
                       tensor_parallel_size=ranks)  # fmt: skip
    out = {
        "identity": model.identity,
        "scores": [list(r.logprobs) for r in model.score(scoring)],
        "sample": texts(model, [GenerateRequest(PROMPT, seed=3, max_tokens=12)])[0],
    }
    model.close()
    return out


def main() -> None:
    pairs = json.loads(Path(sys.argv[1]).read_text())
    scoring = [ScoreRequest(context, tuple(options)) for context, options in pairs]
    if len(sys.argv) == 4:
        print(json.dumps(tensor_parallel(sys.argv[2], int(sys.argv[3]), scoring)))
        return
    started = time.perf_counter()
    model = load_model("vllm:smollm2-135m", dtype="float32", kv_cache_gib=1, max_model_len=4096)
    loaded = time.perf_counter() - started

    def ask(seed: int | None, n: int = 1, first: int = 0, **options) -> GenerateRequest:
        return GenerateRequest(PROMPT, n=n, seed=seed, first_sample=first, **{"max_tokens": 24, **options})

    three = texts(model, [ask(11, n=3)])[0]
    out = {
        "loaded_s": loaded,
        "identity": model.identity,
        "capabilities": model.capabilities.__dict__,
        "conversation_tokens": model.conversation_tokens,
        "three": three,
        "again": texts(model, [ask(11, n=3)])[0],
        # sample 2 alone, and inside a batch of other prompts listed before and after it
        "alone": texts(model, [ask(11, first=2)])[0],
        "in_batch": texts(model, [ask(5, n=2), GenerateRequest("Hi", n=3, seed=1), ask(11, first=2)])[2],
        "other_seed": texts(model, [ask(12)])[0],
        "stopped": [s.__dict__ for s in model.generate([ask(3, stop=("\n", "."), max_tokens=64)])[0].samples],
        "greedy": texts(model, [ask(None, n=2, temperature=0.0)])[0],
        "chat": texts(model, [GenerateRequest(CHAT, max_tokens=16, seed=2)])[0],
    }
    started = time.perf_counter()
    first = model.score(scoring)
    out["score_s"] = time.perf_counter() - started
    started = time.perf_counter()
    second = model.score(scoring)  # every prefix now in the cache
    out["rescore_s"] = time.perf_counter() - started
    out["scores"] = [list(r.logprobs) for r in first]
    out["rescores"] = [list(r.logprobs) for r in second]
    out["imputed"] = [list(r.imputed) for r in first]
    model.close()
    print(json.dumps(out))


if __name__ == "__main__":  # vLLM starts its engine in a spawned process, which imports this module
    main()
