"""The method's prompt strings (Moon et al., 2024), rendered in one place so every stage and test
sees exactly the same text. Wording is part of the method; see the project's ANTHOLOGY notes.

Completion style (the paper's, for base models) renders an interview transcript::

    Question: Are you a US citizen?

    Answer: Yes, I am.

    Question: Tell me about yourself. ...

    Answer: <backstory>

Chat style sends the same questions as user turns and the answers as assistant turns.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

from anthology.models.base import Prompt

CITIZEN_QUESTION = "Are you a US citizen?"
BACKSTORY_QUESTION = (
    "Tell me about yourself. How old are you? Where did you grow up? What events made you who you are? "
    "What matters to you and what do you enjoy?"
)
BACKSTORY_STOP = ("Question", "Q:", "Interview")
DP_QUESTION = "Tell me about yourself."
ANSWER_INSTRUCTION = "Please answer the following question keeping in mind your previous answers."
CHAT_SYSTEM = "Answer the following questions as if you are the person in the conversation."
BIO_PREAMBLE = (
    "Below you will be asked to provide a short description of your demographic information, and then "
    "answer some questions.\n\nDescription:"
)
PORTRAY_PREAMBLE = (
    "Answer the following questions as if you are a person with the following demographic information "
    "provided below."
)
LETTERS = string.ascii_uppercase


def qa_turn(question: str, answer: str | None = None) -> str:
    """``Question: {question}\\n\\nAnswer:`` and, when given, `` {answer}``."""
    text = f"Question: {question}\n\nAnswer:"
    return text if answer is None else f"{text} {answer.strip()}"


def transcript(turns: Sequence[tuple[str, str | None]]) -> str:
    """An interview of (question, answer) turns; the last answer may be ``None`` (the model's turn)."""
    return "\n\n".join(qa_turn(q, a) for q, a in turns)


def chat_transcript(turns: Sequence[tuple[str, str | None]], system: str | None = None) -> Prompt:
    """The same interview as chat messages; a trailing ``None`` answer is left for the model."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    for question, answer in turns:
        messages.append({"role": "user", "content": question})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer.strip()})
    return tuple(messages)


def answer_with(n_options: int) -> str:
    """``Answer with (A), (B), (C), or (D).`` for n options (``(A) or (B)`` for two)."""
    letters = [f"({LETTERS[i]})" for i in range(n_options)]
    if n_options == 2:
        return f"Answer with {letters[0]} or {letters[1]}."
    return f"Answer with {', '.join(letters[:-1])}, or {letters[-1]}."


def multiple_choice(question: str, options: Sequence[str], instruction: str | None = None) -> str:
    """The paper's multiple-choice block, ending in ``Answer:`` for the model to continue::

    [instruction\\n]Question: {question}
    (A) {option}
    (B) {option}
    Answer with (A) or (B).
    Answer:
    """
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options can be lettered, got {len(options)}")
    lines = [instruction] if instruction else []
    lines.append(f"Question: {question}")
    lines += [f"({LETTERS[i]}) {option}" for i, option in enumerate(options)]
    lines += [answer_with(len(options)), "Answer:"]
    return "\n".join(lines)


#: What may follow a bare option letter for it to be an answer: the letter closed as ``B)``, ``B.``,
#: ``B:`` or at the end of the line, as :func:`anthology.method.parsing.parse_choice` reads sampled
#: answers. A bare letter followed by anything else is a word (the pronoun "I", the article "A").
CLOSERS = (")", ".", ":", "\n")
#: Scored forms per option: ``(B`` and the bare letter with each closer.
FORMS_PER_OPTION = 1 + len(CLOSERS)


def answer_forms(letter_index: int, chat: bool = False) -> tuple[str, ...]:
    """The continuations that pick one option after ``Answer:``: `` (B`` and `` B)``, `` B.``,
    `` B:``, `` B\n`` (without the leading space when a chat answer starts). The bare `` B`` alone is
    not an answer form: its probability includes every word that starts with the letter."""
    space = "" if chat else " "
    letter = LETTERS[letter_index]
    return (f"{space}({letter}", *(f"{space}{letter}{c}" for c in CLOSERS))


def option_continuations(n_options: int, chat: bool = False) -> tuple[str, ...]:
    """Every option's :func:`answer_forms`, option by option (option k's forms are at
    ``k * FORMS_PER_OPTION`` onwards): what log-prob mode scores."""
    return tuple(form for i in range(n_options) for form in answer_forms(i, chat))


def option_masses(logprobs: Sequence[float], n_options: int) -> list[float]:
    """Each option's probability mass: the sum over its forms in :func:`option_continuations`.
    The forms are disjoint token paths, so their probabilities add."""
    f = FORMS_PER_OPTION
    if len(logprobs) != n_options * f:
        raise ValueError(f"expected {n_options * f} form scores for {n_options} options, got {len(logprobs)}")
    return [sum(math.exp(lp) for lp in logprobs[i * f : (i + 1) * f]) for i in range(n_options)]


def chosen(letter_index: int) -> str:
    """The text appended after ``Answer:`` for a chosen option: `` (B)``."""
    return f" ({LETTERS[letter_index]})"
