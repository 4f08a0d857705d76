"""The coverage audit of a persona pool against the target survey's (sampled) respondents.

A persona is a *plausible* match for a respondent when its match weight, the product over the matched
traits of the persona's probability of the respondent's category (the quantity matching maximises,
:mod:`anthology.method.matching`), is at least ``plausible`` (default :data:`PLAUSIBLE`). A trait whose
category the respondent left unknown or refused counts as 1 here: it rules no persona out (matching
counts it as 1/K, which scales every persona's weight alike and so changes no matching, but would
push every such respondent towards the threshold).

The audit passes when every respondent has at least ``min_plausible`` plausible personas. It names the
demographic *cells* the pool leaves uncovered, of two kinds:

* ``trait`` cells, one per (trait, category) some respondent holds: no persona gives the category a
  probability of at least ``plausible``. Every factor of a weight is at most 1, so no respondent of
  such a cell has a plausible persona at all: these are the single categories the pool lacks.
* ``profile`` cells, one per distinct full profile (the respondent's categories of every matched
  trait) held by a respondent with no plausible persona.

Match quality is greedy matching's (each respondent gets its persona of largest weight, which any
pool admits): the mean log-weight and, per trait, the share of respondents whose persona's likeliest
category is theirs (:func:`anthology.method.matching.agreement`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from anthology.method.matching import (
    TraitTable,
    agreement,
    block_log_weights,
    block_rows,
    distinct_profiles,
    log_tables,
    match,
    trait_codes,
)

#: The default least match weight of a plausible persona (``pool.plausible``).
PLAUSIBLE = 0.01
#: How many uncovered profiles a summary lists (the most populous first); the artifact has them all.
LISTED_PROFILES = 20


@dataclass(frozen=True)
class Audit:
    """One audit: each respondent's number of plausible personas (``plausible``, in the survey's
    respondent order), the cells with their respondents and plausible personas (``cells``: kind,
    cell, respondents, personas), the thresholds, and greedy matching's quality."""

    respondent_ids: np.ndarray
    plausible: np.ndarray
    cells: pd.DataFrame
    threshold: float
    min_plausible: int
    personas: int
    quality: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool((self.plausible >= self.min_plausible).all())

    @property
    def short(self) -> int:
        """Respondents with fewer than ``min_plausible`` plausible personas."""
        return int((self.plausible < self.min_plausible).sum())

    def empty_cells(self, kind: str) -> pd.DataFrame:
        """The cells of ``kind`` (``trait`` or ``profile``) with no plausible persona, the most
        populous first."""
        found = self.cells[(self.cells["kind"] == kind) & (self.cells["personas"] == 0)]
        return found.sort_values("respondents", ascending=False, kind="stable")

    def summary(self) -> dict[str, Any]:
        """What the manifest and the report keep of the audit."""
        profiles = self.empty_cells("profile")
        return {
            "passed": self.passed,
            "personas": self.personas,
            "respondents": len(self.plausible),
            "short": self.short,
            "plausible_min": int(self.plausible.min()) if len(self.plausible) else 0,
            "plausible_median": float(np.median(self.plausible)) if len(self.plausible) else 0.0,
            "empty_traits": self.empty_cells("trait")["cell"].tolist(),
            "empty_profiles": len(profiles),
            "empty_profiles_listed": profiles.head(LISTED_PROFILES)[["cell", "respondents"]].to_dict(
                "records"
            ),
            "quality": self.quality,
        }


def _known_log_weights(logs: list[np.ndarray], chunk: np.ndarray) -> np.ndarray:
    """[len(chunk), n_personas] log match weights of profiles with unknown categories counted as 1
    (matching's log tables count them as 1/K: K added back)."""
    block = block_log_weights(logs, chunk)
    for t, log in enumerate(logs):
        block += np.where(chunk[:, t] < 0, math.log(log.shape[0] - 1), 0.0)[:, None]
    return block


def audit(
    tables: list[TraitTable], respondent_ids: np.ndarray, *, threshold: float, min_plausible: int
) -> Audit:
    """Audit the pool of ``tables`` (:func:`anthology.method.matching.trait_tables`) against their
    respondents (``respondent_ids``, in the tables' order): see the module's docstring."""
    logs, codes = log_tables(tables), trait_codes(tables)
    n_personas = tables[0].personas.shape[0]
    profiles, inverse, counts = distinct_profiles(codes)
    per_profile = np.empty(len(profiles), dtype=np.int64)
    floor = math.log(threshold)
    step = block_rows(n_personas)
    for start in range(0, len(profiles), step):
        block = _known_log_weights(logs, profiles[start : start + step])
        per_profile[start : start + step] = (block >= floor).sum(axis=1)
    cells = []
    for table in tables:
        for k in np.unique(table.humans[table.humans >= 0]):
            cells.append(
                {
                    "kind": "trait",
                    "cell": f"{table.name}={table.labels[k]}",
                    "respondents": int((table.humans == k).sum()),
                    "personas": int((table.personas[:, k] >= threshold).sum()),
                }
            )
    for p in np.flatnonzero(per_profile == 0):
        described = [f"{t.name}={t.labels[c]}" for t, c in zip(tables, profiles[p], strict=True) if c >= 0]
        cells.append(
            {
                "kind": "profile",
                "cell": ", ".join(described) or "(all unknown)",
                "respondents": int(counts[p]),
                "personas": 0,
            }
        )
    return Audit(
        respondent_ids=np.asarray(respondent_ids),
        plausible=per_profile[inverse],
        cells=pd.DataFrame(cells, columns=["kind", "cell", "respondents", "personas"]),
        threshold=threshold,
        min_plausible=min_plausible,
        personas=n_personas,
        quality=match_quality(tables),
    )


def match_quality(tables: list[TraitTable]) -> dict[str, Any]:
    """Greedy matching's mean log-weight and per-trait agreement over the tables' respondents."""
    chosen, log_weight, _, _ = match(tables, "greedy")
    return {
        "mean_log_weight": float(np.mean(log_weight)),
        "agreement": {k: round(v, 4) for k, v in agreement(tables, chosen).items()},
    }
