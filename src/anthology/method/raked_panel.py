"""The raked panel (matching method ``raked``, answered as ``anthology-raked``): instead of one
persona per respondent, the whole persona pool, weighted so that its make-up equals the population's
margins on the canonical traits (:mod:`anthology.method.margins`: the survey's weighted margins by
default, or a margins file).

Each persona is placed in its most likely category of every raked trait (its trait distribution
mapped onto the survey's categories, as matching maps it; a tie goes to the first category in the
survey's order). A persona with no usable answer on a raked trait (all its mass "Prefer not to
answer", non-compliant or outside the survey's categories) has no category there and is left out.
The rest are raked (:func:`anthology.method.raking.rake`) from equal weights; personas whose weight
comes out 0 (in a category whose target is 0) are left out too, and the weights are scaled to mean 1
over the panel. The most likely category, not the expected cell membership: raking then meets the
margins exactly and a persona's weight reads as in a survey; spreading a persona's weight over its
categories would blur them, and a margin of 0 (a category none of the respondents has) could never
be met, since every persona has some probability there.

Raking cannot meet a positive margin with no persona in its category (an empty cell), nor margins
the personas' categories cannot reach together (it does not converge): both are a one-line
:class:`ConfigError` naming the trait and what to do, before any persona answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from anthology.errors import ConfigError
from anthology.method.margins import Margins
from anthology.method.raking import empty_cells, kish_ess, rake
from anthology.method.settings import RAKED

if TYPE_CHECKING:
    from anthology.method.matching import TraitTable


@dataclass(frozen=True)
class RakedPanel:
    """The personas of the raked panel and their weights (mean 1), with what the report says about
    it: the traits raked on, the sweeps, and how many personas were left out."""

    persona_ids: np.ndarray
    weights: np.ndarray
    traits: tuple[str, ...]
    iterations: int
    no_answer: int  # left out: no usable answer on a raked trait
    zero_weight: int  # left out: weighted 0 (in a category whose target is 0)

    def report(self, source: str) -> dict[str, Any]:
        """The match report's row: personas weighted, Kish effective sample size, largest weight
        relative to the mean (the mean is 1), the traits and the margins' source."""
        return {
            "method": RAKED,
            "solver": f"raking (IPF, {self.iterations} sweeps)",
            "personas_used": len(self.persona_ids),
            "effective_n": kish_ess(self.weights),
            "max_weight": float(self.weights.max()),
            "raked_on": ", ".join(self.traits),
            "margins": source,
            "left_out_no_answer": self.no_answer,
            "left_out_zero_weight": self.zero_weight,
        }


def describe(row: dict[str, Any]) -> str:
    """A raked panel's report row (:meth:`RakedPanel.report`) in one line."""
    left = row["left_out_no_answer"] + row["left_out_zero_weight"]
    source = "the survey's weighted margins" if row["margins"] == "survey" else "the margins file"
    return (
        f"raked: {row['personas_used']:,} personas weighted to {source} on {row['raked_on']} "
        f"({row['solver']}); Kish effective sample size {row['effective_n']:,.1f}, largest weight "
        f"{row['max_weight']:.2f} x the mean"
        + (
            f"; {left:,} left out ({row['left_out_no_answer']:,} without a usable answer, "
            f"{row['left_out_zero_weight']:,} in categories of share 0)"
            if left
            else ""
        )
    )


def persona_cells(tables: Sequence[TraitTable]) -> np.ndarray:
    """``(n_personas, n_traits)`` each persona's most likely category index per trait (the first on a
    tie), -1 where it gave no usable answer."""
    cells = np.stack([t.personas.argmax(axis=1) for t in tables], axis=1)
    for column, table in enumerate(tables):
        if table.answered is not None:
            cells[~table.answered, column] = -1
    return cells


def rake_pool(tables: Sequence[TraitTable], persona_ids: Sequence[str], margins: Margins) -> RakedPanel:
    """The raked panel of the pool: ``tables`` are matching's trait tables of every persona in
    ``persona_ids`` order, ``margins`` the targets of the traits to rake on (see the module doc)."""
    if not margins:
        raise ConfigError("there is no trait with margins to rake on: the respondents carry no persona trait")
    by_name = {t.name: t for t in tables}
    raked = [by_name[name] for name in margins]
    cells = persona_cells(raked)
    usable = (cells >= 0).all(axis=1)
    if not usable.any():
        raise ConfigError(
            f"no persona has a usable answer on every raked trait ({', '.join(margins)}): check the "
            "demographic survey (demographics.parquet), or rake on fewer traits (matching.margins)"
        )
    codes = [cells[usable, column] for column in range(len(raked))]
    targets = [margins[t.name] for t in raked]
    for column, k in empty_cells(codes, targets):
        table = raked[column]
        raise ConfigError(
            f"raking cannot meet the {table.name} margin: no persona's most likely {table.name} is "
            f"{table.labels[k]!r} (target share {targets[column][k]:.3f}); generate more backstories "
            f"(--personas), or give margins (matching.margins) without {table.name}, or with the share "
            f"of {table.labels[k]!r} moved to a neighbouring category"
        )
    result = rake(codes, targets)
    if not result.converged:
        raise ConfigError(
            f"raking cannot meet the margins together: after {result.iterations} sweeps the "
            f"{raked[result.gap_trait].name} shares are still up to {result.gap:.3f} off their targets "
            "(the personas' categories cannot be weighted to every margin at once); rake on fewer traits "
            "(a margins file, matching.margins) or generate more backstories (--personas)"
        )
    positive = result.weights > 0
    weights = result.weights[positive]
    return RakedPanel(
        persona_ids=np.asarray(persona_ids, dtype=object)[usable][positive],
        weights=weights * (len(weights) / weights.sum()),
        traits=tuple(margins),
        iterations=result.iterations,
        no_answer=int((~usable).sum()),
        zero_weight=int((~positive).sum()),
    )
