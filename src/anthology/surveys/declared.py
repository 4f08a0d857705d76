"""Persona traits a codebook declares (``persona_traits:``): a national education scale, a country's
regions, vote intention, income deciles, age bands from 15. Each is asked of every backstory like the
canonical traits (:mod:`anthology.surveys.traits`); a declaration with a canonical trait's name
replaces it. The format is in docs/codebook.md; :func:`persona_traits` resolves the declarations into
the study's traits.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, field_validator

from anthology.surveys.schema import DECLINE, FrozenModel, Trait
from anthology.surveys.traits import CANONICAL_TRAITS


class TraitDeclaration(FrozenModel):
    """One declared persona trait as the YAML gives it: the question, its options in order ("Prefer
    not to answer" is added as the last), and optionally the swapped pair, whether answers may name an
    option by a number, and the baselines' wording (``bio``: a sentence with ``{value}``, ``null``
    to leave the trait out of the baselines; ``portray``: the Portray line's name). Unset fields of a
    declaration that replaces a canonical trait keep that trait's."""

    question: str = Field(min_length=1)
    options: tuple[str, ...] = Field(min_length=2)
    swap: tuple[str, str] | None = None
    numeric: bool | None = None
    bio: str | None = None
    portray: str | None = Field(None, min_length=1)
    lower: bool | None = None

    @field_validator("options")
    @classmethod
    def _without_decline(cls, options: tuple[str, ...]) -> tuple[str, ...]:
        """``Prefer not to answer`` is every trait's last option; given last, it is taken as that one."""
        body = options[:-1] if options and options[-1] == DECLINE else options
        if DECLINE in body:
            raise ValueError(f"{DECLINE!r} is added as the last option; do not list it elsewhere")
        if len(body) < 2:
            raise ValueError(f"a persona trait needs at least two options besides {DECLINE!r}")
        return body

    def trait(self, name: str) -> Trait:
        """The :class:`Trait` this declares under ``name``."""
        canonical = CANONICAL_TRAITS.get(name)
        topic = self.portray or (canonical.topic if canonical and canonical.topic else name.replace("_", " "))
        if "bio" in self.model_fields_set:
            bio = self.bio
        else:
            bio = canonical.bio if canonical else f"My {topic} is {{value}}."
        return Trait(
            name=name,
            question=self.question,
            categories=(*self.options, DECLINE),
            swap=self.swap,
            numeric=self.numeric if self.numeric is not None else bool(canonical and canonical.numeric),
            bio=bio,
            topic=topic,
            lower=self.lower if self.lower is not None else bool(canonical and canonical.lower),
        )


def persona_traits(declared: Mapping[str, TraitDeclaration]) -> dict[str, Trait]:
    """The study's persona traits: the canonical ones in their order, each replaced by a declaration
    of the same name, then the other declarations in their order."""
    traits = {
        name: declared[name].trait(name) if name in declared else t for name, t in CANONICAL_TRAITS.items()
    }
    traits.update({name: d.trait(name) for name, d in declared.items() if name not in CANONICAL_TRAITS})
    return traits
