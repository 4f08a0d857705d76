"""Raking (iterative proportional fitting) of unit weights to population margins, and the Kish
effective sample size of a set of weights. Pure numpy; :mod:`anthology.method.raked_panel` applies it
to the persona pool.

Each unit (a persona) sits in one category of every raked trait (``codes``: one ``(n,)`` array of
category indices per trait). Raking starts from equal weights (or ``base``) and, trait after trait,
scales the weights of each category's units so that the trait's weighted shares equal its target
shares; a sweep over all traits is one iteration. It stops when every share is within ``tolerance``
of its target (the margins are met) or after ``max_iterations`` sweeps (not converged: the margins
cannot be met together, or only in the limit where some weights go to zero). A category with a
positive target and no unit (an empty cell) can never be met, so it is refused before any sweep
(:func:`empty_cells` finds them). A category whose target is 0 gets weight 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The largest gap between a raked share and its target at which the margins count as met.
TOLERANCE = 1e-6
#: Sweeps over the traits before raking gives up.
MAX_ITERATIONS = 1000


@dataclass(frozen=True)
class Raking:
    """The raked ``weights`` ``(n,)`` (summing to n, so their mean is 1), the sweeps that ran, whether
    the margins were met (``converged``) and the largest gap between a raked share and its target
    (``gap``), with the trait (index) it is on."""

    weights: np.ndarray
    iterations: int
    converged: bool
    gap: float
    gap_trait: int


def empty_cells(codes: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """The (trait index, category index) of every category with a positive target and no unit."""
    found = []
    for t, (code, target) in enumerate(zip(codes, targets, strict=True)):
        counts = np.bincount(np.asarray(code), minlength=len(target))
        found += [(t, int(k)) for k in np.flatnonzero((np.asarray(target) > 0) & (counts == 0))]
    return found


def rake(
    codes: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    base: np.ndarray | None = None,
    tolerance: float = TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
) -> Raking:
    """Weights whose shares in every trait's categories equal ``targets`` (see the module doc).

    Args:
        codes: per trait, ``(n,)`` each unit's category index 0..K-1.
        targets: per trait, ``(K,)`` the target shares (non-negative, summing to 1).
        base: ``(n,)`` positive starting weights (default: equal).
        tolerance: the largest gap between a share and its target that counts as met.
        max_iterations: sweeps over the traits before giving up (``converged`` False).

    Raises:
        ValueError: inputs of the wrong shape or range, or an empty cell (:func:`empty_cells`).
    """
    codes = [np.asarray(c, dtype=np.int64) for c in codes]
    targets = [np.asarray(t, dtype=float) for t in targets]
    _check(codes, targets, base, max_iterations)
    empty = empty_cells(codes, targets)
    if empty:
        trait, category = empty[0]
        raise ValueError(f"trait {trait} category {category} has a positive target and no unit to weight")
    n = len(codes[0])
    weights = np.ones(n) if base is None else np.asarray(base, dtype=float).copy()
    gap, trait = _gap(codes, targets, weights)
    iterations = 0
    while gap > tolerance and iterations < max_iterations and weights.sum() > 0:
        for code, target in zip(codes, targets, strict=True):
            shares = _shares(code, target, weights)
            # A category whose units all lost their weight (to another trait's zero target) stays at
            # share 0: its ratio is 0 and the gap stays, so raking ends unconverged.
            ratio = np.divide(target, shares, out=np.zeros_like(target), where=shares > 0)
            weights *= ratio[code]
        iterations += 1
        gap, trait = _gap(codes, targets, weights)
    total = weights.sum()
    scaled = weights * (n / total) if total > 0 else weights
    return Raking(scaled, iterations, gap <= tolerance, gap, trait)


def _shares(code: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted share of each category (all 0 when no weight is left)."""
    counts = np.bincount(code, weights=weights, minlength=len(target))
    total = counts.sum()
    return counts / total if total > 0 else counts


def _gap(
    codes: Sequence[np.ndarray], targets: Sequence[np.ndarray], weights: np.ndarray
) -> tuple[float, int]:
    """The largest |share - target| over all traits' categories, and its trait."""
    gaps = [
        float(np.abs(_shares(code, target, weights) - target).max())
        for code, target in zip(codes, targets, strict=True)
    ]
    worst = int(np.argmax(gaps))
    return gaps[worst], worst


def _check(
    codes: Sequence[np.ndarray], targets: Sequence[np.ndarray], base: np.ndarray | None, max_iterations: int
) -> None:
    if not codes or len(codes) != len(targets):
        raise ValueError(f"give one target per trait: {len(codes)} code arrays, {len(targets)} targets")
    n = len(codes[0])
    if n == 0:
        raise ValueError("there is no unit to weight")
    for t, (code, target) in enumerate(zip(codes, targets, strict=True)):
        if code.shape != (n,):
            raise ValueError(f"trait {t}: codes have shape {code.shape}, expected ({n},)")
        if code.min() < 0 or code.max() >= len(target):
            raise ValueError(f"trait {t}: a code lies outside 0..{len(target) - 1}")
        if not np.isfinite(target).all() or (target < 0).any() or abs(target.sum() - 1) > 1e-9:
            raise ValueError(f"trait {t}: targets must be non-negative shares summing to 1")
    if base is not None and (np.shape(base) != (n,) or not (np.asarray(base) > 0).all()):
        raise ValueError(f"base must hold {n} positive weights")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be at least 1, got {max_iterations}")


def kish_ess(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``: how many equally weighted units carry as
    much information as these weighted ones (n for equal weights, fewer the more unequal)."""
    w = np.asarray(weights, dtype=float)
    squares = float((w * w).sum())
    return float(w.sum() ** 2 / squares) if squares > 0 else 0.0
