"""The persistent response cache: cache keys, the SQLite store and its schema migrations.

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

A cache file that SQLite finds damaged ("file is not a database", "database disk image is malformed")
is set aside (renamed ``<name>.damaged-<time>``, never deleted) with a warning, and a fresh one takes
its place; a full, read-only or forbidden disk raises :class:`~anthology.errors.StorageError` naming
the file, and a transaction cut short by it is rolled back (so no half-stored batch).

Schema changes are named migrations (see :data:`MIGRATIONS`), each applied once per file and
recorded in the ``_migrations`` table. Reading and writing through the cache while running a model
is :class:`~anthology.models.cached_model.CachedModel`'s job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from anthology.errors import StorageError
from anthology.files import disk_problem, set_aside, warn
from anthology.models.base import GenerateRequest, Prompt, ScoreRequest

__all__ = [
    "MIGRATIONS",
    "CacheRow",
    "ResponseCache",
    "canonical_json",
    "check_no_secrets",
    "default_cache_path",
    "generate_key",
    "generate_unit",
    "score_key",
    "score_unit",
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


def generate_unit(request: GenerateRequest, sample_index: int) -> dict[str, Any]:
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


def score_unit(request: ScoreRequest) -> dict[str, Any]:
    """The request part of one scoring unit (everything but the model)."""
    return {"context": _prompt_json(request.context), "options": list(request.options)}


def generate_key(identity: Mapping[str, Any], request: GenerateRequest, sample_index: int) -> str:
    """The cache key of sample ``sample_index`` of ``request`` on the model ``identity``."""
    unit = generate_unit(request, sample_index)
    return _hash_key({"kind": "generate", "model": dict(identity), **unit})


def score_key(identity: Mapping[str, Any], request: ScoreRequest) -> str:
    """The cache key of ``request`` scored by the model ``identity``."""
    return _hash_key({"kind": "score", "model": dict(identity), **score_unit(request)})


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


@migration
def m003_response_sha256(db: sqlite3.Connection) -> None:
    """Each response's SHA-256, checked when it is read, so that a row changed on disk is not
    believed (rows stored before this migration have none and are checked by decoding alone)."""
    db.execute("ALTER TABLE responses ADD COLUMN response_sha256 TEXT")


def _apply_migrations(db: sqlite3.Connection, migrations: Sequence[tuple[str, Migration]]) -> None:
    """Apply the migrations not yet recorded in ``_migrations``. Each runs in its own immediate
    transaction, so two processes opening a new file at once do not both apply it."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    for name, fn in migrations:

        def apply(db: sqlite3.Connection, name: str = name, fn: Migration = fn) -> None:
            if not db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                fn(db)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))

        _transaction(db, apply)


def _transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], None]) -> None:
    """Run ``work`` in one immediate transaction. On any error it is rolled back unless SQLite already
    did (it does when the disk is full), and the first error is the one raised."""
    db.execute("BEGIN IMMEDIATE")
    try:
        work(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the error that stopped it is the one to report
                db.execute("ROLLBACK")
        raise


#: SQLite's names for a file that is not (or no longer) a readable database.
_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _is_damage(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorname", None) in _DAMAGED


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


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _decoded(text: Any, sha: str | None) -> Any:
    """A stored response decoded, ``None`` when it is not JSON or not the text whose SHA-256 was
    stored with it."""
    if not isinstance(text, str):
        return None
    try:
        if sha is not None and _sha256(text) != sha:
            return None
        return json.loads(text)
    except (ValueError, UnicodeEncodeError):  # UnicodeEncodeError: bytes that were not UTF-8
        return None


def _text(value: bytes) -> str:
    """SQLite text as ``str``; bytes that are not UTF-8 (a damaged row) are kept as surrogates rather
    than failing the whole query."""
    return value.decode("utf-8", "surrogateescape")


class ResponseCache:
    """An SQLite response cache that several processes can share.

    ``get_many`` returns the stored response JSON (decoded) of the keys present; ``put_many``
    stores rows in one transaction, so a killed process loses at most the batch in flight.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._db = self._guarded(self._open)

    def _open(self) -> sqlite3.Connection:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            str(self.path) if self.path is not None else ":memory:",
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,
        )
        db.text_factory = _text
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            _apply_migrations(db, MIGRATIONS)
        except BaseException:
            db.close()
            raise
        return db

    def _guarded(self, action: Callable[[], Any]) -> Any:
        """Run ``action``; a damaged file is set aside and ``action`` runs again on a fresh one, and a
        disk that refuses (full, read-only, forbidden) raises :class:`StorageError` naming the file."""
        try:
            try:
                return action()
            except sqlite3.DatabaseError as exc:
                if self.path is None or not _is_damage(exc):
                    raise
                self._set_aside(exc)
                return action()
        except (OSError, sqlite3.Error) as exc:
            line = disk_problem(exc, self.path)
            if line is None:
                raise
            raise StorageError(line) from exc

    def _set_aside(self, exc: sqlite3.DatabaseError) -> None:
        assert self.path is not None
        if self._db is not None:
            self._db.close()
        moved = set_aside(self.path)
        warn(
            f"response cache {self.path} is damaged ({exc}); set it aside as {moved.name} and started a "
            "fresh one (its answers are computed again)"
        )
        if self._db is not None:  # an open cache reopens; one being opened is opened by the retry
            self._db = self._open()

    def _query(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """``work(connection)`` under the lock, through :meth:`_guarded`."""
        with self._lock:
            return self._guarded(lambda: work(self._db))

    # -- reading

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The decoded response JSON of every key that is in the cache; ``None`` for a row whose
        response is not JSON or not what was stored (its SHA-256 differs): the caller treats it as
        damaged."""
        unique = list(dict.fromkeys(keys))

        def read(db: sqlite3.Connection) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for start in range(0, len(unique), IN_CHUNK):
                part = unique[start : start + IN_CHUNK]
                marks = ",".join("?" * len(part))
                query = f"SELECT key, response, response_sha256 FROM responses WHERE key IN ({marks})"
                for key, response, sha in db.execute(query, part):
                    found[key] = _decoded(response, sha)
            return found

        return self._query(read)

    def stats(self) -> dict[str, int]:
        """Row counts by kind (``generate``, ``score``) and in ``total``."""
        query = "SELECT kind, COUNT(*) FROM responses GROUP BY kind"
        rows = self._query(lambda db: db.execute(query).fetchall())
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
            response = canonical_json(dict(row.response))
            values.append(
                (
                    row.key,
                    row.kind,
                    model_json,
                    canonical_json(request),
                    response,
                    _sha256(response),
                    now,
                    row.duration_s,
                    row.prompt_tokens,
                    row.completion_tokens,
                )
            )
        if not values:
            return 0

        def store(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO prompts (sha256, prompt) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING",
                list(prompts.items()),
            )
            db.executemany(
                "INSERT INTO responses (key, kind, model, request, response, response_sha256, created_at, "
                "duration_s, prompt_tokens, completion_tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                values,
            )

        self._query(lambda db: _transaction(db, store))
        return len(values)

    def forget(self, keys: Iterable[str]) -> None:
        """Delete the rows of ``keys`` (rows that could not be decoded, before they are computed again)."""
        unique = list(dict.fromkeys(keys))

        def delete(db: sqlite3.Connection) -> None:
            for start in range(0, len(unique), IN_CHUNK):
                part = unique[start : start + IN_CHUNK]
                db.execute(f"DELETE FROM responses WHERE key IN ({','.join('?' * len(part))})", part)

        if unique:
            self._query(lambda db: _transaction(db, delete))

    def request(self, key: str) -> dict[str, Any] | None:
        """The stored request of ``key`` with its prompt (or context) restored, for provenance."""

        def read(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT request FROM responses WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            request = json.loads(row[0])
            for field_name in _PROMPT_FIELDS:
                sha = request.pop(f"{field_name}_sha256", None)
                if sha is not None:
                    text = db.execute("SELECT prompt FROM prompts WHERE sha256 = ?", (sha,)).fetchone()
                    request[field_name] = json.loads(text[0])
            return request

        return self._query(read)

    # -- lifetime

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path) if self.path else ':memory:'!r})"
