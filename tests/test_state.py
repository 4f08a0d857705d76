"""What a run reads back is checked, and what it writes cannot half-happen (issue 14).

A finished study (a real HTTP server on 127.0.0.1, the documented town survey) is copied and damaged:
a truncated or garbled artifact is made again from the response cache, with one line saying which file
and why; a damaged manifest or cache file is set aside (renamed, never deleted) and the run goes on; a
cache row that cannot be decoded is a miss, counted and computed again. The disk's refusals are real:
each such test runs the CLI in its own mount namespace (``unshare -m``, so nothing outlives it) on a
small tmpfs that is full, on a read-only bind mount, or as an unprivileged user (``setpriv``; root
ignores file modes, so chmod alone proves nothing here). Every case ends with the uninterrupted run's
results, or with one line and exit 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from fake_openai_server import FakeOpenAIServer
from surveys_support import write_doc_example

from anthology.cli import app
from anthology.errors import DamagedFileError, StorageError
from anthology.files import disk_problem
from anthology.models.response_cache import CacheRow, ResponseCache
from anthology.pipeline import STAGES
from anthology.store import RunDir

ARTIFACTS = ("backstories", "demographics", "humans", "matches", "answers", "distributions")
RESULTS = (*(f"{name}.parquet" for name in ARTIFACTS), "metrics.csv", "metrics_per_question.csv")
PYTHON = [sys.executable, "-m", "anthology"]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture(scope="module")
def finished(tmp_path_factory, server) -> Path:
    """A finished study: its folder holds study.yaml, the codebook and data, and run/."""
    folder = tmp_path_factory.mktemp("finished")
    codebook = write_doc_example(folder)
    config = {
        "profile": "fast",
        "seed": 1,
        "out": str(folder / "run"),
        "model": {"name": "openai:fake", "base_url": server.base_url},
        "survey": {"name": str(codebook), "respondents": 6},
        "backstories": {"n": 8, "max_tokens": 8, "preamble": False, "min_tokens": 1, "first_person": "off"},
        "ask": {"methods": ["anthology-greedy", "anthology-max-weight", "qa"]},
        "evaluate": {"splits": 4, "resamples": 10},
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(config))
    result = invoke("run", str(folder / "study.yaml"))
    assert result.exit_code == 0, result.output
    return folder


def place(finished: Path, folder: Path, *, artifacts: bool = True) -> Path:
    """The finished study copied to ``folder`` (with only its response cache unless ``artifacts``);
    returns the copy's config."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in finished.iterdir():
        if item.is_file():
            shutil.copy2(item, folder / item.name)
    if artifacts:
        shutil.copytree(finished / "run", folder / "run")
    else:
        (folder / "run").mkdir()
        shutil.copy2(finished / "run" / "cache.sqlite", folder / "run" / "cache.sqlite")
    config = yaml.safe_load((folder / "study.yaml").read_text())
    config["out"] = str(folder / "run")
    config["survey"]["name"] = str(folder / "town-survey.yaml")
    (folder / "study.yaml").write_text(yaml.safe_dump(config))
    return folder / "study.yaml"


@pytest.fixture
def copy(finished, tmp_path) -> tuple[Path, Path]:
    """The finished study copied apart: (its config, its run directory)."""
    return place(finished, tmp_path / "study"), tmp_path / "study" / "run"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def said(result) -> str:
    """Everything a CliRunner run printed, with rich's line wrapping undone."""
    return " ".join(result.output.split())


def one_line(result) -> str:
    """The one error line of a run that must stop cleanly: exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def assert_same_results(run: Path, finished: Path) -> None:
    for name in RESULTS:
        assert (run / name).read_bytes() == (finished / "run" / name).read_bytes(), name


def model_requests(server: FakeOpenAIServer) -> int:
    """The server's requests so far, less the echo probes each test's fresh process state makes."""
    return sum("The sky is" not in json.dumps(r.body) for r in server.requests)


def stages_ran(output: str) -> list[str]:
    found = re.findall(r"\[\d+/\d+\] (\w+)(: done already, skipped)?", output)
    return [name for name, skipped in found if not skipped]


# --------------------------------------------------------------------------------------------
# Damaged artifacts


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble_middle(path: Path) -> None:
    """Overwrite bytes in the middle (the footer stays, so the file may still open)."""
    data = bytearray(path.read_bytes())
    data[100:400] = b"x" * 300
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "stage", "damage", "why"),
    [
        ("answers", "ask", truncate, "answers.parquet is damaged (Parquet magic bytes not found in footer)"),
        ("demographics", "demographics", garble_middle, "demographics.parquet changed since it was written"),
        ("backstories", "backstories", lambda p: p.write_bytes(b""), "backstories.parquet is damaged"),
    ],
    ids=["truncated", "garbled", "empty"],
)
def test_a_damaged_artifact_is_made_again_from_the_cache(copy, finished, server, name, stage, damage, why):
    config, run = copy
    damage(run / f"{name}.parquet")
    before = model_requests(server)
    result = invoke("run", str(config))
    assert result.exit_code == 0, result.output
    assert f"{stage}: runs again: {why}" in said(result)
    # The stage wrote the same bytes again, so nothing after it had to run.
    assert stages_ran(said(result)) == [stage]
    assert model_requests(server) == before  # every model call came back from the cache
    assert_same_results(run, finished)


def test_a_reader_meeting_a_damaged_input_names_it_and_the_command_to_rerun(copy, finished):
    _, run = copy
    truncate(run / "answers.parquet")
    line = one_line(invoke("report", str(run)))
    assert line == (
        f"error: {run / 'answers.parquet'} is damaged (Parquet magic bytes not found in footer): "
        f"rerun `anthology ask {run}` to remake it"
    )
    assert invoke("ask", str(run)).exit_code == 0  # the command it names makes it again
    assert invoke("report", str(run)).exit_code == 0
    assert_same_results(run, finished)


@pytest.mark.parametrize("change", ["rows", "columns"])
def test_an_artifact_with_other_rows_or_columns_than_written_is_not_believed(copy, finished, change):
    config, run = copy
    answers = pd.read_parquet(run / "answers.parquet")
    written = len(answers)
    edited = answers.iloc[:-1] if change == "rows" else answers.drop(columns=["position"])
    edited.to_parquet(run / "answers.parquet", index=False)
    with pytest.raises(DamagedFileError) as caught:
        RunDir(run).read("answers")
    expected = (
        f"{written - 1} rows where {written} were written" if change == "rows" else "no column 'position'"
    )
    assert f"{run / 'answers.parquet'} is damaged ({expected})" in str(caught.value)
    result = invoke("run", str(config))
    assert result.exit_code == 0, result.output
    assert f"ask: runs again: answers.parquet is damaged ({expected})" in said(result)
    assert_same_results(run, finished)


# --------------------------------------------------------------------------------------------
# A damaged manifest


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda text: text[:500], "not JSON"),
        (lambda text: "[1, 2]", "a JSON list, not an object"),
        (lambda text: json.dumps({**json.loads(text), "stages": []}), "its 'stages' is not an object"),
        (lambda text: "\udcff\x00garbage", "not JSON"),
    ],
    ids=["truncated", "list", "stages-list", "binary"],
)
def test_a_damaged_manifest_is_set_aside_and_every_stage_runs_again_from_the_cache(
    copy, finished, server, damage, why
):
    config, run = copy
    manifest = run / "manifest.json"
    damaged = damage(manifest.read_text()).encode("utf-8", "surrogateescape")
    manifest.write_bytes(damaged)
    before = model_requests(server)
    result = invoke("run", str(config))
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert f"{manifest} is damaged ({why}" in warning and "set it aside as manifest.json.damaged-" in warning
    [aside] = run.glob("manifest.json.damaged-*")
    assert aside.read_bytes() == damaged  # kept, never deleted
    assert stages_ran(said(result)) == [stage.name for stage in STAGES]
    assert model_requests(server) == before
    assert_same_results(run, finished)
    assert stages_ran(said(invoke("run", str(config)))) == []


# --------------------------------------------------------------------------------------------
# A damaged cache file, undecodable rows


def _rows(n: int) -> list[CacheRow]:
    return [
        CacheRow(f"k{i}", "generate", {"name": "m"}, {"prompt": f"p{i}"}, {"text": "x" * 2000})
        for i in range(n)
    ]


def _overwrite_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096 * 2 :] = b"\xff" * (len(data) - 4096 * 2)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_text("garbage\n"), "file is not a database"),
        (_overwrite_pages, "database disk image is malformed"),
    ],
    ids=["not-a-database", "malformed"],
)
def test_a_damaged_cache_file_is_set_aside_and_a_fresh_one_used(tmp_path, caplog, damage, why):
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        cache.put_many(_rows(40))
    damage(path)
    damaged = path.read_bytes()
    with ResponseCache(path) as cache:
        assert cache.get_many(["k1", "k2"]) == {}  # set aside when opened, or at the first read
        cache.put_many(_rows(1))
        assert cache.get_many(["k0"]) == {"k0": {"text": "x" * 2000}}
    [aside] = tmp_path.glob("cache.sqlite.damaged-*")
    assert aside.read_bytes() == damaged
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"response cache {path} is damaged ({why})" in warning and aside.name in warning


def test_a_garbage_cache_file_in_a_run_warns_and_the_stage_computes_again(copy, finished):
    _, run = copy
    (run / "cache.sqlite").write_text("garbage\n")
    result = invoke("backstories", str(run), "--force")
    assert result.exit_code == 0, result.output
    warning = result.stderr.splitlines()[0]
    assert warning.startswith(
        f"warning: response cache {run / 'cache.sqlite'} is damaged (file is not a database)"
    )
    assert len(list(run.glob("cache.sqlite.damaged-*"))) == 1
    assert_same_results(run, finished)


#: Cache rows as they must not be believed: not JSON, the wrong shape, impossible numbers.
GARBAGE_SCORES = [
    "{not json",
    json.dumps({"coverage": 1.0, "imputed": [False, False]}),  # no 'logprobs'
    json.dumps({"logprobs": ["a"], "coverage": 1.0, "imputed": [False]}),
    json.dumps({"logprobs": [float("nan")] * 2, "coverage": 1.0, "imputed": [False, False]}),
    json.dumps({"logprobs": [2.0, 2.0], "coverage": 1.0, "imputed": [False, False]}),
    "[1, 2, 3]",
]
GARBAGE_SAMPLES = ["null", json.dumps({"text": 7, "finish_reason": "stop", "completion_tokens": 1}), "{}"]


def _spoil(run: Path, kind: str, garbage: list[str]) -> None:
    """Store ``garbage`` as responses of ``kind`` with their own checksums, as a buggy writer would, so
    that decoding them is what must refuse them."""
    with sqlite3.connect(run / "cache.sqlite") as db:
        keys = [
            k for (k,) in db.execute("SELECT key FROM responses WHERE kind = ? LIMIT ?", (kind, len(garbage)))
        ]
        updates = [
            (text, hashlib.sha256(text.encode()).hexdigest(), key)
            for text, key in zip(garbage, keys, strict=True)
        ]
        db.executemany("UPDATE responses SET response = ?, response_sha256 = ? WHERE key = ?", updates)


@pytest.mark.parametrize(
    ("stage", "kind", "garbage"),
    [("demographics", "score", GARBAGE_SCORES), ("backstories", "generate", GARBAGE_SAMPLES)],
)
def test_an_undecodable_cache_row_is_a_miss_counted_and_computed_again(
    copy, finished, server, stage, kind, garbage
):
    _, run = copy
    _spoil(run, kind, garbage)
    before = model_requests(server)
    result = invoke(stage, str(run), "--force")
    assert result.exit_code == 0, result.output
    assert f"{len(garbage)} undecodable cache rows computed again" in said(result)
    assert model_requests(server) > before
    entry = json.loads((run / "manifest.json").read_text())["stages"][stage]["model_calls"]
    assert entry["undecodable"] == len(garbage)
    again = invoke(stage, str(run), "--force")  # the rows were replaced
    assert "undecodable" not in said(again) and " 0 model calls" in said(again)
    assert_same_results(run, finished)


def test_duplicates_within_a_batch_are_counted_apart_from_cache_hits(finished, copy):
    stages = json.loads((finished / "run" / "manifest.json").read_text())["stages"]
    first = stages["ask"]["model_calls"]  # a first run: nothing was in the cache
    assert first["cache_hits"] == 0 and first["duplicates"] > 0
    _, run = copy
    again = invoke("ask", str(run), "--force")  # now every unit, repeated or not, is a row in the cache
    everything = first["computed"] + first["duplicates"]
    assert f"0 model calls, {everything} cache hits, 0 duplicates within the batch" in said(again)


# --------------------------------------------------------------------------------------------
# The disk refuses: full, read-only, not ours


def in_namespace(script: str, *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``script`` in bash in a private mount namespace: its mounts vanish with it."""
    env = {**os.environ, "COLUMNS": "250", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-euc", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def cli(*args: object) -> str:
    return " ".join([*PYTHON, *(str(a) for a in args)])


def _outcome(stdout: str, label: str) -> int:
    return int(re.search(rf"{label}=(\d+)", stdout).group(1))


def _cli_error(stderr: str) -> str:
    """The one error line, checking that nothing else went wrong (no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize("free_kb", [0, 12, 60, 150])
def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_finishes(finished, server, tmp_path, free_kb):
    """The run lands on a 2 MB tmpfs with ``free_kb`` left (its cache copied there, so it writes every
    artifact, the manifest and the report); after space is freed the rerun ends as the uninterrupted run."""
    disk = tmp_path / "disk"
    disk.mkdir()
    config = place(finished, tmp_path / "study", artifacts=False)
    edited = yaml.safe_load(config.read_text())
    edited["out"] = str(disk / "run")
    config.write_text(yaml.safe_dump(edited))
    script = f"""
        mount -t tmpfs -o size=2m tmpfs {disk}
        cp -a {tmp_path / "study" / "run"} {disk}/run
        head -c $(( 2048 * 1024 - $(du -sk {disk} | cut -f1) * 1024 - {free_kb} * 1024 )) /dev/zero \
            > {disk}/filler || true
        {cli("run", config)} 2> {tmp_path}/first.err && echo first=0 || echo first=$?
        rm {disk}/filler
        {cli("run", config)} 2> {tmp_path}/second.err && echo second=0 || echo second=$?
        cp -a {disk}/run {tmp_path}/after
    """
    result = in_namespace(script)
    assert result.returncode == 0, result.stderr
    first = (tmp_path / "first.err").read_text()
    assert _outcome(result.stdout, "first") == 2, first
    line = _cli_error(first)
    assert (
        line.startswith(f"error: no space left to write {disk / 'run'}/") and f"free space on {disk}" in line
    )
    assert _outcome(result.stdout, "second") == 0, (tmp_path / "second.err").read_text()
    assert_same_results(tmp_path / "after", finished)
    assert not list((tmp_path / "after").glob(".*.tmp"))  # no temporary file left behind


def test_a_full_disk_while_caching_rolls_back_and_keeps_what_was_stored(tmp_path):
    """SQLite rolls a transaction back itself when the disk fills; the batch is refused in one line and
    the rows stored before it stay readable."""
    disk = tmp_path / "disk"
    disk.mkdir()
    program = f"""
import json
from anthology.errors import StorageError
from anthology.models.response_cache import CacheRow, ResponseCache
rows = lambda start, n: [CacheRow(f"k{{i}}", "generate", {{"name": "m"}}, {{"prompt": f"p{{i}}"}},
                                  {{"text": "x" * 3000}}) for i in range(start, start + n)]
cache = ResponseCache("{disk}/cache.sqlite")
cache.put_many(rows(0, 5))
try:
    cache.put_many(rows(5, 2000))
except StorageError as exc:
    print("refused:", exc)
print("kept:", len(cache.get_many(f"k{{i}}" for i in range(2005))), "open:", cache._db.in_transaction)
"""
    script = f"""
        mount -t tmpfs -o size=1m tmpfs {disk}
        {sys.executable} -c '{program}'
    """
    result = in_namespace(script)
    assert result.returncode == 0, result.stderr
    assert f"refused: no space left to write {disk}/cache.sqlite: free space on {disk}" in result.stdout
    assert "set $ANTHOLOGY_CACHE or --cache" in result.stdout
    assert "kept: 5 open: False" in result.stdout
    assert "cannot rollback" not in result.stderr


def test_a_read_only_run_directory_is_one_line(copy, finished):
    config, run = copy
    script = f"""
        mount --bind {run} {run}
        mount -o remount,bind,ro {run}
        {cli("run", config)}
    """
    result = in_namespace(script)
    assert result.returncode == 2, result.stderr
    assert _cli_error(result.stderr) == (
        f"error: cannot write {run / '.lock'}: the file system is read-only; choose another --out"
    )


def test_a_read_only_cache_folder_is_one_line_naming_the_cache_setting(copy, tmp_path):
    config, _ = copy
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    script = f"""
        mount --bind {shelf} {shelf}
        mount -o remount,bind,ro {shelf}
        {cli("run", config, "--cache", shelf / "cache.sqlite")}
    """
    result = in_namespace(script)
    assert result.returncode == 2, result.stderr
    assert _cli_error(result.stderr) == (
        f"error: cannot write {shelf / 'cache.sqlite'}: the file system is read-only; "
        "set $ANTHOLOGY_CACHE or --cache to a file elsewhere (or use --no-cache)"
    )


@pytest.fixture
def open_folder(finished):
    """A copy of the study that an unprivileged user can read, beside a folder only root may write."""
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        root.chmod(0o755)
        config = place(finished, root / "study")
        for path in (root / "study", *(root / "study").rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (root / "locked").mkdir(mode=0o755)
        yield config, root / "locked"


def as_nobody(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *PYTHON, *map(str, args)]
    full = {**os.environ, "COLUMNS": "250", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=full, timeout=120)


def test_a_folder_the_user_may_not_write_is_one_line(open_folder):
    config, locked = open_folder
    result = as_nobody("run", config, "--out", locked / "run")
    assert result.returncode == 2, result.stderr
    line = _cli_error(result.stderr)
    assert f"{locked / 'run'}" in line and "ermission denied" in line and "choose another --out" in line


def test_a_home_cache_the_user_may_not_write_is_one_line(open_folder, server):
    _, locked = open_folder
    cache = locked / "anthology" / "responses.sqlite"
    result = as_nobody(
        "models", "try", "openai:fake", "--base-url", server.base_url, "--prompt", "Hello",
        env={"ANTHOLOGY_CACHE": str(cache)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert _cli_error(result.stderr) == (
        f"error: cannot write {cache}: permission denied; fix its permissions or "
        "set $ANTHOLOGY_CACHE or --cache to a file elsewhere (or use --no-cache)"
    )


def test_the_disk_errors_map_to_one_line_and_others_are_left_alone(tmp_path):
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"
    assert disk_problem(full, tmp_path / "cache.sqlite").startswith(
        f"no space left to write {tmp_path}/cache.sqlite"
    )
    pyarrow_style = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert "free space on" in disk_problem(pyarrow_style, tmp_path / "answers.parquet")
    assert disk_problem(FileNotFoundError(2, "No such file", str(tmp_path))) is None
    assert disk_problem(ValueError("no")) is None
    assert isinstance(StorageError("x"), Exception)


# --------------------------------------------------------------------------------------------
# Random garbage everywhere


def _mutations(rng: random.Random, data: bytes) -> bytes:
    kind = rng.choice(["truncate", "random", "flip", "json-type"])
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "random":
        start = rng.randrange(len(data))
        return data[:start] + rng.randbytes(rng.randint(1, 64)) + data[start + 64 :]
    if kind == "flip":
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    return json.dumps(rng.choice([[], 3, "text", None, {"stages": [1]}, {"stages": {"ask": 1}}])).encode()


@pytest.mark.slow
def test_random_garbage_in_any_file_or_cache_row_ends_as_the_uninterrupted_run(finished, tmp_path):
    """24 seeded cases, 3 per target: garbage (a truncation, random bytes, flipped bits, a JSON value
    of the wrong type) written into an artifact, the manifest or five cache rows of the finished run;
    the rerun ends with the same results, or with one line and exit 2 (then a second rerun finishes)."""
    targets = [*(f"{name}.parquet" for name in ARTIFACTS), "manifest.json", "cache rows"]
    for case in range(24):
        rng = random.Random(case)
        config = place(finished, tmp_path / f"case{case}")
        run = tmp_path / f"case{case}" / "run"
        target = targets[case % len(targets)]
        if target == "cache rows":
            with sqlite3.connect(run / "cache.sqlite") as db:
                rows = db.execute("SELECT key, CAST(response AS BLOB) FROM responses ORDER BY key").fetchall()
                spoilt = [(_mutations(rng, response), key) for key, response in rng.sample(rows, 5)]
                db.executemany("UPDATE responses SET response = CAST(? AS TEXT) WHERE key = ?", spoilt)
            (run / "manifest.json").unlink()  # so that every stage runs again and reads the cache
        else:
            path = run / target
            path.write_bytes(_mutations(rng, path.read_bytes()))
        result = invoke("run", str(config))
        if result.exit_code != 0:
            one_line(result)
            result = invoke("run", str(config))
        assert result.exit_code == 0, (case, target, result.output)
        assert_same_results(run, finished)
        if target == "cache rows":  # each spoilt row was refused, counted and computed again
            stages = json.loads((run / "manifest.json").read_text())["stages"].values()
            assert sum(info.get("model_calls", {}).get("undecodable", 0) for info in stages) == 5
