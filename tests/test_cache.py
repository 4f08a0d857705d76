"""Tests of the SQLite response cache and the caching wrapper.

The backend here is a small deterministic fake: the cache is the unit under test; the real
backends are tested elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from anthology.errors import BackendError, CapabilityError
from anthology.models import response_cache
from anthology.models.base import (
    Capabilities,
    GenerateRequest,
    GenerateResult,
    LanguageModel,
    Sample,
    ScoreRequest,
    ScoreResult,
    sample_seed,
)
from anthology.models.cached_model import CachedModel, CacheStats
from anthology.models.response_cache import (
    CacheRow,
    ResponseCache,
    canonical_json,
    check_no_secrets,
    default_cache_path,
    generate_key,
    score_key,
)

SRC = Path(__file__).resolve().parents[1] / "src"
SECRET = "sk-test-DO-NOT-STORE-4242"


class FakeModel:
    """A deterministic backend: texts derive from the prompt, the seed and the sample index."""

    def __init__(
        self,
        name: str = "fake-1",
        *,
        api_key: str = SECRET,
        delay: float = 0.0,
        extra_identity: dict[str, Any] | None = None,
        drop_sample: bool = False,
    ) -> None:
        self.name = name
        self.api_key = api_key  # not part of identity: must never reach the cache file
        self.delay = delay
        self.extra_identity = extra_identity or {}
        self.drop_sample = drop_sample
        self.calls = 0
        self.generate_calls: list[list[tuple[Any, int, int]]] = []  # (prompt, first_sample, n)
        self.score_calls: list[list[ScoreRequest]] = []
        self.closed = False

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "fake", "model": self.name, "revision": "r1", **self.extra_identity}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            completion=True, chat=True, logprobs=True, top_logprobs=None, max_context=None,
            seeded=True,
        )  # fmt: skip

    @property
    def units(self) -> int:
        return sum(n for call in self.generate_calls for _, _, n in call) + sum(
            len(call) for call in self.score_calls
        )

    def _text(self, r: GenerateRequest, k: int) -> str:
        seed = sample_seed(r.seed, k)
        raw = f"{self.name}|{r.prompt!r}|{r.temperature}|{r.top_p}|{r.stop}|{seed}|{k}"
        return f"s{k}-" + hashlib.sha256(raw.encode()).hexdigest()[:12]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.calls += 1
        self.generate_calls.append([(r.prompt, r.first_sample, r.n) for r in requests])
        if self.delay:
            time.sleep(self.delay)
        out = []
        for r in requests:
            samples = tuple(
                Sample(text=self._text(r, k), finish_reason="stop", completion_tokens=k + 1)
                for k in range(r.first_sample, r.first_sample + r.n)
            )
            if self.drop_sample:
                samples = samples[:-1]
            out.append(GenerateResult(samples=samples, prompt_tokens=len(str(r.prompt))))
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self.calls += 1
        self.score_calls.append(list(requests))
        out = []
        for r in requests:
            lps = tuple(
                -int(hashlib.sha256(f"{self.name}{r.context!r}{o}".encode()).hexdigest()[:4], 16) / 1000
                for o in r.options
            )
            out.append(ScoreResult(logprobs=lps, coverage=0.5, prompt_tokens=len(str(r.context))))
        return out

    def close(self) -> None:
        self.closed = True


def fresh(requests: Sequence[GenerateRequest], **kw: Any) -> list[GenerateResult]:
    """Reference answers computed without any cache."""
    return FakeModel(**kw).generate(requests)


@pytest.fixture
def db(tmp_path: Path):
    with ResponseCache(tmp_path / "cache" / "responses.sqlite") as c:
        yield c


# ---------------------------------------------------------------------------------------------
# keys


def test_keys_are_versioned_and_depend_on_everything_that_changes_the_answer():
    ident = FakeModel().identity
    base = GenerateRequest("Q: hi\nA:", n=1, temperature=0.7, seed=1, stop=("\n",))
    key = generate_key(ident, base, 0)
    assert key.startswith("v1:") and len(key) == 3 + 64
    assert key == generate_key(dict(reversed(list(ident.items()))), base, 0)  # order-insensitive
    assert key == generate_key(ident, replace(base, n=3), 0)  # n is not part of a unit
    variants = [
        generate_key(ident, base, 1),
        generate_key(ident, replace(base, temperature=0.8), 0),
        generate_key(ident, replace(base, top_p=0.9), 0),
        generate_key(ident, replace(base, max_tokens=17), 0),
        generate_key(ident, replace(base, stop=("\n\n",)), 0),
        generate_key(ident, replace(base, seed=2), 0),
        generate_key(ident, replace(base, seed=None), 0),
        generate_key(ident, replace(base, prompt="Q: hi\nA: "), 0),
        generate_key(ident, replace(base, prompt=({"role": "user", "content": "Q: hi\nA:"},)), 0),
        generate_key({**ident, "revision": "r2"}, base, 0),
        generate_key({**ident, "dtype": "bfloat16"}, base, 0),
    ]
    assert len({key, *variants}) == len(variants) + 1

    s = ScoreRequest("Q: x\nA:", (" A", " B"))
    skeys = {
        score_key(ident, s),
        score_key(ident, replace(s, options=(" B", " A"))),
        score_key(ident, replace(s, context="Q: y\nA:")),
        score_key({**ident, "model": "other"}, s),
    }
    assert len(skeys) == 4
    assert score_key(ident, s) not in {key, *variants}


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.3},
        {"seed": 99},
        {"stop": ("###",)},
        {"top_p": 0.5},
        {"max_tokens": 9},
    ],
)
def test_changed_sampling_parameters_miss(db, change):
    fake = FakeModel()
    model = CachedModel(fake, db)
    req = GenerateRequest("prompt", n=2, seed=1)
    model.generate([req])
    assert fake.units == 2
    model.generate([replace(req, **change)])
    assert fake.units == 4 and model.stats.misses == 4 and model.stats.hits == 0


def test_changed_model_identity_misses(db):
    req = GenerateRequest("prompt", n=2, seed=1)
    a, b = FakeModel("a"), FakeModel("a", extra_identity={"revision": "r2"})
    CachedModel(a, db).generate([req])
    CachedModel(b, db).generate([req])
    assert a.units == 2 and b.units == 2
    c = FakeModel("a")
    CachedModel(c, db).generate([req])
    assert c.calls == 0


# ---------------------------------------------------------------------------------------------
# generate


def test_generate_rerun_makes_no_backend_calls(db):
    reqs = [
        GenerateRequest("one", n=3, seed=5),
        GenerateRequest(({"role": "user", "content": "two"},), n=2, temperature=0.0),
        GenerateRequest("three", n=1, seed=None, stop=("\n",)),
    ]
    fake = FakeModel()
    model = CachedModel(fake, db, chunk_size=4)
    first = model.generate(reqs)
    assert first == fresh(reqs)
    assert model.stats.misses == 6 and model.stats.hits == 0 and fake.calls >= 2
    assert model.stats.model_calls == fake.calls
    assert model.stats.completion_tokens == sum(s.completion_tokens for r in first for s in r.samples)

    fake2 = FakeModel()
    again = CachedModel(fake2, db).generate(reqs)
    assert fake2.calls == 0
    assert again == first  # texts, finish reasons, token counts and prompt_tokens
    assert db.stats() == {"generate": 6, "score": 0, "total": 6}


def test_more_samples_only_requests_the_new_ones(db):
    fake = FakeModel()
    model = CachedModel(fake, db)
    three = model.generate([GenerateRequest("p", n=3, seed=11)])
    assert fake.generate_calls == [[("p", 0, 3)]]
    five = model.generate([GenerateRequest("p", n=5, seed=11)])
    assert fake.generate_calls[1] == [("p", 3, 2)]
    assert five[0].samples[:3] == three[0].samples
    assert five == fresh([GenerateRequest("p", n=5, seed=11)])
    assert model.stats.hits == 3 and model.stats.misses == 5


def test_missing_samples_become_contiguous_runs(db):
    fake = FakeModel()
    model = CachedModel(fake, db)
    model.generate([GenerateRequest("p", n=1, seed=1, first_sample=2)])
    model.generate([GenerateRequest("p", n=1, seed=1, first_sample=5)])
    fake.generate_calls.clear()
    result = model.generate([GenerateRequest("p", n=8, seed=1)])
    assert fake.generate_calls == [[("p", 0, 2), ("p", 3, 2), ("p", 6, 2)]]
    assert result == fresh([GenerateRequest("p", n=8, seed=1)])
    assert [s.text[:3] for s in result[0].samples] == [f"s{k}-" for k in range(8)]


def test_results_in_request_order_with_hits_and_misses(db):
    prompts = ["a", "b", "c", "d", "e"]
    reqs = [GenerateRequest(p, n=2, seed=3) for p in prompts]
    fake = FakeModel()
    model = CachedModel(fake, db, chunk_size=3)
    model.generate([reqs[1], reqs[3]])
    fake.generate_calls.clear()
    out = model.generate(reqs)
    assert out == fresh(reqs)
    sent = [prompt for call in fake.generate_calls for prompt, _, _ in call]
    assert sorted(set(sent)) == ["a", "c", "e"]
    assert all(sum(n for _, _, n in call) <= 3 for call in fake.generate_calls)

    sreqs = [ScoreRequest(p, (" A", " B", " C")) for p in prompts]
    model.score([sreqs[0], sreqs[4]])
    fake.score_calls.clear()
    scored = model.score(sreqs)
    assert scored == FakeModel().score(sreqs)
    assert [r.context for call in fake.score_calls for r in call] == ["b", "c", "d"]


def test_chunks_respect_chunk_size_and_cache_off_calls_every_time():
    fake = FakeModel()
    model = CachedModel(fake, None, chunk_size=3, progress="testing")
    reqs = [GenerateRequest("x", n=7, seed=1), GenerateRequest("y", n=2, seed=1)]
    out = model.generate(reqs)
    assert out == fresh(reqs)
    sizes = [sum(n for _, _, n in call) for call in fake.generate_calls]
    assert sizes == [3, 3, 3] and model.stats.model_calls == 3
    model.generate(reqs)
    assert fake.calls == 6 and model.stats.misses == 18 and model.stats.hits == 0
    model.score([ScoreRequest("c", (" A", " B"))] * 2)
    model.score([ScoreRequest("c", (" A", " B"))])
    assert len(fake.score_calls) == 2
    model.stats.reset()
    assert model.stats == CacheStats()


def test_cache_off_does_not_merge_identical_generate_requests():
    fake = FakeModel()
    CachedModel(fake, None).generate([GenerateRequest("x", n=1)] * 2)
    assert fake.units == 2


def test_duplicates_within_a_batch_are_computed_once(db):
    fake = FakeModel()
    model = CachedModel(fake, db, progress=True)
    req = GenerateRequest("dup", n=2, seed=4)
    out = model.generate([req, req, GenerateRequest("dup", n=3, seed=4)])
    assert fake.units == 3
    assert out[0] == out[1] and out[2].samples[:2] == out[0].samples
    assert model.stats.duplicates == 4 and model.stats.hits == 0 and model.stats.misses == 3

    s = ScoreRequest("ctx", (" yes", " no"))
    scored = model.score([s, s, ScoreRequest("other", (" yes", " no")), s])
    assert [len(c) for c in fake.score_calls] == [2]
    assert scored[0] == scored[1] == scored[3]


def test_score_rerun_makes_no_backend_calls(db):
    reqs = [ScoreRequest(f"Q{i}: ?\nA:", (" A", " B", " C")) for i in range(7)]
    reqs.append(ScoreRequest(({"role": "user", "content": "chat?"},), ("yes", "no")))
    fake = FakeModel()
    model = CachedModel(fake, db, chunk_size=3)
    first = model.score(reqs)
    assert len(fake.score_calls) == 3 and model.stats.misses == 8
    fake2 = FakeModel()
    again = CachedModel(fake2, db).score(reqs)
    assert fake2.calls == 0 and again == first
    assert all(r.prompt_tokens > 0 for r in again)
    assert db.stats()["score"] == 8
    # durations are split across the chunk's rows
    raw = sqlite3.connect(db.path)
    rows = raw.execute("SELECT duration_s, request FROM responses WHERE kind='score'").fetchall()
    raw.close()
    assert all(d is not None and d >= 0 for d, _ in rows)


def test_backend_returning_too_few_samples_is_an_error(db):
    model = CachedModel(FakeModel(drop_sample=True), db)
    with pytest.raises(BackendError):
        model.generate([GenerateRequest("p", n=3)])
    assert db.stats()["total"] == 0


def test_wrapper_is_a_language_model_and_checks_capabilities(db):
    fake = FakeModel()
    model = CachedModel(fake, db)
    assert isinstance(model, LanguageModel)
    assert model.identity == fake.identity and model.capabilities == fake.capabilities
    assert model.generate([]) == [] and model.score([]) == []

    class NoLogprobs(FakeModel):
        @property
        def capabilities(self) -> Capabilities:
            return replace(super().capabilities, logprobs=False)

    with pytest.raises(CapabilityError):
        CachedModel(NoLogprobs(), db).score([ScoreRequest("c", (" A",))])
    model.close()
    assert fake.closed


# ---------------------------------------------------------------------------------------------
# secrets


def test_identity_with_api_key_is_refused(db):
    leaky = FakeModel(extra_identity={"api_key": SECRET})
    with pytest.raises(ValueError, match="api_key"):
        CachedModel(leaky, db)
    row = CacheRow(
        key="v1:x", kind="score", model={"backend": "x", "headers": {"Authorization": "Bearer"}},
        request={}, response={},
    )  # fmt: skip
    with pytest.raises(ValueError, match="Authorization"):
        db.put_many([row])
    assert db.stats()["total"] == 0
    CachedModel(leaky, None)  # no cache, nothing stored: allowed


@pytest.mark.parametrize(
    "name", ["api_key", "apiKey", "hf_token", "token", "password", "client_secret", "auth"]
)
def test_secret_looking_names(name):
    with pytest.raises(ValueError):
        check_no_secrets({"backend": "x", "nested": [{name: "v"}]})


@pytest.mark.parametrize("name", ["tokenizer", "max_tokens", "model", "revision", "dtype", "key"])
def test_harmless_names(name):
    check_no_secrets({name: "v"})


def test_cache_file_holds_no_secret(tmp_path):
    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path)
    model = CachedModel(FakeModel(), cache)
    model.generate([GenerateRequest("secret test", n=3, seed=1)])
    model.score([ScoreRequest("secret test", (" A", " B"))])

    def blob() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

    assert any(p.name.endswith("-wal") for p in tmp_path.iterdir())
    assert b"secret test" in blob()  # the request is there...
    assert SECRET.encode() not in blob()  # ...the key is not
    cache.close()
    assert b"secret test" in blob() and SECRET.encode() not in blob()


# ---------------------------------------------------------------------------------------------
# the file: schema, migrations, durability, sharing


def test_schema_pragmas_and_migrations(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    applied = []

    def m999_test(db: sqlite3.Connection) -> None:
        applied.append(1)
        db.execute("CREATE TABLE extra (x)")

    monkeypatch.setattr(response_cache, "MIGRATIONS", [*response_cache.MIGRATIONS, ("m999_test", m999_test)])
    with ResponseCache(path) as c:
        assert c._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert c._db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    raw = sqlite3.connect(path)
    names = [r[0] for r in raw.execute("SELECT name FROM _migrations ORDER BY rowid")]
    when = raw.execute("SELECT applied_at FROM _migrations").fetchall()
    cols = [r[1] for r in raw.execute("PRAGMA table_info(responses)")]
    raw.close()
    assert names == ["m001_initial", "m002_prompts", "m003_response_sha256", "m999_test"]
    assert cols == [
        "key", "kind", "model", "request", "response", "created_at", "duration_s",
        "prompt_tokens", "completion_tokens", "response_sha256",
    ]  # fmt: skip
    with ResponseCache(path):
        pass
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT applied_at FROM _migrations").fetchall() == when
    raw.close()
    assert applied == [1]


def test_rows_hold_identity_request_and_response(db):
    model = CachedModel(FakeModel(), db)
    model.generate([GenerateRequest("row", n=2, seed=8, temperature=0.5)])
    raw = sqlite3.connect(db.path)
    rows = raw.execute(
        "SELECT key, kind, model, request, response, created_at, duration_s, prompt_tokens, "
        "completion_tokens FROM responses ORDER BY completion_tokens"
    ).fetchall()
    raw.close()
    assert len(rows) == 2
    key, kind, ident, request, response, created, duration, ptok, ctok = rows[1]
    assert key.startswith("v1:") and kind == "generate"
    assert ident == canonical_json(FakeModel().identity)
    assert '"sample":1' in request and '"temperature":0.5' in request and '"seed":8' in request
    assert '"text":"s1-' in response and ptok == 3 and ctok == 2
    assert created > 0 and duration is not None


def test_a_prompt_is_stored_once_and_restored(db):
    long_prompt = "My life story. " * 200
    model = CachedModel(FakeModel(), db)
    model.generate([GenerateRequest(long_prompt, n=40, seed=1)])
    model.score([ScoreRequest(long_prompt, (" A", " B"))])
    raw = sqlite3.connect(db.path)
    stored = raw.execute("SELECT prompt FROM prompts").fetchall()
    requests = [r for (r,) in raw.execute("SELECT request FROM responses")]
    keys = [k for (k,) in raw.execute("SELECT key FROM responses WHERE kind = 'generate' LIMIT 1")]
    raw.close()
    assert len(stored) == 1 and len(requests) == 41
    assert all("My life story" not in r for r in requests)
    restored = db.request(keys[0])
    assert restored["prompt"] == long_prompt and restored["seed"] == 1
    assert db.request("v1:missing") is None


def test_get_many_chunks_large_lookups(db):
    rows = [
        CacheRow(key=f"k{i}", kind="score", model={"m": 1}, request={"i": i}, response={"v": i})
        for i in range(1200)
    ]
    assert db.put_many(rows) == 1200
    got = db.get_many([f"k{i}" for i in range(0, 1300, 1)])
    assert len(got) == 1200 and got["k1199"] == {"v": 1199}
    db.put_many([replace(rows[0], response={"v": "new"})])  # first answer wins
    assert db.get_many(["k0"]) == {"k0": {"v": 0}}


def test_two_caches_on_one_file_both_write(tmp_path):
    path = tmp_path / "shared.sqlite"
    a, b = ResponseCache(path), ResponseCache(path)
    ma, mb = CachedModel(FakeModel(), a), CachedModel(FakeModel(), b)
    ma.generate([GenerateRequest("from a", n=2, seed=1)])
    mb.generate([GenerateRequest("from b", n=2, seed=1)])
    fa, fb = FakeModel(), FakeModel()
    reqs = [GenerateRequest("from a", n=2, seed=1), GenerateRequest("from b", n=2, seed=1)]
    assert CachedModel(fa, b).generate(reqs) == CachedModel(fb, a).generate(reqs) == fresh(reqs)
    assert fa.calls == fb.calls == 0

    errors: list[BaseException] = []

    def writer(cache: ResponseCache, tag: str) -> None:
        try:
            m = CachedModel(FakeModel(), cache, chunk_size=2)
            for i in range(20):
                m.score([ScoreRequest(f"{tag}{i}-{j}", (" A", " B")) for j in range(4)])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(c, t)) for c, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert a.stats()["score"] == b.stats()["score"] == 160
    a.close()
    b.close()


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_cache import FakeModel
    from anthology.models.base import GenerateRequest
    from anthology.models.cached_model import CachedModel
    from anthology.models.response_cache import ResponseCache

    cache = ResponseCache(sys.argv[1])
    model = CachedModel(FakeModel(delay=0.02), cache, chunk_size=4)
    model.generate([GenerateRequest("killed", n=400, seed=7)])
    print("finished")
    """
)


def _committed_rows(path: Path) -> int:
    raw = sqlite3.connect(path, timeout=5)
    try:
        return raw.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        raw.close()


def test_writer_killed_mid_way_keeps_finished_chunks(tmp_path):
    path = tmp_path / "killed.sqlite"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    tests_dir = str(Path(__file__).resolve().parent)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), tests_dir],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and child.poll() is None:
            if path.exists() and _committed_rows(path) >= 12:
                break
            time.sleep(0.005)
        assert child.poll() is None, child.communicate()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL

    with ResponseCache(path) as cache:
        assert cache._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        done = cache.stats()["generate"]
        assert 12 <= done < 400 and done % 4 == 0  # whole chunks only

        fake = FakeModel()
        req = GenerateRequest("killed", n=400, seed=7)
        out = CachedModel(fake, cache, chunk_size=1000).generate([req])
        assert fake.generate_calls == [[("killed", done, 400 - done)]]
        assert out == fresh([req])
        assert cache.stats()["generate"] == 400


def test_default_cache_path(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHOLOGY_CACHE", raising=False)
    default = default_cache_path()
    assert default.name == "responses.sqlite" and "anthology" in str(default)
    monkeypatch.setenv("ANTHOLOGY_CACHE", str(tmp_path / "mine.sqlite"))
    assert default_cache_path() == tmp_path / "mine.sqlite"
    monkeypatch.setenv("ANTHOLOGY_CACHE", str(tmp_path))
    assert default_cache_path() == tmp_path / "responses.sqlite"


def test_a_local_model_scoring_nan_is_refused_and_nothing_is_stored(tiny_parts, tmp_path):
    """A float16 overflow shows as NaN logits: the scores are not believed, cached or returned."""
    import copy

    import torch
    from conftest import tiny_hf

    model, tokenizer = tiny_parts
    poisoned = copy.deepcopy(model)
    with torch.no_grad():
        poisoned.lm_head.weight[:, :] = float("nan")
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cached = CachedModel(tiny_hf((poisoned, tokenizer)), cache)
        request = ScoreRequest(context="Question: pick one\nAnswer:", options=(" A", " B"))
        with pytest.raises(BackendError, match=r"unusable scores .*not finite.*--dtype float32"):
            cached.score([request])
        assert cache.stats()["total"] == 0
        good = CachedModel(tiny_hf(tiny_parts), cache).score([request])[0]
        assert all(lp <= 0 for lp in good.logprobs)
        assert cache.stats()["total"] == 1
