"""No secret in any file: a sentinel key in each place a credential can be given (user:password in the
URL, ``?api-key=``, ``?key=``, the API key's environment variable) goes to the server, and is found in
no file of the run directory (manifest, report, cache, Parquet, read both as bytes and decoded), in no
user cache and in nothing printed. A stage command on that run must be given the URL again."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from fake_openai_server import FakeOpenAIServer, small_chat_study

from anthology.cli import app
from anthology.redact import (
    has_redaction,
    is_secret_parameter,
    redact,
    redact_url,
    redact_values,
    url_secrets,
)

SENTINEL = "SENTINEL-KEY-1234"
KEY_ENV = "ANTHOLOGY_TEST_SECRET_KEY"


def test_redact_url_positions():
    assert redact_url("http://user:pw@host:8000/v1") == "http://***@host:8000/v1"
    assert redact_url("http://KEY@host/v1") == "http://***@host/v1"
    assert (
        redact_url("https://h/v1?api-key=K&api-version=2024") == "https://h/v1?api-key=***&api-version=2024"
    )
    assert redact_url("https://h/v1?Key=K") == "https://h/v1?Key=***"
    assert redact_url("https://h/v1?X-Amz-Signature=K&sig=K&code=K") == (
        "https://h/v1?X-Amz-Signature=***&sig=***&code=***"
    )
    assert redact_url("https://h/v1#access_token=K") == "https://h/v1#access_token=***"
    assert redact_url("http://localhost:8000/v1") == "http://localhost:8000/v1"  # nothing to hide
    assert redact("openai:m@http://u:p@h/v1?token=T failed") == "openai:m@http://***@h/v1?token=*** failed"
    assert redact_values({"a": ["x http://u:p@h", ("https://h?auth=1",)], "n": 3}) == {
        "a": ["x http://***@h", ("https://h?auth=***",)],
        "n": 3,
    }
    assert url_secrets("http://u:p@h/v1?api_key=K&model=m") == ["u", "p", "K"]
    assert has_redaction("openai:m@http://***@h/v1") and not has_redaction("gemma3-270m")
    assert not has_redaction(None)


@pytest.mark.parametrize(
    "name",
    [
        "api-key",
        "API_KEY",
        "apikey",
        "key",
        "token",
        "access_token",
        "sig",
        "signature",
        "password",
        "secret",
        "auth",
        "subscription-key",
        "code",
    ],
)
def test_secret_parameter_names(name):
    assert is_secret_parameter(name)


@pytest.mark.parametrize("name", ["api-version", "model", "deployment", "format"])
def test_ordinary_parameter_names(name):
    assert not is_secret_parameter(name)


def study(tmp_path: Path, model: dict) -> Path:
    config = small_chat_study(str(tmp_path / "run"), seed=3, retries=2, **model)
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def leaks(root: Path) -> list[str]:
    """Every file under ``root`` that holds the sentinel: as bytes (also base64, as in a Basic
    header), and decoded: Parquet cells, SQLite rows, JSON."""
    found = []
    needles = [SENTINEL.encode(), base64.b64encode(f"user:{SENTINEL}".encode())]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        texts = [data]
        if path.suffix == ".parquet":
            texts.append(pd.read_parquet(path).to_json().encode())
        elif path.suffix == ".sqlite":
            with sqlite3.connect(path) as db:
                tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                rows = [db.execute(f"SELECT * FROM {t}").fetchall() for t in tables]
            texts.append(repr(rows).encode())
        if any(needle in text for text in texts for needle in needles):
            found.append(str(path))
    return found


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """A fresh home and user cache, to be searched too."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("ANTHOLOGY_CACHE", raising=False)  # the run directory's cache.sqlite
    return home


@pytest.mark.slow  # two whole runs on the fake server
def test_a_sentinel_key_in_every_position_is_sent_and_found_in_no_file(tmp_path, homes, monkeypatch):
    """Run A: user:password@ and ?api-key= in the model name's inline URL, and a server that quotes
    the key back in an error (retried, so a warning line is printed). Run B: ?key= in base_url and the
    key in the API key's variable. Then a stage command on each: the URL must be given again, and given
    again it is the same model (the stage is skipped)."""
    monkeypatch.setenv(KEY_ENV, f"{SENTINEL}-env")
    with FakeOpenAIServer() as server:
        host = server.base_url.removeprefix("http://")
        name = f"openai:fake@http://user:{SENTINEL}-pw@{host}?api-key={SENTINEL}-apikey&api-version=1"
        server.inject(("status", 500, f"overloaded (key {SENTINEL}-apikey)"))
        run_a = tmp_path / "a" / "run"
        printed = [CliRunner().invoke(app, ["run", str(study(tmp_path / "a", {"name": name}))])]
        assert printed[-1].exit_code == 0, printed[-1].output
        assert "is slow or failing" in printed[-1].output  # the retry was shown, redacted
        assert {r.query for r in server.requests} == {f"api-key={SENTINEL}-apikey&api-version=1"}
        assert all(r.headers["authorization"].startswith("Basic ") for r in server.requests)

        printed.append(CliRunner().invoke(app, ["ask", str(run_a)]))
        assert printed[-1].exit_code == 2
        assert printed[-1].output.strip() == (
            "error: the recorded model name had a secret that was not stored: give --model again"
        )
        printed.append(CliRunner().invoke(app, ["ask", str(run_a), "--model", name]))
        assert printed[-1].exit_code == 0, printed[-1].output
        assert "done already" in printed[-1].output  # the recorded settings (chat: true) were kept

        server.reset()
        server.api_key = f"{SENTINEL}-env"
        base_url = f"{server.base_url}?key={SENTINEL}-key"
        run_b = tmp_path / "b" / "run"
        model = {"name": "openai:fake", "base_url": base_url, "api_key_env": KEY_ENV}
        printed.append(CliRunner().invoke(app, ["run", str(study(tmp_path / "b", model))]))
        assert printed[-1].exit_code == 0, printed[-1].output
        assert {r.query for r in server.requests} == {f"key={SENTINEL}-key"}
        assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {SENTINEL}-env"}

        printed.append(CliRunner().invoke(app, ["ask", str(run_b)]))
        assert printed[-1].exit_code == 2
        assert printed[-1].output.strip() == (
            "error: the recorded base URL had a secret that was not stored: give --base-url again"
        )
        printed.append(CliRunner().invoke(app, ["ask", str(run_b), "--base-url", base_url]))
        assert printed[-1].exit_code == 0, printed[-1].output
        assert "done already" in printed[-1].output
        base = server.base_url
    for run_dir in (run_a, run_b):
        assert (run_dir / "report.html").exists() and (run_dir / "cache.sqlite").exists()
        assert (run_dir / "backstories.parquet").exists()
        assert leaks(run_dir) == []
    assert leaks(homes) == []
    assert leaks(tmp_path / "b") == [str(tmp_path / "b" / "study.yaml")]  # where the user wrote it
    assert not any(SENTINEL in result.output for result in printed)
    manifest = json.loads((run_b / "manifest.json").read_text())
    assert manifest["config"]["model"]["base_url"] == f"{base}?key=***"
    assert manifest["model"]["identity"]["base_url"] == f"{base}?key=***"
    assert manifest["model"]["api_key_env"] == KEY_ENV  # the variable's name, not its value


def test_errors_that_quote_a_model_name_redact_it():
    from anthology.errors import ConfigError
    from anthology.models.registry import load_model

    for spec, options in (
        (f"http://user:{SENTINEL}@host/v1", {}),  # a URL given as --model
        (f"openai:m@http://host/v1?api-key={SENTINEL}", {"device": "cpu"}),  # a local-only option
    ):
        with pytest.raises(ConfigError) as info:
            load_model(spec, **options)
        assert SENTINEL not in str(info.value) and "***" in str(info.value)
