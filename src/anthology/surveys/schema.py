"""The survey data model: questions with ordered options, the canonical persona-side traits, a survey's
mapping of its demographic columns onto those traits, the respondents, and a loaded survey.

The question and trait models are frozen pydantic models, so a codebook written by hand is checked as
it is read; respondents are pandas objects indexed by respondent id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from anthology.errors import ConfigError
from anthology.surveys.codes import Code, CodeProblem, Matcher, MissingKind, check_distinct
from anthology.surveys.distributions import answer_distributions
from anthology.surveys.waves import check_waves

if TYPE_CHECKING:
    from anthology.surveys.codebook import Codebook

#: The last option of every canonical trait: a persona's mass here is dropped before matching.
DECLINE = "Prefer not to answer"

#: The values of the ``status`` column of :meth:`Survey.tidy`.
STATUSES = ("answered", "refused", "dont_know", "missing")


class FrozenModel(BaseModel):
    """Immutable, and strict about unknown fields so that a misspelt codebook key is reported."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Option(FrozenModel):
    """One answer option. ``position`` is its 1-based place in the question's canonical order (ordinal
    for ordered scales: the metrics compare distributions over these positions); ``code`` is how the
    data file records it (see :mod:`anthology.surveys.codes`)."""

    position: int = Field(ge=1)
    label: str = Field(min_length=1)
    code: Code | None = None

    def matcher(self) -> Matcher:
        return Matcher.build(self.position, self.label, () if self.code is None else (self.code,))


class Question(FrozenModel):
    """A survey question: its wording, its options in canonical order, and the codes that mean refused,
    don't know or missing (added to the codebook-wide ones). ``column`` defaults to ``id``."""

    id: str = Field(min_length=1)
    wording: str = Field(min_length=1)
    options: tuple[Option, ...]
    column: str | None = None
    missing: dict[Code, MissingKind] = Field(default_factory=dict)
    note: str | None = None
    repeats: str | None = Field(None, min_length=1)  # the earlier wave's question this one repeats
    personas_only: bool = False  # a repeat the humans have not answered (yet): no data column

    @model_validator(mode="before")
    @classmethod
    def _number_options(cls, data: Any) -> Any:
        """Options are written in order; their positions come from that order."""
        if isinstance(data, dict) and isinstance(data.get("options"), list | tuple):
            numbered = [_with_position(option, i) for i, option in enumerate(data["options"], 1)]
            data = {**data, "options": numbered}
        return data

    @field_validator("options")
    @classmethod
    def _well_formed_options(cls, options: tuple[Option, ...]) -> tuple[Option, ...]:
        if len(options) < 2:
            raise ValueError(f"a question needs at least two options; this one has {len(options)}")
        for i, option in enumerate(options, 1):
            if option.position != i:
                raise CodeProblem(
                    (i - 1,),
                    f"option {option.label!r} is number {i} in the list but says position {option.position}",
                )
        _check_unique_labels([o.label for o in options])
        return options

    @model_validator(mode="after")
    def _codes_are_distinct(self) -> Question:
        check_distinct("options", self.matchers(), self.missing)
        return self

    @property
    def data_column(self) -> str:
        return self.column or self.id

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(o.label for o in self.options)

    def matchers(self) -> list[Matcher]:
        return [o.matcher() for o in self.options]


def _with_position(option: Any, position: int) -> Any:
    if isinstance(option, bool):
        raise ValueError(
            f"option {position} was read as the yes/no value {str(option).lower()}; quote it (e.g. 'Yes')"
        )
    if isinstance(option, dict):
        return {"position": position, **option}
    if isinstance(option, str):
        return {"position": position, "label": option}
    return option


def _check_unique_labels(labels: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, label in enumerate(labels):
        key = label.strip().casefold()
        if key in seen:
            raise CodeProblem((i,), f"label {label!r} is used twice; labels must be distinct")
        seen.add(key)


def check_unique_ids(questions: tuple[Question, ...]) -> tuple[Question, ...]:
    """Refuse two questions with the same id (answers are keyed by it)."""
    seen: set[str] = set()
    for i, q in enumerate(questions):
        if q.id in seen:
            raise CodeProblem((i, "id"), f"question id {q.id!r} is used twice; ids must be unique")
        seen.add(q.id)
    return questions


class Wave(FrozenModel):
    """One wave of a questionnaire: its name and the ids of its questions, in order
    (:mod:`anthology.surveys.waves`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    questions: tuple[str, ...] = Field(min_length=1)


class Questionnaire(FrozenModel):
    """The questions of a survey, in order, and its waves (none: the whole questionnaire is one)."""

    name: str
    questions: tuple[Question, ...] = Field(min_length=1)
    waves: tuple[Wave, ...] = ()

    @field_validator("questions")
    @classmethod
    def _unique_ids(cls, questions: tuple[Question, ...]) -> tuple[Question, ...]:
        return check_unique_ids(questions)

    @model_validator(mode="after")
    def _waves_cover_the_questions(self) -> Questionnaire:
        if self.waves:
            check_waves(self.questions, self.waves)
        return self

    def parts(self) -> tuple[tuple[str | None, Questionnaire], ...]:
        """Each wave's name and its questions as a questionnaire, in wave order; without waves, the
        whole questionnaire as the one part, named ``None``."""
        if not self.waves:
            return ((None, self),)
        return tuple(
            (w.name, Questionnaire(name=self.name, questions=tuple(self[q] for q in w.questions)))
            for w in self.waves
        )

    def wave_of(self, question_id: str) -> str | None:
        """The name of the wave a question is in (``None`` without waves)."""
        return next((w.name for w in self.waves if question_id in w.questions), None)

    def repeated(self) -> tuple[tuple[str, str], ...]:
        """Every ``(question, its repeat)`` pair, in questionnaire order of the repeats."""
        return tuple((q.repeats, q.id) for q in self.questions if q.repeats is not None)

    @cached_property
    def by_id(self) -> dict[str, Question]:
        return {q.id: q for q in self.questions}

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(q.id for q in self.questions)

    def __getitem__(self, question_id: str) -> Question:
        return self.by_id[question_id]

    def __len__(self) -> int:
        return len(self.questions)


class Trait(FrozenModel):
    """A persona-side trait: the question put to each backstory and its options, the last of which is
    always "Prefer not to answer". ``swap`` names two options whose order (and, where the wording has
    ``{0}`` and ``{1}``, their order there) is randomised per persona, as the paper does for party.
    ``numeric`` lets a sampled answer name its option by a number in its range ("34" for 30-49).
    ``bio`` is the first-person sentence the Bio baseline states it with (``{value}``, optionally
    ``{article}``; None: the baselines leave the trait out), ``topic`` its Portray name, and
    ``lower`` lower-cases the value's first letter in the sentence."""

    name: str
    question: str = Field(min_length=1)
    categories: tuple[str, ...]
    swap: tuple[str, str] | None = None
    numeric: bool = False
    bio: str | None = None
    topic: str | None = None
    lower: bool = False

    @model_validator(mode="after")
    def _well_formed(self) -> Trait:
        if len(self.categories) < 3 or self.categories[-1] != DECLINE:
            raise ValueError(
                f"trait {self.name!r} needs at least two options, followed by {DECLINE!r} as the last"
            )
        _check_unique_labels(self.categories)
        if self.swap:
            if not set(self.swap) <= set(self.answerable) or self.swap[0] == self.swap[1]:
                raise ValueError(f"trait {self.name!r}: swap {list(self.swap)} must name two of its options")
            if ("{0}" in self.question) != ("{1}" in self.question):
                raise ValueError(
                    f"trait {self.name!r}: a question that names the swapped pair needs both {{0}} and "
                    "{1}, where the two options are named in the order each persona sees"
                )
        if self.bio is not None and "{value}" not in self.bio:
            raise ValueError(
                f"trait {self.name!r}: the bio sentence needs {{value}}, e.g. 'I live in {{value}}.'"
            )
        return self

    @property
    def answerable(self) -> tuple[str, ...]:
        """The categories that carry information (all but "Prefer not to answer")."""
        return self.categories[:-1]

    def asked(self, swapped: bool = False) -> tuple[str, tuple[str, ...]]:
        """The wording and option order to put to a persona; with ``swapped`` the ``swap`` pair trade
        places in both."""
        if self.swap is None:
            return self.question, self.categories
        first, second = (self.swap[1], self.swap[0]) if swapped else self.swap
        order = {self.swap[0]: first, self.swap[1]: second}
        wording = self.question.format(first, second) if "{0}" in self.question else self.question
        return wording, tuple(order.get(c, c) for c in self.categories)


class SurveyCategory(FrozenModel):
    """One of a survey's categories for a demographic: how the data records it (``codes`` and/or a
    numeric ``range``, inclusive, either end ``None`` for open) and, for persona traits, which persona
    categories sum into it. With ``exclude`` its respondents are left out of the study (counted in the
    load report), e.g. ages a persona pool does not cover."""

    label: str = Field(min_length=1)
    codes: tuple[Code, ...] = ()
    range: tuple[float | None, float | None] | None = None
    persona: tuple[str, ...] = ()
    exclude: bool = False

    @model_validator(mode="after")
    def _excluded_maps_nothing(self) -> SurveyCategory:
        if self.exclude and self.persona:
            raise CodeProblem(
                ("persona",), f"category {self.label!r} is excluded, so it takes no `persona:` categories"
            )
        return self

    @field_validator("range")
    @classmethod
    def _ordered_range(
        cls, value: tuple[float | None, float | None] | None
    ) -> tuple[float | None, float | None] | None:
        if value is not None:
            low, high = value
            if low is None and high is None:
                raise ValueError("a range needs at least one end, e.g. [65, null]")
            if low is not None and high is not None and low > high:
                raise ValueError(
                    f"range [{low}, {high}] is empty: the first number must not exceed the second"
                )
        return value


class SurveyTrait(FrozenModel):
    """A survey's demographic column and its categories. For a persona trait, each category lists
    the persona categories summed into it (``persona``) and ``unmapped`` lists the persona categories
    that have no counterpart here (their mass is dropped and the rest renormalised, like "Prefer not
    to answer")."""

    column: str
    categories: tuple[SurveyCategory, ...] = Field(min_length=1)
    missing: dict[Code, MissingKind] = Field(default_factory=dict)
    unmapped: tuple[str, ...] = ()
    note: str | None = None

    @field_validator("categories")
    @classmethod
    def _unique_labels(cls, categories: tuple[SurveyCategory, ...]) -> tuple[SurveyCategory, ...]:
        _check_unique_labels([c.label for c in categories])
        return categories

    @model_validator(mode="after")
    def _codes_are_distinct(self) -> SurveyTrait:
        check_distinct("categories", self.matchers(), self.missing)
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.categories)

    def matchers(self) -> list[Matcher]:
        return [Matcher.build(i, c.label, c.codes, c.range) for i, c in enumerate(self.categories, 1)]


@dataclass(frozen=True)
class Respondents:
    """The people who answered, indexed by respondent id: their survey ``weights``, their ``traits``
    (one ordered categorical column per trait, values are the survey's category labels, NA when
    refused or missing), their ``answers`` (one column per question, the option's position 1..K as
    nullable integers) and ``nonresponse`` (per question: refused, dont_know or missing where there is
    no answer, NA where there is)."""

    weights: pd.Series
    traits: pd.DataFrame
    answers: pd.DataFrame
    nonresponse: pd.DataFrame
    weighted: bool

    def __len__(self) -> int:
        return len(self.weights)


@dataclass(frozen=True)
class Exclusion:
    """Respondents left out of a survey, how many, why, and a few of their ids."""

    reason: str
    count: int
    examples: tuple[Any, ...]


@dataclass(frozen=True)
class LoadReport:
    """What happened when respondent data was read: where from, how many rows, who was excluded and
    why, and warnings (value labels in the file that disagree with the codebook)."""

    source: str
    rows: int
    exclusions: tuple[Exclusion, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Survey:
    """A survey: its codebook (questions, trait mapping) and, when data was given, its respondents and
    the report of how they were read."""

    codebook: Codebook
    respondents: Respondents | None = None
    report: LoadReport | None = None

    @property
    def name(self) -> str:
        return self.codebook.name

    @property
    def questionnaire(self) -> Questionnaire:
        return self.codebook.questionnaire

    def _require_respondents(self) -> Respondents:
        if self.respondents is None:
            raise ConfigError(f"survey {self.name!r} has no respondent data: load it with data=PATH")
        return self.respondents

    def subset(self, respondent_ids: Sequence[Any]) -> Survey:
        """The same survey restricted to some respondents (in the order given)."""
        people = self._require_respondents()
        ids = pd.Index(respondent_ids)
        unknown = ids.difference(people.weights.index)
        if len(unknown):
            from anthology.errors import ConfigError

            raise ConfigError(f"survey {self.name!r} has no respondent {unknown[0]!r}")
        kept = Respondents(
            weights=people.weights.loc[ids],
            traits=people.traits.loc[ids],
            answers=people.answers.loc[ids],
            nonresponse=people.nonresponse.loc[ids],
            weighted=people.weighted,
        )
        return Survey(self.codebook, kept, self.report)

    def sample(self, n: int | None, seed: int = 0) -> Survey:
        """A seeded random sample of ``n`` respondents (all of them when ``n`` is None or too large)."""
        people = self._require_respondents()
        if n is None or n >= len(people):
            return self
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(people), size=n, replace=False))
        return self.subset(people.weights.index[picked])

    def humans(self) -> pd.DataFrame:
        """One row per respondent: ``respondent_id``, ``weight``, the traits and one column of answer
        positions per question (the run directory's ``humans.parquet``)."""
        people = self._require_respondents()
        frame = pd.concat([people.weights.rename("weight"), people.traits, people.answers], axis=1)
        return frame.rename_axis("respondent_id").reset_index()

    def tidy(self) -> pd.DataFrame:
        """One row per question and respondent: ``respondent_id``, ``weight``, one column per trait,
        ``question_id``, ``position`` (1..K, NA without an answer), ``option`` (the option's label) and
        ``status`` (answered, refused, dont_know or missing)."""
        people = self._require_respondents()
        parts = [
            pd.DataFrame(
                {
                    "respondent_id": people.answers.index,
                    "question_id": q.id,
                    "position": people.answers[q.id].to_numpy(),
                    "option": people.answers[q.id].map(dict(enumerate(q.labels, 1))).to_numpy(),
                    "status": people.nonresponse[q.id].astype(object).fillna("answered").to_numpy(),
                }
            )
            for q in self.questionnaire.questions
        ]
        long = pd.concat(parts, ignore_index=True)
        long["question_id"] = long["question_id"].astype(
            pd.CategoricalDtype(self.questionnaire.ids, ordered=True)
        )
        long["position"] = long["position"].astype("Int64")
        long["status"] = long["status"].astype(pd.CategoricalDtype(STATUSES))
        long = long.join(people.traits.assign(weight=people.weights), on="respondent_id")
        columns = [
            "respondent_id",
            "weight",
            *people.traits.columns,
            "question_id",
            "position",
            "option",
            "status",
        ]
        return long[columns]

    def distributions(self, by: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Weighted answer distributions per question, overall or per subgroup of the ``by`` traits
        (see :func:`anthology.surveys.distributions.answer_distributions`)."""
        return answer_distributions(self._require_respondents(), self.questionnaire, by)
