"""Resampling: the human split-half lower bound and percentile bootstrap confidence intervals.

Both are vectorised the same way (see :mod:`anthology.metrics._engine`): a resample is a vector of
multiplicities over respondents (how often each was drawn; 1/0 for a split half), a block of them is
one matrix product with the panel's feature rows, and the metrics are computed for all resamples at
once. Each resample and each split has its own random stream spawned from ``seed``, so results do not
depend on how the work is chunked and are identical for the same seed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from anthology.metrics._engine import Panel, frobenius, mean_defined, panel_metrics, wasserstein_raw
from anthology.metrics._inputs import ConstantPolicy, check_policy
from anthology.metrics.basic import make_panel
from anthology.metrics.compare import SCALAR_METRICS, comparison_from_panels, prepare

#: Anything ``numpy.random.default_rng`` accepts: an int, a SeedSequence, a Generator (which is then
#: advanced), or ``None`` for fresh entropy (not reproducible).
Seed = int | np.random.SeedSequence | np.random.Generator | None

#: Bytes of multiplicity matrix built at a time (a block of resamples or splits).
BLOCK_BYTES = 64 * 2**20


def _streams(seed: Seed, count: int) -> list[np.random.Generator]:
    return np.random.default_rng(seed).spawn(count)


def _block_rows(n: int) -> int:
    return max(1, BLOCK_BYTES // (8 * max(n, 1)))


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# -- the human split-half lower bound ------------------------------------------------------------------


@dataclass(frozen=True)
class LowerBound:
    """The human split-half lower bound: the humans split at random into two halves (sizes ``n // 2``
    and ``n - n // 2``), the metrics computed between the halves, averaged over ``n_splits`` splits.

    ``wd_raw``/``wd_normalized``/``frobenius`` are the means over splits of the per-split values
    ``*_per_split`` (shape ``(n_splits,)``); ``wd_per_question_*`` (shape ``(q,)``) are the per-question
    means over splits. Each half's distributions and correlations use the survey weights.
    ``complete_per_split`` and ``varying_per_split`` (shape ``(n_splits, 2)``, the two halves) are what
    each half's correlations rest on (see :class:`~anthology.metrics.Support`).
    """

    wd_raw: float
    wd_normalized: float
    frobenius: float
    wd_per_question_raw: np.ndarray
    wd_per_question_normalized: np.ndarray
    wd_raw_per_split: np.ndarray
    wd_normalized_per_split: np.ndarray
    frobenius_per_split: np.ndarray
    complete_per_split: np.ndarray
    varying_per_split: np.ndarray
    n_splits: int

    def scalars(self) -> dict[str, float]:
        return {"wd_raw": self.wd_raw, "wd_normalized": self.wd_normalized, "frobenius": self.frobenius}


def human_lower_bound(
    human_answers: Any,
    n_options: Any,
    human_weights: Any | None = None,
    *,
    n_splits: int = 100,
    seed: Seed = 0,
    constant: ConstantPolicy = "zero",
) -> LowerBound:
    """The best WD and Frobenius norm a simulation can hope for at this sample size: the distance
    between two random halves of the humans, averaged over ``n_splits`` seeded splits.

    Args:
        human_answers: ``(n, q)`` positions 1..K, ``MISSING`` (0) or NaN for no answer.
        n_options: K per question.
        human_weights: ``(n,)`` survey weights (``None``: equal).
        n_splits: number of random splits (the paper uses 100).
        seed: seeds the splits; the same seed gives the same result.
        constant: see :func:`anthology.metrics.weighted_pearson`.
    """
    check_policy(constant)
    _check_count(n_splits, "n_splits")
    panel = make_panel(human_answers, n_options, human_weights, "human_answers", "human_weights")
    n = panel.n
    if n < 2:
        raise ValueError(f"the split-half lower bound needs at least two humans, got {n}")
    half = n // 2
    streams = _streams(seed, n_splits)
    sums_a = np.empty((n_splits, panel.features.shape[1]))
    rows = _block_rows(n)
    for start in range(0, n_splits, rows):
        block = streams[start : start + rows]
        mask = np.zeros((len(block), n))
        for r, stream in enumerate(block):
            mask[r, stream.permutation(n)[:half]] = 1.0
        sums_a[start : start + len(block)] = panel.sums(mask)
    sums_b = panel.total() - sums_a
    wd = wasserstein_raw(panel.distributions(sums_a), panel.distributions(sums_b))
    wd_norm = wd / (panel.n_options - 1)
    where = "human answers (a split half)"
    fro = frobenius(panel.correlation(sums_a, constant, where), panel.correlation(sums_b, constant, where))
    wd_split = mean_defined(wd)
    wd_norm_split = mean_defined(wd_norm)
    support = [panel.support(sums_a), panel.support(sums_b)]
    return LowerBound(
        wd_raw=float(wd_split.mean()),
        wd_normalized=float(wd_norm_split.mean()),
        frobenius=float(fro.mean()),
        wd_per_question_raw=wd.mean(axis=0),
        wd_per_question_normalized=wd_norm.mean(axis=0),
        wd_raw_per_split=wd_split,
        wd_normalized_per_split=wd_norm_split,
        frobenius_per_split=fro,
        complete_per_split=np.stack([support[0][0], support[1][0]], axis=1),
        varying_per_split=np.stack([support[0][1], support[1][1]], axis=1),
        n_splits=n_splits,
    )


# -- bootstrap -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate (on the full data) and its percentile bootstrap interval; floats for a scalar
    metric, ``(q,)`` arrays for a per-question one. NaN bounds when no resample defined the metric."""

    estimate: Any
    low: Any
    high: Any


@dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap intervals for every metric of :class:`~anthology.metrics.Comparison`.

    ``intervals`` and ``replicates`` are keyed by the scalar metric names (:data:`SCALAR_METRICS`) and
    ``wd_per_question_raw`` / ``wd_per_question_normalized``; ``replicates[name]`` has shape
    ``(n_resamples,)`` or ``(n_resamples, q)``. ``invalid`` counts the resamples in which a metric was
    undefined (NaN), which the intervals leave out.
    """

    intervals: dict[str, Interval]
    replicates: dict[str, np.ndarray]
    invalid: dict[str, int]
    n_resamples: int
    confidence: float

    def __getitem__(self, name: str) -> Interval:
        return self.intervals[name]


BOOTSTRAP_METRICS = (*SCALAR_METRICS, "wd_per_question_raw", "wd_per_question_normalized")


def _resample_sums(panel: Panel, streams: list[np.random.Generator]) -> np.ndarray:
    """``(n_resamples, d)`` sums of the panel's features over resamples of its respondents with
    replacement (each resample draws ``n`` respondents uniformly: multinomial counts)."""
    n = panel.n
    out = np.empty((len(streams), panel.features.shape[1]))
    rows = _block_rows(n)
    for start in range(0, len(streams), rows):
        block = streams[start : start + rows]
        counts = np.empty((len(block), n))
        for r, stream in enumerate(block):
            counts[r] = np.bincount(stream.integers(0, n, size=n), minlength=n)
        out[start : start + len(block)] = panel.sums(counts)
    return out


def bootstrap(
    human_answers: Any,
    persona_answers: Any,
    n_options: Any,
    *,
    human_weights: Any | None = None,
    persona_weights: Any | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: Seed = 0,
    constant: ConstantPolicy = "zero",
) -> Bootstrap:
    """Percentile bootstrap confidence intervals for every metric of :func:`compare`.

    The humans and the personas are resampled independently (respondents with replacement, each
    keeping their weight); each resample's metrics are computed exactly as on the full data and the
    interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the replicates.
    Percentile intervals of a distance near zero can lie wholly above the estimate (resampling noise
    adds distance); read them as the spread of the metric, not as a bias-corrected interval.

    Args: as :func:`compare`, plus
        n_resamples: bootstrap resamples (default 1,000).
        confidence: the interval's coverage, in (0, 1).
        seed: the same seed gives the same intervals.
    """
    check_policy(constant)
    _check_count(n_resamples, "n_resamples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    humans, personas = prepare(human_answers, persona_answers, n_options, human_weights, persona_weights)
    for name, panel in (("human_answers", humans), ("persona_answers", personas)):
        if panel.n == 0:
            raise ValueError(f"{name} has no respondents to resample")
    point = comparison_from_panels(humans, personas, constant)
    human_seed, persona_seed = np.random.default_rng(seed).spawn(2)
    human_sums = _resample_sums(humans, _streams(human_seed, n_resamples))
    persona_sums = _resample_sums(personas, _streams(persona_seed, n_resamples))
    values = panel_metrics(humans, human_sums, personas, persona_sums, constant, " (a bootstrap resample)")
    tail = (1.0 - confidence) / 2.0
    intervals: dict[str, Interval] = {}
    replicates: dict[str, np.ndarray] = {}
    invalid: dict[str, int] = {}
    for name in BOOTSTRAP_METRICS:
        reps = values[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
            low, high = np.nanquantile(reps, [tail, 1.0 - tail], axis=0)
        estimate = getattr(point, name)
        if np.ndim(reps) == 1:
            low, high = float(low), float(high)
        intervals[name] = Interval(estimate, low, high)
        replicates[name] = reps
        invalid[name] = int(np.isnan(reps).reshape(n_resamples, -1).any(axis=1).sum())
    return Bootstrap(intervals, replicates, invalid, n_resamples, confidence)
