"""The population margins a raked panel is weighted to: the survey's own weighted margins
(:func:`survey_margins`) or a margins file (:func:`read_margins`), each a ``{trait: shares}`` mapping
with the shares over the survey's categories of that trait, in its codebook order.

A margins file is YAML, one mapping per trait with the survey's category labels::

    age: {"18-29": 0.21, "30-49": 0.33, "50-64": 0.25, "65 or Above": 0.21}
    gender: {Male: 0.48, Female: 0.52}

A category left out has share 0; each trait's shares must sum to 1 (within :data:`SUM_TOLERANCE`,
for margins rounded as published) and are then rescaled to sum to exactly 1. Only the traits the file
lists are raked on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from anthology.errors import ConfigError
from anthology.surveys.schema import Survey

#: How far a trait's shares in a margins file may sum from 1.
SUM_TOLERANCE = 1e-3
Margins = dict[str, np.ndarray]


def rakeable_traits(survey: Survey) -> dict[str, tuple[str, ...]]:
    """The traits a panel can be raked on, with their categories: the persona traits the survey
    maps (as matching uses them) that its respondents carry."""
    carried = survey.respondents.traits.columns if survey.respondents is not None else ()
    return {
        t.name: survey.codebook.traits[t.name].labels
        for t in survey.codebook.matched_traits
        if t.name in carried
    }


def survey_margins(survey: Survey) -> Margins:
    """Per rakeable trait, the respondents' survey-weighted shares of its categories; respondents
    without a category (refused, missing) are left out, and so is a trait none of them has."""
    if survey.respondents is None:
        raise ConfigError(
            f"survey {survey.name!r} has no respondents to take margins from: give its data file"
        )
    people, weights = survey.respondents.traits, survey.respondents.weights.to_numpy(dtype=float)
    margins = {}
    for trait, labels in rakeable_traits(survey).items():
        codes = people[trait].astype(object).map({label: k for k, label in enumerate(labels)})
        known = codes.notna().to_numpy()
        totals = np.bincount(
            codes[known].to_numpy(dtype=np.int64), weights=weights[known], minlength=len(labels)
        )
        if totals.sum() > 0:
            margins[trait] = totals / totals.sum()
    return margins


def read_margins(path: str | Path, survey: Survey) -> Margins:
    """The margins file at ``path`` checked against the survey's traits and categories; any problem
    is a one-line :class:`ConfigError` naming the file, the trait and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"margins file {path} does not exist: give the path of a YAML file (matching.margins)"
        )
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"margins file {path} is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(loaded, dict) or not loaded:
        raise ConfigError(
            f"margins file {path}: give one mapping per trait, e.g. gender: {{Male: 0.48, Female: 0.52}}"
        )
    known = rakeable_traits(survey)
    margins = {}
    for trait, shares in loaded.items():
        if trait not in known:
            raise ConfigError(
                f"margins file {path}: survey {survey.name!r} has no persona trait {trait!r} to rake on; "
                f"use one of {', '.join(known)}"
            )
        margins[str(trait)] = _shares(path, str(trait), shares, known[trait])
    return margins


def _shares(path: Path, trait: str, shares: object, labels: tuple[str, ...]) -> np.ndarray:
    """One trait's shares over ``labels``, validated and rescaled to sum to 1."""
    if not isinstance(shares, dict) or not shares:
        raise ConfigError(f"margins file {path}: {trait} needs a mapping of its categories to shares")
    out = np.zeros(len(labels))
    for label, share in shares.items():
        if str(label) not in labels:
            raise ConfigError(
                f"margins file {path}: {trait} has no category {label!r}; its categories are "
                + ", ".join(repr(x) for x in labels)
            )
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not math.isfinite(share)
            or share < 0
        ):
            raise ConfigError(
                f"margins file {path}: {trait} {label!r}: the share must be a number >= 0, got {share!r}"
            )
        out[labels.index(str(label))] = float(share)
    total = out.sum()
    if abs(total - 1) > SUM_TOLERANCE:
        hint = ": give shares (0.25), not percentages" if abs(total - 100) <= 100 * SUM_TOLERANCE else ""
        raise ConfigError(f"margins file {path}: the {trait} shares sum to {total:g}, not 1{hint}")
    return out / total
