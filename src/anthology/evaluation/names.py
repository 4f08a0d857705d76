"""The ids and display names that loading, computing and laying out an evaluation share: the
methods in the paper's order, their weighted rows, the lower-bound row and the matched-pair
agreement metrics."""

from __future__ import annotations

#: Methods in the order of the paper's table, with their display names.
METHOD_LABELS = {
    "anthology-greedy": "Anthology (greedy)",
    "anthology-max-weight": "Anthology (max-weight)",
    "anthology-random": "Anthology (random)",
    "anthology-raked": "Anthology (raked)",
    "bio": "Bio",
    "qa": "QA",
    "portray": "Portray",
    "nothing": "Nothing",
    "dp": "Anthology DP",
}
LOWER_BOUND = "human-lower-bound"
LOWER_BOUND_LABEL = "Human lower bound"

#: The panel whose personas are the whole pool, weighted to the population's margins: always weighted.
RAKED_METHOD = "anthology-raked"
#: The suffix of a method's row whose personas count with their respondents' survey weights.
WEIGHTED = ":weighted"

#: The matched-pair metrics (each human against their own persona).
AGREEMENT = ("exact_match_rate", "mean_abs_distance", "mean_abs_distance_normalized")


def weighted_row(method: str) -> str:
    """The id of a method's row weighted by its respondents' survey weights."""
    return method + WEIGHTED


def row_method(row: str) -> tuple[str, bool]:
    """The method a metrics row reads and whether it is its survey-weighted row."""
    return (row.removesuffix(WEIGHTED), True) if row.endswith(WEIGHTED) else (row, False)


def method_label(method: str) -> str:
    """The display name of a method id, or of a row (", weighted" for a survey-weighted one)."""
    if method == LOWER_BOUND:
        return LOWER_BOUND_LABEL
    base, weighted = row_method(method)
    return METHOD_LABELS.get(base, base) + (", weighted" if weighted else "")


def paper_order(methods: list[str]) -> tuple[str, ...]:
    """The methods (or rows) in the paper's order (unknown ones last, by name), each method's
    weighted row after its unweighted one."""
    order = list(METHOD_LABELS)

    def key(row: str) -> tuple[int, str, bool]:
        base, weighted = row_method(row)
        return (order.index(base) if base in order else len(order), base, weighted)

    return tuple(sorted(methods, key=key))
