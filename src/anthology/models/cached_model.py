"""The wrapper every stage runs its model through, with or without a response cache.

:class:`CachedModel` answers what an optional :class:`~anthology.models.response_cache.ResponseCache`
already holds and sends the rest to the model in chunks, storing each chunk as soon as it is done,
so a killed run keeps its finished work; it counts hits, misses, tokens and seconds
(:class:`CacheStats`) and can show a progress bar.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from anthology.errors import BackendError
from anthology.models.base import (
    Capabilities,
    GenerateRequest,
    GenerateResult,
    LanguageModel,
    Sample,
    ScoreRequest,
    ScoreResult,
    check_requests,
)
from anthology.models.response_cache import (
    CacheRow,
    Kind,
    ResponseCache,
    check_no_secrets,
    generate_key,
    generate_unit,
    score_key,
    score_unit,
)

__all__ = ["CacheStats", "CachedModel", "describe_calls"]


@dataclass
class CacheStats:
    """Counters of a :class:`CachedModel`. ``hits`` are units answered by rows found in the cache,
    ``duplicates`` units that repeat another unit of the same batch (answered by it), ``misses`` units
    sent to the backend, ``undecodable`` cache rows that could not be decoded (computed again, among
    the misses); tokens and seconds count only the backend's work."""

    hits: int = 0
    duplicates: int = 0
    misses: int = 0
    undecodable: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0

    def reset(self) -> None:
        for name, value in CacheStats().__dict__.items():
            setattr(self, name, value)

    def snapshot(self) -> dict[str, int]:
        """The counters a stage reports, as the manifest names them."""
        return {
            "calls": self.model_calls,
            "cache_hits": self.hits,
            "duplicates": self.duplicates,
            "computed": self.misses,
            "undecodable": self.undecodable,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """The counters' growth since ``before`` (a :meth:`snapshot`)."""
        return {key: value - before[key] for key, value in self.snapshot().items()}

    def count(self, total: int, hits: int, computed: int) -> None:
        """Count a batch of ``total`` units: ``hits`` from the cache, ``computed`` by the backend, the
        rest duplicates within the batch."""
        self.hits += hits
        self.misses += computed
        self.duplicates += total - hits - computed


def describe_calls(calls: Mapping[str, int]) -> str:
    """A stage's model calls in words (a :meth:`CacheStats.since` dict), for the line after it."""
    line = (
        f"{calls['calls']} model calls, {calls['cache_hits']} cache hits, "
        f"{calls['duplicates']} duplicates within the batch"
    )
    if calls.get("undecodable"):
        line += f", {calls['undecodable']} undecodable cache rows computed again"
    return (
        f"{line}; {calls.get('prompt_tokens', 0):,} prompt and "
        f"{calls.get('completion_tokens', 0):,} completion tokens"
    )


@dataclass
class _Progress:
    """A rich progress bar on stderr, or nothing."""

    description: str | None
    total: int
    _bar: Any = field(default=None, init=False)
    _task: Any = field(default=None, init=False)

    def __enter__(self) -> _Progress:
        if self.description is None:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self._bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self._bar.__enter__()
        self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def _runs(indices: Sequence[int], limit: int) -> Iterator[tuple[int, int]]:
    """Split sorted sample indices into contiguous runs ``(start, length)`` of at most ``limit``."""
    i = 0
    while i < len(indices):
        start = indices[i]
        length = 1
        while i + length < len(indices) and indices[i + length] == start + length and length < limit:
            length += 1
        yield start, length
        i += length


class CachedModel:
    """Wrap ``model`` so that answers are looked up in ``cache`` first and the rest are computed
    in chunks of about ``chunk_size`` units, each chunk stored as soon as it is done (a killed run
    keeps its finished chunks). ``cache=None`` turns caching off but keeps chunking, progress and
    counters. ``progress`` shows a progress bar on stderr (its text when a string).

    The wrapper is itself a :class:`LanguageModel`: ``identity`` and ``capabilities`` are the
    wrapped model's. ``close()`` closes the wrapped model; the cache belongs to the caller.
    """

    def __init__(
        self,
        model: LanguageModel,
        cache: ResponseCache | None,
        *,
        chunk_size: int = 256,
        progress: bool | str = False,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.model = model
        self.cache = cache
        self.chunk_size = chunk_size
        self.progress = progress
        self.stats = CacheStats()
        if cache is not None:
            check_no_secrets(model.identity)

    @property
    def identity(self) -> dict[str, Any]:
        return self.model.identity

    @property
    def capabilities(self) -> Capabilities:
        return self.model.capabilities

    @property
    def conversation_tokens(self) -> int | None:
        """The wrapped model's, where it says (the transformers backend's prefix cache, the vLLM
        engine's KV cache)."""
        return getattr(self.model, "conversation_tokens", None)

    def close(self) -> None:
        self.model.close()

    def _description(self, kind: Kind) -> str | None:
        if not self.progress:
            return None
        return self.progress if isinstance(self.progress, str) else kind

    def _lookup(self, keys: Sequence[str], decode: Callable[[str, Any], Any]) -> dict[str, Any]:
        """The cached answers of ``keys``, decoded by ``decode(key, response)``. A row it refuses
        (``ValueError``: not JSON, a missing field, a number out of range) is a miss: it is counted,
        deleted and computed again."""
        assert self.cache is not None
        found: dict[str, Any] = {}
        undecodable = []
        for key, resp in self.cache.get_many(keys).items():
            try:
                found[key] = decode(key, resp)
            except ValueError:
                undecodable.append(key)
        if undecodable:
            self.stats.undecodable += len(undecodable)
            self.cache.forget(undecodable)
        return found

    # -- generate

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        requests = list(requests)
        check_requests(self.model, "generate", requests)
        if not requests:
            return []
        identity = self.model.identity
        caching = self.cache is not None

        # unit id of every slot; with caching on, equal units share one id (and one answer)
        keys = [[generate_key(identity, r, r.first_sample + j) for j in range(r.n)] for r in requests]
        uids: list[list[Any]] = keys if caching else [[(i, k) for k in ks] for i, ks in enumerate(keys)]
        found: dict[Any, tuple[Sample, int]] = {}
        if caching:
            every = [k for ks in keys for k in ks]
            found.update(self._lookup(every, lambda key, resp: _sample_from_json(resp)))

        # the missing samples of each request, each unit scheduled once
        scheduled: set[Any] = set()
        todo: list[tuple[int, list[int]]] = []  # (request index, missing sample indices)
        for i, r in enumerate(requests):
            missing = []
            for j, uid in enumerate(uids[i]):
                if uid not in found and uid not in scheduled:
                    scheduled.add(uid)
                    missing.append(r.first_sample + j)
            if missing:
                todo.append((i, missing))

        total_units = sum(r.n for r in requests)
        self.stats.count(total_units, sum(uid in found for ids in uids for uid in ids), len(scheduled))

        # Chunk boundaries are laid over all units, cached or not, and only the missing ones of each
        # chunk are sent: a run resumed after a kill sends the backend exactly the batches the
        # uninterrupted run did, so batch-dependent float noise cannot change a sampled token.
        missing_of = dict(todo)
        chunks: list[list[tuple[int, GenerateRequest]]] = []
        current: list[tuple[int, GenerateRequest]] = []
        size = 0
        for i, r in enumerate(requests):
            for start, length in _runs(range(r.first_sample, r.first_sample + r.n), self.chunk_size):
                if current and size + length > self.chunk_size:
                    chunks.append(current)
                    current, size = [], 0
                wanted = [k for k in missing_of.get(i, ()) if start <= k < start + length]
                for sub_start, sub_length in _runs(wanted, self.chunk_size):
                    current.append((i, _replace_samples(requests[i], n=sub_length, first_sample=sub_start)))
                size += length
        chunks.append(current)
        chunks = [chunk for chunk in chunks if chunk]

        with _Progress(self._description("generate"), total_units) as bar:
            bar.advance(total_units - len(scheduled))
            for chunk in chunks:
                self._generate_chunk(chunk, requests, identity, found, uids)
                bar.advance(sum(sub.n for _, sub in chunk))

        results = []
        for i in range(len(requests)):
            if any(uid not in found for uid in uids[i]):
                raise BackendError(f"internal error: request {i} is missing samples")
            got = [found[uid] for uid in uids[i]]
            samples = tuple(sample for sample, _ in got)
            results.append(GenerateResult(samples=samples, prompt_tokens=got[0][1]))
        return results

    def _call(self, method: Callable[[Any], Any], subs: list[Any]) -> tuple[Sequence[Any], float]:
        """One backend call, counted and timed; a result list of the wrong length is refused."""
        began = time.perf_counter()
        results = method(subs)
        elapsed = time.perf_counter() - began
        self.stats.model_calls += 1
        self.stats.model_seconds += elapsed
        if not isinstance(results, Sequence) or len(results) != len(subs):
            got = len(results) if isinstance(results, Sequence) else type(results).__name__
            raise BackendError(f"the backend returned {got} results for {len(subs)} requests")
        return results, elapsed

    def _generate_chunk(
        self,
        chunk: list[tuple[int, GenerateRequest]],
        requests: list[GenerateRequest],
        identity: dict[str, Any],
        found: dict[Any, tuple[Sample, int]],
        uids: list[list[Any]],
    ) -> None:
        subs = [sub for _, sub in chunk]
        results, elapsed = self._call(self.model.generate, subs)
        n_units = sum(sub.n for sub in subs)
        per_unit = elapsed / n_units
        rows = []
        for (i, sub), result in zip(chunk, results, strict=True):
            if not isinstance(result, GenerateResult) or len(result.samples) != sub.n:
                got = len(result.samples) if isinstance(result, GenerateResult) else result
                raise BackendError(f"the backend returned {got!r} samples where {sub.n} were asked")
            self.stats.prompt_tokens += int(result.prompt_tokens)
            for j, sample in enumerate(result.samples):
                if not isinstance(sample, Sample) or not isinstance(sample.text, str):
                    raise BackendError(f"the backend returned an invalid sample {sample!r}")
                self.stats.completion_tokens += int(sample.completion_tokens)
                index = sub.first_sample + j
                slot = index - requests[i].first_sample
                found[uids[i][slot]] = (sample, int(result.prompt_tokens))
                if self.cache is not None:
                    rows.append(
                        CacheRow(
                            key=uids[i][slot],
                            kind="generate",
                            model=identity,
                            request=generate_unit(sub, index),
                            response={
                                "text": sample.text,
                                "finish_reason": sample.finish_reason,
                                "completion_tokens": int(sample.completion_tokens),
                                "prompt_tokens": int(result.prompt_tokens),
                            },
                            duration_s=per_unit,
                            prompt_tokens=int(result.prompt_tokens),
                            completion_tokens=int(sample.completion_tokens),
                        )
                    )
        if self.cache is not None:
            self.cache.put_many(rows)

    # -- score

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        requests = list(requests)
        check_requests(self.model, "score", requests)
        if not requests:
            return []
        identity = self.model.identity
        keys = [score_key(identity, r) for r in requests]
        found: dict[str, ScoreResult] = {}
        if self.cache is not None:
            by_key = dict(zip(keys, requests, strict=True))
            found.update(self._lookup(keys, lambda key, resp: _score_from_json(resp, by_key[key])))

        todo: dict[str, ScoreRequest] = {}  # identical requests are scored once
        for key, r in zip(keys, requests, strict=True):
            if key not in found and key not in todo:
                todo[key] = r
        self.stats.count(len(requests), sum(key in found for key in keys), len(todo))

        # As for generation, chunks are laid over all distinct requests so a resumed run scores
        # the same batches (and shares the same prefixes) as an uninterrupted one.
        distinct = list(dict.fromkeys(keys))
        with _Progress(self._description("score"), len(requests)) as bar:
            bar.advance(sum(1 for k in keys if k in found))  # cache hits
            for start in range(0, len(distinct), self.chunk_size):
                chunk = [(k, todo[k]) for k in distinct[start : start + self.chunk_size] if k in todo]
                if not chunk:
                    continue
                self._score_chunk(chunk, identity, found)
                done = {k for k, _ in chunk}  # duplicates complete with their original
                bar.advance(sum(1 for k in keys if k in done))

        results = []
        for i, key in enumerate(keys):
            if key not in found:
                raise BackendError(f"internal error: request {i} has no score after scoring")
            results.append(found[key])
        return results

    def _score_chunk(
        self,
        chunk: list[tuple[str, ScoreRequest]],
        identity: dict[str, Any],
        found: dict[str, ScoreResult],
    ) -> None:
        subs = [r for _, r in chunk]
        results, elapsed = self._call(self.model.score, subs)
        per_unit = elapsed / len(subs)
        rows = []
        unusable: BackendError | None = None
        for (key, request), result in zip(chunk, results, strict=True):
            if not isinstance(result, ScoreResult) or len(result.logprobs) != len(request.options):
                raise BackendError(f"the backend returned {result!r} for {len(request.options)} options")
            response = {
                "logprobs": [float(x) for x in result.logprobs],
                "coverage": float(result.coverage),
                "imputed": [bool(x) for x in result.imputed],
                "prompt_tokens": int(result.prompt_tokens),
                "completion_tokens": int(result.completion_tokens),
            }
            try:  # every backend's scores pass the checks a cached row does (a float16 NaN, say)
                _score_from_json(response, request)
            except ValueError as exc:
                unusable = unusable or BackendError(
                    f"model {identity.get('model', '?')!r} returned unusable scores "
                    f"({str(exc).removeprefix('cached ')}) for options {list(request.options)!r}; "
                    "they were not stored: a local model in float16 may overflow, try --dtype float32"
                )
                continue
            self.stats.prompt_tokens += int(result.prompt_tokens)
            self.stats.completion_tokens += int(result.completion_tokens)
            found[key] = result
            if self.cache is not None:
                rows.append(
                    CacheRow(
                        key=key,
                        kind="score",
                        model=identity,
                        request=score_unit(request),
                        response=response,
                        duration_s=per_unit,
                        prompt_tokens=int(result.prompt_tokens),
                        completion_tokens=int(result.completion_tokens),
                    )
                )
        if self.cache is not None:
            self.cache.put_many(rows)
        if unusable is not None:
            raise unusable


def _replace_samples(request: GenerateRequest, *, n: int, first_sample: int) -> GenerateRequest:
    return replace(request, n=n, first_sample=first_sample)


def _field(resp: Any, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``resp[name]``, which must be of ``kind`` (``default`` where it may be missing)."""
    if not isinstance(resp, Mapping):
        raise ValueError(f"a cached response is {type(resp).__name__}, not an object")
    value = resp.get(name, default)
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ValueError(f"cached {name!r} is a boolean")
    if not isinstance(value, kind):
        raise ValueError(f"cached {name!r} is {value!r}")
    return value


def _count(resp: Any, name: str) -> int:
    value = _field(resp, name, int, 0)
    if value < 0:
        raise ValueError(f"cached {name!r} is negative")
    return value


def _sample_from_json(resp: Any) -> tuple[Sample, int]:
    """A cached generation unit (the sample and its prompt's token count); ``ValueError`` if damaged."""
    sample = Sample(
        text=_field(resp, "text", str),
        finish_reason=_field(resp, "finish_reason", (str, type(None))),
        completion_tokens=_count(resp, "completion_tokens"),
    )
    return sample, _count(resp, "prompt_tokens")


#: How far above 0 a stored log-probability may be from rounding.
_LOGPROB_SLACK = 1e-6


def _score_from_json(resp: Any, request: ScoreRequest) -> ScoreResult:
    """A cached scoring unit for ``request``; ``ValueError`` if damaged (a value of the wrong type or
    count, a log-probability not finite or above 0, a coverage outside [0, 1])."""
    n = len(request.options)
    logprobs = _field(resp, "logprobs", list)
    imputed = _field(resp, "imputed", list)
    coverage = _field(resp, "coverage", (int, float))
    if len(logprobs) != n or len(imputed) != n:
        raise ValueError(f"cached scores hold {len(logprobs)} values for {n} options")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in logprobs):
        raise ValueError("cached log-probabilities are not numbers")
    if not all(math.isfinite(x) and x <= _LOGPROB_SLACK for x in logprobs):
        raise ValueError("cached log-probabilities are not finite or above 0")
    if not all(isinstance(x, bool) for x in imputed):
        raise ValueError("cached imputed flags are not booleans")
    if not (math.isfinite(coverage) and -_LOGPROB_SLACK <= coverage <= 1 + _LOGPROB_SLACK):
        raise ValueError(f"cached coverage is {coverage!r}")
    return ScoreResult(
        logprobs=tuple(float(x) for x in logprobs),
        coverage=float(coverage),
        imputed=tuple(imputed),
        prompt_tokens=_count(resp, "prompt_tokens"),
        completion_tokens=_count(resp, "completion_tokens"),
    )
