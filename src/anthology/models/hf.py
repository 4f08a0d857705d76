"""Local Hugging Face transformers backend (CPU and CUDA).

* Every sample draws its random numbers from its own seed (a counter-based hash, Gumbel-max sampling,
  ``decoding.py``): sample k of a request is the same text whether it was generated alone or in a
  batch of 64, up to the rare token where batched and single matmuls differ in the last bits.
  Generation has two loops that give the same text. The eager loop (our own): prompts are
  left-padded, a prompt asked for n samples is prefilled once and its KV cache repeated, finished
  rows leave the batch, stop strings are checked per row. The static-cache loop (``hf_static.py``,
  transformers' ``generate`` with a compiled step): fixed shapes, so the step runs as CUDA graphs;
  ``decoding="auto"`` uses it on a GPU for long generations from short prompts (backstories).
* Option scoring turns each option into a row (context and option tokens) whose log-probs are needed
  from the last context token on; an option's row that is a prefix of another option's row is read
  off the longer one. Rows that share a token prefix (one backstory, many questions) are scored in
  packed sequences, the prefix once (``hf_packing.py``).
* The keys and values of recent prompts are kept between calls (``hf_prefix.py``, ``prefix_cache``
  GiB): a prompt that extends an earlier one, as each question of the paper's sequential answering
  extends the member's previous one, computes only its new tokens, in generation and in scoring.

This module imports torch; nothing outside ``anthology.models`` imports it.
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anthology.errors import BackendError, ConfigError, ModelNotFoundError
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
from anthology.models.decoding import StopStrings, cut_at_stop, sample_tokens
from anthology.models.hf_packing import lay_out, score_packs
from anthology.models.hf_prefix import MIN_REUSE, PrefixCache, past_batch, returned_cache, row_layers
from anthology.models.identity import device_kind, loaded_revision
from anthology.models.tokens import PromptEncoder, check_fits, exact_capabilities, option_rows

_DECODING = ("auto", "eager", "static", "compiled")
_STATIC_MIN_TOKENS = 64  # auto decoding compiles only generations at least this long


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _resolve_device(device: str) -> torch.device:
    """The torch device of a ``--device`` value, refused in one line when this torch or machine has
    none (before the model is loaded)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ConfigError("this torch has no CUDA build; install a CUDA torch or use --device cpu")
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError("torch sees no CUDA GPU on this machine; use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(f"no GPU {device}: this machine has {count} (cuda:0 to cuda:{count - 1})")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("this torch or machine has no MPS (Apple GPU) backend; use --device cpu")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return resolved


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


@dataclass
class _Row:
    """One generation sample in flight."""

    unit: int  # index into the flat list of (request, sample) units
    prompt: int  # index into the unique prompts of the batch
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    seed: int


class HFModel:
    """A causal LM loaded with transformers, on CPU (fp32) or CUDA (bf16) by default.

    ``source`` is a local folder or a Hugging Face hub id (read from the local cache when offline);
    ``gguf_file`` names a GGUF file inside that folder. ``decoding`` is ``auto`` (compiled
    static-cache decoding on a GPU for long generations from short prompts, the eager loop
    otherwise), ``eager``, ``static`` (static cache, eager step) or ``compiled`` (static cache,
    compiled step, on any device). ``prefix_cache`` is the GiB of recent prompts' keys and values kept
    between calls (0, the default, is off; see :meth:`_prefix_cache`).

    ``identity`` (the response cache's key) names the model, its revision
    (:func:`~anthology.models.identity.loaded_revision`: a local folder's content hash, a hub
    model's commit, or the ``revision`` given), the dtype and the kind of device: whatever changes
    the outputs.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        name: str | None = None,
        revision: str | None = None,
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | None = None,
        batch_tokens: int | None = None,
        share_prefix: bool = True,
        min_shared_prefix: int = 16,
        decoding: str = "auto",
        prefix_cache: float = 0,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        if decoding not in _DECODING:
            raise ConfigError(f"unknown decoding {decoding!r}: use {', '.join(_DECODING)}")
        self.decoding = decoding
        self._stop_marks: dict[tuple[str, ...], torch.Tensor] = {}
        self.share_prefix = share_prefix
        self.min_shared_prefix = min_shared_prefix
        on_gpu = self.device.type == "cuda"
        self.batch_size = batch_size or (256 if on_gpu else 32)
        self.batch_tokens = batch_tokens or (131_072 if on_gpu else 4096)
        source = str(source)
        if model is None or tokenizer is None:
            model, tokenizer = _load(source, revision=revision, gguf_file=gguf_file, dtype=self.dtype)
            revision = loaded_revision(source, revision, gguf_file)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self._encoder = PromptEncoder(tokenizer)
        # transformers renamed the forward argument past_key_values to cache (5.2x); accept both.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._pad_id = _pad_id(tokenizer)
        # Packed scoring sequences: long enough to hold a backstory and all its questions, short
        # enough that the attention over masked-out pairs stays small next to the matmuls.
        self._pack_tokens = 8192 if on_gpu else 2048
        self._eos_ids = _eos_ids(model, tokenizer)
        self._prefix = self._prefix_cache(prefix_cache)
        self._identity = {
            "backend": "hf",
            "model": name or source,
            "revision": revision,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": device_kind(self.device),
        }
        max_pos = getattr(model.config, "max_position_embeddings", None)
        self._caps = exact_capabilities(tokenizer, int(max_pos) if max_pos else None)

    # -- protocol -------------------------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def close(self) -> None:
        self.model = None
        self._prefix = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        check_requests(self, "generate", requests)
        prompts = self._encoder.prompts([r.prompt for r in requests])
        if not all(prompts):
            raise BackendError("empty prompt: give the model some text to continue")
        check_fits(max(map(len, prompts), default=0) + 1, self._caps.max_context, "generation")
        rows: list[_Row] = []
        owners: list[tuple[int, int]] = []  # unit -> (request, sample index)
        for i, r in enumerate(requests):
            for k in range(r.first_sample, r.first_sample + r.n):
                seed = sample_seed(r.seed, k)
                if seed is None:
                    seed = int.from_bytes(os.urandom(8), "little") & 0x7FFF_FFFF_FFFF_FFFF
                rows.append(_Row(len(owners), i, r.temperature, r.top_p, r.max_tokens, r.stop, seed))
                owners.append((i, k))
        # Longest prompts first: an out-of-memory error shows at once, and batches pad little.
        rows.sort(key=lambda row: -len(prompts[row.prompt]))
        samples: list[Sample | None] = [None] * len(rows)
        budget = self._kv_token_budget()
        for batch in self._batches(rows, lambda row: len(prompts[row.prompt]) + row.max_tokens, budget):
            for row, sample in zip(batch, self._generate_batch(batch, prompts), strict=True):
                samples[row.unit] = sample
        per_request: list[list[Sample]] = [[] for _ in requests]
        for unit, (owner, _) in enumerate(owners):
            sample = samples[unit]
            if sample is None:
                raise BackendError(f"internal error: sample {unit} of the batch was not generated")
            per_request[owner].append(sample)
        return [
            GenerateResult(samples=tuple(got), prompt_tokens=len(prompt))
            for got, prompt in zip(per_request, prompts, strict=True)
        ]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        check_requests(self, "score", requests)
        encoded = self._encoder.score_requests(requests)
        check_fits(
            max((len(ctx) + max(map(len, conts)) for ctx, conts in encoded), default=0),
            self._caps.max_context,
            "scoring",
        )
        row_tokens, targets = option_rows(encoded)
        # Positions whose next-token log-probs each row needs: from the last context token on.
        needs: list[dict[int, list[int]]] = [{} for _ in row_tokens]
        for (ctx_ids, _), per_option in zip(encoded, targets, strict=True):
            for row, cont in per_option:
                for t, token in enumerate(cont):
                    needs[row].setdefault(len(ctx_ids) - 1 + t, []).append(token)
        packs = lay_out(
            row_tokens,
            needs,
            share_prefix=self.share_prefix,
            min_shared_prefix=self.min_shared_prefix,
            pack_tokens=self._pack_tokens,
        )
        logprobs: list[dict[tuple[int, int], float]] = [{} for _ in row_tokens]
        for batch in self._batches(packs, lambda pack: pack.length, self.batch_tokens):
            score_packs(
                self.model,
                batch,
                row_tokens,
                needs,
                logprobs,
                pad_id=self._pad_id,
                prefix=self._prefix,
                cache_kw=self._cache_kw,
            )
        results = []
        for (ctx_ids, _), per_option in zip(encoded, targets, strict=True):
            lps = []
            for row, cont in per_option:
                lps.append(sum(logprobs[row][(len(ctx_ids) - 1 + t, tok)] for t, tok in enumerate(cont)))
            coverage = float(sum(torch.tensor(lps, dtype=torch.float64).exp()))
            results.append(ScoreResult(logprobs=tuple(lps), coverage=coverage, prompt_tokens=len(ctx_ids)))
        return results

    # -- batching ------------------------------------------------------------------------------

    def _kv_bytes_per_token(self) -> int:
        config = self.model.config
        layers = getattr(config, "num_hidden_layers", 1)
        heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads", 1)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return 2 * layers * heads * head_dim * torch.finfo(self.dtype).bits // 8

    def _kv_token_budget(self) -> int:
        """Tokens of KV cache a generation batch may hold: decoding is memory-bound, so batches are
        as wide as memory allows (half the free GPU memory, or 4 GiB on the CPU)."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            memory = free // 2
        else:
            memory = 4 << 30
        return max(1, memory // self._kv_bytes_per_token())

    def _prefix_cache(self, gib: float) -> PrefixCache | None:
        """The cache of recent prompts' keys and values (``gib`` GiB; 0, the default, is off: a
        prompt computed from a cached prefix differs in the last bits from one computed whole, so
        with it on a resumed run is equal to an uninterrupted one within 1e-5, not byte for byte)."""
        if gib < 0:
            raise ConfigError(f"prefix_cache must be a number of GiB >= 0 (0: off), got {gib}")
        tokens = int(gib * (1 << 30)) // self._kv_bytes_per_token()
        return PrefixCache(tokens) if tokens >= MIN_REUSE else None

    @property
    def conversation_tokens(self) -> int | None:
        """How many tokens of earlier prompts this model keeps between calls (its prefix cache), so
        that callers asking many conversations turn by turn can take as many at a time as fit."""
        return self._prefix.budget if self._prefix is not None else None

    def _batches(self, items: list[Any], cost, budget: int) -> list[list[Any]]:
        """Split items (already sorted longest first) into batches of at most ``batch_size`` rows and
        ``budget`` padded tokens."""
        batches: list[list[Any]] = []
        current: list[Any] = []
        width = 0
        for item in items:
            new_width = max(width, cost(item))
            if current and (len(current) >= self.batch_size or new_width * (len(current) + 1) > budget):
                batches.append(current)
                current, new_width = [], cost(item)
            current.append(item)
            width = new_width
        if current:
            batches.append(current)
        return batches

    # -- generation ----------------------------------------------------------------------------

    def _decoding_for(self, prompt_lengths: list[int], budgets: list[int]) -> str:
        """How a batch decodes. ``auto`` picks the compiled static-cache step on a GPU for long
        generations from short prompts (backstories), where the one-off compilation pays for itself;
        the static loop prefills every sample, so many samples of one long prompt (the paper's 40
        answers per demographic question) stay with the eager loop, which prefills it once."""
        if self.decoding == "auto":
            longest = max(budgets)
            short_prompts = sum(prompt_lengths) <= longest * len(prompt_lengths)
            worth_it = self.device.type == "cuda" and longest >= _STATIC_MIN_TOKENS and short_prompts
            return "compiled" if worth_it else "eager"
        return self.decoding

    @torch.inference_mode()
    def _generate_batch(self, rows: list[_Row], prompts: list[list[int]]) -> list[Sample]:
        width = max(len(prompts[row.prompt]) for row in rows)
        limit = self._caps.max_context
        budgets = [row.max_tokens if limit is None else min(row.max_tokens, limit - width) for row in rows]
        stops = StopStrings(self.tokenizer, (s for row in rows for s in row.stop))
        ended = None
        mode = self._decoding_for([len(prompts[row.prompt]) for row in rows], budgets)
        if mode != "eager":
            try:
                ended = self._decode_static(rows, prompts, budgets, stops, compiled=mode == "compiled")
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # the static path is an optimisation: never lose the run to it
                warnings.warn(
                    f"{mode} decoding failed ({type(exc).__name__}: {exc}); decoding eagerly from now on "
                    "(decoding='eager' skips the attempt)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.decoding = "eager"
        if ended is None:
            ended = self._decode_eager(rows, prompts, budgets, stops)
        samples = []
        for row, (tokens, finish) in zip(rows, ended, strict=True):
            text = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), row.stop)
            samples.append(Sample(text=text, finish_reason=finish, completion_tokens=len(tokens)))
        return samples

    def _decode_static(
        self,
        rows: list[_Row],
        prompts: list[list[int]],
        budgets: list[int],
        stops: StopStrings,
        *,
        compiled: bool,
    ) -> list[tuple[list[int], str]]:
        from anthology.models.hf_static import generate_static

        marks = None
        if stops.stops:
            key = tuple(stops.stops)
            if key not in self._stop_marks:
                vocab = self.model.get_output_embeddings().weight.shape[0]
                known = stops.ending_tokens(min(vocab, len(self.tokenizer)))
                padded = torch.ones(vocab, dtype=torch.bool)  # ids past the tokenizer's vocabulary
                padded[: len(known)] = known
                self._stop_marks[key] = padded.to(self.device)
            marks = self._stop_marks[key]
        return generate_static(
            self.model,
            [prompts[row.prompt] for row in rows],
            temps=[row.temperature for row in rows],
            top_ps=[row.top_p for row in rows],
            seeds=[row.seed for row in rows],
            budgets=budgets,
            row_stops=[row.stop for row in rows],
            stops=stops,
            marks=marks,
            pad_id=self._pad_id,
            eos_ids=self._eos_ids,
            compiled=compiled,
        )

    def _decode_eager(
        self, rows: list[_Row], prompts: list[list[int]], budgets: list[int], stops: StopStrings
    ) -> list[tuple[list[int], str]]:
        dev = self.device
        unique = sorted({row.prompt for row in rows})
        slot = {p: s for s, p in enumerate(unique)}
        tokens = [prompts[p] for p in unique]
        cache, cached = self._past(tokens)
        # Every row's new tokens end in the same column and its cached ones come right before them:
        # the row is contiguous, as if left-padded and prefilled whole.
        width = max(len(t) - c for t, c in zip(tokens, cached, strict=True))
        past = max(cached, default=0)
        ids = torch.full((len(unique), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(unique), past + width), dtype=torch.long)
        for s, (toks, c) in enumerate(zip(tokens, cached, strict=True)):
            ids[s, width - (len(toks) - c) :] = torch.tensor(toks[c:])
            mask[s, past + width - len(toks) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions[:, past:],
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        cache = returned_cache(out)
        if self._prefix is not None:
            for s, toks in enumerate(tokens):
                self._prefix.put(
                    toks, row_layers(cache, s, torch.arange(past + width - len(toks), past + width))
                )
        pick = torch.tensor([slot[row.prompt] for row in rows], device=dev)
        cache.batch_select_indices(pick)
        logits = out.logits[:, -1, :].float()[pick]
        mask = mask[pick]
        next_pos = positions[pick, -1] + 1

        n = len(rows)
        temps = torch.tensor([row.temperature for row in rows], device=dev)
        top_ps = torch.tensor([row.top_p for row in rows], device=dev)
        seeds = torch.tensor([row.seed for row in rows], dtype=torch.int64, device=dev)
        generated: list[list[int]] = [[] for _ in range(n)]
        finish = ["length"] * n
        active = list(range(n))  # batch slot -> row
        step = 0
        while active:
            tokens = sample_tokens(logits, temps, top_ps, seeds, step).tolist()
            keep = []
            for b, r in enumerate(active):
                tok = tokens[b]
                if tok in self._eos_ids:
                    finish[r] = "stop"
                    continue
                generated[r].append(tok)
                if rows[r].stop and stops.hit(generated[r], rows[r].stop):
                    finish[r] = "stop"
                elif len(generated[r]) < budgets[r]:
                    keep.append(b)
            step += 1
            if not keep:
                break
            if len(keep) < len(active):
                idx = torch.tensor(keep, device=dev)
                cache.batch_select_indices(idx)
                mask, next_pos = mask[idx], next_pos[idx]
                temps, top_ps, seeds = temps[idx], top_ps[idx], seeds[idx]
                active = [active[b] for b in keep]
            feed = torch.tensor([[generated[r][-1]] for r in active], device=dev)
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self.model(
                input_ids=feed,
                attention_mask=mask,
                position_ids=next_pos[:, None],
                use_cache=True,
                **{self._cache_kw: cache},
            )
            cache = returned_cache(out)
            logits = out.logits[:, -1, :].float()
            next_pos = next_pos + 1
        return list(zip(generated, finish, strict=True))

    def _past(self, tokens: list[list[int]]) -> tuple[Any, list[int]]:
        """The cache a batch of prompts starts from, and how many of each prompt's tokens it holds:
        each prompt's longest cached prefix, shortened so that every row has as many new tokens as
        the row with the most (at least the last token is computed, for its logits); ``None``
        without a prefix cache (the model makes its own)."""
        if self._prefix is None:
            return None, [0] * len(tokens)
        hits = [self._prefix.longest(t, len(t) - 1) for t in tokens]
        width = max(len(t) - (hit.length if hit else 0) for t, hit in zip(tokens, hits, strict=True))
        cached = [
            len(t) - width if hit and len(t) - width >= MIN_REUSE else 0
            for t, hit in zip(tokens, hits, strict=True)
        ]
        return past_batch(hits, cached), cached


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


def _load(source: str, *, revision: str | None, gguf_file: str | None, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load model and tokenizer; a missing model is a one-line :class:`ModelNotFoundError`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    extra: dict[str, Any] = {"revision": revision} if revision else {}
    if gguf_file:
        extra["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="sdpa", **extra)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"cannot load Hugging Face model {source!r} ({first[:160]}); give a local folder, a model "
            "already in the Hugging Face cache, or a preset (see `anthology models list`)"
        ) from exc
    return model, tokenizer


def save_converted(model: Any, tokenizer: Any, target: Path, metadata: dict[str, Any]) -> None:
    """Write a loaded model as safetensors plus tokenizer into ``target`` (atomically, via a temporary
    folder renamed into place) so later loads skip GGUF conversion."""
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    # The weights are already dequantised: drop the GGUF "quantizer" so they save as plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "anthology-model.json").write_text(json.dumps(metadata, indent=2))
    try:
        tmp.rename(target)
    except OSError:
        # Another process finished the same conversion first; keep theirs.
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
