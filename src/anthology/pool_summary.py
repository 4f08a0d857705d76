"""The pool stage's manifest entry in words: the lines ``anthology pool`` prints and the report's
"Pool audit" section (the critic's counts, the coverage audit before and after the top-up, the cells
left uncovered and greedy matching's quality)."""

from __future__ import annotations

import math
from typing import Any


def _share(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.0%}"


def critic_counts(entry: dict[str, Any]) -> dict[str, int] | None:
    """The critic's counts over the pool and its top-up (``None`` when the critic was off)."""
    found = [c for c in (entry.get("critic") or {}).values() if c]
    if not found:
        return None
    return {key: sum(c[key] for c in found) for key in ("scored", "flagged", "kept_flagged")}


def _audit_line(name: str, audit: dict[str, Any]) -> str:
    return (
        f"{name}: {audit['personas']} personas; {audit['short']} of {audit['respondents']} respondents "
        f"with too few plausible ones (median {audit['plausible_median']:g}, "
        f"least {audit['plausible_min']}); "
        f"greedy mean log-weight {audit['quality']['mean_log_weight']:.3f}"
    )


def pool_lines(entry: dict[str, Any]) -> list[str]:
    """What ``anthology pool`` prints about its entry."""
    lines = []
    if (critic := critic_counts(entry)) is not None:
        lines.append(
            f"critic: read {critic['scored']} backstories, flagged {critic['flagged']} as contradicting "
            f"themselves ({critic['kept_flagged']} of them kept)"
        )
    lines.append(_audit_line("before", entry["before"]))
    if entry["rounds"]:
        added = entry["added"]
        lines.append(
            f"top-up: {entry['rounds']} round(s), {added['generated']} backstories generated of a budget of "
            f"{entry['budget']}, {added['kept']} kept"
        )
        lines.append(_audit_line("after", entry["after"]))
    after = entry["after"]
    lines.append(f"audit {'passed' if entry['passed'] else 'failed'}")
    if after["empty_traits"]:
        lines.append(f"categories no persona covers: {', '.join(after['empty_traits'])}")
    if after["empty_profiles"]:
        lines.append(f"respondent profiles with no plausible persona: {after['empty_profiles']}")
    return lines


def pool_section(entry: dict[str, Any] | None, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The report's "Pool audit" section from the pool stage's manifest entry (``None``: no pool
    stage in the run) and its recorded ``settings`` (the ``pool`` section's)."""
    if entry is None or "before" not in entry:
        return None
    audits = [("Before top-up", entry["before"])]
    if entry["rounds"]:
        audits.append(("After top-up", entry["after"]))
    traits = list(entry["before"]["quality"]["agreement"])
    return {
        "critic": critic_counts(entry),
        "plausible": settings.get("plausible"),
        "min_plausible": settings.get("min_plausible"),
        "budget": entry["budget"],
        "rounds": entry["rounds"],
        "added": entry["added"],
        "passed": entry["passed"],
        "traits": traits,
        "audits": [
            {
                "label": label,
                "personas": a["personas"],
                "short": a["short"],
                "respondents": a["respondents"],
                "median": f"{a['plausible_median']:g}",
                "least": a["plausible_min"],
                "mean_log_weight": f"{a['quality']['mean_log_weight']:.3f}",
                "agreement": [_share(a["quality"]["agreement"][t]) for t in traits],
            }
            for label, a in audits
        ],
        "empty_traits": entry["after"]["empty_traits"],
        "empty_profiles": entry["after"]["empty_profiles"],
        "listed_profiles": entry["after"]["empty_profiles_listed"],
    }
