"""Whether "worth n humans" reads a perfect simulator of m personas as worth m (issue 17, part 4): the
figures behind docs/worth-n-humans.md.

    python benchmarks/worth_calibration.py              # 40 replications per row, about a minute
    python benchmarks/worth_calibration.py --quick      # 10 replications

The population of ``benchmarks/lower_bound_size.py`` (8 questions alternating 4 and 5 options, one
latent trait plus noise, random cut points). Per replication it draws n humans, computes their curve
(``anthology.metrics.worth_curve``, 100 draws per size) and reads off (``worth_n_humans``) the WD of
panels of m personas drawn from the population (``exact``: a perfect simulator) or from one shifted
until its exact WD from the humans' population is 0.25 option positions (the error of the paper's best
methods). ``weighted``: the humans are drawn with a selection probability that rises with their answer
to the first question (1 to 3 times), and carry the inverse as their survey weight, so only the weighted
humans represent the population. It prints the median worth over the replications, that median over
m, and how often the worth interval holds m.
"""

from __future__ import annotations

import argparse

import numpy as np
from lower_bound_size import draw, population, population_wd
from scipy.optimize import brentq

from anthology.metrics import compare, worth_curve, worth_n_humans

HUMANS = (400, 2537)  # the size from which the lower bound is a bound; Pew ATP W34's
PANELS = (20, 100, 400)


def humans_of(rng, n: int, loadings, cuts, weighted: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` humans of the population and their weights (``None`` unweighted)."""
    if not weighted:
        return draw(rng, n, loadings, cuts, 0.0), None
    pool = draw(rng, 4 * n, loadings, cuts, 0.0)
    chance = (1 + 2 * (pool[:, 0] - 1) / (pool[:, 0].max() - 1)) / 3  # 1/3 to 1
    kept = np.flatnonzero(rng.random(len(pool)) < chance)[:n]
    return pool[kept], 1 / chance[kept]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 replications per row instead of 40")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    replications = 10 if args.quick else 40
    rng = np.random.default_rng(args.seed)
    loadings, ks, cuts = population(rng)
    shift = brentq(lambda s: population_wd(loadings, cuts, s) - 0.25, 0.0, 5.0)
    print(f"{replications} replications per row; 8 questions, K = {ks.tolist()}; 100 draws per size")
    print(f"{'humans':>6} {'weights':>8} {'panel':>12} {'m':>5} {'median worth':>12} {'/ m':>5}", end="")
    print(f" {'m in interval':>13}")
    for n in HUMANS:
        for weighted in (False, True):
            rows = [("exact", 0.0, m) for m in sorted({*PANELS, n})] + [("off by 0.25", shift, n)]
            worths = {row: [] for row in rows}
            for _ in range(replications):
                humans, weights = humans_of(rng, n, loadings, cuts, weighted)
                curve = worth_curve(humans, ks, weights, n_draws=100, seed=int(rng.integers(2**32)))
                for row in rows:
                    panel = draw(rng, row[2], loadings, cuts, row[1])
                    worths[row].append(
                        worth_n_humans(curve, compare(humans, panel, ks, human_weights=weights).wd_raw)
                    )
            for (name, _, m), found in worths.items():
                median = np.median([w.estimate for w in found])
                inside = np.mean([w.low <= m <= w.high for w in found])
                label = "weighted" if weighted else "equal"
                print(f"{n:>6} {label:>8} {name:>12} {m:>5} {median:>12.0f} {median / m:>5.2f}", end="")
                print(f" {100 * inside:>12.0f}%")


if __name__ == "__main__":
    main()
