"""The canonical persona-side demographic traits: the questions a backstory is asked in the
demographic survey (stage 3), with the paper's options. Each list ends with "Prefer not to answer".

Surveys map these categories onto their own (see :class:`~anthology.surveys.schema.SurveyTrait`), so
that persona and human demographics can be compared in matching (stage 4). A codebook may declare
traits of its own, or replace one of these, under ``persona_traits:`` (docs/codebook.md). The Bio and
Portray wording is the paper's for the six traits its baselines state; religion and region have none,
so the baselines leave them out, as the paper does.
"""

from __future__ import annotations

from types import MappingProxyType

from anthology.surveys.schema import DECLINE, Trait

AGE = Trait(
    name="age",
    question="What is your age?",
    categories=("18-29", "30-49", "50-64", "65 or Above", DECLINE),
    numeric=True,
    bio="My age is {value}.",
    topic="age",
)

GENDER = Trait(
    name="gender",
    question="What is your gender?",
    categories=("Male", "Female", "Other (e.g., non-binary, trans)", DECLINE),
    bio="I consider my gender as {value}.",
    topic="gender",
    lower=True,
)

EDUCATION = Trait(
    name="education",
    question="What is the highest level of education you have completed?",
    categories=(
        "Less than high school",
        "High school graduate or equivalent (e.g., GED)",
        "Some college, but no degree",
        "Associate degree",
        "Bachelor's degree",
        "Professional degree (e.g., JD, MD)",
        "Master's degree",
        "Doctoral degree",
        DECLINE,
    ),
    bio="My highest level of education is {value}.",
    topic="education",
    lower=True,
)

INCOME = Trait(
    name="income",
    question="What is your annual household income?",
    categories=(
        "Less than $10,000",
        "$10,000 to $19,999",
        "$20,000 to $29,999",
        "$30,000 to $39,999",
        "$40,000 to $49,999",
        "$50,000 to $59,999",
        "$60,000 to $69,999",
        "$70,000 to $79,999",
        "$80,000 to $89,999",
        "$90,000 to $99,999",
        "$100,000 to $149,999",
        "$150,000 to $199,999",
        "$200,000 or more",
        DECLINE,
    ),
    numeric=True,
    bio="My annual income is {value}.",
    topic="income",
)

RACE = Trait(
    name="race",
    question="Which of the following racial or ethnic groups do you identify with?",
    categories=(
        "American Indian or Alaska Native",
        "Asian or Asian American",
        "Black or African American",
        "Hispanic or Latino/a",
        "Middle Eastern or North African",
        "Native Hawaiian or Other Pacific Islander",
        "White or European",
        "Other",
        DECLINE,
    ),
    bio="I consider my race as {value}.",
    topic="race",
)

RELIGION = Trait(
    name="religion",
    question="What is your religion?",
    categories=(
        "Protestant",
        "Roman Catholic",
        "Mormon (Church of Jesus Christ of Latter-day Saints or LDS)",
        "Orthodox (such as Greek, Russian, or some other Orthodox church)",
        "Jewish",
        "Muslim",
        "Buddhist",
        "Hindu",
        "Atheist",
        "Agnostic",
        "Other",
        "Nothing in particular",
        DECLINE,
    ),
)

REGION = Trait(
    name="region",
    question="In which region of the United States do you live?",
    categories=("Northeast", "Midwest", "South", "West", DECLINE),
)

PARTY = Trait(
    name="party",
    question="Generally speaking, do you usually think of yourself as a {0}, a {1}, an Independent or what?",
    categories=("Democrat", "Republican", "Independent", "Other", "No preference", DECLINE),
    swap=("Democrat", "Republican"),
    bio="Politically, I consider myself {article} {value}.",
    topic="political party",
)

#: The canonical traits by name, in the order the demographic survey asks them.
CANONICAL_TRAITS: MappingProxyType[str, Trait] = MappingProxyType(
    {t.name: t for t in (AGE, GENDER, EDUCATION, INCOME, RACE, RELIGION, REGION, PARTY)}
)
