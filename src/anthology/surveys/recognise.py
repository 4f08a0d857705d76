"""Recognising what a data column holds, for drafting a codebook (``anthology surveys init``): the
respondent id, the survey weight, the columns of the canonical persona traits, labels that mean no
answer, and how a trait's values map onto the persona categories.

Everything here is a guess from names and label text (Pew's ``F_AGECAT`` and ``F_PARTY_FINAL``, the
GSS's ``age``, ``degree`` and ``partyid``, ANES-style ``PID``, "Refused", "Don't know", "$10,000 to
under $20,000"); the draft marks each one for the user to check. Values map onto persona categories
by their label text, or, for age and income, by the overlap of their brackets: each survey bracket
joins the persona bracket most of it lies in, each persona bracket the survey bracket most of it lies
in (the lower one on a tie), and what these links join becomes one category.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from anthology.surveys.codes import Code, MissingKind, normalise_text
from anthology.surveys.schema import Trait

#: Pew names its demographic profile variables F_*; waves and recodes add suffixes.
_SUFFIXES = re.compile(r"(?:_(?:final|recruitment|recode|rec|w\d+))+$")

_ID_NAMES = re.compile(
    r"id|resp_?id|respondent_?id|respno|respnum|case_?id|case_?no|case|qkey|serial(?:_?no)?|uid|user_?id"
    r"|record_?id|response_?id|su_?id|person_?id|sample_?id"
)
_ID_LABEL = re.compile(r"\b(?:respondent|case|unique|record|person)\b.*\b(?:id|identifier|number|key)\b")

_WEIGHT_NAMES = re.compile(
    r"weight\d*|w(?:gh)?t\d*|wgt\d*|wts|pweight|final_?(?:weight|wt)|wt_?final|wtss(?:all|ps|nr)?|weight_?\d+"
)
_WEIGHT_LOOSE = re.compile(r"weight|^wgt|^wt[_\d]|wt$")
_WEIGHT_LABEL = re.compile(r"\bweights?\b")

#: Per canonical trait: column names (lower case, without a Pew ``F_`` prefix or wave suffix) and
#: variable-label text that point to it.
_TRAIT_NAMES: dict[str, tuple[str, str]] = {
    "age": (r"(?:pp)?age(?:_?(?:cat|group|grp|groups|rec|r|bracket)\d*)?\d?", r"\bage\b|how old"),
    "gender": (r"(?:pp)?(?:sex|gender)\d?", r"\b(?:sex|gender)\b"),
    "education": (
        r"(?:pp)?(?:educ|education|edu|degree)(?:_?(?:cat|level|r)\d*)?\d?",
        r"\beducation|highest (?:level|grade|degree)|\bdegree\b|schooling",
    ),
    "income": (
        r"(?:pp)?r?incom(?:e)?(?:_?(?:cat|group|r))?\d*|faminc(?:ome)?\d*|hh_?inc(?:ome)?\d*|inc\d*",
        r"\bincome\b",
    ),
    "race": (
        r"(?:pp)?(?:race|racethn|raceth|race_?eth(?:nicity)?|raceeth|racecmb|ethnicity)(?:_?(?:cat|r))?\d?",
        r"\brace\b|\bethnic|hispanic",
    ),
    "religion": (r"relig(?:ion)?(?:_?(?:cat|pew|r))?\d?", r"\brelig"),
    "region": (r"(?:pp)?c?reg(?:ion)?\d?|census_?region", r"\bregion\b"),
    "party": (r"party(?:_?id)?\d?|pid\d?|party_?(?:sum|ln|7|3)|partysum", r"\bparty\b|partisan"),
}

#: Label rules, tried in order on the normalised label (docs: anthology.surveys.codes.normalise_text):
#: the first rule that matches names the persona categories the value counts as.
_RULES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "gender": (
        (
            r"non ?binary|\btrans|\bother\b|another|different|genderqueer|fluid|self describe|\bx\b",
            ("OTHER",),
        ),
        (r"\b(?:female|woman|women|girl|f)\b", ("Female",)),
        (r"\b(?:male|man|men|boy|m)\b", ("Male",)),
    ),
    "education": (
        (
            r"less than high school|\blt high school|no high school|not (?:a )?high school|some high school"
            r"|without (?:a )?high school|\bgrades\b|grade or less|\b(?:primary|elementary|middle school)\b"
            r"|junior high|no (?:formal )?(?:school|education)|less than 12"
            r"|did not (?:complete|finish|graduate)",
            ("Less than high school",),
        ),
        (
            r"\bassociate|junior college|community college|\baa\b|2 year|two year|technical|vocational"
            r"|trade school",
            ("Associate degree",),
        ),
        (
            r"college grad|bachelor|\bba\b|\bbs\b|4 year|four year|undergraduate degree|college degree"
            r"|university degree",
            ("Bachelor's degree",),
        ),
        (
            r"post ?grad|graduate (?:degree|school|work|or professional)|advanced degree|higher degree"
            r"|^grad(?:uate)?$|post baccalaureate",
            ("Professional degree (e.g., JD, MD)", "Master's degree", "Doctoral degree"),
        ),
        (
            r"professional.*doctor|doctor.*professional",
            ("Professional degree (e.g., JD, MD)", "Doctoral degree"),
        ),
        (r"professional|\bjd\b|\bmd\b|\blaw\b|medical", ("Professional degree (e.g., JD, MD)",)),
        (r"master|\bma\b|\bms\b|\bmba\b|\bmsc\b", ("Master's degree",)),
        (r"doctor|\bphd\b|\bph d\b", ("Doctoral degree",)),
        (
            r"some college|college no degree|no degree|more than 12|some university|some post",
            ("Some college, but no degree",),
        ),
        (
            r"high school|\bged\b|diploma|\bhs\b|secondary|12 years|12th grade",
            ("High school graduate or equivalent (e.g., GED)",),
        ),
    ),
    "race": (
        (r"(?<!non )hispanic|latin", ("Hispanic or Latino/a",)),
        (r"american indian|alaska|native american|indigenous", ("American Indian or Alaska Native",)),
        (r"hawaiian|pacific islander", ("Native Hawaiian or Other Pacific Islander",)),
        (r"middle east|north africa|\barab|\bmena\b", ("Middle Eastern or North African",)),
        (r"\bblack|african", ("Black or African American",)),
        (r"\basian|chinese|japanese|korean|filipino|vietnamese|indian", ("Asian or Asian American",)),
        (r"\bwhite|caucasian|european", ("White or European",)),
        (r"\bother|mixed|multi|two or more|more than one|biracial|something else", ("Other",)),
    ),
    "religion": (
        (r"mormon|latter day|\blds\b", ("Mormon (Church of Jesus Christ of Latter-day Saints or LDS)",)),
        (r"\bjew|judai", ("Jewish",)),
        (r"orthodox", ("Orthodox (such as Greek, Russian, or some other Orthodox church)",)),
        (r"catholic", ("Roman Catholic",)),
        (
            r"protestant|baptist|methodist|lutheran|presbyterian|evangelical|episcopal|pentecostal|christian",
            ("Protestant",),
        ),
        (r"muslim|moslem|islam", ("Muslim",)),
        (r"buddh", ("Buddhist",)),
        (r"hindu", ("Hindu",)),
        (r"atheist", ("Atheist",)),
        (r"agnostic", ("Agnostic",)),
        (
            r"nothing in particular|^none\b|no religion|^nothing|unaffiliated|not religious",
            ("Nothing in particular",),
        ),
        (r"\bother|something else|eastern|nondenom|inter", ("Other",)),
    ),
    "region": (
        (r"north ?east|new england|mid(?:dle)? atlantic", ("Northeast",)),
        (r"mid ?west|north central|nor central", ("Midwest",)),
        (r"\bsouth|sou central", ("South",)),
        (r"\bwest|mountain|pacific", ("West",)),
    ),
    "party": (
        (r"no preference|no party|^none\b|not lean|apolitical|no affiliation", ("No preference",)),
        (r"independent|\bind\b|\blean|\bnear\b|\bi\b", ("Independent",)),
        (r"democrat|\bdem\b|\bd\b", ("Democrat",)),
        (r"republican|\brep\b|\bgop\b|\br\b", ("Republican",)),
        (r"\bother|something else|another|third|\bo\b", ("Other",)),
    ),
}

#: The persona category that takes a value matching none of the rules, where the trait has one.
_CATCH_ALL = {
    "gender": "Other (e.g., non-binary, trans)",
    "race": "Other",
    "religion": "Other",
    "party": "Other",
}
#: Persona categories that no value claims, summed into the category that holds another one.
_ABSORB: dict[str, dict[str, str]] = {
    "party": {"No preference": "Independent"},
    "religion": {"Atheist": "Nothing in particular", "Agnostic": "Nothing in particular"},
}
#: ... and, for these traits, any other unclaimed persona category into the one that holds "Other".
_ABSORB_INTO_OTHER = frozenset({"race", "religion"})
#: Traits whose categories are numeric brackets.
_BRACKETED = frozenset({"age", "income"})

_REFUSED = re.compile(r"\brefus|prefer not|rather not|declined?\b")
_DONT_KNOW = re.compile(
    r"\bdon t know\b|\bdont know\b|\bdo not know\b|\bdk\b|can t (?:say|choose)|cannot say"
)
_NO_ANSWER = re.compile(
    r"na|n a|no answer|not answered|not applicable|inapplicable|iap|missing|system missing|sysmis|skipped"
    r"|legitimate skip|not asked|web blank|blank|no response|nonresponse|invalid|not ascertained"
    r"|(?:missing|skipped|not asked|no answer|inap|legitimate skip)\b.*"
)
#: Unlabelled numbers that surveys often use for no answer, and what they usually mean.
_NO_ANSWER_NUMBERS: dict[float, MissingKind] = {
    **{float(n): "refused" for n in (99, 999, 9999, -9, -99, -999)},
    **{float(n): "dont_know" for n in (98, 998, 9998, -8, -98)},
    **{float(n): "missing" for n in (97, 997, 9997, -1, -7, -97)},
}


def plain_name(column: str) -> str:
    """A column name as the recognisers read it: lower case, without Pew's ``F_`` prefix and wave or
    recode suffixes (``F_PARTY_FINAL`` -> ``party``, ``WEIGHT_W34`` -> ``weight``)."""
    name = _SUFFIXES.sub("", column.strip().casefold())
    return name[2:] if name.startswith("f_") and len(name) > 2 else name


def is_demographic_name(column: str) -> bool:
    """Whether a column is named as Pew names its demographic profile variables (``F_...``)."""
    return column.upper().startswith("F_")


def id_score(column: str, label: str | None) -> int:
    """How strongly a column's name (2) or variable label (1) says it is the respondent id; 0: not."""
    if _ID_NAMES.fullmatch(plain_name(column)):
        return 2
    return int(bool(label and _ID_LABEL.search(label.casefold())))


def weight_score(column: str, label: str | None) -> int:
    """How strongly a column is named as a survey weight (3: ``weight``, ``WEIGHT_W34``, ``wtssall``;
    2: a name containing weight; 1: a variable label that says weight); 0: not."""
    name = plain_name(column)
    if _WEIGHT_NAMES.fullmatch(name):
        return 3
    if _WEIGHT_LOOSE.search(name):
        return 2
    return int(bool(label and _WEIGHT_LABEL.search(label.casefold())))


def trait_score(trait: str, column: str, label: str | None) -> int:
    """How strongly a column's name (2) or variable label (1) says it holds a canonical trait; 0: not."""
    names, labels = _TRAIT_NAMES[trait]
    if re.fullmatch(names, plain_name(column)):
        return 2
    return int(bool(label and re.search(labels, label.casefold())))


def _words(label: str) -> str:
    """A label's normalised text without a leading code (ANES writes "-8. Don't know", "1. Male")."""
    return re.sub(r"^\d+ (?=[a-z])", "", normalise_text(label))


def missing_kind(label: str) -> MissingKind | None:
    """What a value label says about an answer that is not one: refused ("Refused", "DK/Refused",
    "Prefer not to say"), don't know, or missing ("No answer", "Inapplicable"); ``None``: an answer."""
    text = _words(label)
    if _REFUSED.search(text):
        return "refused"
    if _DONT_KNOW.search(text):
        return "dont_know"
    if _NO_ANSWER.fullmatch(text):
        return "missing"
    return None


def missing_number(value: float, others: Sequence[float]) -> MissingKind | None:
    """What an unlabelled number probably means when it is a usual no-answer code (99, 98, -9 ...) far
    outside the column's other values; ``None``: an answer."""
    kind = _NO_ANSWER_NUMBERS.get(float(value))
    if kind is None or not others:
        return None
    if value > 0:
        return kind if max(others) < value / 4 else None
    return kind if min(others) >= 0 else None


@dataclass(frozen=True)
class Value:
    """One answer a column holds: its codes in the data (several for text spelt several ways) and its
    label (the value label, or the text itself)."""

    codes: tuple[Code, ...]
    label: str


@dataclass(frozen=True)
class Category:
    """A drafted trait category: the survey's ``codes`` or numeric ``range``, the ``persona``
    categories summed into it (or ``exclude``), and ``guess``, why it needs a look."""

    label: str
    codes: tuple[Code, ...] = ()
    range: tuple[float | None, float | None] | None = None
    persona: tuple[str, ...] = ()
    exclude: bool = False
    guess: str | None = None


@dataclass(frozen=True)
class TraitMapping:
    """A trait's drafted categories, the persona categories left unmapped, and the values that match
    no persona category (read as no value), each with why."""

    categories: tuple[Category, ...]
    unmapped: tuple[str, ...] = ()
    no_value: tuple[tuple[Value, str], ...] = ()


def map_values(trait: Trait, values: Sequence[Value]) -> TraitMapping | None:
    """Map a column's labelled values onto a canonical trait's persona categories; ``None`` when
    fewer than two values are recognised."""
    personas = trait.answerable
    links = _bracket_links(personas, values) if trait.name in _BRACKETED else _label_links(trait, values)
    if sum(bool(link) for link in links) < 2:
        return None
    why: dict[int, str] = {}
    excluded: list[int] = []
    no_value: list[tuple[Value, str]] = []
    catch_all = _CATCH_ALL.get(trait.name)
    for i, value in enumerate(values):
        if links[i]:
            continue
        if catch_all is not None:
            links[i] = {personas.index(catch_all)}
            why[i] = f"{value.label!r} matches no {trait.name} category: summed into {catch_all!r}"
        elif trait.name == "age":
            excluded.append(i)
        else:
            no_value.append((value, f"{value.label!r} matches no {trait.name} category: read as no value"))
    groups = _components(len(values), [(i, p) for i, link in enumerate(links) for p in link])
    absorbed = _absorb(trait.name, personas, groups)
    placed: list[tuple[int, Category]] = []
    for members, persona_ids in groups:
        extra = absorbed.get(frozenset(members), set())
        held = tuple(personas[p] for p in sorted(persona_ids | extra))
        claimed = [personas[p] for p in sorted(persona_ids)]
        label = _merged_label(values, members, claimed)
        notes = [why[i] for i in members if i in why]
        labels = list(dict.fromkeys(values[i].label for i in members))
        if len(labels) > 1:
            notes.append(f"{', '.join(map(repr, labels))} merged: {'; '.join(claimed)}")
        if extra:
            named = ", ".join(repr(personas[p]) for p in sorted(extra))
            own = "no category of its own" if len(extra) == 1 else "no categories of their own"
            notes.append(f"{named}: {own}, summed here")
        if trait.name in _BRACKETED:
            notes += [
                f"{p!r} lies partly outside {label!r}: summed here, where most of it lies"
                for p in _straddling(held, [values[i] for i in members])
            ]
        codes = tuple(c for i in members for c in values[i].codes) + _other_labels(values, members, label)
        placed.append((members[0], Category(label, codes, persona=held, guess=_join(notes))))
    for i in excluded:
        guess = f"{values[i].label!r} is no persona age category: its respondents are left out of the study"
        placed.append((i, Category(values[i].label, values[i].codes, exclude=True, guess=guess)))
    categories = [category for _, category in sorted(placed, key=lambda item: item[0])]
    claimed = {p for c in categories for p in c.persona}
    unmapped = tuple(p for p in personas if p not in claimed)
    return TraitMapping(_distinct_labels(categories), unmapped, tuple(no_value))


def map_numbers(trait: Trait, numbers: np.ndarray) -> TraitMapping | None:
    """Ranges for a numeric age or income column (whole numbers): one per persona bracket, and the
    ages under 18 left out of the study; ``None`` for other traits or implausible numbers."""
    if trait.name not in _BRACKETED or not len(numbers) or not np.all(np.mod(numbers, 1) == 0):
        return None
    low, high = float(np.min(numbers)), float(np.max(numbers))
    if trait.name == "age":  # years (not codes of age brackets)
        plausible = low >= 0 and high <= 120 and high >= 30 and float(np.median(numbers)) >= 18
    else:  # dollars (not codes of income brackets)
        plausible = high >= 1000
    if not plausible:
        return None
    categories = []
    for persona in trait.answerable:
        start, end = parse_bracket(persona) or (-math.inf, math.inf)  # whole numbers, [start, end)
        bounds = (None if math.isinf(start) else int(start), None if math.isinf(end) else int(end) - 1)
        categories.append(Category(persona, range=bounds, persona=(persona,)))
    youngest = categories[0].range[0] if categories[0].range else None
    if youngest is not None and low < youngest:
        below = Category(
            f"Under {youngest}",
            range=(None, youngest - 1),
            exclude=True,
            guess=f"no persona {trait.name} category below {youngest}: these respondents are left out",
        )
        categories.insert(0, below)
    return TraitMapping(tuple(categories))


def _label_links(trait: Trait, values: Sequence[Value]) -> list[set[int]]:
    """Per value, the persona categories its label names: the same text, else the first rule."""
    personas = trait.answerable
    exact = {normalise_text(p): i for i, p in enumerate(personas)}
    links: list[set[int]] = []
    for value in values:
        text = _words(value.label)
        if text in exact:
            links.append({exact[text]})
            continue
        named: tuple[str, ...] = ()
        for pattern, targets in _RULES.get(trait.name, ()):
            if re.search(pattern, text):
                named = tuple(_CATCH_ALL[trait.name] if t == "OTHER" else t for t in targets)
                break
        links.append({personas.index(p) for p in named})
    return links


def _bracket_links(personas: Sequence[str], values: Sequence[Value]) -> list[set[int]]:
    """Per value, the persona brackets linked to it: the one most of its bracket lies in, and those
    that lie mostly in it (the lower survey bracket on a tie)."""
    persona_brackets = [parse_bracket(p) or (math.nan, math.nan) for p in personas]
    brackets = [parse_bracket(v.label) for v in values]
    links: list[set[int]] = [set() for _ in values]
    for i, bracket in enumerate(brackets):
        if bracket is None:
            continue
        overlaps = [_overlap(bracket, p) for p in persona_brackets]
        best = int(np.argmax(overlaps))
        if overlaps[best] > 0:
            links[i].add(best)
    for j, persona in enumerate(persona_brackets):
        candidates = [(-_overlap(b, persona), b[0], i) for i, b in enumerate(brackets) if b is not None]
        if candidates:
            overlap, _, i = min(candidates)
            if -overlap > 0:
                links[i].add(j)
    return links


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The length of the overlap of two half-open intervals (infinite for two open-ended ones)."""
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return high - low if high > low else 0.0


def parse_bracket(label: str) -> tuple[float, float] | None:
    """The half-open interval ``[low, high)`` a bracket label names: "18-29" -> [18, 30), "65+" and
    "65 or older" -> [65, inf), "Under $10,000" -> [-inf, 10000), "$10,000 to under $20,000" and Pew's
    "10 to under $20,000" -> [10000, 20000), "$10-20K" -> [10000, 21000); ``None`` if it names none."""
    text = label.casefold().replace("$", " ").replace("\u2013", "-").replace("\u2014", "-")
    text = re.sub(r"(?<=\d)[,\s](?=\d{3}\b)", "", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*(?:k|thousand)\b", lambda m: f"{float(m[1]) * 1000:g}", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)k\b", lambda m: f"{m[1]}k - {m[2]}k", text)
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]
    if len(numbers) == 2:
        low, high = numbers
        if low < 1000 <= high and high / 5 <= low * 1000 < high:  # "10 to under $20,000"
            low *= 1000
        if low > high:
            return None
        under = re.search(r"(?:to|but|and) (?:under|less than|below)", text)
        return (low, high if under else _after(high))
    if len(numbers) != 1:
        return None
    [n] = numbers
    if re.search(r"or (?:less|under|younger|fewer|below)|up to|and (?:under|younger|below)|at most", text):
        return (-math.inf, _after(n))
    if re.search(r"under|less than|below|fewer than|younger than", text):
        return (-math.inf, n)
    if re.search(r"or (?:more|over|older|above|higher)|and (?:over|older|above|up)|\+|at least", text):
        return (n, math.inf)
    if re.search(r"\bover\b|more than|older than|greater than|above", text):
        return (_after(n), math.inf)
    return (n, _after(n)) if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*(?:years?(?: old)?)?\s*", text) else None


def _after(n: float) -> float:
    """The end of an inclusive bracket ending at ``n``: the next whole number for whole numbers."""
    return n + 1 if float(n).is_integer() else n


def _components(count: int, links: list[tuple[int, int]]) -> list[tuple[list[int], set[int]]]:
    """The connected groups of the values and persona categories that ``links`` (value, persona) join,
    each as (its values in order, its persona categories), in the order of their first value."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def root(node: tuple[str, int]) -> tuple[str, int]:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for value, persona in links:
        parent[root(("v", value))] = root(("p", persona))
    groups: dict[tuple[str, int], tuple[list[int], set[int]]] = {}
    for value in range(count):
        if ("v", value) in parent:
            groups.setdefault(root(("v", value)), ([], set()))[0].append(value)
    for _, persona in links:
        groups.setdefault(root(("p", persona)), ([], set()))[1].add(persona)
    return list(groups.values())


def _absorb(
    trait: str, personas: Sequence[str], groups: list[tuple[list[int], set[int]]]
) -> dict[frozenset[int], set[int]]:
    """Persona categories no value claims, summed into a group that holds a kindred one (No
    preference with Independent; for race and religion, the rest with Other): group values ->
    the persona categories it takes on."""
    claimed = {p for _, ids in groups for p in ids}
    holder = {personas[p]: frozenset(members) for members, ids in groups for p in ids}
    extra: dict[frozenset[int], set[int]] = {}
    for j, persona in enumerate(personas):
        if j in claimed:
            continue
        target = _ABSORB.get(trait, {}).get(persona)
        if target not in holder and trait in _ABSORB_INTO_OTHER:
            target = "Other"
        if target in holder:
            extra.setdefault(holder[target], set()).add(j)
    return extra


def _merged_label(values: Sequence[Value], members: list[int], claimed: Sequence[str]) -> str:
    """A category's label: its values' one label, else the one persona category they claim, else
    their labels joined."""
    labels = list(dict.fromkeys(values[i].label for i in members))
    if len(labels) == 1:
        return labels[0]
    return claimed[0] if len(claimed) == 1 else " / ".join(labels)


def _other_labels(values: Sequence[Value], members: list[int], label: str) -> tuple[str, ...]:
    """The file's labels of a category's codes where they differ from the category's label, as text
    codes, so that loading the data checks them against the codebook without a warning."""
    own = normalise_text(label)
    others = (values[i].label for i in members if values[i].label not in values[i].codes)
    return tuple(dict.fromkeys(text for text in others if normalise_text(text) != own))


def _straddling(personas: Sequence[str], members: Sequence[Value]) -> list[str]:
    """The persona brackets that reach beyond the span of a category's survey brackets."""
    brackets = [b for b in map(parse_bracket, (v.label for v in members)) if b is not None]
    low, high = min(b[0] for b in brackets), max(b[1] for b in brackets)
    return [p for p in personas if (b := parse_bracket(p)) is not None and (b[0] < low or b[1] > high)]


def _distinct_labels(categories: list[Category]) -> tuple[Category, ...]:
    """Categories whose labels are distinct (a repeated one gets its codes added)."""
    seen: set[str] = set()
    out = []
    for category in categories:
        label = category.label
        if label.strip().casefold() in seen:
            label = f"{label} ({', '.join(map(str, category.codes))})"
        seen.add(label.strip().casefold())
        out.append(replace(category, label=label))
    return tuple(out)


def _join(notes: list[str]) -> str | None:
    return "; ".join(notes) or None
