"""Waves: a questionnaire asked in parts, in order, of the same panel (docs/waves.md).

A codebook's optional ``waves:`` lists each wave's ``name`` and its ``questions`` (ids from
``questions:``) in order. A question of a later wave that repeats an earlier one is its own question
(its own id and data column) with ``repeats: ID`` naming the earlier one, whose options it must have.
Without ``waves:`` the whole questionnaire is one wave and no question may say ``repeats``. The
:class:`~anthology.surveys.schema.Wave` model is in :mod:`anthology.surveys.schema`, with the
questionnaire that holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from anthology.surveys.codes import CodeProblem

if TYPE_CHECKING:
    from anthology.surveys.schema import Question, Wave


def check_waves(questions: Sequence[Question], waves: Sequence[Wave]) -> None:
    """Every question belongs to exactly one wave; wave names are distinct; a ``repeats`` names a
    question of an earlier wave that repeats nothing itself, with the same options. Raises
    :class:`CodeProblem` at the offending place (``waves[i].questions[j]`` or ``questions[i].repeats``)."""
    index = {q.id: i for i, q in enumerate(questions)}
    for i, q in enumerate(questions):
        if q.personas_only and q.repeats is None:
            raise CodeProblem(
                ("questions", i, "personas_only"),
                f"question {q.id!r} is asked of personas only, but only a repeat (`repeats:`) can be: "
                "give the humans' column or make it a repeat",
            )
    if not waves:
        for i, q in enumerate(questions):
            if q.repeats is not None:
                raise CodeProblem(
                    ("questions", i, "repeats"),
                    f"question {q.id!r} repeats {q.repeats!r}, but the codebook has no `waves:`; "
                    "list the waves, the repeat in a later one",
                )
        return
    wave_of: dict[str, int] = {}
    names: set[str] = set()
    for w, wave in enumerate(waves):
        if wave.name in names:
            raise CodeProblem(("waves", w, "name"), f"wave name {wave.name!r} is used twice; name each once")
        names.add(wave.name)
        for j, question_id in enumerate(wave.questions):
            where = ("waves", w, "questions", j)
            if question_id not in index:
                raise CodeProblem(where, f"{question_id!r} is not a question id under `questions:`")
            if question_id in wave_of:
                first = waves[wave_of[question_id]].name
                raise CodeProblem(
                    where,
                    f"question {question_id!r} is already in wave {first!r}; a question is asked in one "
                    "wave (a repeat is its own question with `repeats:`)",
                )
            wave_of[question_id] = w
    left = [q.id for q in questions if q.id not in wave_of]
    if left:
        raise CodeProblem(("waves",), f"question(s) {left} are in no wave; list each in exactly one")
    for i, q in enumerate(questions):
        if q.repeats is None:
            continue
        where = ("questions", i, "repeats")
        if q.repeats not in index:
            raise CodeProblem(where, f"{q.repeats!r} is not a question id under `questions:`")
        earlier = questions[index[q.repeats]]
        if earlier.repeats is not None:
            raise CodeProblem(
                where, f"{q.repeats!r} is itself a repeat (of {earlier.repeats!r}); repeat the original"
            )
        if wave_of[q.repeats] >= wave_of[q.id]:
            raise CodeProblem(
                where,
                f"{q.id!r} (wave {waves[wave_of[q.id]].name!r}) repeats {q.repeats!r}, which is not in an "
                "earlier wave; a repeat comes in a later wave than its original",
            )
        if q.labels != earlier.labels:
            raise CodeProblem(
                where,
                f"{q.id!r} repeats {q.repeats!r} but its options {list(q.labels)} differ from "
                f"{list(earlier.labels)}; give a repeat the same options in the same order",
            )
