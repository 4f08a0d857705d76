"""The YAML codebook: one file that describes a survey and how to read its data (the format is
documented with a worked example in docs/codebook.md).

A codebook names the respondent-id and weight columns, may declare persona traits of its own
(``persona_traits:``, inline or in a shared YAML file), maps demographic columns onto the persona
traits (or declares a canonical trait absent, with the reason), and lists the questions with their
wording, options and codes. Every problem is reported as one line naming the file, line and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from anthology.errors import ConfigError
from anthology.surveys.codes import Code, CodeProblem, MissingKind, check_distinct
from anthology.surveys.datafiles import ReadOptions
from anthology.surveys.declared import TraitDeclaration, persona_traits
from anthology.surveys.open_questions import OpenCategory, OpenQuestion, check_open_questions
from anthology.surveys.schema import (
    DECLINE,
    FrozenModel,
    Question,
    Questionnaire,
    SurveyTrait,
    Trait,
    Wave,
    check_unique_ids,
)
from anthology.surveys.traits import CANONICAL_TRAITS
from anthology.surveys.waves import check_waves

#: Column names of the tidy respondent table; a trait may not take one of these names.
RESERVED_NAMES = frozenset({"respondent_id", "weight", "question_id", "position", "option", "status"})

_FORMAT_HINT = "see docs/codebook.md"


@dataclass(frozen=True)
class Origin:
    """Where a codebook came from: its file, the line and column of every key and list item, and the
    other files it was read from (a shared trait file)."""

    file: str = "<codebook>"
    positions: Mapping[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    includes: tuple[Path, ...] = ()

    def locate(self, path: tuple[Any, ...]) -> str:
        """``file:line:column`` of the deepest part of ``path`` found in the file."""
        keys = tuple(str(p) for p in path)
        for end in range(len(keys), 0, -1):
            if keys[:end] in self.positions:
                line, column = self.positions[keys[:end]]
                return f"{self.file}:{line}:{column}"
        return self.file


class Codebook(FrozenModel):
    """A survey definition: what the YAML codebook holds (field by field in docs/codebook.md)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    title: str = Field(min_length=1)
    source: str | None = None
    description: str | None = None
    data: str | None = None
    read: ReadOptions = Field(default_factory=ReadOptions)  # how to read `data` (docs: Data files)
    respondent_id: str | None = None
    weight: str | None = None
    missing: dict[Code, MissingKind] = Field(default_factory=dict)
    persona_traits: dict[str, TraitDeclaration] = Field(default_factory=dict)
    traits: dict[str, SurveyTrait] = Field(default_factory=dict)
    absent: dict[str, str] = Field(default_factory=dict)
    questions: tuple[Question, ...] = Field(min_length=1)
    open_questions: tuple[OpenQuestion, ...] = ()  # docs: Open-ended questions
    waves: tuple[Wave, ...] = ()  # in order; none: the whole questionnaire is one wave (docs: Waves)

    _origin: Origin = PrivateAttr(default_factory=Origin)

    @field_validator("questions")
    @classmethod
    def _unique_ids(cls, questions: tuple[Question, ...]) -> tuple[Question, ...]:
        return check_unique_ids(questions)

    @model_validator(mode="after")
    def _waves_cover_the_questions(self) -> Codebook:
        check_waves(self.questions, self.waves)
        return self

    @model_validator(mode="after")
    def _traits_are_declared(self) -> Codebook:
        """Every canonical trait is mapped or declared absent; only persona traits map to personas."""
        persona = self._checked_declarations()
        names = ", ".join(persona)
        for name, trait in self.traits.items():
            if name in RESERVED_NAMES:
                raise CodeProblem(("traits", name), f"{name!r} is reserved; give the trait another name")
            if name in persona:
                _check_persona_mapping(name, trait, persona[name])
            elif trait.unmapped or any(c.persona for c in trait.categories):
                raise CodeProblem(
                    ("traits", name),
                    f"{name!r} is not a persona trait ({names}), so it takes no `persona:` or "
                    "`unmapped:`; rename it, declare it under `persona_traits:`, or remove those keys",
                )
        for name, reason in self.absent.items():
            if name not in persona:
                raise CodeProblem(("absent", name), f"{name!r} is not a persona trait ({names})")
            if name in self.traits:
                raise CodeProblem(
                    ("absent", name), f"trait {name!r} is both mapped under `traits:` and declared absent"
                )
            if not reason.strip():
                raise CodeProblem(("absent", name), f"say why trait {name!r} is absent")
        for name in CANONICAL_TRAITS:
            if name not in self.traits and name not in self.absent and name not in self.persona_traits:
                raise CodeProblem(
                    ("traits",),
                    f"persona trait {name!r} is neither mapped under `traits:` nor declared under `absent:` "
                    "with a reason; add one of the two",
                )
        if not self.matched_traits and self.persona_traits:
            raise CodeProblem(
                ("persona_traits",),
                "no persona trait is mapped under `traits:` (with `persona:` categories), so nothing can "
                "be matched; map at least one",
            )
        return self

    def _checked_declarations(self) -> dict[str, Trait]:
        """:attr:`persona_definitions`, with a declaration's problem reported at its place."""
        for name, declaration in self.persona_traits.items():
            if name in RESERVED_NAMES:
                raise CodeProblem(
                    ("persona_traits", name), f"{name!r} is reserved; give the trait another name"
                )
            try:
                declaration.trait(name)
            except ValidationError as exc:
                problem = (exc.errors()[0].get("ctx") or {}).get("error") or exc.errors()[0]["msg"]
                raise CodeProblem(("persona_traits", name), str(problem)) from None
        return self.persona_definitions

    @cached_property
    def persona_definitions(self) -> dict[str, Trait]:
        """Every persona trait the codebook can map: the canonical ones (those it declares replaced)
        and its own (:func:`anthology.surveys.declared.persona_traits`)."""
        return persona_traits(self.persona_traits)

    @cached_property
    def matched_traits(self) -> tuple[Trait, ...]:
        """The persona traits the codebook maps (what the demographic survey asks and matching uses),
        in :attr:`persona_definitions` order."""
        return tuple(t for name, t in self.persona_definitions.items() if name in self.traits)

    @model_validator(mode="after")
    def _codes_are_distinct(self) -> Codebook:
        """The codebook-wide missing codes must not collide with any option or category code."""
        for name, trait in self.traits.items():
            _check_distinct_at(("traits", name), "categories", trait, {**self.missing, **trait.missing})
        for i, question in enumerate(self.questions):
            _check_distinct_at(("questions", i), "options", question, {**self.missing, **question.missing})
        return self

    @model_validator(mode="after")
    def _open_questions_code_somewhere(self) -> Codebook:
        """Every open question has categories to be coded into (:func:`check_open_questions`)."""
        try:
            check_open_questions(self.open_questions, self.questions)
        except CodeProblem as exc:
            raise CodeProblem(("open_questions", *exc.path), str(exc)) from exc
        return self

    @cached_property
    def open_categories(self) -> dict[str, tuple[OpenCategory, ...]]:
        """Each open question's coding categories, by its id."""
        return check_open_questions(self.open_questions, self.questions)

    @property
    def origin(self) -> Origin:
        return self._origin

    @cached_property
    def questionnaire(self) -> Questionnaire:
        return Questionnaire(name=self.name, questions=self.questions, waves=self.waves)

    def locate(self, *path: str | int) -> str:
        """``file:line:column`` of a part of the codebook, for error messages."""
        return self._origin.locate(path)

    def columns(self) -> dict[str, tuple[str | int, ...]]:
        """Every data column the codebook reads, with the codebook path that names it."""
        named: dict[str, tuple[str | int, ...]] = {}
        if self.respondent_id:
            named[self.respondent_id] = ("respondent_id",)
        if self.weight:
            named[self.weight] = ("weight",)
        for name, trait in self.traits.items():
            named.setdefault(trait.column, ("traits", name, "column"))
        for i, question in enumerate(self.questions):
            if question.personas_only:
                continue
            named.setdefault(question.data_column, ("questions", i, "column" if question.column else "id"))
        for i, open_question in enumerate(self.open_questions):
            if open_question.column:
                named.setdefault(open_question.column, ("open_questions", i, "column"))
        return named


def _check_distinct_at(
    where: tuple[str | int, ...], field_name: str, item: Question | SurveyTrait, missing: Mapping[Any, str]
) -> None:
    """:func:`check_distinct` for an item below the codebook root, with the codebook-wide missing codes."""
    try:
        check_distinct(field_name, item.matchers(), missing)
    except CodeProblem as exc:
        raise CodeProblem(where + exc.path, str(exc)) from exc


def _check_persona_mapping(name: str, trait: SurveyTrait, canonical: Trait) -> None:
    """Each persona category of a persona trait sums into exactly one survey category or is declared
    ``unmapped``; "Prefer not to answer" is never mapped (matching drops it). An excluded category maps
    nothing."""
    known = set(canonical.answerable)
    used: dict[str, str] = {}
    for i, category in enumerate(trait.categories):
        where = ("traits", name, "categories", i, "persona")
        if category.exclude:
            continue
        if not category.persona:
            raise CodeProblem(
                where[:-1],
                f"category {category.label!r} of persona trait {name!r} needs `persona:` categories",
            )
        for persona in category.persona:
            if persona == DECLINE:
                raise CodeProblem(where, f"{DECLINE!r} is never mapped: matching drops it")
            if persona not in known:
                raise CodeProblem(
                    where,
                    f"{persona!r} is not a {name} category; use one of: {'; '.join(canonical.answerable)}",
                )
            if persona in used:
                raise CodeProblem(where, f"{persona!r} is already summed into {used[persona]!r}; map it once")
            used[persona] = category.label
    for persona in trait.unmapped:
        if persona not in known:
            raise CodeProblem(("traits", name, "unmapped"), f"{persona!r} is not a {name} category")
        if persona in used:
            raise CodeProblem(("traits", name, "unmapped"), f"{persona!r} is both mapped and unmapped")
    left = [p for p in canonical.answerable if p not in used and p not in trait.unmapped]
    if left:
        raise CodeProblem(
            ("traits", name),
            f"persona categories {left} of {name!r} are neither mapped to a category "
            "nor listed under `unmapped:`",
        )


def read_codebook(path: Path) -> Codebook:
    """Read and check a YAML codebook; any problem is a :class:`ConfigError` naming file, line and column."""
    return parse_codebook(_read_text(path, "codebook"), path)


def parse_codebook(text: str, path: Path) -> Codebook:
    """Check a codebook's YAML text as if it were read from ``path`` (which messages name and a shared
    trait file is found next to)."""
    data, positions = parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1:1: a codebook is a YAML mapping with name, title, traits, absent and questions; "
            f"{_FORMAT_HINT}"
        )
    includes: tuple[Path, ...] = ()
    if isinstance(data.get("persona_traits"), str):
        includes = (path.parent / Path(data["persona_traits"]).expanduser(),)
        data = {**data, "persona_traits": read_trait_file(includes[0])}
    origin = Origin(str(path), positions, includes)
    try:
        codebook = Codebook.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, origin)) from exc
    codebook._origin = origin
    return codebook


def read_trait_file(path: Path) -> dict[str, TraitDeclaration]:
    """A shared trait file: a YAML mapping of persona trait declarations, checked as it is read."""
    data, positions = _read_yaml(path, "trait file", "(persona_traits:) ")
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"{path}:1:1: a trait file is a YAML mapping of trait name to declaration; {_FORMAT_HINT}"
        )
    try:
        return _TraitFile.model_validate({"traits": data}).traits
    except ValidationError as exc:
        shifted = {("traits", *key): where for key, where in positions.items()}
        message = describe_validation_error(exc, Origin(str(path), shifted))
        raise ConfigError(message.replace(": traits.", ": ", 1)) from exc


class _TraitFile(FrozenModel):
    traits: dict[str, TraitDeclaration]


def _read_yaml(path: Path, what: str, named: str = "") -> tuple[Any, dict[tuple[str, ...], tuple[int, int]]]:
    """A UTF-8 YAML file parsed with its positions (:func:`parse_yaml`)."""
    return parse_yaml(_read_text(path, what, named), str(path))


def _read_text(path: Path, what: str, named: str = "") -> str:
    """A UTF-8 text file; a missing or unreadable one is a one-line error naming ``what`` it is."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} {named}does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}; it must be a UTF-8 YAML file") from exc


def parse_yaml(text: str, file: str) -> tuple[Any, dict[tuple[str, ...], tuple[int, int]]]:
    """Parse YAML and record the 1-based line and column of every mapping key and list item."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(f"{where}: not valid YAML: {exc.problem}{context}; fix the syntax there") from exc
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{file}: not valid YAML: {first_line}") from exc
    finally:
        loader.dispose()
    positions: dict[tuple[str, ...], tuple[int, int]] = {}
    if node is not None:
        _record_positions(node, (), positions, file)
    return data, positions


def _record_positions(
    node: yaml.Node, path: tuple[str, ...], positions: dict[tuple[str, ...], tuple[int, int]], file: str
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            mark = key_node.start_mark
            if key in positions:
                raise ConfigError(
                    f"{file}:{mark.line + 1}:{mark.column + 1}: key {key_node.value!r} appears twice in the "
                    "same mapping; keep one"
                )
            positions[key] = (mark.line + 1, mark.column + 1)
            _record_positions(value_node, key, positions, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = (*path, str(i))
            positions[key] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _record_positions(item, key, positions, file)


def describe_validation_error(exc: ValidationError, origin: Origin) -> str:
    """The first validation problem as one line: ``file:line:column: path: what is wrong``."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a typo first
    first = errors[0]
    loc = tuple(p for p in first["loc"] if p != "[key]")
    problem = (first.get("ctx") or {}).get("error")
    if isinstance(problem, CodeProblem):
        loc += problem.path
        message = str(problem)
    elif first["type"] == "missing":
        message = "this required field is missing"
    elif first["type"] == "extra_forbidden":
        message = f"unknown field; check its spelling ({_FORMAT_HINT})"
    elif isinstance(problem, Exception):
        message = str(problem)
    else:
        message = first["msg"]
    dotted = ".".join(_loc_part(p) for p in loc).replace(".[", "[")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    prefix = f"{dotted}: " if dotted else ""
    return f"{origin.locate(loc)}: {prefix}{message}{more}"


def _loc_part(part: str | int) -> str:
    return f"[{part}]" if isinstance(part, int) else str(part)
