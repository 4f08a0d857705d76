"""The whole study at scale: wall time and peak resident memory (RSS) of each stage of ``anthology run``
(backstories, demographic survey, matching, baseline panels, DP backstories, answering, evaluation,
report) for a pool of 100,000 backstories and 65,000 survey respondents, in one process, as
``anthology run`` does it.

    python benchmarks/scale_memory.py                         # 100,000 backstories x 65,000 respondents
    python benchmarks/scale_memory.py --quick                 # 2,000 x 1,300, a smoke run (minutes)
    python benchmarks/scale_memory.py --backstories 20000 --respondents 13000 --questions 3

The model is a random-weight Llama (hidden size 16, 1 layer, 1 attention head, a byte-level BPE
vocabulary trained on the pipeline's own prompt texts: about 1,100 tokens) saved to a folder and loaded
by path like any local model, so that model compute is small and what is measured is the pipeline
itself: prompts, requests, the response cache, artifacts, matching, metrics. Torch runs one thread and
the backend's packed prefix sharing is off (``--share-prefix`` turns it on): its masked attention over
~1,500-token packs would otherwise take most of the time of this 1-layer model. Its backstories
are random text, so the run relaxes the filters that would drop them all (``preamble: false``: it
never says "yes" to the citizenship question; ``first_person: off``; ``min_tokens`` 8); the
near-duplicate filter stays on. The survey is the built-in GSS 2018 spending battery's codebook cut to
its first ``--questions`` questions, with a data file of ``--respondents`` rows resampled (with
replacement, new ids) from the GSS respondents who answer at least one of them, so every respondent
is real to the pipeline.

Peak RSS per stage is exact: the kernel's high-water mark (VmHWM) is reset at each stage's start
(``/proc/self/clear_refs``) and read at its end; a thread also samples VmRSS every 50 ms (the only
source where clear_refs cannot be written). Stages are timed by wrapping the functions that
``anthology.study`` calls; answering's sub-steps (panels, baselines, DP backstories, the answering
itself) are rows of their own, indented under it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
GIB = 2**30


# --------------------------------------------------------------------------------------------
# Memory meter


def _status_kib(field_name: str) -> int:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", STATUS.read_text(), re.M)
    return int(match.group(1)) if match else 0


def _reset_high_water() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; False where the kernel refuses."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Phase:
    name: str
    depth: int
    started: float
    peak: int  # bytes
    seconds: float = 0.0
    end_rss: int = 0
    note: str = ""


@dataclass
class Meter:
    """Per-phase wall time and peak RSS. Phases nest; a sample counts towards every open phase."""

    interval: float = 0.05
    heartbeat: float = 60.0
    phases: list[Phase] = field(default_factory=list)
    exact: bool = True
    _open: list[Phase] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.exact = _reset_high_water()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _fold(self) -> int:
        """The peak since the last reset (VmHWM, and the current VmRSS), into every open phase."""
        peak = max(_status_kib("VmHWM"), _status_kib("VmRSS")) * 1024
        for phase in self._open:
            phase.peak = max(phase.peak, peak)
        return peak

    def _sample(self) -> None:
        last_beat = time.perf_counter()
        while not self._stop.wait(self.interval):
            with self._lock:
                self._fold()
                names = " / ".join(p.name for p in self._open)
            now = time.perf_counter()
            if self.heartbeat and now - last_beat >= self.heartbeat:
                last_beat = now
                rss = _status_kib("VmRSS") * 1024 / GIB
                print(f"  .. {now - self._started:7.0f}s  {names or '-'}: RSS {rss:.2f} GiB", file=sys.stderr)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        with self._lock:
            self._fold()
            if self.exact:
                _reset_high_water()
            entry = Phase(name, len(self._open), time.perf_counter(), _status_kib("VmRSS") * 1024)
            self._open.append(entry)
            self.phases.append(entry)
        print(f"{'  ' * entry.depth}-> {name}", file=sys.stderr, flush=True)
        try:
            yield entry
        finally:
            with self._lock:
                self._fold()
                self._open.remove(entry)
                entry.seconds = time.perf_counter() - entry.started
                entry.end_rss = _status_kib("VmRSS") * 1024
            print(
                f"{'  ' * entry.depth}<- {name}: {entry.seconds:.1f} s, peak {entry.peak / GIB:.2f} GiB",
                file=sys.stderr,
                flush=True,
            )

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        return wrapped

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------
# The model and the survey


def tiny_model(folder: Path, hidden: int, layers: int, vocab: int, heads: int = 1) -> tuple[Path, int]:
    """A random-weight Llama with a byte-level BPE tokenizer trained on the pipeline's own prompt
    texts, saved as a local transformers folder."""
    import random

    from workload import FILL, SENTENCES

    from anthology.method import prompts
    from anthology.models.testing import byte_bpe_tokenizer, random_llama
    from anthology.surveys.traits import CANONICAL_TRAITS

    rng = random.Random(0)
    corpus = [t.format(**{k: rng.choice(v) for k, v in FILL.items()}) for t in SENTENCES * 30]
    corpus += [prompts.BACKSTORY_QUESTION, prompts.BIO_PREAMBLE, prompts.PORTRAY_PREAMBLE] * 10
    for trait in CANONICAL_TRAITS.values():
        wording, options = trait.asked()
        corpus += [prompts.multiple_choice(wording, options)] * 5
    tokenizer = byte_bpe_tokenizer(corpus, vocab_size=vocab)
    model = random_llama(
        tokenizer,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=1,
        max_position_embeddings=4096,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, len(tokenizer)


def survey_files(folder: Path, respondents: int, questions: int, seed: int = 0) -> tuple[Path, Path]:
    """The GSS 2018 spending codebook cut to its first ``questions`` questions, and a Parquet data file
    of ``respondents`` GSS rows drawn with replacement (ids 1..n) from those who answer one of them."""
    from anthology.surveys.builtin import BUILTINS

    builtin = BUILTINS["gss2018-spending"]
    book = yaml.safe_load(builtin.codebook_path.read_text())
    book["questions"] = book["questions"][:questions]
    book["name"] = f"gss2018-spending-{questions}q"
    book["title"] = f"{book['title']} (first {questions} questions, resampled)"
    source = builtin.load()
    kept = [q["id"] for q in book["questions"]]
    source = source[source[kept].notna().any(axis=1)].reset_index(drop=True)
    rows = np.random.default_rng(seed).integers(0, len(source), size=respondents)
    data = source.iloc[rows].reset_index(drop=True)
    data[book["respondent_id"]] = np.arange(1, respondents + 1)
    codebook = folder / "survey.yaml"
    codebook.write_text(yaml.safe_dump(book, sort_keys=False, allow_unicode=True))
    path = folder / "respondents.parquet"
    data.to_parquet(path, index=False)
    return codebook, path


# --------------------------------------------------------------------------------------------
# The study


def config(args: argparse.Namespace, model: Path, codebook: Path, data: Path, out: Path):
    from anthology.config import load_config

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    return load_config(
        None,
        {
            "profile": "fast",
            "out": str(out),
            "model.name": str(model),
            "model.device": "cpu",
            "model.dtype": "float32",
            "survey.name": str(codebook),
            "survey.data": str(data),
            "survey.respondents": args.respondents,
            "backstories.n": args.backstories,
            "backstories.max_tokens": args.backstory_tokens,
            "backstories.preamble": False,
            "backstories.first_person": "off",
            "backstories.min_tokens": args.min_tokens,
            "ask.dp_max_tokens": args.backstory_tokens,
            "ask.methods": methods,
            "evaluate.splits": args.splits,
            "evaluate.resamples": args.resamples,
        },
    )


def instrument(meter: Meter) -> None:
    """Time every stage that ``anthology.study`` runs, and answering's sub-steps."""
    from dataclasses import replace

    from anthology import pipeline, study

    for name, stage in pipeline.BY_NAME.items():
        pipeline.BY_NAME[name] = replace(stage, execute=meter.wrap(name, stage.execute))
    for attr, name in (
        ("anthology_panel", "anthology panels"),
        ("baseline_contexts", "baseline panels"),
        ("dp_backstories", "dp backstories"),
        ("ask_panel", "answering"),
    ):
        setattr(pipeline, attr, meter.wrap(name, getattr(pipeline, attr)))
    study.plan = meter.wrap("plan (load and sample survey)", study.plan)


def open_model(meter: Meter, args: argparse.Namespace):
    """The study's model factory (what ``anthology run`` does for a local model), with the backend's
    prefix packing and torch's threads set by the flags."""

    def opened(cfg, run):
        import torch

        from anthology.models.cached_model import CachedModel
        from anthology.models.registry import load_model
        from anthology.models.response_cache import ResponseCache

        torch.set_num_threads(args.threads)
        with meter.phase("load model, open cache"):
            model = load_model(
                cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype, share_prefix=args.share_prefix
            )
            cache = ResponseCache(run.cache_path)
            return CachedModel(model, cache, progress=False), cache

    return opened


def notes(run_dir: Path) -> dict[str, str]:
    """What each stage did, from the run's manifest and artifacts."""
    import pyarrow.parquet as pq

    from anthology.store import RunDir

    run = RunDir(run_dir)
    stages = run.manifest().get("stages", {})

    def rows(name: str) -> int:
        return pq.ParquetFile(run.artifact(name)).metadata.num_rows if run.has(name) else 0

    out = {}
    if "backstories" in stages:
        s = stages["backstories"]["summary"]
        out["backstories"] = f"{s['generated']:,} generated, {s['kept']:,} kept; dropped {s['dropped']}"
    if "demographics" in stages:
        out["demographics"] = f"{rows('demographics'):,} rows"
    if "match" in stages:
        solver = {r["method"]: r.get("solver", "") for r in stages["match"]["report"]}
        out["match"] = f"{rows('humans'):,} humans, {rows('matches'):,} matches; max-weight {solver}"
    if "ask" in stages:
        out["ask"] = f"{rows('answers'):,} answers"
        if "dp" in stages["ask"]:
            out["dp backstories"] = f"{stages['ask']['dp']['kept']:,} kept"
    return out


def report(meter: Meter, run_dir: Path, total: float, header: str) -> str:
    found = notes(run_dir)
    width = max(len("  " * p.depth + p.name) for p in meter.phases)
    lines = [
        header,
        f"{'stage'.ljust(width)}  {'wall s':>9}  {'peak RSS GiB':>12}  {'RSS at end GiB':>14}",
    ]
    for p in meter.phases:
        label = ("  " * p.depth + p.name).ljust(width)
        note = found.get(p.name, "")
        lines.append(
            f"{label}  {p.seconds:9.1f}  {p.peak / GIB:12.2f}  {p.end_rss / GIB:14.2f}"
            + (f"  ({note})" if note else "")
        )
    overall = max(p.peak for p in meter.phases)
    lines.append(f"{'whole run'.ljust(width)}  {total:9.1f}  {overall / GIB:12.2f}")
    source = "VmHWM reset per stage" if meter.exact else f"VmRSS sampled every {meter.interval * 1000:.0f} ms"
    lines.append(f"peak RSS: {source}; fits 24 GiB: {overall < 24 * GIB}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backstories", type=int, default=100_000, help="backstories to generate")
    parser.add_argument("--respondents", type=int, default=65_000, help="survey respondents")
    parser.add_argument("--quick", action="store_true", help="2,000 backstories x 1,300 respondents")
    parser.add_argument("--questions", type=int, default=2, help="survey questions asked (GSS: up to 18)")
    parser.add_argument("--backstory-tokens", type=int, default=32, help="max tokens per backstory")
    parser.add_argument("--min-tokens", type=int, default=8, help="drop backstories shorter than this")
    parser.add_argument("--methods", help="comma-separated ask methods (default: all eight)")
    parser.add_argument("--splits", type=int, default=100, help="human split-half splits")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--hidden", type=int, default=16, help="the random model's hidden size")
    parser.add_argument("--layers", type=int, default=1, help="the random model's layers")
    parser.add_argument("--heads", type=int, default=1, help="the random model's attention heads")
    parser.add_argument("--vocab", type=int, default=4000, help="the tokenizer's vocabulary size (at most)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no spinning on busy cores)")
    parser.add_argument(
        "--share-prefix",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the backend's packed prefix sharing in scoring (off: its masked attention over ~1,500-token "
        "packs, not the pipeline, would dominate the time of a 1-layer model)",
    )
    parser.add_argument("--workdir", type=Path, help="where the model, data and run go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--dry-run", action="store_true", help="print `anthology run --dry-run`'s estimate")
    args = parser.parse_args(argv)
    if args.quick:
        args.backstories, args.respondents = 2_000, 1_300
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console

    from anthology import study

    meter = Meter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="anthology-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        with meter.phase("build tiny model and survey data"):
            model, vocab = tiny_model(work / "model", args.hidden, args.layers, args.vocab, args.heads)
            codebook, data = survey_files(work, args.respondents, args.questions)
        cfg = config(args, model, codebook, data, work / "run")
        instrument(meter)
        study.run_study(
            cfg, console=Console(stderr=True), dry_run=args.dry_run, open_model=open_model(meter, args)
        )
        total = time.perf_counter() - started
        if args.dry_run:
            return
        header = (
            f"anthology run: {args.backstories:,} backstories x {args.respondents:,} respondents, "
            f"{args.questions} questions, methods {', '.join(cfg.ask.methods)}; "
            f"random Llama (hidden {args.hidden}, {args.layers} layer(s), {args.heads} head(s), "
            f"vocab {vocab}), "
            f"{args.backstory_tokens}-token backstories; {os.cpu_count()} CPUs"
        )
        print(report(meter, work / "run", total, header))
    finally:
        meter.close()
        if not (args.keep or args.workdir):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
