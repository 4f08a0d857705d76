"""Metrics speed (issue 5, item 4; issue 7, part 5; issue 17, part 4): every metric, the 100-split
human lower bound, 1,000 bootstrap resamples and the worth-in-humans curve (100 draws per panel size)
on 65,000 humans x 10 five-point questions (random survey weights, about 3% missing answers) against a
persona panel of the same size; the lower bound and the bootstrap each against the naive way measured
in the same run.

    python benchmarks/metrics_speed.py
    python benchmarks/metrics_speed.py --quick                 # 10,000 respondents, fewer naive iterations
    python benchmarks/metrics_speed.py --blas-threads 1        # see below
    python benchmarks/metrics_speed.py --respondents 2537 --questions 8 --options 4   # Pew W34's shape

The naive way is a Python loop over splits (resamples) that, per split, computes each half's weighted
answer distribution per question, calls scipy.stats.wasserstein_distance per question, and takes the
correlation matrices with pandas DataFrame.corr on the complete answers (per resample also Cronbach's
alpha of each panel with pandas). It is unweighted where ours is weighted and leaves out the weighted
alphas, so it does less work than ours: the ratios understate. It is timed on a few iterations and
extrapolated per iteration (iterations are independent and alike).

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
from typing import Any

from figures import Figure, format_table
from workload import timed


def synthetic(n: int, q: int, k: int, rng, shift: float):
    """``(n, q)`` answers 1..k driven by one latent trait plus noise, ~3% missing (0)."""
    latent = rng.normal(size=(n, 1))
    loadings = rng.uniform(0.3, 0.9, size=(1, q))
    score = latent * loadings + rng.normal(size=(n, q)) + shift
    cuts = [-1.5 + 3.0 * i / (k - 2) for i in range(k - 1)] if k > 2 else [0.0]
    answers = 1 + (score[..., None] > cuts).sum(axis=-1)
    answers[rng.random((n, q)) < 0.03] = 0
    return answers


def _naive_panel(answers, weights, k: int) -> tuple[Any, Any]:
    """One panel the naive way: per question its weighted answer distribution, and the correlation
    matrix of its complete answers (pandas)."""
    import numpy as np
    import pandas as pd

    distributions = []
    for column in answers.T:
        given = column > 0
        counts = np.bincount(column[given] - 1, weights=weights[given], minlength=k)
        distributions.append(counts / counts.sum())
    frame = pd.DataFrame(answers)
    complete = frame[(frame > 0).all(axis=1)]
    return distributions, complete


def _naive_distances(a: tuple[Any, Any], b: tuple[Any, Any], k: int) -> tuple[float, float]:
    """Mean Wasserstein distance (scipy, per question) and Frobenius norm of the correlation
    difference (pandas DataFrame.corr) between two naive panels."""
    import numpy as np
    from scipy.stats import wasserstein_distance

    positions = np.arange(1, k + 1)
    wd = [wasserstein_distance(positions, positions, p, q) for p, q in zip(a[0], b[0], strict=True)]
    fro = np.linalg.norm(a[1].corr().to_numpy() - b[1].corr().to_numpy())
    return float(np.mean(wd)), float(fro)


def _naive_alpha(complete) -> float:
    """Cronbach's alpha of the complete answers with pandas."""
    q = complete.shape[1]
    return q / (q - 1) * (1 - complete.var().sum() / complete.sum(axis=1).var())


def naive_lower_bound(answers, weights, k: int, n_splits: int, seed: int) -> list[tuple[float, float]]:
    """Per split: a random half against the other, the naive way."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(answers)
    out = []
    for _ in range(n_splits):
        order = rng.permutation(n)
        a, b = order[: n // 2], order[n // 2 :]
        out.append(
            _naive_distances(
                _naive_panel(answers[a], weights[a], k), _naive_panel(answers[b], weights[b], k), k
            )
        )
    return out


def naive_bootstrap(humans, personas, weights, k: int, n_resamples: int, seed: int) -> list[tuple]:
    """Per resample: both panels drawn with replacement, WD, Frobenius and both alphas, the naive way."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n, m = len(humans), len(personas)
    ones = np.ones(m)
    out = []
    for _ in range(n_resamples):
        h = rng.integers(0, n, size=n)
        p = rng.integers(0, m, size=m)
        human = _naive_panel(humans[h], weights[h], k)
        persona = _naive_panel(personas[p], ones, k)
        out.append((*_naive_distances(human, persona, k), _naive_alpha(human[1]), _naive_alpha(persona[1])))
    return out


def figures(
    quick: bool = False,
    *,
    respondents: int | None = None,
    questions: int = 10,
    options: int = 5,
    splits: int = 100,
    resamples: int = 1_000,
    repeat: int = 1,
) -> list[Figure]:
    """Seconds for every metric, and for the lower bound and the bootstrap the ratio against the naive
    way (timed on a few iterations, extrapolated). ``quick``: 10,000 respondents unless given."""
    import numpy as np

    from anthology.metrics import (
        bootstrap,
        compare,
        human_lower_bound,
        individual_agreement,
        subgroup_breakdown,
        worth_curve,
        worth_n_humans,
    )

    n = respondents or (10_000 if quick else 65_000)
    q, k = questions, options
    naive_splits, naive_resamples = (5, 3) if quick else (20, 10)
    rng = np.random.default_rng(0)
    humans = synthetic(n, q, k, rng, 0.0)
    personas = synthetic(n, q, k, rng, 0.3)
    weights = rng.lognormal(sigma=0.6, size=n)
    groups = rng.integers(0, 4, size=n)  # e.g. age group; the matched persona carries its human's label
    section = f"metrics: {n:,} humans and {n:,} personas x {q} questions, {k}-point"

    _, t_compare = timed(
        lambda: compare(humans, personas, k, human_weights=weights), repeat=repeat
    )  # warms up
    naive_lower_bound(humans, weights, k, 1, 0)  # imports scipy.stats, warms pandas up
    floor, t_floor = timed(
        lambda: human_lower_bound(humans, k, weights, n_splits=splits, seed=0), repeat=repeat
    )
    ci, t_boot = timed(
        lambda: bootstrap(humans, personas, k, human_weights=weights, n_resamples=resamples, seed=0),
        repeat=repeat,
    )
    naive_floor, t_naive_floor = timed(lambda: naive_lower_bound(humans, weights, k, naive_splits, 0))
    _, t_naive_boot = timed(lambda: naive_bootstrap(humans, personas, weights, k, naive_resamples, 0))
    per_split, per_resample = t_naive_floor / naive_splits, t_naive_boot / naive_resamples
    _, t_groups = timed(
        lambda: subgroup_breakdown(humans, personas, k, groups, groups, human_weights=weights), repeat=repeat
    )
    _, t_agree = timed(lambda: individual_agreement(humans, personas, k, weights=weights), repeat=repeat)
    curve, t_curve = timed(lambda: worth_curve(humans, k, weights, n_draws=splits, seed=0), repeat=repeat)
    worth = worth_n_humans(curve, compare(humans, personas, k, human_weights=weights).wd_raw)

    naive_wd = np.mean([wd for wd, _ in naive_floor])
    return [
        Figure(section, "compare (distributions, WD, correlations, Frobenius, alphas)", t_compare, "s"),
        Figure(
            section,
            f"human lower bound, naive ({splits} splits)",
            per_split * splits,
            "s",
            note=f"{naive_splits} splits timed, {per_split * 1e3:.0f} ms each, extrapolated",
        ),
        Figure(
            section,
            f"human lower bound, ours ({splits} splits)",
            t_floor,
            "s",
            per_split * splits / t_floor,
            note=f"WD {floor.wd_raw:.4f} (the naive way's {naive_splits} splits: {naive_wd:.4f}), "
            f"Fro. {floor.frobenius:.4f}",
        ),
        Figure(
            section,
            f"bootstrap, naive ({resamples:,} resamples, both panels)",
            per_resample * resamples,
            "s",
            note=f"{naive_resamples} resamples timed, {per_resample * 1e3:.0f} ms each, extrapolated",
        ),
        Figure(
            section,
            f"bootstrap, ours ({resamples:,} resamples, both panels)",
            t_boot,
            "s",
            per_resample * resamples / t_boot,
            note=f"WD {ci['wd_raw'].estimate:.4f} [{ci['wd_raw'].low:.4f}, {ci['wd_raw'].high:.4f}]",
        ),
        Figure(section, "subgroup breakdown (4 groups)", t_groups, "s"),
        Figure(section, "individual agreement", t_agree, "s"),
        Figure(
            section,
            f"worth-in-humans curve ({len(curve.sizes)} sizes x {splits} draws)",
            t_curve,
            "s",
            note=f"sizes {curve.sizes[0]:,} to {curve.sizes[-1]:,}; WD {curve.wd_raw[0]:.3f} to "
            f"{curve.wd_raw[-1]:.4f}; the shifted panel is worth {worth.estimate:,.0f} humans "
            f"[{worth.low:,.0f}, {worth.high:,.0f}]",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 respondents, fewer naive iterations")
    parser.add_argument("--respondents", type=int, default=None, help="default 65,000 (quick: 10,000)")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--options", type=int, default=5)
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=1, help="run ours this many times, report the best")
    parser.add_argument("--blas-threads", type=int, default=None, help="limit BLAS threads (default: as set)")
    args = parser.parse_args()
    if args.blas_threads is not None:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.blas_threads)

    import numpy as np

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"BLAS threads: {threads}, load average before: {load}; ours best of {args.repeat}"
    )
    table = figures(
        args.quick,
        respondents=args.respondents,
        questions=args.questions,
        options=args.options,
        splits=args.splits,
        resamples=args.resamples,
        repeat=args.repeat,
    )
    print(format_table(table))


if __name__ == "__main__":
    main()
