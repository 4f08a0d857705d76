"""From how many respondents the human split-half lower bound is a bound (issue 15, part 5): the figures
behind ``anthology.evaluation.sizes.RELIABLE_RESPONDENTS`` (docs/runs.md, "Reading the evaluation at
small sizes").

    python benchmarks/lower_bound_size.py              # 400 replications per size, about a minute
    python benchmarks/lower_bound_size.py --quick      # 60 replications

A seeded simulation on the shape of the paper's Pew waves: 8 questions alternating 4 and 5 options,
answers cut from one latent trait plus noise (so the questions correlate), with random cut points (so
the distributions are skewed as real ones are). For each number of humans n it draws n humans from the
population and, for each panel, n personas (one per human, as matching gives):

* ``exact``: personas drawn from the humans' own population (a perfect simulator);
* ``off by d``: personas drawn from a population whose latent trait is shifted so that the exact
  (population) WD from the humans' population, averaged over the questions, is ``d`` option positions.

It reports the mean split-half WD (``anthology.metrics.human_lower_bound``, 20 splits), each panel's
mean WD (``anthology.metrics.compare``) and how often the panel's WD is below the split-half, i.e. how
often the table would show a simulation "beating the lower bound".

The exact population distributions come from the normal CDF, so ``d`` is exact, not estimated.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from anthology.metrics import compare, human_lower_bound

SIZES = (8, 16, 25, 50, 100, 150, 200, 250, 300, 400, 600)
ERRORS = (0.1, 0.25)
QUESTIONS = 8


def population(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Loadings, K and sorted cut points (in latent-score units) per question."""
    loadings = rng.uniform(0.5, 1.2, QUESTIONS)
    ks = np.array([4, 5] * (QUESTIONS // 2))
    cuts = [np.sort(rng.normal(0.0, 1.0, k - 1)) for k in ks]
    return loadings, ks, cuts


def exact_distributions(loadings: np.ndarray, cuts: list[np.ndarray], shift: float) -> list[np.ndarray]:
    """Each question's exact answer shares when the latent trait has mean ``shift``: the score
    ``a z + e`` (z ~ N(shift, 1), e ~ N(0, 1)) falls between consecutive cut points."""
    out = []
    for a, c in zip(loadings, cuts, strict=True):
        cdf = norm.cdf(c, loc=a * shift, scale=np.sqrt(a * a + 1.0))
        out.append(np.diff(np.concatenate([[0.0], cdf, [1.0]])))
    return out


def population_wd(loadings: np.ndarray, cuts: list[np.ndarray], shift: float) -> float:
    """Mean over questions of the exact WD (L1 between CDFs on positions 1..K) from the unshifted one."""
    base = exact_distributions(loadings, cuts, 0.0)
    moved = exact_distributions(loadings, cuts, shift)
    return float(np.mean([np.abs(np.cumsum(p - q)[:-1]).sum() for p, q in zip(base, moved, strict=True)]))


def draw(rng: np.random.Generator, n: int, loadings, cuts, shift: float) -> np.ndarray:
    """``(n, q)`` answers 1..K from the population with latent mean ``shift``."""
    z = rng.normal(shift, 1.0, (n, 1))
    score = z * loadings[None, :] + rng.normal(size=(n, QUESTIONS))
    return np.stack([1 + (score[:, j, None] > c).sum(axis=1) for j, c in enumerate(cuts)], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 replications per size instead of 400")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    replications = 60 if args.quick else 400
    rng = np.random.default_rng(args.seed)
    loadings, ks, cuts = population(rng)
    shifts = {d: brentq(lambda s, d=d: population_wd(loadings, cuts, s) - d, 0.0, 5.0) for d in ERRORS}
    panels = {"exact": 0.0, **{f"off by {d}": shifts[d] for d in ERRORS}}
    print(
        f"{replications} replications per size; {QUESTIONS} questions, K = {ks.tolist()}; WD raw (positions)"
    )
    header = f"{'n':>5}  {'split-half':>10}" + "".join(
        f"  {name + ' WD':>14} {'beats':>6}" for name in panels
    )
    print(header)
    for n in SIZES:
        floor, wd, beats = [], {p: [] for p in panels}, {p: 0 for p in panels}
        for _ in range(replications):
            humans = draw(rng, n, loadings, cuts, 0.0)
            split = human_lower_bound(humans, ks, n_splits=20, seed=rng.integers(2**32)).wd_raw
            floor.append(split)
            for name, shift in panels.items():
                value = compare(humans, draw(rng, n, loadings, cuts, shift), ks).wd_raw
                wd[name].append(value)
                beats[name] += value < split
        cells = "".join(f"  {np.mean(wd[p]):>14.3f} {100 * beats[p] / replications:>5.0f}%" for p in panels)
        print(f"{n:>5}  {np.mean(floor):>10.3f}{cells}")


if __name__ == "__main__":
    main()
