"""Open-ended questions of a codebook (``open_questions:``): asked in free text and coded back to
closed categories by a coder model (:mod:`anthology.method.open_answers`).

Each has its wording, optionally the data file's column holding the humans' free-text answers
(``column``), the id of a closed question asking the same thing (``closed``), and the categories to
code answers into (``categories``: a label and a short description each). Without ``categories``, the
closed question's options are the categories; one of the two is required.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from anthology.surveys.codes import CodeProblem
from anthology.surveys.schema import FrozenModel, Question


class OpenCategory(FrozenModel):
    """A category a free-text answer can be coded into."""

    label: str = Field(min_length=1)
    description: str | None = None


class OpenQuestion(FrozenModel):
    """An open-ended question (see the module's docstring)."""

    id: str = Field(min_length=1)
    wording: str = Field(min_length=1)
    column: str | None = None
    closed: str | None = None
    categories: tuple[OpenCategory, ...] = ()

    @field_validator("categories")
    @classmethod
    def _distinct(cls, categories: tuple[OpenCategory, ...]) -> tuple[OpenCategory, ...]:
        seen: set[str] = set()
        for i, category in enumerate(categories):
            key = category.label.strip().casefold()
            if key in seen:
                raise CodeProblem((i,), f"category {category.label!r} is used twice; labels must be distinct")
            seen.add(key)
        return categories

    def coding_categories(self, closed: Question | None) -> tuple[OpenCategory, ...]:
        """The categories answers are coded into: its own, else the closed question's options."""
        if self.categories or closed is None:
            return self.categories
        return tuple(OpenCategory(label=label) for label in closed.labels)


def check_open_questions(
    open_questions: tuple[OpenQuestion, ...], questions: tuple[Question, ...]
) -> dict[str, tuple[OpenCategory, ...]]:
    """Each open question's coding categories by id; raise :class:`CodeProblem` (at its place in
    ``open_questions``) for a repeated id, an unknown ``closed`` id, or neither categories nor a closed
    counterpart."""
    closed = {q.id: q for q in questions}
    found: dict[str, tuple[OpenCategory, ...]] = {}
    for i, question in enumerate(open_questions):
        if question.id in found or question.id in closed:
            raise CodeProblem(
                (i, "id"), f"question id {question.id!r} is used twice; open and closed ids must be unique"
            )
        if question.closed is not None and question.closed not in closed:
            raise CodeProblem(
                (i, "closed"),
                f"{question.closed!r} is not a question under `questions:`; name one of: {', '.join(closed)}",
            )
        counterpart = closed.get(question.closed or "")
        categories = question.coding_categories(counterpart)
        if question.categories and counterpart is not None and len(categories) != len(counterpart.options):
            raise CodeProblem(
                (i, "categories"),
                f"open question {question.id!r} has {len(categories)} categories but its closed question "
                f"{counterpart.id!r} has {len(counterpart.options)} options; give one category per option, "
                "in the same order, or leave `categories:` out to use the options",
            )
        if len(categories) < 2:
            raise CodeProblem(
                (i,),
                f"open question {question.id!r} needs `categories:` (two or more) or `closed:` naming a "
                "closed question whose options are the categories",
            )
        found[question.id] = categories
    return found
