"""A persistent response cache and a caching wrapper around any :class:`LanguageModel`.

Storage is one SQLite file (WAL journal, ``synchronous=NORMAL``, a busy timeout) that several
processes can share. Each row holds one *unit* of work: one sample of a :class:`GenerateRequest`
(sample index ``k`` of a request is its own row, so asking for ``n=5`` after ``n=3`` only computes
samples 3 and 4) or one :class:`ScoreRequest`.

A row's key is ``"v1:" + sha256(canonical JSON)`` of everything that changes the answer: the model
identity (backend, model, revision, dtype...), the request kind, the full prompt, the sampling
parameters (temperature, top_p, max_tokens, stop), the seed and the sample index for generation;
the context and the options for scoring. Rows store only that identity, the request and the
response; identities whose keys look like secrets (``api_key``, ``token``...) are refused.

Note that an unseeded sample is cached like a seeded one: sample ``k`` of an unseeded request is
drawn once and then served from the cache. Use a different seed (or no cache) for fresh draws.

Schema changes are named migrations (see :data:`MIGRATIONS`), each applied once per file and
recorded in the ``_migrations`` table.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from anthology.errors import BackendError
from anthology.models.base import (
    Capabilities,
    GenerateRequest,
    GenerateResult,
    LanguageModel,
    Prompt,
    Sample,
    ScoreRequest,
    ScoreResult,
    check_requests,
)

__all__ = [
    "MIGRATIONS",
    "CacheRow",
    "CacheStats",
    "CachedModel",
    "ResponseCache",
    "canonical_json",
    "check_no_secrets",
    "default_cache_path",
    "generate_key",
    "score_key",
]

Kind = Literal["generate", "score"]

KEY_VERSION = "v1"
_PROMPT_FIELDS = frozenset({"prompt", "context"})  # request fields kept once in the prompts table
IN_CHUNK = 500  # keys per "IN (...)" lookup, well under SQLite's variable limit
BUSY_TIMEOUT_MS = 30_000


# --------------------------------------------------------------------------------------------
# Paths, canonical JSON, keys


def default_cache_path() -> Path:
    """The default cache file: ``platformdirs.user_cache_dir("anthology") / "responses.sqlite"``.

    Set the environment variable ``ANTHOLOGY_CACHE`` to use another file (``~`` is expanded; when
    it names an existing directory, ``responses.sqlite`` inside that directory is used).
    """
    override = os.environ.get("ANTHOLOGY_CACHE")
    if override:
        path = Path(override).expanduser()
        return path / "responses.sqlite" if path.is_dir() else path
    import platformdirs

    return Path(platformdirs.user_cache_dir("anthology")) / "responses.sqlite"


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 text kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _hash_key(payload: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
    return f"{KEY_VERSION}:{digest}"


def _prompt_json(prompt: Prompt) -> str | list[dict[str, str]]:
    if isinstance(prompt, str):
        return prompt
    return [{str(k): str(v) for k, v in m.items()} for m in prompt]


def _generate_unit(request: GenerateRequest, sample_index: int) -> dict[str, Any]:
    """The request part of one generation unit (everything but the model)."""
    return {
        "prompt": _prompt_json(request.prompt),
        "temperature": float(request.temperature),
        "top_p": float(request.top_p),
        "max_tokens": int(request.max_tokens),
        "stop": list(request.stop),
        "seed": request.seed,
        "sample": int(sample_index),
    }


def _score_unit(request: ScoreRequest) -> dict[str, Any]:
    return {"context": _prompt_json(request.context), "options": list(request.options)}


def generate_key(identity: Mapping[str, Any], request: GenerateRequest, sample_index: int) -> str:
    """The cache key of sample ``sample_index`` of ``request`` on the model ``identity``."""
    unit = _generate_unit(request, sample_index)
    return _hash_key({"kind": "generate", "model": dict(identity), **unit})


def score_key(identity: Mapping[str, Any], request: ScoreRequest) -> str:
    """The cache key of ``request`` scored by the model ``identity``."""
    return _hash_key({"kind": "score", "model": dict(identity), **_score_unit(request)})


# --------------------------------------------------------------------------------------------
# Secret guard

_SECRET_WORDS = ("apikey", "password", "passwd", "secret", "authorization", "credential")
_SECRET_SEGMENTS = {"token", "auth", "bearer", "key"}


def _looks_secret(name: str) -> bool:
    lowered = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()  # apiToken -> api_token
    squashed = re.sub(r"[^a-z0-9]", "", lowered)
    if any(word in squashed for word in _SECRET_WORDS):
        return True
    # "hf_token", "access-token", "auth" are secrets; "tokenizer", "max_tokens" are not.
    segments = set(re.split(r"[^a-z0-9]+", lowered))
    # A bare "key" segment is a secret only next to "api"/"access"/"private"/"secret".
    if "key" in segments and not segments & {"api", "access", "private", "secret"}:
        segments.discard("key")
    return bool(segments & _SECRET_SEGMENTS)


def check_no_secrets(identity: Any, *, _path: str = "identity") -> None:
    """Raise ``ValueError`` when ``identity`` (recursively) has a key whose name looks like a
    secret (``api_key``, ``token``, ``password``, ``authorization``, ``secret``...). Identities are
    written to the cache file in clear text, so they must never carry credentials."""
    if isinstance(identity, Mapping):
        for name, value in identity.items():
            where = f"{_path}.{name}"
            if _looks_secret(str(name)):
                raise ValueError(
                    f"refusing to cache a model identity with a secret-looking field {where!r}; "
                    "keep credentials out of LanguageModel.identity"
                )
            check_no_secrets(value, _path=where)
    elif isinstance(identity, list | tuple):
        for i, value in enumerate(identity):
            check_no_secrets(value, _path=f"{_path}[{i}]")


# --------------------------------------------------------------------------------------------
# Migrations

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []
"""Named schema migrations, applied in order, each once per cache file."""


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration, named after the function. Never rename or reorder
    a released migration; add a new one instead."""
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE responses (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('generate', 'score')),
            model TEXT NOT NULL,
            request TEXT NOT NULL,
            response TEXT NOT NULL,
            created_at REAL NOT NULL,
            duration_s REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER
        )
        """
    )
    db.execute("CREATE INDEX responses_kind ON responses (kind)")


@migration
def m002_prompts(db: sqlite3.Connection) -> None:
    """Prompts stored once: a backstory asked 8 questions x 40 samples is one prompts row, not 320
    copies inside ``responses.request`` (which keeps its ``prompt_sha256``)."""
    db.execute("CREATE TABLE prompts (sha256 TEXT PRIMARY KEY, prompt TEXT NOT NULL)")


def _apply_migrations(db: sqlite3.Connection, migrations: Sequence[tuple[str, Migration]]) -> None:
    """Apply the migrations not yet recorded in ``_migrations``. Each runs in its own immediate
    transaction, so two processes opening a new file at once do not both apply it."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    for name, fn in migrations:
        db.execute("BEGIN IMMEDIATE")
        try:
            done = db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone()
            if not done:
                fn(db)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


# --------------------------------------------------------------------------------------------
# The cache


@dataclass(frozen=True)
class CacheRow:
    """One row to store. ``model`` is the model identity, ``request`` the request unit (without
    the model), ``response`` the answer; all three are stored as JSON."""

    key: str
    kind: Kind
    model: Mapping[str, Any]
    request: Mapping[str, Any]
    response: Mapping[str, Any]
    duration_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ResponseCache:
    """An SQLite response cache that several processes can share.

    ``get_many`` returns the stored response JSON (decoded) of the keys present; ``put_many``
    stores rows in one transaction, so a killed process loses at most the batch in flight.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path) if self.path is not None else ":memory:",
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,
        )
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            _apply_migrations(self._db, MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    # -- reading

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The decoded response JSON of every key that is in the cache."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(unique), IN_CHUNK):
                part = unique[start : start + IN_CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", part)
                for key, response in rows:
                    found[key] = json.loads(response)
        return found

    def stats(self) -> dict[str, int]:
        """Row counts by kind (``generate``, ``score``) and in ``total``."""
        with self._lock:
            rows = self._db.execute("SELECT kind, COUNT(*) FROM responses GROUP BY kind").fetchall()
        counts = {"generate": 0, "score": 0}
        counts.update({kind: n for kind, n in rows})
        counts["total"] = sum(n for _, n in rows)
        return counts

    # -- writing

    def put_many(self, rows: Iterable[CacheRow]) -> int:
        """Store ``rows`` in one transaction (committed at the end). A key already present keeps
        its first answer. Returns the number of rows given."""
        now = time.time()
        checked: set[str] = set()
        values = []
        prompts: dict[str, str] = {}
        for row in rows:
            if row.kind not in ("generate", "score"):
                raise ValueError(f"unknown cache row kind {row.kind!r}")
            model_json = canonical_json(dict(row.model))
            if model_json not in checked:
                check_no_secrets(row.model)
                checked.add(model_json)
            request = dict(row.request)
            for field_name in _PROMPT_FIELDS & request.keys():
                text = canonical_json(request.pop(field_name))
                sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
                prompts[sha] = text
                request[f"{field_name}_sha256"] = sha
            values.append(
                (
                    row.key,
                    row.kind,
                    model_json,
                    canonical_json(request),
                    canonical_json(dict(row.response)),
                    now,
                    row.duration_s,
                    row.prompt_tokens,
                    row.completion_tokens,
                )
            )
        if not values:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO prompts (sha256, prompt) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING",
                    list(prompts.items()),
                )
                self._db.executemany(
                    "INSERT INTO responses (key, kind, model, request, response, created_at, "
                    "duration_s, prompt_tokens, completion_tokens) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                    values,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(values)

    def request(self, key: str) -> dict[str, Any] | None:
        """The stored request of ``key`` with its prompt (or context) restored, for provenance."""
        with self._lock:
            row = self._db.execute("SELECT request FROM responses WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            request = json.loads(row[0])
            for field_name in _PROMPT_FIELDS:
                sha = request.pop(f"{field_name}_sha256", None)
                if sha is not None:
                    text = self._db.execute("SELECT prompt FROM prompts WHERE sha256 = ?", (sha,)).fetchone()
                    request[field_name] = json.loads(text[0])
        return request

    # -- lifetime

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path) if self.path else ':memory:'!r})"


# --------------------------------------------------------------------------------------------
# The caching wrapper


@dataclass
class CacheStats:
    """Counters of a :class:`CachedModel`. ``hits`` are units answered without the backend (from
    the cache, or a duplicate of another unit in the same batch), ``misses`` units sent to the
    backend; tokens and seconds count only the backend's work."""

    hits: int = 0
    misses: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0

    def reset(self) -> None:
        for name, value in CacheStats().__dict__.items():
            setattr(self, name, value)


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

    def close(self) -> None:
        self.model.close()

    def _description(self, kind: Kind) -> str | None:
        if not self.progress:
            return None
        return self.progress if isinstance(self.progress, str) else kind

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
            assert self.cache is not None
            for key, resp in self.cache.get_many(k for ks in keys for k in ks).items():
                found[key] = (_sample_from_json(resp), int(resp.get("prompt_tokens", 0)))

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
        self.stats.hits += total_units - len(scheduled)
        self.stats.misses += len(scheduled)

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

    def _generate_chunk(
        self,
        chunk: list[tuple[int, GenerateRequest]],
        requests: list[GenerateRequest],
        identity: dict[str, Any],
        found: dict[Any, tuple[Sample, int]],
        uids: list[list[Any]],
    ) -> None:
        subs = [sub for _, sub in chunk]
        began = time.perf_counter()
        results = self.model.generate(subs)
        elapsed = time.perf_counter() - began
        self.stats.model_calls += 1
        self.stats.model_seconds += elapsed
        if not isinstance(results, Sequence) or len(results) != len(subs):
            got = len(results) if isinstance(results, Sequence) else type(results).__name__
            raise BackendError(f"the backend returned {got} results for {len(subs)} requests")
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
                            request=_generate_unit(sub, index),
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
            for key, resp in self.cache.get_many(keys).items():
                found[key] = _score_from_json(resp)

        todo: dict[str, ScoreRequest] = {}  # identical requests are scored once
        for key, r in zip(keys, requests, strict=True):
            if key not in found and key not in todo:
                todo[key] = r
        self.stats.hits += len(requests) - len(todo)
        self.stats.misses += len(todo)

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
        began = time.perf_counter()
        results = self.model.score(subs)
        elapsed = time.perf_counter() - began
        self.stats.model_calls += 1
        self.stats.model_seconds += elapsed
        if not isinstance(results, Sequence) or len(results) != len(subs):
            got = len(results) if isinstance(results, Sequence) else type(results).__name__
            raise BackendError(f"the backend returned {got} results for {len(subs)} requests")
        per_unit = elapsed / len(subs)
        rows = []
        for (key, request), result in zip(chunk, results, strict=True):
            if not isinstance(result, ScoreResult) or len(result.logprobs) != len(request.options):
                raise BackendError(f"the backend returned {result!r} for {len(request.options)} options")
            self.stats.prompt_tokens += int(result.prompt_tokens)
            found[key] = result
            if self.cache is not None:
                rows.append(
                    CacheRow(
                        key=key,
                        kind="score",
                        model=identity,
                        request=_score_unit(request),
                        response={
                            "logprobs": [float(x) for x in result.logprobs],
                            "coverage": float(result.coverage),
                            "imputed": [bool(x) for x in result.imputed],
                            "prompt_tokens": int(result.prompt_tokens),
                        },
                        duration_s=per_unit,
                        prompt_tokens=int(result.prompt_tokens),
                        completion_tokens=0,
                    )
                )
        if self.cache is not None:
            self.cache.put_many(rows)


def _replace_samples(request: GenerateRequest, *, n: int, first_sample: int) -> GenerateRequest:
    return replace(request, n=n, first_sample=first_sample)


def _sample_from_json(resp: Mapping[str, Any]) -> Sample:
    return Sample(
        text=str(resp["text"]),
        finish_reason=resp["finish_reason"],
        completion_tokens=int(resp["completion_tokens"]),
    )


def _score_from_json(resp: Mapping[str, Any]) -> ScoreResult:
    return ScoreResult(
        logprobs=tuple(float(x) for x in resp["logprobs"]),
        coverage=float(resp["coverage"]),
        imputed=tuple(bool(x) for x in resp["imputed"]),
        prompt_tokens=int(resp.get("prompt_tokens", 0)),
    )
