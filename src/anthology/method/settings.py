"""The method's settings and names, apart from the stages' code so that the command line can build
its flags from them without importing pandas or the models: each stage's configuration (defaults: the
paper's) and the names of the matching methods and baselines."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from anthology.method.prompts import ANSWER_INSTRUCTION, BACKSTORY_QUESTION, BACKSTORY_STOP, CITIZEN_QUESTION
from anthology.settings import Settings, distinct

#: The most tokens a setting may ask for: the longest context windows (about a million tokens).
TOKENS_MAX = 2**20

Style = Literal["completion", "chat"]
Mode = Literal["sample", "logprob"]
ContextMode = Literal["sequential", "independent"]
Method = Literal["greedy", "max-weight", "random", "raked"]
#: The matching methods (one persona per respondent), the default panels.
METHODS: tuple[Method, ...] = ("greedy", "max-weight", "random")
#: The raked panel: the whole pool, weighted to the population's margins (asked for by name).
RAKED: Method = "raked"
#: Every panel the match stage can build.
PANELS: tuple[Method, ...] = (*METHODS, RAKED)
#: The demographic-prompting baselines (DP, which writes backstories, is apart).
BASELINES = ("qa", "bio", "portray", "nothing")


class BackstoryConfig(Settings):
    """Generation and filtering parameters (defaults: the paper's)."""

    style: Style = Field(
        "completion", description="Interview as completion text (base models, the paper) or chat turns."
    )
    temperature: float = Field(1.0, ge=0, le=10, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(1500, ge=1, le=TOKENS_MAX, description="Max tokens per backstory.")
    stop: tuple[str, ...] = Field(BACKSTORY_STOP, description="Stop strings.")
    question: str = Field(BACKSTORY_QUESTION, min_length=1, description="The interview question.")
    preamble: str | None = Field(
        CITIZEN_QUESTION,
        min_length=1,
        description=f'A yes/no question that opens the interview, its "yes" answers kept (default: the '
        f'paper\'s "{CITIZEN_QUESTION}").',
        json_schema_extra={"switch": True},
    )
    min_tokens: int = Field(41, ge=0, le=TOKENS_MAX, description="Drop backstories with fewer tokens.")
    min_words: int = Field(0, ge=0, le=TOKENS_MAX, description="Drop backstories with fewer words.")
    first_person: Literal["heuristic", "judge", "off"] = Field(
        "heuristic", description="First-person narrative check."
    )
    near_duplicate: float = Field(
        0.8, ge=0, description="Jaccard similarity above which a backstory is a near duplicate (>1: off)."
    )
    critic: Literal["off", "flag", "drop"] = Field(
        "off",
        description="LLM critic of internal contradictions: off, flag (keep, marked) or drop the flagged.",
    )

    @field_validator("preamble", mode="before")
    @classmethod
    def _switched(cls, value: object) -> object:
        """``false`` (or ``null``) turns the preamble off, ``true`` is the paper's question."""
        if isinstance(value, bool):
            return CITIZEN_QUESTION if value else None
        return value


class DemographicsConfig(Settings):
    """How each backstory answers the demographic survey (defaults: the paper's)."""

    mode: Mode = Field(
        "sample", description="Parsed samples per question (the paper) or one log-prob scoring pass."
    )
    samples: int = Field(40, ge=1, le=10_000, description="Samples per question in sample mode.")
    temperature: float = Field(1.0, ge=0, le=10, description="Sampling temperature.")
    max_tokens: int = Field(128, ge=1, le=TOKENS_MAX, description="Max tokens per sampled answer.")
    stop: tuple[str, ...] = Field(("\n", "Question"), description="Stop strings of a sampled answer.")
    traits: tuple[str, ...] | None = Field(
        None, min_length=1, description="Traits to ask (default: those the survey maps, for matching)."
    )

    _distinct_traits = field_validator("traits")(distinct)


class AskConfig(Settings):
    """Answering parameters (defaults: the paper's, except ``max_attempts``: the paper allowed 100)."""

    context: ContextMode = Field(
        "sequential", description="Earlier answers kept in context (the paper), or each question on its own."
    )
    mode: Mode = Field("sample", description="Sampled and parsed answers (the paper) or log-prob scoring.")
    shuffle_questions: bool = Field(True, description="Shuffle the question order per member.")
    reverse_options: bool = Field(True, description="Reverse the option order for half the members.")
    max_attempts: int = Field(
        20, ge=1, le=1000, description="Samples per question before an answer counts as non-compliant."
    )
    temperature: float = Field(1.0, ge=0, le=10, description="Sampling temperature.")
    max_tokens: int = Field(128, ge=1, le=TOKENS_MAX, description="Max tokens per sampled answer.")
    stop: tuple[str, ...] = Field(("\n", "Question:"), description="Stop strings of a sampled answer.")
    instruction: str = Field(ANSWER_INSTRUCTION, description="The answering instruction.")
    memory: bool = Field(
        False,
        description="In a survey with waves, each wave's context holds the member's earlier waves' "
        "questions and answers (off: each wave sees only the context).",
    )


class PoolConfig(Settings):
    """The backstory pool's coverage audit and top-up (:mod:`anthology.method.audit`,
    :mod:`anthology.method.topup`)."""

    plausible: float = Field(
        0.01, gt=0, le=1, description="Least match weight of a plausible persona for a respondent."
    )
    min_plausible: int = Field(
        1, ge=1, le=1_000_000, description="The audit passes when every respondent has this many plausible."
    )
    top_up: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Most new backstories to generate while the audit fails (0: audit only).",
    )
    batch: int | None = Field(
        None, ge=1, le=1_000_000, description="New backstories per top-up round (default: backstories.n)."
    )


class OpenConfig(Settings):
    """Free-form answers to a survey's open questions, and the coder that codes them back to their
    categories (:mod:`anthology.method.open_answers`)."""

    temperature: float = Field(1.0, ge=0, le=10, description="Sampling temperature of free-text answers.")
    max_tokens: int = Field(96, ge=1, le=TOKENS_MAX, description="Max tokens per free-text answer.")
    stop: tuple[str, ...] = Field(("\n\n", "Question"), description="Stop strings of free-text answers.")
    coder: str | None = Field(
        None,
        min_length=1,
        description="Model that codes free-text answers (a --model spec; default: the study's model).",
    )
