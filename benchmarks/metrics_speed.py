"""Metrics speed (issue 5, item 4): every metric, the 100-split human lower bound and 1,000 bootstrap
resamples on 65,000 humans x 10 five-point questions (random survey weights, about 3% missing answers)
against a persona panel of the same size. Prints each step's seconds and the total.

    python benchmarks/metrics_speed.py
    python benchmarks/metrics_speed.py --blas-threads 1      # see below
    python benchmarks/metrics_speed.py --respondents 2537 --questions 8 --options 4   # Pew W34's shape

The data are correlated (a latent trait per respondent), so the correlation matrices and alphas are
those of a realistic scale, not of noise.

Most of the time goes into one matrix product per block of resamples (see anthology.metrics._engine)
and into drawing the resamples. On a machine whose cores are busy with other work, OpenBLAS's worker
threads spin against that work and the product can get several times slower than on one thread:
``--blas-threads N`` sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS before numpy loads.
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def synthetic(n: int, q: int, k: int, rng, shift: float):
    """``(n, q)`` answers 1..k driven by one latent trait plus noise, ~3% missing (0)."""
    latent = rng.normal(size=(n, 1))
    loadings = rng.uniform(0.3, 0.9, size=(1, q))
    score = latent * loadings + rng.normal(size=(n, q)) + shift
    cuts = [-1.5 + 3.0 * i / (k - 2) for i in range(k - 1)] if k > 2 else [0.0]
    answers = 1 + (score[..., None] > cuts).sum(axis=-1)
    answers[rng.random((n, q)) < 0.03] = 0
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--respondents", type=int, default=65_000)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--options", type=int, default=5)
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=1_000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="run everything this many times, report the best"
    )
    parser.add_argument("--blas-threads", type=int, default=None, help="limit BLAS threads (default: as set)")
    args = parser.parse_args()
    if args.blas_threads is not None:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.blas_threads)

    import numpy as np

    from anthology.metrics import (
        bootstrap,
        compare,
        human_lower_bound,
        individual_agreement,
        subgroup_breakdown,
    )

    rng = np.random.default_rng(0)
    n, q, k = args.respondents, args.questions, args.options
    humans = synthetic(n, q, k, rng, 0.0)
    personas = synthetic(n, q, k, rng, 0.3)
    weights = rng.lognormal(sigma=0.6, size=n)
    groups = rng.integers(0, 4, size=n)  # e.g. age group; the matched persona carries its human's label

    steps = {
        "compare (distributions, WD, correlations, Frobenius, alphas)": lambda: compare(
            humans, personas, k, human_weights=weights
        ),
        f"human lower bound ({args.splits} splits)": lambda: human_lower_bound(
            humans, k, weights, n_splits=args.splits, seed=0
        ),
        f"bootstrap CIs ({args.resamples} resamples, both panels)": lambda: bootstrap(
            humans, personas, k, human_weights=weights, n_resamples=args.resamples, seed=0
        ),
        "subgroup breakdown (4 groups)": lambda: subgroup_breakdown(
            humans, personas, k, groups, groups, human_weights=weights
        ),
        "individual agreement": lambda: individual_agreement(humans, personas, k, weights=weights),
    }
    best = dict.fromkeys(steps, float("inf"))
    results = {}
    for _ in range(args.repeat):
        for name, step in steps.items():
            start = time.perf_counter()
            results[name] = step()
            best[name] = min(best[name], time.perf_counter() - start)

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{n:,} humans and {n:,} personas x {q} questions, {k}-point")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"BLAS threads: {threads}, load average before: {load}; best of {args.repeat}"
    )
    width = max(map(len, steps))
    for name, seconds in best.items():
        print(f"  {name:<{width}}  {seconds:7.2f} s")
    print(f"  {'total':<{width}}  {sum(best.values()):7.2f} s")

    point = results[next(iter(steps))]
    floor = results[f"human lower bound ({args.splits} splits)"]
    ci = results[f"bootstrap CIs ({args.resamples} resamples, both panels)"]
    print("\nfigures (a sanity check, not a result):")
    for name in ("wd_raw", "wd_normalized", "frobenius", "alpha_personas", "alpha_humans_weighted"):
        interval = ci[name]
        print(f"  {name:<22} {interval.estimate:.4f}  [{interval.low:.4f}, {interval.high:.4f}]")
    print(
        f"  lower bound: WD {floor.wd_raw:.4f} raw / {floor.wd_normalized:.4f} normalised, "
        f"Fro. {floor.frobenius:.4f}"
    )
    print(f"  humans complete: {point.n_humans_complete:,} of {point.n_humans:,}")


if __name__ == "__main__":
    main()
