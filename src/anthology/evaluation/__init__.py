"""Evaluate a run directory: every persona method's answers against the human respondents with the
paper's metrics (:mod:`anthology.metrics`), the human split-half lower bound, bootstrap intervals, and
breakdowns per question, per subgroup and per matched pair.

    from anthology.evaluation import evaluate

    result = evaluate("runs/w34")          # also writes metrics*.csv into the run directory
    result.table                            # the paper's Table 1: one row per method + lower bound

One module per job: :mod:`.load` reads the run's artifacts, :mod:`.compute` computes the evaluation
from them (no I/O), :mod:`.files` writes and reads back its files, :mod:`.tables` lays out the tables
the CLI and the report show, and :mod:`.stored` ties them together (:func:`evaluate`) and decides
whether a stored evaluation is current; :mod:`.names` holds the method ids and labels they share, and
:mod:`.sizes` the rules for when a number means something.

Conventions. The humans are ``humans.parquet`` with their survey weights; each method's personas are
its rows of ``answers.parquet`` pivoted to one row per respondent, each counting once (no weights, the
paper's) on the method's row and with its respondent's survey weight on its ``:weighted`` row
(``evaluate.persona_weights``: ``equal``, ``survey`` or ``both``); the raked panel's personas (no
respondent, one row each) always count with their raking weights from ``matches.parquet``.
Weighted rows also give ``n_effective`` (Kish) and ``max_weight_ratio``.
``wd_raw`` is ``scipy.stats.wasserstein_distance`` on positions 1..K (the paper's WD) and
``wd_normalized`` divides it by K-1 (OpinionQA's form). ``wd_expected_*`` use the exact expected
distributions of logprob-mode runs instead of the sampled answers. Intervals are 95% percentile
bootstrap intervals (humans and personas resampled independently, the same seed for every method);
for the lower-bound row they are the middle 95% of the split-half values. The alpha of the lower-bound
row is the humans' own (survey-weighted) Cronbach's alpha. ``worth_n_humans`` is the number of
random respondents whose WD against the humans equals the method's (docs/worth-n-humans.md), read off
the curve in ``worth_curve``; its interval is where the curve's band (the middle 95% of its draws)
crosses the method's WD.

A Fro. or alpha the data cannot support (one question, fewer than :data:`MIN_COMPLETE` complete
respondents, answers that vary on fewer than two questions, a constant total score; for the lower
bound, in a split half) is NaN with its reason in the ``note`` column, never a number; the
split-half is called a lower bound from :data:`RELIABLE_RESPONDENTS` humans and a noisy reference
below (:mod:`.sizes`). Subgroups are every trait of the survey's codebook that the humans carry, in
codebook and category order.
"""

from anthology.evaluation.compute import Evaluation, compute
from anthology.evaluation.files import FILES, read_evaluation, write_evaluation
from anthology.evaluation.load import RunData, load_run
from anthology.evaluation.names import LOWER_BOUND, LOWER_BOUND_LABEL, METHOD_LABELS, method_label
from anthology.evaluation.sizes import (
    MIN_COMPLETE,
    RELIABLE_RESPONDENTS,
    is_reliable,
    lower_bound_label,
    respondents_advice,
)
from anthology.evaluation.stored import (
    DEFAULTS,
    EVALUATION_VERSION,
    Settings,
    current_evaluation,
    evaluate,
    is_current,
    recorded_settings,
    staleness,
)
from anthology.evaluation.tables import (
    TABLE_COLUMNS,
    agreement_table,
    best_methods,
    best_of,
    paper_table,
    table_notes,
    weighting_lines,
    worth_cell,
)

__all__ = [
    "DEFAULTS",
    "EVALUATION_VERSION",
    "FILES",
    "LOWER_BOUND",
    "LOWER_BOUND_LABEL",
    "METHOD_LABELS",
    "MIN_COMPLETE",
    "RELIABLE_RESPONDENTS",
    "TABLE_COLUMNS",
    "Evaluation",
    "RunData",
    "Settings",
    "agreement_table",
    "best_methods",
    "best_of",
    "compute",
    "current_evaluation",
    "evaluate",
    "is_current",
    "is_reliable",
    "load_run",
    "lower_bound_label",
    "method_label",
    "paper_table",
    "read_evaluation",
    "recorded_settings",
    "respondents_advice",
    "staleness",
    "table_notes",
    "weighting_lines",
    "worth_cell",
    "write_evaluation",
]
