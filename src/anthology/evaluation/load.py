"""Load what an evaluation reads from a run directory (:func:`load_run`): the matched survey (its
questionnaire and trait mapping), the humans, every method's answers and the pool's demographics,
with a digest of the answers and humans so that the evaluation can record which inputs it saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anthology.errors import ConfigError
from anthology.evaluation.names import paper_order
from anthology.metrics.frames import answers_from_frame
from anthology.store import RunDir
from anthology.surveys import Questionnaire, Survey, load_survey

#: The artifacts an evaluation is made from, whose digests it records.
INPUTS = ("answers", "humans")


@dataclass(frozen=True)
class RunData:
    """What evaluation reads from a run directory: the survey (for its questionnaire and trait
    mapping), the humans, every method's answers, the demographics (``None`` without them) and the
    digests of the :data:`INPUTS`."""

    run: RunDir
    manifest: dict[str, Any]
    survey: Survey
    humans: pd.DataFrame
    answers: pd.DataFrame
    demographics: pd.DataFrame | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def questionnaire(self) -> Questionnaire:
        return self.survey.questionnaire

    @property
    def question_ids(self) -> list[str]:
        return list(self.questionnaire.ids)

    @cached_property
    def n_options(self) -> np.ndarray:
        return np.array([len(q.options) for q in self.questionnaire.questions])

    @cached_property
    def human_answers(self) -> np.ndarray:
        """``(n_humans, q)`` positions, 0 for no answer, in questionnaire order."""
        return answers_from_frame(self.humans, self.question_ids)

    @cached_property
    def human_weights(self) -> np.ndarray:
        return self.humans["weight"].to_numpy(dtype=float)

    @cached_property
    def methods(self) -> tuple[str, ...]:
        """The methods with answers, in the paper's order (unknown ones last)."""
        return paper_order(self.answers["method"].unique().tolist())

    @cached_property
    def traits(self) -> list[str]:
        """The subgroup traits: every trait of the survey's codebook (persona traits and survey-only
        ones alike), in codebook order, that humans.parquet holds."""
        return [t for t in self.survey.codebook.traits if t in self.humans.columns]

    def persona_frame(self, method: str) -> pd.DataFrame:
        """One row per respondent the method answered for (index ``respondent_id``), one column of
        positions per question."""
        if method not in self._frames:
            rows = self.answers[self.answers["method"] == method]
            wide = rows.pivot(index="respondent_id", columns="question_id", values="position")
            self._frames[method] = wide.reindex(columns=self.question_ids)
        return self._frames[method]

    def persona_answers(self, method: str) -> np.ndarray:
        return answers_from_frame(self.persona_frame(method))

    def matched_answers(self, method: str) -> np.ndarray:
        """The method's answers aligned row by row with the humans (no answers where it has no row)."""
        frame = self.persona_frame(method).reindex(self.humans["respondent_id"])
        return answers_from_frame(frame)

    def probabilities(self, method: str) -> np.ndarray | None:
        """``(n_personas, q, max K)`` per-answer option probabilities (logprob mode), rows in
        :meth:`persona_frame` order; ``None`` when the method's answers carry none."""
        rows = self.answers[(self.answers["method"] == method) & self.answers["probabilities"].notna()]
        if rows.empty:
            return None
        index = self.persona_frame(method).index
        out = np.full((len(index), len(self.question_ids), int(self.n_options.max())), np.nan)
        column = {qid: j for j, qid in enumerate(self.question_ids)}
        for qid, part in rows[rows["question_id"].isin(column)].groupby("question_id", sort=False):
            j = column[qid]
            where = index.get_indexer(part["respondent_id"])
            out[where, j, :] = 0.0
            out[where, j, : self.n_options[j]] = np.stack(part["probabilities"].to_numpy())
        return out

    def groups(self, trait: str, respondent_ids: Any) -> np.ndarray:
        """The category code (float, NaN for none) of the given respondents' ``trait``: its position
        among the codebook's categories, so subgroups sort in the codebook's order, not by label."""
        column = self.humans.set_index("respondent_id")[trait].astype(object)
        codes = pd.Series(pd.Categorical(column, categories=self._labels(trait)).codes, index=column.index)
        codes = codes.reindex(respondent_ids).to_numpy(dtype=float, na_value=np.nan)
        return np.where(codes >= 0, codes, np.nan)

    def category(self, trait: str, code: float) -> Any:
        """The label of a :meth:`groups` code."""
        return self._labels(trait)[int(code)]

    def _labels(self, trait: str) -> tuple[str, ...]:
        return self.survey.codebook.traits[trait].labels


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory's humans, answers, demographics and survey; a missing artifact raises
    ``ConfigError`` naming the command that makes it."""
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    run = RunDir(run_dir)
    inputs = input_digests(run)
    humans = run.read("humans")
    answers = run.read("answers")
    manifest = run.manifest()
    info = manifest.get("stages", {}).get("match", {}).get("survey")
    if info is None:
        raise ConfigError(f"{run.manifest_path} records no matched survey: run `anthology match {run.root}`")
    survey = load_survey(info["name"], info.get("data"))
    missing = [q for q in survey.questionnaire.ids if q not in humans.columns]
    if missing:
        raise ConfigError(
            f"{run.artifact('humans')} has no column for question {missing[0]!r} of survey {survey.name!r}: "
            f"rerun `anthology match {run.root}`"
        )
    if answers.empty:
        raise ConfigError(f"{run.artifact('answers')} holds no answers: rerun `anthology ask {run.root}`")
    demographics = run.read("demographics") if run.has("demographics") else None
    return RunData(run, manifest, survey, humans, answers, demographics, inputs)


def input_digests(run: RunDir) -> dict[str, str]:
    """The SHA-256 of each :data:`INPUTS` artifact the run directory has."""
    return {name: digest for name in INPUTS if (digest := run.content_hash(name)) is not None}
