"""How many humans a persona panel is worth: the WD that a panel of ``m`` real respondents gets against
the humans, for a grid of ``m`` (:func:`worth_curve`), and the ``m`` at which it equals a panel's WD
(:func:`worth_n_humans`). docs/worth-n-humans.md gives the reasons for each choice.

The humans' weighted answers stand in for the population, as in the bootstrap. One draw is a panel
of ``m`` respondents drawn from them with replacement, with probability proportional to their survey
weight and each counted once (``m`` answers from the population, as a persona panel has), against a
resample of all the humans with replacement, each keeping their weight (a survey of the humans' size:
the method's WD carries the humans' own sampling noise, so the curve must too). The WD is the paper's
(raw, averaged over the questions both sides answered), as :func:`~anthology.metrics.compare` computes
it. Each draw has its own random stream spawned from ``seed``; the panels of one draw are nested (the
first ``m`` of one sequence of draws) and share its resample of the humans, so the curve is smooth in
``m`` and the same for the same seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anthology.metrics._engine import mean_defined, wasserstein_raw
from anthology.metrics._inputs import as_weights
from anthology.metrics.basic import make_panel
from anthology.metrics.resampling import Seed, _check_count, _resample_sums, _streams

#: The smallest panel size of the default grid.
SMALLEST = 5
#: The steps of the default grid within each power of ten.
STEPS = (1, 2, 5)


def worth_sizes(n_humans: int) -> np.ndarray:
    """The default panel sizes for ``n_humans`` humans: 5, 10, 20, 50, 100, ... below ``n_humans``,
    then ``n_humans`` itself (just ``n_humans`` below 5)."""
    _check_count(n_humans, "n_humans")
    grid = []
    power = 1
    while True:
        for step in STEPS:
            if step * power >= n_humans:
                return np.array([*grid, n_humans], dtype=np.int64)
            if step * power >= SMALLEST:
                grid.append(step * power)
        power *= 10


@dataclass(frozen=True)
class WorthCurve:
    """The WD of a panel of ``m`` random respondents against the humans, per panel size.

    ``sizes`` (shape ``(s,)``, increasing) are the panel sizes; ``wd_raw`` the mean over the draws of
    their WD, and ``low``/``high`` its ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
    over the draws; ``wd_raw_per_draw`` has shape ``(n_draws, s)``.
    """

    sizes: np.ndarray
    wd_raw: np.ndarray
    low: np.ndarray
    high: np.ndarray
    wd_raw_per_draw: np.ndarray
    n_humans: int
    n_draws: int
    confidence: float


def worth_curve(
    human_answers: Any,
    n_options: Any,
    human_weights: Any | None = None,
    *,
    sizes: Sequence[int] | None = None,
    n_draws: int = 100,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> WorthCurve:
    """The WD that a panel of ``m`` respondents drawn from the humans' population gets against a
    survey of the humans' size, for each ``m`` in ``sizes`` (see the module docstring).

    Args:
        human_answers: ``(n, q)`` positions 1..K, ``MISSING`` (0) or NaN for no answer.
        n_options: K per question.
        human_weights: ``(n,)`` survey weights (``None``: equal).
        sizes: increasing positive panel sizes (default :func:`worth_sizes`).
        n_draws: draws per size.
        confidence: the band's coverage, in (0, 1).
        seed: the same seed gives the same curve.
    """
    _check_count(n_draws, "n_draws")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    humans = make_panel(human_answers, n_options, human_weights, "human_answers", "human_weights")
    n = humans.n
    if n == 0:
        raise ValueError("human_answers has no respondents")
    weights = as_weights(human_weights, n, "human_weights")
    if weights.sum() <= 0:
        raise ValueError("human_weights sum to zero: no respondent to draw a panel from")
    grid = worth_sizes(n) if sizes is None else _as_sizes(sizes)
    reference_seed, panel_seed = np.random.default_rng(seed).spawn(2)
    reference = humans.distributions(_resample_sums(humans, _streams(reference_seed, n_draws)))
    counts = _nested_panel_counts(humans.cells, humans.weighted_block, weights, grid, panel_seed, n_draws)
    panels = humans.distributions(counts)  # (draws, sizes, q, kmax)
    wd = mean_defined(wasserstein_raw(panels, reference[:, None]))
    tail = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a size no draw defined is NaN
        low, high = np.nanquantile(wd, [tail, 1.0 - tail], axis=0)
        mean = np.nanmean(wd, axis=0)
    return WorthCurve(
        sizes=grid,
        wd_raw=mean,
        low=low,
        high=high,
        wd_raw_per_draw=wd,
        n_humans=n,
        n_draws=n_draws,
        confidence=confidence,
    )


def _as_sizes(sizes: Sequence[int]) -> np.ndarray:
    grid = np.asarray(sizes)
    if (
        grid.ndim != 1
        or grid.size == 0
        or grid.dtype.kind not in "iu"
        or (grid < 1).any()
        or (np.diff(grid) <= 0).any()
    ):
        raise ValueError(f"sizes must be increasing positive whole numbers, got {list(sizes)!r}")
    return grid.astype(np.int64)


def _nested_panel_counts(
    cells: np.ndarray, n_cells: int, weights: np.ndarray, sizes: np.ndarray, seed: Seed, n_draws: int
) -> np.ndarray:
    """``(n_draws, s, n_cells)`` answer counts of the nested panels: per draw, ``sizes[-1]`` humans
    drawn with replacement in proportion to ``weights``, the panel of size ``m`` the first ``m``.

    The draws are made in index order (sorted uniforms against the cumulative weights: a fast search
    and in-order reads of ``cells``) and each is given, in random order, the size from which it is
    in the panel: the same distribution as drawing one after another."""
    largest = int(sizes[-1])
    # The size (index into sizes) from which each drawn position is in the panel.
    first_size = np.searchsorted(sizes, np.arange(largest), side="right")
    cumulative = np.cumsum(weights)
    out = np.empty((n_draws, len(sizes), n_cells))
    for r, stream in enumerate(_streams(seed, n_draws)):
        uniforms = np.sort(stream.random(largest)) * cumulative[-1]
        drawn = np.minimum(np.searchsorted(cumulative, uniforms, side="right"), len(cells) - 1)
        codes = cells[drawn]
        bins = (stream.permutation(first_size)[:, None] * n_cells + codes)[codes >= 0]
        per_size = np.bincount(bins, minlength=len(sizes) * n_cells).reshape(len(sizes), n_cells)
        out[r] = np.cumsum(per_size, axis=0)
    return out


@dataclass(frozen=True)
class Worth:
    """How many humans a panel is worth: the panel size ``estimate`` at which the curve's mean equals
    the panel's WD, and ``low``/``high`` where its band's edges do (the sizes whose middle WDs hold
    the panel's). Sizes are read off between grid points by linear interpolation of log WD in log
    size (WD falls about as ``1 / sqrt(m)``, a straight line there).

    A value beyond the grid is the grid's end: ``below`` says the panel's WD is above the curve at the
    smallest size (worth fewer than ``sizes[0]``), ``above`` that it is below the curve at the largest
    (worth at least ``sizes[-1]``, the number of humans by default). NaN when the WD is NaN.
    """

    estimate: float
    low: float
    high: float
    below: bool
    above: bool


def worth_n_humans(curve: WorthCurve, wd_raw: float) -> Worth:
    """The number of random respondents whose WD against the humans equals ``wd_raw`` (a panel's WD,
    :attr:`~anthology.metrics.Comparison.wd_raw`), read off ``curve``."""
    if not np.isfinite(wd_raw):
        return Worth(np.nan, np.nan, np.nan, below=False, above=False)
    mean = np.fmin.accumulate(curve.wd_raw)
    return Worth(
        estimate=_crossing(curve.sizes, mean, wd_raw),
        low=_crossing(curve.sizes, np.fmin.accumulate(curve.low), wd_raw),
        high=_crossing(curve.sizes, np.fmin.accumulate(curve.high), wd_raw),
        below=bool(wd_raw > mean[0]),
        above=bool(wd_raw < mean[-1]),
    )


def _crossing(sizes: np.ndarray, envelope: np.ndarray, target: float) -> float:
    """The first size at which the non-increasing ``envelope`` reaches ``target``, interpolated
    linearly in log WD and log size; the grid's end where it does not (NaN for an all-NaN curve)."""
    if np.isnan(envelope).all():
        return np.nan
    reached = np.flatnonzero(envelope <= target)
    if reached.size == 0:
        return float(sizes[-1])
    i = int(reached[0])
    if i == 0 or envelope[i] == target:
        return float(sizes[i])
    with np.errstate(divide="ignore"):  # a curve that reaches 0: the crossing is at the size before
        y0, y1, y = np.log([envelope[i - 1], envelope[i], target])
    x0, x1 = np.log(sizes[i - 1 : i + 1].astype(float))
    return float(np.exp(x0 + (y0 - y) / (y0 - y1) * (x1 - x0)))


__all__ = ["SMALLEST", "Worth", "WorthCurve", "worth_curve", "worth_n_humans", "worth_sizes"]
