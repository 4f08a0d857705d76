"""A local model's identity names everything that changes its outputs: the contents of a local folder's
files, a hub model's commit, the dtype and the device. Real folders, a real Hugging Face cache layout
and a real SQLite response cache, in tmp_path."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")

from anthology.models import file_hashes  # noqa: E402
from anthology.models.base import ScoreRequest  # noqa: E402
from anthology.models.cached_model import CachedModel  # noqa: E402
from anthology.models.registry import load_model  # noqa: E402
from anthology.models.response_cache import ResponseCache  # noqa: E402

REQUEST = ScoreRequest("Question: How old are you?\n(A) 18-29\n(B) 30-49\nAnswer:", (" A", " B"))


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    """The response cache, and with it the store of file hashes, in tmp_path."""
    monkeypatch.setenv("ANTHOLOGY_CACHE", str(tmp_path / "cache" / "responses.sqlite"))


def _save(folder, seed: int) -> None:
    from conftest import build_tiny_llama

    model, tokenizer = build_tiny_llama(seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _settle(folder) -> None:
    """Date the folder's files an hour back: files written just now are hashed but not remembered."""
    for f in folder.iterdir():
        stat = f.stat()
        os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns - 3600 * 10**9))


def _sizes(folder) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in folder.iterdir()}


def _count_hashing(monkeypatch) -> list[str]:
    hashed: list[str] = []
    real = file_hashes.file_sha256

    def counting(path):
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(file_hashes, "file_sha256", counting)
    return hashed


def _load(spec: str):
    return load_model(spec, device="cpu", dtype="float32")


def test_new_weights_of_the_same_size_are_a_new_model_and_miss_the_cache(tmp_path):
    folder = tmp_path / "model"
    _save(folder, seed=0)
    _settle(folder)
    cache = ResponseCache(tmp_path / "responses.sqlite")
    old = CachedModel(_load(str(folder)), cache)
    [old_result] = old.score([REQUEST])
    assert old.stats.misses == 1
    assert len(json.loads(file_hashes.store_path().read_text())["files"]) == len(list(folder.iterdir()))
    sizes = _sizes(folder)

    _save(folder, seed=1)  # other weights, the same file names and sizes
    assert _sizes(folder) == sizes
    new = CachedModel(_load(str(folder)), cache)
    assert new.identity["revision"] != old.identity["revision"]
    assert new.identity["revision"].startswith("sha256:")
    [new_result] = new.score([REQUEST])
    assert (new.stats.hits, new.stats.misses) == (0, 1)
    assert new_result.logprobs != old_result.logprobs
    # The old model's answer is still there for the old model.
    [again] = CachedModel(old.model, cache).score([REQUEST])
    assert again.logprobs == old_result.logprobs


def test_a_reopened_folder_is_not_hashed_again(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    _save(folder, seed=0)
    hashed = _count_hashing(monkeypatch)
    first = _load(str(folder)).identity
    assert _load(str(folder)).identity == first
    # Files written just now could be rewritten within their timestamp's granularity: not remembered.
    assert len(hashed) == 2 * len(list(folder.iterdir()))
    assert not file_hashes.store_path().exists()

    _settle(folder)
    hashed.clear()
    assert _load(str(folder)).identity == first
    assert sorted(hashed) == sorted(f.name for f in folder.iterdir())
    store = json.loads(file_hashes.store_path().read_text())
    assert file_hashes.store_path().parent == tmp_path / "cache"
    assert {str((folder / name).resolve()) for name in hashed} <= set(store["files"])

    hashed.clear()
    assert _load(str(folder)).identity == first
    assert hashed == []

    # A file whose modification time moved is hashed again, alone; its bytes did not change.
    config = folder / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert _load(str(folder)).identity == first
    assert hashed == ["config.json"]


def test_a_corrupt_store_is_ignored_and_rebuilt(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    _save(folder, seed=0)
    _settle(folder)
    first = _load(str(folder)).identity
    hashed = _count_hashing(monkeypatch)
    for garbage in ("{not json", '{"format": 1, "files": []}', '{"format": 1, "files": {"x": 3}}'):
        file_hashes.store_path().write_text(garbage)
        hashed.clear()
        assert _load(str(folder)).identity == first
        assert len(hashed) == len(list(folder.iterdir()))
        assert json.loads(file_hashes.store_path().read_text())["format"] == 1
    leftovers = [p.name for p in file_hashes.store_path().parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_hub_model_records_its_snapshot_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    # huggingface_hub reads the variable once, when imported: point the value it kept there too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    repo = hub / "models--org--name"

    def publish(commit: str, seed: int) -> None:
        _save(repo / "snapshots" / commit, seed=seed)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)

    first, second = "1" * 40, "2" * 40
    publish(first, seed=0)
    model = _load("hf:org/name")
    assert model.identity["model"] == "org/name"
    assert model.identity["revision"] == first
    publish(second, seed=1)  # upstream moved: main is another commit
    assert _load("hf:org/name").identity["revision"] == second
    pinned = load_model("hf:org/name", device="cpu", dtype="float32", revision=first)
    assert pinned.identity["revision"] == first


def test_the_device_is_part_of_the_identity():
    from conftest import build_tiny_llama

    from anthology.models.hf import HFModel

    model, tokenizer = build_tiny_llama()  # its own: HFModel moves the model to the device

    def identity(device: str) -> dict:
        return HFModel(
            "tiny", revision="r", model=model, tokenizer=tokenizer, device=device, dtype="float32"
        ).identity

    on_cpu = identity("cpu")
    assert on_cpu == {"backend": "hf", "model": "tiny", "revision": "r", "dtype": "float32", "device": "cpu"}
    if torch.cuda.is_available():
        on_gpu = identity("cuda")
        assert on_gpu == {**on_cpu, "device": f"cuda ({torch.cuda.get_device_name(0)})"}


def test_a_gguf_files_revision_is_its_own_content_hash(tmp_path):
    """A GGUF file is loaded from its folder: the folder's other files (a downloads folder) are neither
    read nor part of the identity."""
    from anthology.models.identity import loaded_revision

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    (tmp_path / "unrelated.bin").write_bytes(b"a")
    revision = loaded_revision(str(tmp_path), None, gguf.name)
    (tmp_path / "unrelated.bin").write_bytes(b"something else")
    assert loaded_revision(str(tmp_path), None, gguf.name) == revision
    assert revision == file_hashes.content_revision([gguf])
    gguf.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 64)
    assert loaded_revision(str(tmp_path), None, gguf.name) != revision
