"""Model calls sharded across Ray actors, each holding its own replica of a local model.

:class:`RayModel` is a :class:`~anthology.models.base.LanguageModel` like any other backend. The driver
keeps the response cache and the run directory (wrap it in a
:class:`~anthology.models.cached_model.CachedModel` as usual); only the requests that miss the cache
travel to the workers, and only results come back.

* Each actor builds its replica with :func:`~anthology.models.registry.load_model` inside its worker,
  so the replicas' identity, and with it every cache key, is the one a local run has: a cached local
  run is reused by a Ray run and the other way round.
* A batch is cut into contiguous shards (:func:`shard_count`), each cut moved to where neighbouring
  prompts share the least text, so one persona's questions stay in one shard and keep their shared
  prefix. Shards go out as a work queue (:data:`IN_FLIGHT` per actor, the next one to the
  actor that finishes first) and results are reassembled in request order.
* A shard's result depends only on the shard, never on which actor ran it, so a resumed run sends the
  same shards and gets the same results as an uninterrupted one.
* An anthology error raised in a worker reaches the caller as itself (the same one-line message);
  anything else becomes a one-line :class:`~anthology.errors.BackendError`.

``ray`` is imported only when a :class:`RayModel` is built (``pip install 'anthology-personas[ray]'``).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from anthology.errors import AnthologyError, BackendError, ConfigError, MissingDependencyError
from anthology.models.base import (
    Capabilities,
    GenerateRequest,
    GenerateResult,
    Prompt,
    ScoreRequest,
    ScoreResult,
    check_requests,
)
from anthology.models.registry import load_model
from anthology.redact import redact

SHARDS_PER_WORKER = 4
MIN_SHARD = 32  # units: smaller shards would leave each replica batches too small to be efficient
IN_FLIGHT = 2  # shards queued on each actor, so it never waits for the driver between shards
UNITS_PER_WORKER = 512  # units (samples or scored requests) per worker in one CachedModel chunk
_PROBE_TIMEOUT_S = 5.0


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "the Ray executor needs ray: pip install 'anthology-personas[ray]'"
        ) from None
    return ray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Replica:
    """One actor's model (wrapped with ``ray.remote`` by :class:`RayModel`). The model name is resolved
    from the driver's working directory where the node has it, so relative paths (and the identity they
    give) work as they do locally. A loading error is kept and raised by :meth:`describe`, so it reaches
    the driver as itself rather than as a dead actor."""

    def __init__(self, spec: str, options: dict[str, Any], threads: int, cwd: str) -> None:
        self.units = 0
        self.shards = 0
        self.error: Exception | None = None
        if os.path.isdir(cwd):
            os.chdir(cwd)
        try:
            self.model = load_model(spec, **options)
        except Exception as exc:
            self.error = exc
            return
        import torch  # loaded with the local model: one intra-op thread per CPU this actor holds

        torch.set_num_threads(threads)

    def describe(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"identity": self.model.identity, "capabilities": self.model.capabilities}

    def call(self, kind: Literal["generate", "score"], requests: list[Any]) -> list[Any]:
        results = getattr(self.model, kind)(requests)
        self.units += sum(getattr(r, "n", 1) for r in requests)
        self.shards += 1
        return results

    def report(self) -> dict[str, Any]:
        import ray

        node = ray.get_runtime_context().get_node_id()
        return {"pid": os.getpid(), "node": node, "shards": self.shards, "units": self.units}


class RayModel:
    """A local model (``spec`` as for :func:`~anthology.models.registry.load_model`, with its ``options``
    such as ``device`` and ``dtype``) replicated on ``workers`` Ray actors of ``cpus_per_worker`` CPUs and
    ``gpus_per_worker`` GPUs each.

    ``address`` is where Ray runs: ``None`` does what ``ray.init()`` does (``$RAY_ADDRESS``, else the
    cluster ``ray start`` runs on this machine, else a new local Ray), ``"auto"`` joins a cluster running
    on this machine, ``"ray://HEAD:10001"`` (Ray Client) or ``"HEAD:6379"`` a remote one. A Ray that is
    already initialised in this process is used as it is. ``close()`` kills the actors, and
    shuts Ray down only if this model started it.
    """

    def __init__(
        self,
        spec: str,
        *,
        workers: int = 2,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        address: str | None = None,
        **options: Any,
    ) -> None:
        if spec.startswith("openai:"):
            raise ConfigError(
                f"the Ray executor replicates local models; {redact(spec)!r} is a server, which already runs "
                "requests in parallel (up to 64 in flight): use the local executor"
            )
        if workers < 1:
            raise ConfigError(f"the Ray executor needs at least 1 worker, got {workers}")
        if cpus_per_worker < 0 or gpus_per_worker < 0:
            raise ConfigError(
                f"CPUs and GPUs per worker cannot be negative, got {cpus_per_worker:g} and "
                f"{gpus_per_worker:g}"
            )
        self.workers = workers
        self._actors: list[Any] = []
        self._owns_ray = False
        ray = _import_ray()
        if not ray.is_initialized():
            # ray.init makes SIGTERM a bare sys.exit; keep the caller's handler (the CLI's interrupt line).
            sigterm = signal.getsignal(signal.SIGTERM)
            _connect(ray, address)
            if sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, sigterm)
            self._owns_ray = True
        try:
            _check_resources(ray, workers, cpus_per_worker, gpus_per_worker)
            actor = ray.remote(
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, scheduling_strategy="SPREAD"
            )(_Replica)
            threads = max(1, int(cpus_per_worker))
            self._actors = [actor.remote(spec, options, threads, os.getcwd()) for _ in range(workers)]
            described = self._get([a.describe.remote() for a in self._actors])
        except BaseException:
            self.close()
            raise
        first = described[0]
        if any(d["identity"] != first["identity"] for d in described):
            self.close()
            raise ConfigError(
                f"the Ray workers loaded different models for {spec!r} ({first['identity']} and others): "
                "the model files must be the same on every node"
            )
        self._identity: dict[str, Any] = first["identity"]
        self._caps: Capabilities = first["capabilities"]

    # -- protocol -------------------------------------------------------------------------------

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def chunk_size(self) -> int:
        """Units per :class:`~anthology.models.cached_model.CachedModel` chunk that keep every worker busy."""
        return UNITS_PER_WORKER * self.workers

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        requests = list(requests)
        check_requests(self, "generate", requests)
        if not requests:
            return []
        # One unit per sample: a prompt asked for many samples (the citizenship preamble) is spread too.
        units = [(i, k) for i, r in enumerate(requests) for k in range(r.first_sample, r.first_sample + r.n)]
        texts = [_text(r.prompt) for r in requests]
        bounds = shard_bounds([texts[i] for i, _ in units], shard_count(len(units), len(self._actors)))
        shards = [_sub_requests(requests, units[lo:hi]) for lo, hi in bounds]
        done = self._dispatch("generate", [[sub for _, sub in shard] for shard in shards])
        samples: list[list[Any]] = [[] for _ in requests]
        prompt_tokens = [0] * len(requests)
        for shard, results in zip(shards, done, strict=True):
            for (i, _), result in zip(shard, results, strict=True):
                samples[i].extend(result.samples)
                prompt_tokens[i] = result.prompt_tokens
        return [
            GenerateResult(samples=tuple(got), prompt_tokens=tokens)
            for got, tokens in zip(samples, prompt_tokens, strict=True)
        ]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        requests = list(requests)
        check_requests(self, "score", requests)
        if not requests:
            return []
        bounds = shard_bounds(
            [_text(r.context) for r in requests], shard_count(len(requests), len(self._actors))
        )
        done = self._dispatch("score", [requests[lo:hi] for lo, hi in bounds])
        return [result for results in done for result in results]

    def close(self) -> None:
        if self._actors or self._owns_ray:
            ray = _import_ray()
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
            if self._owns_ray:
                ray.shutdown()
                self._owns_ray = False

    # -- workers --------------------------------------------------------------------------------

    def report(self) -> list[dict[str, Any]]:
        """Per actor: its ``pid``, Ray ``node``, and the ``shards`` and ``units`` it has served."""
        return self._get([a.report.remote() for a in self._actors])

    def _dispatch(self, kind: Literal["generate", "score"], shards: list[list[Any]]) -> list[list[Any]]:
        """Run the shards on the actors as a work queue; results in shard order."""
        ray = _import_ray()
        queue = deque(range(len(shards)))
        pending: dict[Any, tuple[int, int]] = {}  # object ref -> (shard, actor)

        def submit(actor: int) -> None:
            shard = queue.popleft()
            pending[self._actors[actor].call.remote(kind, shards[shard])] = (shard, actor)

        for _ in range(IN_FLIGHT):
            for actor in range(len(self._actors)):
                if queue:
                    submit(actor)
        done: list[list[Any]] = [[] for _ in shards]
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            shard, actor = pending.pop(ready)
            done[shard] = self._get(ready)
            if queue:
                submit(actor)
        return done

    def _get(self, refs: Any) -> Any:
        """``ray.get`` with worker failures turned into one-line anthology errors."""
        ray = _import_ray()
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, AnthologyError):
                raise cause from None
            raise BackendError(f"a Ray worker failed: {type(cause).__name__}: {_first_line(cause)}") from None
        except ray.exceptions.RayActorError as exc:
            raise BackendError(
                f"a Ray worker died ({_first_line(exc)}); its node may be out of memory, see the Ray logs"
            ) from None


def shard_count(units: int, workers: int) -> int:
    """Shards for a batch of ``units``: one per worker at least, then one per :data:`MIN_SHARD` units, up
    to :data:`SHARDS_PER_WORKER` per worker (so a fast worker can take over a slow one's last shards)."""
    return max(workers, min(SHARDS_PER_WORKER * workers, units // MIN_SHARD))


def shard_bounds(keys: Sequence[str], parts: int) -> list[tuple[int, int]]:
    """Cut ``len(keys)`` items into at most ``parts`` contiguous shards ``(start, stop)`` of about equal
    size. Each cut may move by up to half a shard to where neighbouring keys share the shortest prefix:
    between two personas rather than inside one persona's questions."""
    n = len(keys)
    parts = max(1, min(parts, n))
    size = n / parts
    reach = int(size // 2)
    cuts = [0]
    for p in range(1, parts):
        ideal = round(p * size)
        lo, hi = max(cuts[-1] + 1, ideal - reach), min(n - 1, ideal + reach)
        if lo <= hi:
            cuts.append(min(range(lo, hi + 1), key=lambda j: (_shared(keys[j - 1], keys[j]), abs(j - ideal))))
    cuts.append(n)
    return list(itertools.pairwise(cuts))


def _shared(a: str, b: str) -> int:
    """Length of the common prefix of two strings (a binary search over slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in prompt)


def _sub_requests(
    requests: list[GenerateRequest], units: list[tuple[int, int]]
) -> list[tuple[int, GenerateRequest]]:
    """The (request index, sample index) units of one shard as sub-requests, one per run of samples."""
    subs = []
    for i, group in itertools.groupby(units, key=lambda unit: unit[0]):
        samples = [k for _, k in group]
        subs.append((i, replace(requests[i], n=len(samples), first_sample=samples[0])))
    return subs


def _connect(ray: Any, address: str | None) -> None:
    """``ray.init`` with an unreachable or unusable address as a one-line :class:`ConfigError`."""
    if address and address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach the Ray cluster at {address!r} ({_first_line(exc)}): give ray://HEAD:10001 "
                "(Ray Client), HEAD:6379 from a cluster node, or auto, and check that the cluster is up"
            ) from None
    options: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"cannot start or join Ray at {address or 'a local instance'}: {_first_line(exc)}"
        ) from None


def _check_resources(ray: Any, workers: int, cpus: float, gpus: float) -> None:
    """Refuse at once what the cluster can never hold (its actors would wait forever)."""
    total = ray.cluster_resources()
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        have = total.get(name, 0.0)
        if workers * each > have:
            raise ConfigError(
                f"{workers} Ray workers of {each:g} {name}s need {workers * each:g} {name}s; the cluster has "
                f"{have:g}: lower the workers or the {name}s per worker"
            )
