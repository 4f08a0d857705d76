"""How far coded free-text answers agree with the closed answers to the same question, per method
(and for the humans where the data has both).

For an open question with a ``closed`` counterpart, per method:

* ``agreement``: the share of members with both answers whose most likely code is the option of
  their own closed answer (a member coded "None of these" disagrees);
* ``wd``: the Wasserstein distance (:func:`anthology.metrics.wasserstein_distances`, raw: on the
  positions 1..K) between the coded distribution, the mean of the answers' category probabilities
  with "None of these" left out and renormalised, and the distribution of the closed answers (the
  drawn or parsed option of each member; unweighted).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from anthology.method.answering import member_key
from anthology.metrics.basic import wasserstein_distances

AGREEMENT_COLUMNS = ("method", "question_id", "closed_id", "members", "agreement", "wd", "coded", "closed")


def with_members(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``member`` column: who answered within its method (:func:`member_key`)."""
    keys = [member_key(r, p) for r, p in zip(frame["respondent_id"], frame["persona_id"], strict=True)]
    return frame.assign(member=keys)


def closed_answers(answers: pd.DataFrame, humans: pd.DataFrame, question_ids: list[str]) -> pd.DataFrame:
    """The closed answers to ``question_ids`` as rows (method, member, question_id, position): the
    personas' (``answers`` artifact) and the humans' (method ``humans``, from ``humans.parquet``)."""
    personas = with_members(answers[answers["question_id"].isin(question_ids)])
    parts = [personas[["method", "member", "question_id", "position"]]]
    for question_id in question_ids:
        if question_id in humans.columns:
            parts.append(
                pd.DataFrame(
                    {
                        "method": "humans",
                        "member": humans["respondent_id"].to_numpy(),
                        "question_id": question_id,
                        "position": humans[question_id].to_numpy(),
                    }
                )
            )
    found = pd.concat(parts, ignore_index=True)
    return found[found["position"].notna()].astype({"position": int})


def coded_distribution(probabilities: list[list[float]]) -> np.ndarray:
    """The mean of the answers' category probabilities, renormalised (without "None of these")."""
    mean = np.mean(np.asarray(probabilities, dtype=float), axis=0)
    return mean / mean.sum()


def open_agreement(
    codes: pd.DataFrame,
    closed: pd.DataFrame,
    counterparts: Mapping[str, str],
    n_options: Mapping[str, int],
) -> pd.DataFrame:
    """Per method and open question with a closed counterpart (``counterparts``: open id -> closed
    id; ``n_options``: open id -> K): the members with both answers, ``agreement``, ``wd`` and the two
    distributions (see the module's docstring). ``codes`` has the ``open_codes`` columns (method,
    respondent_id, persona_id, question_id, probabilities, code); ``closed`` is :func:`closed_answers`."""
    rows = []
    coded = with_members(codes[codes["probabilities"].notna()])
    for (method, question_id), group in coded.groupby(["method", "question_id"], sort=False):
        closed_id = counterparts.get(str(question_id))
        if closed_id is None:
            continue
        k = n_options[str(question_id)]
        theirs = closed[(closed["method"] == method) & (closed["question_id"] == closed_id)]
        if theirs.empty:
            continue
        paired = group.merge(theirs[["member", "position"]], on="member")
        agree = (paired["code"].astype("Int64") == paired["position"]).fillna(False)
        p = coded_distribution(group["probabilities"].tolist())
        q = np.bincount(theirs["position"].to_numpy(), minlength=k + 1)[1 : k + 1].astype(float)
        q = q / q.sum()
        wd = wasserstein_distances(p[None, :], q[None, :], [k]).mean_raw
        share = float(agree.mean()) if len(paired) else np.nan
        rows.append((method, question_id, closed_id, len(paired), share, wd, p.tolist(), q.tolist()))
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))
