"""Stage 4: match personas to a survey's respondents by demographics.

The weight of (human i, persona j) is the product over traits of the probability that persona j has
human i's category, with the persona's distribution mapped onto the survey's categories (fine persona
bins summed into the survey's bins; "Prefer not to answer", unmapped and non-compliant mass dropped
and the rest renormalised; all zero: uniform). A human whose category is missing or refused counts as
uniform, which multiplies every persona's weight by the same 1/K. Weights are kept in log space.

* ``greedy``: each human gets the persona of largest weight; a persona may serve several humans.
* ``max-weight``: a one-to-one assignment maximising the total weight, which needs at least as many
  personas as humans. ``objective="log"`` maximises the sum of log-weights (the product of the matched
  weights) instead of the paper's sum of weights.
* ``random``: a persona drawn at random for each human (the paper's ablation).
* ``raked`` is no matching: the whole pool weighted to the population's margins
  (:mod:`anthology.method.raked_panel`), built here beside the matchings.

Memory. A human's weights depend only on their trait profile (the tuple of their categories), so greedy
and pruned max-weight compute one row per distinct profile, in blocks of at most ``BLOCK_BYTES``, and
random only the pairs it drew: none of them holds the humans x personas matrix. Max-weight runs

* exact (solver ``exact dense``) when the n_humans x n_personas float64 matrix fits ``memory``
  (``MEMORY_BUDGET``, 2 GiB; 2,348 x 10,000 takes 188 MB): the matrix is built once, turned into costs
  in place and solved by the Hungarian algorithm (scipy's linear_sum_assignment);
* with top-k candidate pruning (solver ``top-k pruned``) otherwise: a profile shared by c humans keeps
  its best c + k - 1 personas (k: ``candidates``, default ``CANDIDATES`` = 32), its r-th human gets ranks
  r .. r + k - 1 of that list (n_humans x k edges in all), and the sparse problem is solved exactly by
  LAPJVsp (scipy's min_weight_full_bipartite_matching). The humans of a profile are interchangeable, so
  the windows lose nothing against giving each of them the whole list; what pruning can lose is a
  persona beyond a profile's list, which the optimum uses only where profiles compete for the same
  personas. When the candidates admit no full matching, k doubles and the search reruns; at
  k = n_personas it is exact. It holds the edges and one block, never the dense matrix (48 GiB alone
  for 65,000 humans x 100,000 personas; the whole stage's measured peak there is in BENCHMARKS.md).
  k stops doubling where the next k's edges would pass ``EDGE_MEMORY`` (4 GiB at ``EDGE_BYTES`` each;
  k <= 512 for 65,000 humans): personas that all answer nearly alike (a weak model) put the same few
  first in every profile's list, and k would otherwise grow towards the number of humans (a random
  model's personas ran the 65,000 x 100,000 scale run out of memory that way: BENCHMARKS.md).
  Then each human that a maximum matching of the candidates leaves out gets one spare edge to a persona
  it leaves free, profile by profile, the best free ones first (solver ``top-k pruned, N spare
  edges``), and the assignment is optimal over the candidates and spare edges (the scale run's k,
  spare edges, time and peak memory: BENCHMARKS.md, from benchmarks/scale_memory.py).

  What pruning costs in optimality (relative loss of total weight against the exact solution) is
  measured on synthetic 8-trait instances by benchmarks/matching_speed.py, with the figures in
  BENCHMARKS.md: nothing on the instances tried with a third or more personas than humans, a small loss
  where personas barely outnumber humans or match them in number (a larger ``candidates`` shrinks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from anthology.errors import ConfigError
from anthology.method.margins import Margins, survey_margins
from anthology.method.raked_panel import RakedPanel, rake_pool
from anthology.method.settings import METHODS, PANELS, RAKED, Method
from anthology.surveys.schema import Survey, SurveyTrait, Trait

Objective = Literal["weight", "log"]
MEMORY_BUDGET = 2 * 2**30  # bytes: max-weight's dense n_humans x n_personas float64 matrix must fit
CANDIDATES = 32  # k of top-k pruning: a profile with c humans keeps its best c + k - 1 personas
EDGE_MEMORY = 4 * 2**30  # bytes: pruned max-weight's candidate edges; k stops doubling there
EDGE_BYTES = 128  # peak bytes per candidate edge (edges, log-weights, sparse graphs, the solvers)
BLOCK_BYTES = 4 * 2**20  # one streamed block of the weight matrix
TOP_SHARE = 0.01  # the match report gives the share of respondents this share of the pool serves


@dataclass(frozen=True)
class TraitTable:
    """One trait's side of matching: the personas' probabilities over the survey's categories
    (``personas``, shape [n_personas, K]), each human's category index (``humans``, -1 unknown) and
    which personas gave a usable answer (``answered``, [n_personas] bool; ``None``: all did; the
    others' rows are uniform)."""

    name: str
    labels: tuple[str, ...]
    personas: np.ndarray
    humans: np.ndarray
    answered: np.ndarray | None = None


class Matching(NamedTuple):
    """One method's result: the persona index and log-weight of every human, the solver that ran and,
    for pruned max-weight, the k it needed."""

    chosen: np.ndarray
    log_weight: np.ndarray
    solver: str
    k: int | None = None


def persona_probabilities(
    demographics: pd.DataFrame, trait: Trait, survey_trait: SurveyTrait, persona_ids: Sequence[str]
) -> np.ndarray:
    """[n_personas, K] probabilities of the survey's K categories for one persona trait: the
    :func:`mapped_masses` renormalised (uniform for a persona with none)."""
    return _renormalised(mapped_masses(demographics, trait, survey_trait, persona_ids))


def _renormalised(mapped: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; uniform where the sum is 0."""
    totals = mapped.sum(axis=1, keepdims=True)
    uniform = np.full_like(mapped, 1.0 / mapped.shape[1])
    return np.where(totals > 0, mapped / np.where(totals > 0, totals, 1.0), uniform)


def mapped_masses(
    demographics: pd.DataFrame, trait: Trait, survey_trait: SurveyTrait, persona_ids: Sequence[str]
) -> np.ndarray:
    """[n_personas, K] each persona's probability mass on the survey's K categories for one persona
    trait (fine persona bins summed into the survey's bins), before the dropped mass is renormalised
    away: a row of zeros is a persona with no usable answer.

    ``demographics`` is the tidy stage-3 table (``persona_id``, ``trait``, ``option``, ``probability``);
    its options for the trait must be the trait's own (a demographic survey asked with another
    definition of it is refused, not read as zeros).
    """
    rows = demographics[demographics["trait"] == trait.name]
    asked = set(rows["option"].astype(str))
    if asked and asked != set(trait.categories):
        other = sorted(asked - set(trait.categories)) or sorted(set(trait.categories) - asked)
        raise ConfigError(
            f"the demographic survey asked trait {trait.name!r} with other options than the survey "
            f"defines (e.g. {other[0]!r}): run the demographic survey again with this survey"
        )
    wide = rows.pivot_table(
        index="persona_id", columns="option", values="probability", aggfunc="sum", observed=True
    )
    wide = wide.reindex(index=list(persona_ids), columns=list(trait.categories)).fillna(0.0)
    answered = set(rows["persona_id"])
    missing = [p for p in persona_ids if p not in answered]
    if missing:
        raise ConfigError(
            f"no {trait.name!r} answers for {len(missing)} persona(s) (e.g. {missing[0]!r}); "
            "run the demographic survey on every backstory first"
        )
    fine = wide.to_numpy(dtype=np.float64)
    column = {label: i for i, label in enumerate(trait.categories)}
    mapped = np.zeros((len(persona_ids), len(survey_trait.categories)))
    for k, category in enumerate(survey_trait.categories):
        for label in category.persona:
            mapped[:, k] += fine[:, column[label]]
    return mapped


def trait_tables(survey: Survey, demographics: pd.DataFrame, persona_ids: Sequence[str]) -> list[TraitTable]:
    """The traits both sides know: the persona traits the survey maps (its codebook's
    ``matched_traits``) that its respondents carry."""
    if survey.respondents is None:
        raise ConfigError(f"survey {survey.name!r} has no respondents to match: give its data file")
    people = survey.respondents.traits
    tables = []
    for trait in survey.codebook.matched_traits:
        if trait.name not in people.columns:
            continue
        survey_trait = survey.codebook.traits[trait.name]
        index = {label: k for k, label in enumerate(survey_trait.labels)}
        humans = people[trait.name].astype(object).map(index).fillna(-1).to_numpy(dtype=np.int64)
        masses = mapped_masses(demographics, trait, survey_trait, persona_ids)
        tables.append(
            TraitTable(
                name=trait.name,
                labels=survey_trait.labels,
                personas=_renormalised(masses),
                humans=humans,
                answered=masses.sum(axis=1) > 0,
            )
        )
    if not tables:
        raise ConfigError(f"survey {survey.name!r} maps no persona trait; nothing to match on")
    return tables


def log_tables(tables: Sequence[TraitTable]) -> list[np.ndarray]:
    """Per trait, [K + 1, n_personas] log-probabilities; the last row, log(1/K), serves a human whose
    category is unknown (code -1), so a profile's log-weights are a sum of gathered rows."""
    logs = []
    for t in tables:
        with np.errstate(divide="ignore"):
            log = np.log(t.personas.T)
        logs.append(np.vstack([log, np.full((1, log.shape[1]), -np.log(log.shape[0]))]))
    return logs


def trait_codes(tables: Sequence[TraitTable]) -> np.ndarray:
    """[n_humans, n_traits] category codes (-1: unknown): each row is the human's trait profile."""
    return np.stack([np.asarray(t.humans, dtype=np.int64) for t in tables], axis=1)


def block_log_weights(logs: Sequence[np.ndarray], codes: np.ndarray) -> np.ndarray:
    """[len(codes), n_personas] log-weights of the given profiles."""
    block = logs[0][codes[:, 0]]
    for t in range(1, len(logs)):
        block += logs[t][codes[:, t]]
    return block


def _pair_log_weights(logs: Sequence[np.ndarray], codes: np.ndarray, personas: np.ndarray) -> np.ndarray:
    """Log-weight of each (profile, persona) pair, without the matrix."""
    total = np.zeros(len(codes))
    for t, log in enumerate(logs):
        total += log[codes[:, t], personas]
    return total


def block_rows(n_personas: int) -> int:
    """Profiles per streamed block: a block holds at most ``BLOCK_BYTES`` of float64."""
    return max(1, BLOCK_BYTES // (8 * n_personas))


def distinct_profiles(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct profiles, each human's profile index and each profile's number of humans."""
    profiles, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return profiles, inverse.reshape(-1), counts


def _gains(log_w: np.ndarray, objective: Objective, *, inplace: bool = False) -> np.ndarray:
    """What max-weight maximises for each log-weight: the weight scaled by the largest one (the paper's
    sum of weights; the scale keeps tiny products from underflowing) or the log-weight floored at -1e4
    (``log``; a zero weight then sits far below any real one)."""
    out = log_w if inplace else log_w.copy()
    if objective == "log":
        return np.maximum(out, -1e4, out=out)
    top = out.max() if out.size else 0.0
    out -= top if np.isfinite(top) else 0.0
    return np.exp(out, out=out)


def _dense_assignment(logs: Sequence[np.ndarray], codes: np.ndarray, objective: Objective) -> np.ndarray:
    """Optimal persona per human by the Hungarian algorithm on the whole matrix, built in place as
    costs (one n_humans x n_personas float64 array)."""
    from scipy.optimize import linear_sum_assignment

    step = block_rows(logs[0].shape[1])
    cost = np.empty((len(codes), logs[0].shape[1]))
    for start in range(0, len(codes), step):
        cost[start : start + step] = block_log_weights(logs, codes[start : start + step])
    np.negative(_gains(cost, objective, inplace=True), out=cost)
    _, chosen = linear_sum_assignment(cost)
    return chosen


def _argmax(logs: Sequence[np.ndarray], profiles: np.ndarray) -> np.ndarray:
    """Each profile's persona of largest log-weight (the first on a tie, as argmax), streamed.

    Ranked in float32 (half the memory traffic): every persona within float32's rounding of a row's
    maximum (1e-5 relative, far above 8 roundings of 6e-8) is rechecked in float64, so the result is
    the float64 argmax."""
    logs32 = [log.astype(np.float32) for log in logs]
    best = np.empty(len(profiles), dtype=np.int64)
    step = block_rows(logs[0].shape[1])
    for start in range(0, len(profiles), step):
        chunk = profiles[start : start + step]
        block = block_log_weights(logs32, chunk)
        top = block.max(axis=1, keepdims=True)
        rows, cols = np.nonzero(block >= top - 1e-5 * (1.0 + np.abs(top)))
        exact = _pair_log_weights(logs, chunk[rows], cols)
        order = np.lexsort((cols, -exact, rows))
        first = np.r_[True, rows[order][1:] != rows[order][:-1]]
        best[start : start + len(chunk)] = cols[order][first]
    return best


def _best_first(block: np.ndarray, depth: int, stride: int = 8) -> np.ndarray:
    """[rows, depth] column indices of each row's ``depth`` largest values, best first.

    The depth-th largest value of every ``stride``-th column is a threshold that at least ``depth``
    values reach, so only the few columns at or above it are sorted (cheaper than an argpartition of
    every column)."""
    stride = max(1, min(stride, block.shape[1] // depth))
    sample = block[:, ::stride]
    threshold = np.partition(sample, sample.shape[1] - depth, axis=1)[:, sample.shape[1] - depth]
    rows, cols = np.nonzero(block >= threshold[:, None])
    order = np.lexsort((-block[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    keep = np.arange(len(rows)) - np.searchsorted(rows, rows) < depth
    return cols[keep].reshape(len(block), depth)


def _candidates(
    logs: Sequence[np.ndarray], codes: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate edges (human, persona, log-weight), streamed over profiles: a profile with c humans
    keeps its best c + k - 1 personas, and its r-th human gets ranks r .. r + k - 1 of that list.

    Personas are ranked in float32 (half the memory traffic; a near-tie at the edge of a list may fall
    either way) and the edges' log-weights recomputed in float64."""
    n_humans, n_personas = len(codes), logs[0].shape[1]
    logs32 = [log.astype(np.float32) for log in logs]
    profiles, inverse, counts = distinct_profiles(codes)
    order = np.argsort(-counts, kind="stable")  # most humans first: similar list lengths per block
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    key = position[inverse]
    humans = np.argsort(key, kind="stable")  # humans, profile by profile in block order
    key = key[humans]
    rank = np.arange(n_humans) - np.searchsorted(key, key)  # each human's place within its profile
    window = np.arange(k)
    rows, cols = [], []
    step = block_rows(n_personas)
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        depth = min(n_personas, int(counts[chunk].max()) + k - 1)
        top = _best_first(block_log_weights(logs32, profiles[chunk]), depth)
        lo, hi = np.searchsorted(key, [start, start + len(chunk)])
        ranks = rank[lo:hi, None] + window
        keep = ranks < depth
        which = np.broadcast_to((key[lo:hi] - start)[:, None], ranks.shape)[keep]
        rows.append(np.broadcast_to(humans[lo:hi, None], ranks.shape)[keep])
        cols.append(top[which, ranks[keep]])
    row, col = np.concatenate(rows), np.concatenate(cols)
    return row, col, _pair_log_weights(logs, codes[row], col)


def _pruned_assignment(
    logs: Sequence[np.ndarray], codes: np.ndarray, objective: Objective, k: int, edge_memory: int
) -> tuple[np.ndarray, int, int]:
    """Optimal assignment among top-k candidates (sparse LAPJV), doubling k until the candidates admit
    a full matching or the next k's edges would pass ``edge_memory`` bytes; in that case each human the
    candidates leave unmatched also gets one spare edge (:func:`_spare_edges`), which makes a full
    matching exist. Returns the persona per human, the k that ran and the number of spare edges."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_bipartite_matching, min_weight_full_bipartite_matching

    n_humans, n_personas = len(codes), logs[0].shape[1]
    while True:
        rows, cols, log_w = _candidates(logs, codes, k)
        last = k >= n_personas or n_humans * min(2 * k, n_personas) * EDGE_BYTES > edge_memory
        # Fewer distinct candidate personas than humans admit no full matching: skip the search.
        if not last and len(np.unique(cols)) < n_humans:
            k = min(2 * k, n_personas)
            continue
        pattern = csr_array((np.ones(len(rows)), (rows, cols)), shape=(n_humans, n_personas))
        matched = maximum_bipartite_matching(pattern, perm_type="column")
        del pattern
        spare = 0
        if (matched < 0).any():
            if not last:
                k = min(2 * k, n_personas)  # at k = n_personas every human may take any rank from its own on
                continue
            extra_rows, extra_cols = _spare_edges(logs, codes, rows, cols, matched)
            spare = len(extra_rows)
            rows, cols = np.concatenate([rows, extra_rows]), np.concatenate([cols, extra_cols])
            log_w = np.concatenate([log_w, _pair_log_weights(logs, codes[extra_rows], extra_cols)])
        gains = _gains(log_w, objective)
        # The solver minimises and takes a stored zero for a missing edge: costs shifted into [1, ...).
        graph = csr_array((gains.max() - gains + 1.0, (rows, cols)), shape=(n_humans, n_personas))
        del rows, cols, log_w, gains
        return min_weight_full_bipartite_matching(graph)[1], k, spare


def _spare_edges(
    logs: Sequence[np.ndarray], codes: np.ndarray, rows: np.ndarray, cols: np.ndarray, matched: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One edge for each human a maximum matching of the candidates leaves out, to a persona it leaves
    free, so that a full matching exists: profile by profile (most such humans first), each takes the
    best personas still free for it. Edges the candidates already hold are left out."""
    n_personas = logs[0].shape[1]
    humans = np.flatnonzero(matched < 0)
    free = np.ones(n_personas, dtype=bool)
    free[matched[matched >= 0]] = False
    free_ids = np.flatnonzero(free)  # at least len(humans): one-to-one, and personas >= humans
    sub = [log[:, free_ids] for log in logs]
    profiles, inverse, counts = distinct_profiles(codes[humans])
    members = np.argsort(inverse, kind="stable")  # humans, profile by profile
    starts = np.r_[0, np.cumsum(counts)]
    order = np.argsort(-counts, kind="stable")
    taken = np.zeros(len(free_ids), dtype=bool)
    spare = np.empty(len(humans), dtype=np.int64)
    step = block_rows(len(free_ids))
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        for p, row in zip(chunk, block_log_weights(sub, profiles[chunk]), strict=True):
            row[taken] = np.nan  # partitioned last: there are always enough free personas before them
            picks = np.argpartition(-row, counts[p] - 1)[: counts[p]]
            taken[picks] = True
            spare[members[starts[p] : starts[p + 1]]] = free_ids[picks]
    # A spare persona may already be one of the human's candidates: keep the candidate edge alone.
    known = np.isin(humans * n_personas + spare, rows.astype(np.int64) * n_personas + cols)
    return humans[~known], spare[~known]


def match(
    tables: Sequence[TraitTable],
    method: Method,
    *,
    seed: int = 0,
    objective: Objective = "weight",
    memory: int = MEMORY_BUDGET,
    candidates: int = CANDIDATES,
    edge_memory: int = EDGE_MEMORY,
) -> Matching:
    """Persona index and log-weight for every human, and the solver that ran.

    Max-weight is exact (dense Hungarian) when the n_humans x n_personas float64 matrix fits ``memory``
    bytes, and otherwise solves the top-``candidates`` pruned problem, its candidate edges held within
    ``edge_memory`` bytes (see the module's docstring).
    """
    n_humans, n_personas = len(tables[0].humans), tables[0].personas.shape[0]
    if method == "max-weight" and n_personas < n_humans:
        raise ConfigError(
            f"max-weight matching is one-to-one and needs at least as many personas as humans "
            f"({n_personas} personas < {n_humans} humans): generate more backstories, sample fewer "
            "respondents, or use greedy matching"
        )
    logs, codes = log_tables(tables), trait_codes(tables)
    if method == "random":
        chosen = np.random.default_rng(seed).integers(n_personas, size=n_humans)
        return Matching(chosen, _pair_log_weights(logs, codes, chosen), "random")
    if method == "greedy":
        profiles, inverse, _ = distinct_profiles(codes)
        chosen = _argmax(logs, profiles)[inverse]
        return Matching(chosen, _pair_log_weights(logs, codes, chosen), "streamed argmax")
    if method == "max-weight":
        if 8 * n_humans * n_personas <= memory:
            chosen = _dense_assignment(logs, codes, objective)
            return Matching(chosen, _pair_log_weights(logs, codes, chosen), "exact dense")
        chosen, k, spare = _pruned_assignment(logs, codes, objective, candidates, edge_memory)
        solver = f"top-{k} pruned" + (f", {spare} spare edges" if spare else "")
        return Matching(chosen, _pair_log_weights(logs, codes, chosen), solver, k)
    raise ConfigError(f"unknown matching method {method!r}: use one of {', '.join(METHODS)}")


def agreement(tables: Sequence[TraitTable], chosen: np.ndarray) -> dict[str, float]:
    """Per trait, the share of humans (with a known category) whose matched persona's most likely
    category is theirs."""
    shares = {}
    for table in tables:
        known = table.humans >= 0
        top = table.personas.argmax(axis=1)[chosen]
        shares[table.name] = (
            float((top[known] == table.humans[known]).mean()) if known.any() else float("nan")
        )
    return shares


def usage(persona_ids: Sequence[Any], pool: int) -> dict[str, float]:
    """How a matching spreads its respondents (one ``persona_ids`` entry each) over a pool of
    ``pool`` personas: the distinct personas it uses, the most respondents one persona serves, and
    the share of respondents served by the :data:`TOP_SHARE` of the pool (at least one persona)
    that serves the most. One-to-one matching uses a persona once; greedy can serve many with one."""
    _, counts = np.unique(np.asarray(persona_ids, dtype=object).astype(str), return_counts=True)
    top = max(1, math.ceil(TOP_SHARE * pool))
    busiest = np.sort(counts)[::-1][:top].sum()
    return {
        "personas_used": len(counts),
        "most_served": int(counts.max()) if len(counts) else 0,
        "top_1pct_share": float(busiest / len(persona_ids)) if len(persona_ids) else float("nan"),
    }


def match_survey(
    survey: Survey,
    demographics: pd.DataFrame,
    methods: Sequence[Method] = METHODS,
    *,
    seed: int = 0,
    objective: Objective = "weight",
    memory: int = MEMORY_BUDGET,
    margins: Margins | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match every respondent by each method, and build the raked panel when ``methods`` has
    ``raked`` (to ``margins``, default the survey's own weighted margins: :mod:`.raked_panel`).

    Returns ``matches`` (method, respondent_id, persona_id, log_weight; with a raked panel also
    ``weight``, its raking weight, and its rows have no respondent) and a ``report`` with one row
    per method: the solver that ran, the mean log-weight, per trait the share of humans whose matched
    persona's most likely category equals theirs, and how the respondents spread over the pool
    (:func:`usage`); for the raked panel its size, Kish effective sample size and largest weight.
    """
    persona_ids = list(dict.fromkeys(demographics["persona_id"]))
    tables = trait_tables(survey, demographics, persona_ids)
    respondent_ids = survey.respondents.traits.index.to_numpy()  # type: ignore[union-attr]
    unknown = [m for m in methods if m not in PANELS]
    if unknown:
        raise ConfigError(f"unknown matching method {unknown[0]!r}: use one of {', '.join(PANELS)}")
    if "max-weight" in methods and len(persona_ids) < len(respondent_ids):
        match(tables, "max-weight")  # raises the one-line error before any other work
    frames, report = [], []
    if RAKED in methods:  # its errors (empty cells, margins out of reach) come before other work
        source = "survey" if margins is None else "file"
        raked = rake_pool(tables, persona_ids, survey_margins(survey) if margins is None else margins)
    for method in methods:
        if method == RAKED:
            frames.append(_raked_frame(raked, respondent_ids))
            report.append(raked.report(source))
            continue
        chosen, log_w, solver, _ = match(tables, method, seed=seed, objective=objective, memory=memory)
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "respondent_id": respondent_ids,
                    "persona_id": np.asarray(persona_ids, dtype=object)[chosen],
                    "log_weight": log_w,
                }
            )
        )
        report.append(
            {
                "method": method,
                "solver": solver,
                "mean_log_weight": float(np.mean(log_w)),
                **{f"agree_{k}": v for k, v in agreement(tables, chosen).items()},
                **usage(np.asarray(persona_ids, dtype=object)[chosen], len(persona_ids)),
            }
        )
    return pd.concat(frames, ignore_index=True), pd.DataFrame(report)


def _raked_frame(raked: RakedPanel, respondent_ids: np.ndarray) -> pd.DataFrame:
    """The raked panel's rows of ``matches``: no respondent (missing, in a column that stays
    integer where the respondent ids are), no log-weight, the raking weight."""
    n = len(raked.persona_ids)
    nobody = pd.array([None] * n, dtype="Int64" if respondent_ids.dtype.kind in "iu" else object)
    return pd.DataFrame(
        {
            "method": RAKED,
            "respondent_id": nobody,
            "persona_id": raked.persona_ids,
            "log_weight": np.nan,
            "weight": raked.weights,
        }
    )
