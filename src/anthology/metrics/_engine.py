"""The computing core: every metric is a function of a few weighted sums over respondents.

For one panel (humans or personas) each respondent gets a row of features:

* one indicator per (question, option): the weighted sums are the weighted answer counts, hence the
  distributions and the Wasserstein distances;
* for respondents who answered every question (listwise deletion), ``1``, the centred answers ``x_j``
  and the products ``x_i x_j`` (i <= j): the weighted sums give the weighted means and covariances,
  hence the Pearson correlations and Cronbach's alpha;
* when the panel has weights, an unweighted complete-case block ``[1, T, T^2, x_j, x_j^2]`` (``T`` the
  total score): all that the unweighted (pingouin) alpha needs;
* an indicator "complete and positive weight" (how many respondents a correlation rests on).

The survey weights are folded into the feature rows once. A metric on the whole panel uses the column
sums; on a bootstrap resample it uses ``counts @ features`` (``counts`` = how often each respondent was
drawn); on one half of a split it uses ``mask @ features`` and the other half is the total minus that.
So a thousand resamples or a hundred splits are one matrix product each, and every metric is then
computed on arrays with a leading resample/split axis.
"""

from __future__ import annotations

import numpy as np

from anthology.metrics._inputs import MISSING, ConstantPolicy

#: A question whose (weighted) variance is below this fraction of its mean square is constant.
CONSTANT_TOLERANCE = 1e-12


class Panel:
    """One group of respondents, validated, turned into feature rows (see the module docstring).

    Column layout of ``features`` (``n`` rows): the weighted one-hot answer cells (``sum K``), the
    weighted complete-case block ``[1, x_j, x_i x_j (i <= j)]``, then, only for a weighted panel, the
    unweighted complete-case block ``[1, T, T^2, x_j, x_j^2]`` (``T`` the total score: all that
    unweighted alpha needs), and last the count of complete respondents with positive weight.
    """

    def __init__(
        self, answers: np.ndarray, n_options: np.ndarray, weights: np.ndarray, weighted: bool
    ) -> None:
        n, q = answers.shape
        self.n, self.q = n, q
        self.n_options = n_options
        self.kmax = int(n_options.max())
        self.weighted = weighted
        answered = answers != MISSING
        complete = answered.all(axis=1)
        self.n_complete = int(complete.sum())

        offsets = np.concatenate([[0], np.cumsum(n_options)[:-1]])
        n_cells = int(n_options.sum())
        k = np.arange(self.kmax)
        self._valid = k[None, :] < n_options[:, None]
        self._gather = np.where(self._valid, offsets[:, None] + k[None, :], 0)
        self._iu = np.triu_indices(q)
        m = len(self._iu[0])

        self.weighted_block = n_cells
        self.unweighted_block = n_cells + 1 + q + m
        self.count = self.unweighted_block + (3 + 2 * q if weighted else 0)
        features = np.zeros((n, self.count + 1))

        #: ``(n, q)`` the one-hot column of each answer, -1 for no answer.
        self.cells = np.where(answered, offsets + answers - 1, -1)
        rows, cols = np.nonzero(answered)
        features[rows, self.cells[rows, cols]] = weights[rows]
        if self.n_complete:
            x = answers - answers[complete].mean(axis=0)
            x[~complete] = 0.0
            b = self.weighted_block
            cw = complete * weights
            features[:, b] = cw
            xw = x * weights[:, None]
            features[:, b + 1 : b + 1 + q] = xw
            features[:, b + 1 + q : self.unweighted_block] = xw[:, self._iu[0]] * x[:, self._iu[1]]
            if weighted:
                u = self.unweighted_block
                total = x.sum(axis=1)
                features[:, u] = complete
                features[:, u + 1] = total
                features[:, u + 2] = total * total
                features[:, u + 3 : u + 3 + q] = x
                features[:, u + 3 + q : u + 3 + 2 * q] = x * x
        features[:, self.count] = complete & (weights > 0)
        self.features = features

    # -- sums ---------------------------------------------------------------------------------------

    def total(self) -> np.ndarray:
        """The sums over the whole panel, shape ``(d,)``."""
        return self.features.sum(axis=0)

    def sums(self, multiplicity: np.ndarray) -> np.ndarray:
        """``(..., n)`` respondent multiplicities (resample counts, split masks) to ``(..., d)`` sums."""
        return multiplicity @ self.features

    # -- metrics from sums --------------------------------------------------------------------------

    def distributions(self, sums: np.ndarray) -> np.ndarray:
        """``(..., q, kmax)`` weighted answer shares; zero beyond each question's K; a question nobody
        answered (with positive weight) is a row of NaN."""
        counts = np.where(self._valid, sums[..., self._gather], 0.0)
        totals = counts.sum(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals > 0, counts / totals, np.nan)

    def _moments(self, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted covariance (population form: normalised by the summed weight) and raw second
        moments of the centred answers of complete respondents, ``(..., q, q)`` each."""
        b = self.weighted_block
        q = self.q
        s0 = sums[..., b, None]
        s1 = sums[..., b + 1 : b + 1 + q]
        s2 = sums[..., b + 1 + q : self.unweighted_block]
        second = np.empty((*sums.shape[:-1], q, q))
        # A half without complete respondents (s0 == 0) gives NaN or, where the other half's sums are
        # totals minus this one's and leave a rounding residue in s1, infinities: undefined either way
        # (its count is under two), so without a warning.
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / s0
            second[..., self._iu[0], self._iu[1]] = s2 / s0
            second[..., self._iu[1], self._iu[0]] = s2 / s0
            cov = second - mean[..., :, None] * mean[..., None, :]
        return cov, second

    def correlation(self, sums: np.ndarray, constant: ConstantPolicy, where: str) -> np.ndarray:
        """``(..., q, q)`` weighted Pearson correlations over complete respondents (see
        :func:`correlation_from_moments`)."""
        cov, second = self._moments(sums)
        return correlation_from_moments(cov, second, sums[..., self.count], constant, where)

    def support(self, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the correlations and alpha rest on, ``(...)`` each: the complete respondents with
        positive weight, and the questions whose answers vary among them (counted as
        :func:`correlation_from_moments` counts constant ones)."""
        cov, second = self._moments(sums)
        count = sums[..., self.count]
        var = np.diagonal(cov, axis1=-2, axis2=-1)
        ms = np.diagonal(second, axis1=-2, axis2=-1)
        varying = (var > CONSTANT_TOLERANCE * ms) & (np.asarray(count) >= 2)[..., None]
        return np.rint(count).astype(np.int64), varying.sum(axis=-1)

    def alpha(self, sums: np.ndarray, weighted: bool) -> np.ndarray:
        """``(...)`` Cronbach's alpha over complete respondents (see :func:`alpha_from_variances`)."""
        if weighted or not self.weighted:
            cov, second = self._moments(sums)
            item_vars = np.trace(cov, axis1=-2, axis2=-1)
            total_var = cov.sum(axis=(-2, -1))
            count = sums[..., self.count] if weighted else sums[..., self.weighted_block]
            return alpha_from_variances(item_vars, total_var, second.sum(axis=(-2, -1)), count, self.q)
        u, q = self.unweighted_block, self.q
        count = sums[..., u]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_total = sums[..., u + 1] / count
            total_second = sums[..., u + 2] / count
            means = sums[..., u + 3 : u + 3 + q] / count[..., None]
            seconds = sums[..., u + 3 + q : u + 3 + 2 * q] / count[..., None]
        item_vars = (seconds - means * means).sum(axis=-1)
        total_var = total_second - mean_total * mean_total
        return alpha_from_variances(item_vars, total_var, total_second, count, q)


def correlation_from_moments(
    cov: np.ndarray, second: np.ndarray, count: np.ndarray, constant: ConstantPolicy, where: str
) -> np.ndarray:
    """Pearson correlations from a covariance matrix ``(..., q, q)``. A question whose variance is below
    ``CONSTANT_TOLERANCE`` times its mean square is constant and handled as ``constant`` says; with
    fewer than two respondents (``count < 2``) the whole matrix is NaN."""
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    ms = np.diagonal(second, axis1=-2, axis2=-1)
    defined = np.asarray(count >= 2)
    flat = (var <= CONSTANT_TOLERANCE * ms) & defined[..., None]
    if constant == "raise" and flat.any():
        questions = sorted(set(np.nonzero(flat)[-1].tolist()))
        raise ValueError(
            f"{where}: question(s) {questions} have the same answer from every respondent used, so their "
            "correlations are undefined; pass constant='zero' (correlation 0) or constant='nan'"
        )
    sd = np.sqrt(np.where(flat | ~np.isfinite(var), 1.0, np.maximum(var, 0.0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.clip(cov / (sd[..., :, None] * sd[..., None, :]), -1.0, 1.0)
    off = flat[..., :, None] | flat[..., None, :]
    corr = np.where(off, 0.0 if constant == "zero" else np.nan, corr)
    q = cov.shape[-1]
    eye = np.eye(q, dtype=bool)
    diag = 1.0 if constant == "zero" else np.where(flat, np.nan, 1.0)[..., None, :]
    corr = np.where(eye, diag, corr)
    return np.where(defined[..., None, None], corr, np.nan)


def alpha_from_variances(
    item_vars: np.ndarray, total_var: np.ndarray, total_second: np.ndarray, count: np.ndarray, k: int
) -> np.ndarray:
    """Cronbach's alpha ``k/(k-1) * (1 - sum of item variances / variance of the total score)``. The
    variances may use any common normalisation (it cancels), so population-form variances give the
    ddof=1 (pingouin) value. NaN with fewer than two items or respondents, or when the total score is
    constant (its variance below ``CONSTANT_TOLERANCE`` times its second moment)."""
    flat = total_var <= CONSTANT_TOLERANCE * total_second
    ok = (np.asarray(count) >= 2) & ~flat & (k >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = k / max(k - 1, 1) * (1.0 - item_vars / total_var)
    return np.where(ok, alpha, np.nan)


def wasserstein_raw(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance between distributions ``(..., K)`` on the positions 1..K (unit spacing):
    the L1 distance between the two CDFs. NaN where either distribution is NaN."""
    diff = np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1)
    return np.abs(diff[..., :-1]).sum(axis=-1)


def mean_defined(values: np.ndarray) -> np.ndarray:
    """The mean over the last axis of the finite entries; NaN where there are none."""
    finite = np.isfinite(values)
    count = finite.sum(axis=-1)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def frobenius(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Frobenius norm of ``a - b`` over the last two axes (NaN entries give NaN)."""
    return np.sqrt(((a - b) ** 2).sum(axis=(-2, -1)))


def panel_metrics(
    humans: Panel,
    human_sums: np.ndarray,
    personas: Panel,
    persona_sums: np.ndarray,
    constant: ConstantPolicy,
    where: str,
) -> dict[str, np.ndarray]:
    """Every comparison metric from the two panels' sums, and what each panel's correlations rest on
    (``*_complete``, ``*_varying``: :meth:`Panel.support`); any leading axes (resamples) carry
    through."""
    h_dist = humans.distributions(human_sums)
    p_dist = personas.distributions(persona_sums)
    wd = wasserstein_raw(h_dist, p_dist)
    wd_norm = wd / (humans.n_options - 1)
    h_corr = humans.correlation(human_sums, constant, f"human answers{where}")
    p_corr = personas.correlation(persona_sums, constant, f"persona answers{where}")
    h_complete, h_varying = humans.support(human_sums)
    p_complete, p_varying = personas.support(persona_sums)
    return {
        "human_distributions": h_dist,
        "persona_distributions": p_dist,
        "wd_per_question_raw": wd,
        "wd_per_question_normalized": wd_norm,
        "wd_raw": mean_defined(wd),
        "wd_normalized": mean_defined(wd_norm),
        "human_correlation": h_corr,
        "persona_correlation": p_corr,
        "frobenius": frobenius(h_corr, p_corr),
        "alpha_humans": humans.alpha(human_sums, weighted=False),
        "alpha_humans_weighted": humans.alpha(human_sums, weighted=True),
        "alpha_personas": personas.alpha(persona_sums, weighted=False),
        "alpha_personas_weighted": personas.alpha(persona_sums, weighted=True),
        "human_complete": h_complete,
        "human_varying": h_varying,
        "persona_complete": p_complete,
        "persona_varying": p_varying,
    }
