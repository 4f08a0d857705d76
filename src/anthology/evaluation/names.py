"""The ids and display names that loading, computing and laying out an evaluation share: the
methods in the paper's order, the lower-bound row and the matched-pair agreement metrics."""

from __future__ import annotations

#: Methods in the order of the paper's table, with their display names.
METHOD_LABELS = {
    "anthology-greedy": "Anthology (greedy)",
    "anthology-max-weight": "Anthology (max-weight)",
    "anthology-random": "Anthology (random)",
    "bio": "Bio",
    "qa": "QA",
    "portray": "Portray",
    "nothing": "Nothing",
    "dp": "Anthology DP",
}
LOWER_BOUND = "human-lower-bound"
LOWER_BOUND_LABEL = "Human lower bound"

#: The matched-pair metrics (each human against their own persona).
AGREEMENT = ("exact_match_rate", "mean_abs_distance", "mean_abs_distance_normalized")


def method_label(method: str) -> str:
    """The display name of a method id."""
    return LOWER_BOUND_LABEL if method == LOWER_BOUND else METHOD_LABELS.get(method, method)


def paper_order(methods: list[str]) -> tuple[str, ...]:
    """The methods in the paper's order (unknown ones last, by name)."""
    order = list(METHOD_LABELS)
    return tuple(sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m)))
