"""The persona pool a run's later stages read: the backstories and demographics of its first pool
followed by those the ``pool`` stage's top-up added (``topup_backstories``, ``topup_demographics``),
when there are any."""

from __future__ import annotations

import pandas as pd

from anthology.store import RunDir

#: The top-up artifact of each pool artifact.
TOPUP = {"backstories": "topup_backstories", "demographics": "topup_demographics"}


def read_pool(run: RunDir, name: str) -> pd.DataFrame:
    """The ``backstories`` or ``demographics`` of the whole pool: the artifact, then its top-up's rows."""
    frame = run.read(name)
    extra = run.read(TOPUP[name]) if run.has(TOPUP[name]) else None
    if extra is None or extra.empty:
        return frame
    return pd.concat([frame, extra], ignore_index=True)
