"""Load what an evaluation reads from a run directory (:func:`load_run`): the matched survey (its
questionnaire and trait mapping), the humans, every method's answers, the pool's demographics and
the panels (matches.parquet, for the raked panel's weights), with a digest of the answers, humans and
matches so that the evaluation can record which inputs it saw.

Persona weights (:meth:`RunData.persona_weights`): a method whose members each answer for one
respondent (the matchings, the baselines, DP) counts each persona once on its plain row and with its
respondent's survey weight on its weighted row (:func:`~anthology.evaluation.names.weighted_row`); the
raked panel, whose members are the pool's personas with no respondent, always counts each with its
raking weight. The weights are read at load time, so run directories made before them load as they
were."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anthology.errors import ConfigError
from anthology.evaluation.names import paper_order, row_method, weighted_row
from anthology.method.matching import trait_tables
from anthology.method.raked_panel import persona_cells
from anthology.metrics.frames import answers_from_frame
from anthology.persona_pool import read_pool
from anthology.store import RunDir
from anthology.surveys import Question, Questionnaire, Survey, load_survey

#: The artifacts an evaluation is made from, whose digests it records.
INPUTS = ("answers", "humans", "matches")
#: How the persona side can be weighted (``evaluate.persona_weights``): which rows each method gets.
PERSONA_WEIGHTS = ("equal", "survey", "both")


@dataclass(frozen=True)
class RunData:
    """What evaluation reads from a run directory: the survey (for its questionnaire and trait
    mapping), the humans, every method's answers, the demographics and the matches (``None`` without
    them) and the digests of the :data:`INPUTS`."""

    run: RunDir
    manifest: dict[str, Any]
    survey: Survey
    humans: pd.DataFrame
    answers: pd.DataFrame
    demographics: pd.DataFrame | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    matches: pd.DataFrame | None = None
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def questionnaire(self) -> Questionnaire:
        return self.survey.questionnaire

    @cached_property
    def compared(self) -> tuple[Question, ...]:
        """The questions compared with the humans: all but the repeats asked of personas only."""
        return tuple(q for q in self.questionnaire.questions if not q.personas_only)

    @property
    def question_ids(self) -> list[str]:
        return [q.id for q in self.compared]

    @cached_property
    def n_options(self) -> np.ndarray:
        return np.array([len(q.options) for q in self.compared])

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

    def has_respondents(self, method: str) -> bool:
        """Whether each of the method's members answers for a respondent (all but the raked pool)."""
        return bool(self.answers.loc[self.answers["method"] == method, "respondent_id"].notna().any())

    def _key(self, method: str) -> str:
        """The column that names the method's members: ``respondent_id``, or ``persona_id`` in a
        panel without respondents."""
        return "respondent_id" if self.has_respondents(method) else "persona_id"

    def persona_frame(self, method: str) -> pd.DataFrame:
        """One row per respondent the method answered for (index ``respondent_id``; per persona,
        index ``persona_id``, for a panel without respondents), one column of positions per
        question (every question asked, those of personas only too)."""
        if method not in self._frames:
            rows = self.answers[self.answers["method"] == method]
            wide = rows.pivot(index=self._key(method), columns="question_id", values="position")
            self._frames[method] = wide.reindex(columns=list(self.questionnaire.ids))
        return self._frames[method]

    def rows(self, persona_weights: str) -> list[str]:
        """The metrics rows of the methods, in the paper's order: per method its plain row
        (``equal``), its weighted row (``survey``) or both (``both``); the raked panel's one row
        whatever the setting (it is always weighted)."""
        if persona_weights not in PERSONA_WEIGHTS:
            raise ConfigError(
                f"persona_weights must be one of {', '.join(PERSONA_WEIGHTS)}, got {persona_weights!r}"
            )
        out = []
        for method in self.methods:
            if not self.has_respondents(method):
                out.append(method)
                continue
            if persona_weights in ("equal", "both"):
                out.append(method)
            if persona_weights in ("survey", "both"):
                out.append(weighted_row(method))
        return out

    def persona_weights(self, row: str) -> np.ndarray | None:
        """The weights of a metrics row's personas (:meth:`persona_frame` order): ``None`` (each counts
        once) on a method's plain row, its respondents' survey weights on its weighted row, the raking
        weights of a panel without respondents."""
        method, weighted = row_method(row)
        index = self.persona_frame(method).index
        if not self.has_respondents(method):
            panel = method.removeprefix("anthology-")
            matches = self.matches if self.matches is not None else pd.DataFrame(columns=["method"])
            rows = matches[matches["method"] == panel]
            found = rows.set_index("persona_id")["weight"].reindex(index) if "weight" in rows else None
            if found is None or found.isna().any():
                raise ConfigError(
                    f"{self.run.artifact('matches')} has no weight for the {method} personas that answered: "
                    f"rerun `anthology match {self.run.root}` and `anthology ask {self.run.root}`"
                )
            return found.to_numpy(dtype=float)
        if not weighted:
            return None
        return self.humans.set_index("respondent_id")["weight"].reindex(index).to_numpy(dtype=float)

    def persona_answers(self, method: str) -> np.ndarray:
        return answers_from_frame(self.persona_frame(method), self.question_ids)

    def matched_answers(self, method: str) -> np.ndarray:
        """The method's answers aligned row by row with the humans (no answers where it has no row)."""
        frame = self.persona_frame(method).reindex(self.humans["respondent_id"])
        return answers_from_frame(frame, self.question_ids)

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
            where = index.get_indexer(part[self._key(method)])
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

    def persona_groups(self, method: str, trait: str) -> np.ndarray:
        """The :meth:`groups` code of each of the method's personas (:meth:`persona_frame` order): its
        respondent's, or in a panel without respondents the persona's own most likely category (the
        one it was raked in; NaN for a trait personas are not asked)."""
        index = self.persona_frame(method).index
        if self.has_respondents(method):
            return self.groups(trait, index)
        cells = self._pool_cells.get(trait)
        if cells is None:
            return np.full(len(index), np.nan)
        return cells.reindex(index).to_numpy(dtype=float, na_value=np.nan)

    @cached_property
    def _pool_cells(self) -> dict[str, pd.Series]:
        """Per persona trait the survey maps, each pool persona's most likely category code (NaN
        without a usable answer), by persona id."""
        if self.demographics is None:
            return {}
        persona_ids = list(dict.fromkeys(self.demographics["persona_id"]))
        tables = trait_tables(self.survey, self.demographics, persona_ids)
        cells = persona_cells(tables).astype(float)
        cells[cells < 0] = np.nan
        return {t.name: pd.Series(cells[:, i], index=persona_ids) for i, t in enumerate(tables)}

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
    demographics = read_pool(run, "demographics") if run.has("demographics") else None
    matches = run.read("matches") if run.has("matches") else None
    return RunData(run, manifest, survey, humans, answers, demographics, inputs, matches)


def input_digests(run: RunDir) -> dict[str, str]:
    """The SHA-256 of each :data:`INPUTS` artifact the run directory has."""
    return {name: digest for name in INPUTS if (digest := run.content_hash(name)) is not None}
