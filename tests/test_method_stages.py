"""Stages 1-4 of the method: prompts, answer parsing, backstory filters, the demographic survey and
matching. A scripted model stands in where a test needs a known answer; the end-to-end checks use the
real tiny transformers model."""

from __future__ import annotations

import itertools
import re
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from surveys_support import write_doc_example

from anthology.errors import ConfigError
from anthology.method import filters, prompts
from anthology.method.backstories import BackstoryConfig, generate_backstories, summary
from anthology.method.demographics import DemographicsConfig, agreement, survey_demographics, swapped
from anthology.method.matching import TraitTable, match, match_survey
from anthology.method.parsing import parse_choice
from anthology.models.base import Capabilities, GenerateResult, Sample, ScoreResult
from anthology.models.cached_model import CachedModel
from anthology.models.response_cache import ResponseCache
from anthology.surveys import CANONICAL_TRAITS, load_survey

# -- prompts ------------------------------------------------------------------------------------


def test_multiple_choice_block_is_the_papers_text():
    block = prompts.multiple_choice("What is your age?", ["18-29", "30-49", "50-64", "65 or Above"])
    assert block == (
        "Question: What is your age?\n(A) 18-29\n(B) 30-49\n(C) 50-64\n(D) 65 or Above\n"
        "Answer with (A), (B), (C), or (D).\nAnswer:"
    )
    two = prompts.multiple_choice("Q?", ["Yes", "No"], instruction=prompts.ANSWER_INSTRUCTION)
    assert two == (
        "Please answer the following question keeping in mind your previous answers.\n"
        "Question: Q?\n(A) Yes\n(B) No\nAnswer with (A) or (B).\nAnswer:"
    )


def test_interview_transcript_and_chat_turns():
    turns = [(prompts.CITIZEN_QUESTION, " Yes, I am.\n"), (prompts.BACKSTORY_QUESTION, None)]
    assert prompts.transcript(turns) == (
        "Question: Are you a US citizen?\n\nAnswer: Yes, I am.\n\n"
        "Question: Tell me about yourself. How old are you? Where did you grow up? What events made you "
        "who you are? What matters to you and what do you enjoy?\n\nAnswer:"
    )
    assert prompts.chat_transcript(turns) == (
        {"role": "user", "content": "Are you a US citizen?"},
        {"role": "assistant", "content": "Yes, I am."},
        {"role": "user", "content": prompts.BACKSTORY_QUESTION},
    )


# -- parsing ------------------------------------------------------------------------------------

AGES = CANONICAL_TRAITS["age"].categories
INCOMES = CANONICAL_TRAITS["income"].categories


@pytest.mark.parametrize(
    ("text", "options", "numeric", "expected"),
    [
        (" (B) 30-49", AGES, True, 1),
        (" B", AGES, True, 1),
        ("d.", AGES, True, 3),
        (" I am 27 years old.", AGES, True, 0),
        ("I was born in 1985, so I'm 39", AGES, True, 1),
        (" 65 or above, retired", AGES, True, 3),
        ("Prefer not to answer", AGES, False, 4),
        ("A lot of things", AGES, False, None),
        (" (Z)", AGES, False, None),
        ("$50k a year", INCOMES, True, 5),
        ("about 72,500", INCOMES, True, 7),
        ("we make $250,000", INCOMES, True, 12),
        ("under 10k", INCOMES, True, 0),
        ("Strongly agree", ("Strongly agree", "Agree", "Disagree"), False, 0),
        ("I agree", ("Strongly agree", "Agree", "Disagree"), False, 1),
        ("Too little, honestly", ("Too little", "About right", "Too much"), False, 0),
        ("I don't know", ("Too little", "About right", "Too much"), False, None),
    ],
)
def test_parse_choice(text, options, numeric, expected):
    assert parse_choice(text, options, numeric=numeric) == expected


# -- filters ------------------------------------------------------------------------------------


def test_first_person_heuristic():
    assert filters.is_first_person("I grew up in Ohio. My father worked at the mill and I loved it.")
    assert not filters.is_first_person("The company reported strong earnings in the third quarter.")


def test_exact_and_near_duplicates_found_at_scale():
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(vocabulary, 120)) for _ in range(2000)]
    near = texts[10].split()
    near[60] = "changed"
    texts += [texts[5].upper() + "!", " ".join(near)]
    dups = filters.duplicate_of(texts)
    assert dups[-2] == 5  # same words, different case and punctuation
    assert dups[-1] == 10  # one word of 120 changed
    assert all(d is None for d in dups[:2000])


# -- a scripted model ---------------------------------------------------------------------------


class ScriptedModel:
    """Answers every multiple-choice prompt with the option whose label contains ``target`` (by
    letter when sampling, by log-probability when scoring), and the interview questions as told."""

    def __init__(
        self,
        target: dict[str, str],
        preamble: list[str] | None = None,
        question: str = prompts.CITIZEN_QUESTION,
    ) -> None:
        self.target = target
        self.preamble = preamble or ["Yes"]
        self.question = question  # the preamble question it answers from ``preamble``
        self.calls = 0

    identity: ClassVar[dict[str, str]] = {"backend": "scripted", "model": "scripted"}
    capabilities = Capabilities(True, True, True, None, None, True)

    def _letter(self, prompt: str) -> int:
        block = prompt.rsplit("Question: ", 1)[1]
        question = block.split("\n", 1)[0]
        options = re.findall(r"^\(([A-Z])\) (.*)$", block, flags=re.M)
        for key, wanted in self.target.items():
            if key in question:
                return next(i for i, (_, label) in enumerate(options) if wanted in label)
        return 0

    def generate(self, requests):
        self.calls += 1
        results = []
        for r in requests:
            if r.prompt.endswith(f"{self.question}\n\nAnswer:"):
                texts = [self.preamble[(r.first_sample + k) % len(self.preamble)] for k in range(r.n)]
            elif r.prompt.endswith("Answer:") and "(A)" in r.prompt.rsplit("Question: ", 1)[1]:
                texts = [f" ({prompts.LETTERS[self._letter(r.prompt)]})"] * r.n
            else:
                texts = [f" I am story {r.first_sample}. I grew up on a farm and my dad taught me to fish."]
            results.append(GenerateResult(tuple(Sample(t, "stop", 12) for t in texts), 10))
        return results

    def score(self, requests):
        self.calls += 1
        out = []
        for r in requests:
            best = self._letter(r.context)
            first_form = best * prompts.FORMS_PER_OPTION  # " (X" of the answer
            logprobs = tuple(np.log(0.9) if i == first_form else np.log(0.001) for i in range(len(r.options)))
            out.append(ScoreResult(logprobs, float(np.exp(logprobs).sum())))
        return out

    def close(self):
        pass


def test_backstories_preamble_resampled_until_yes_and_filters_recorded():
    model = ScriptedModel({}, preamble=["No.", "I'd rather not say", "Yes, born in Texas."])
    frame = generate_backstories(model, 4, seed=1, config=BackstoryConfig(min_words=5))
    assert list(frame["persona_id"]) == ["p00000", "p00001", "p00002", "p00003"]
    assert all(
        "Answer: Yes, born in Texas.\n\nQuestion: Tell me about yourself." in c for c in frame["context"]
    )
    assert (
        frame["context"]
        .iloc[0]
        .endswith("Answer: I am story 0. I grew up on a farm and my dad taught me to fish.")
    )
    # 12 tokens <= 40: the paper's length filter drops them all, and says why.
    assert not frame["kept"].any()
    assert summary(frame)["dropped"] == {"too short: fewer tokens than 41": 4}


def test_the_preamble_is_a_question_of_ones_own_or_none():
    question = "Are you a Norwegian citizen?"
    model = ScriptedModel({}, preamble=["Nei.", "Yes, I am."], question=question)
    frame = generate_backstories(model, 3, seed=1, config=BackstoryConfig(preamble=question))
    assert all(
        c.startswith(f"Question: {question}\n\nAnswer: Yes, I am.\n\nQuestion: Tell me about yourself.")
        for c in frame["context"]
    )
    assert prompts.CITIZEN_QUESTION not in " ".join(frame["context"])
    without = generate_backstories(model, 3, seed=1, config=BackstoryConfig(preamble=False))
    assert all(c.startswith("Question: Tell me about yourself.") for c in without["context"])
    # The stories themselves come from the same per-persona seeds either way.
    assert list(without["text"]) == list(frame["text"])


def test_demographics_sample_and_logprob_agree_on_a_known_answer():
    target = {"age": "65 or Above", "gender": "Female", "party": "Republican", "region": "South"}
    model = ScriptedModel({CANONICAL_TRAITS[k].question.split("{")[0][:25]: v for k, v in target.items()})
    stories = pd.DataFrame(
        {
            "persona_id": [f"p{i}" for i in range(6)],
            "style": "completion",
            "context": ["Question: Tell me about yourself.\n\nAnswer: I am a retired nurse in Georgia."] * 6,
            "kept": True,
        }
    )
    traits = ("age", "gender", "party", "region")
    sampled = survey_demographics(model, stories, seed=3, config=DemographicsConfig(samples=5, traits=traits))
    scored = survey_demographics(
        model, stories, seed=3, config=DemographicsConfig(mode="logprob", traits=traits)
    )
    for frame in (sampled, scored):
        top = frame.loc[frame.groupby(["persona_id", "trait"])["probability"].idxmax()]
        assert dict(zip(top["trait"], top["option"], strict=False)) == target
    # The party order was swapped for some personas and mapped back for all.
    assert 0 < sum(swapped(3, f"p{i}") for i in range(6)) < 6
    assert sampled["noncompliant"].max() == 0.0
    # The scripted model puts 0.9 on " (X" of the answer and 0.001 on each of the other 5K - 1 forms.
    options = scored.groupby("trait")["option"].count() / scored["persona_id"].nunique()
    expected = 1 - 0.9 - 0.001 * (prompts.FORMS_PER_OPTION * options - 1)
    got = scored.groupby("trait")["noncompliant"].first()
    assert got.to_dict() == pytest.approx(expected.to_dict())
    table = agreement(sampled, scored)
    assert (table["top_agreement"] == 1.0).all()


class CountingModel(ScriptedModel):
    """A scripted model that records how many requests each call gets."""

    def __init__(self, target: dict[str, str]) -> None:
        super().__init__(target)
        self.sizes: list[int] = []

    def generate(self, requests):
        self.sizes.append(len(requests))
        return super().generate(requests)

    def score(self, requests):
        self.sizes.append(len(requests))
        return super().score(requests)


@pytest.mark.parametrize("mode", ["sample", "logprob"])
def test_demographics_run_in_blocks_of_personas_with_the_same_result(monkeypatch, mode):
    """A large pool is surveyed a block of whole personas at a time, never all its prompts at once."""
    import anthology.method.demographics as demographics

    target = {"age": "30-49", "gender": "Male"}
    stories = pd.DataFrame(
        {
            "persona_id": [f"p{i}" for i in range(7)],
            "style": "completion",
            "context": [f"Question: Tell me about yourself.\n\nAnswer: I am number {i}." for i in range(7)],
            "kept": [True] * 6 + [False],
        }
    )
    config = DemographicsConfig(mode=mode, samples=3, traits=("age", "gender", "party"))
    whole_model = CountingModel(
        {CANONICAL_TRAITS[k].question.split("{")[0][:25]: v for k, v in target.items()}
    )
    whole = survey_demographics(whole_model, stories, seed=2, config=config)
    assert whole_model.sizes == [18]  # 6 kept personas x 3 traits, one call
    monkeypatch.setattr(demographics, "BLOCK_REQUESTS", 7)  # two personas (6 prompts) per block
    blocked_model = CountingModel(whole_model.target)
    blocked = survey_demographics(blocked_model, stories, seed=2, config=config)
    assert blocked_model.sizes == [6, 6, 6]
    pd.testing.assert_frame_equal(blocked, whole)
    assert blocked["persona_id"].nunique() == 6 and len(blocked) == len(whole)


# -- matching -----------------------------------------------------------------------------------


def table(personas, humans, name="t"):
    personas = np.asarray(personas, dtype=float)
    return TraitTable(name, tuple("abc"[: personas.shape[1]]), personas, np.asarray(humans))


def weight_matrix(tables):
    weights = np.ones((len(tables[0].humans), tables[0].personas.shape[0]))
    for t in tables:
        weights *= np.where(t.humans[:, None] >= 0, t.personas.T[t.humans], 1 / t.personas.shape[1])
    return weights


def test_greedy_is_argmax_and_max_weight_is_optimal_on_a_hand_made_matrix():
    rng = np.random.default_rng(4)
    tables = [
        table(rng.dirichlet(np.ones(3), size=6), rng.integers(0, 3, size=4), name=f"t{k}") for k in range(2)
    ]
    weights = weight_matrix(tables)
    chosen, log_w, solver, _ = match(tables, "greedy")
    assert (chosen == weights.argmax(axis=1)).all()
    assert np.allclose(log_w, np.log(weights.max(axis=1)))
    chosen, _, solver, _ = match(tables, "max-weight")
    assert len(set(chosen)) == 4 and solver == "exact dense"
    best = max(itertools.permutations(range(6), 4), key=lambda p: sum(weights[i, j] for i, j in enumerate(p)))
    assert weights[range(4), chosen].sum() == pytest.approx(weights[range(4), list(best)].sum())
    a = match(tables, "random", seed=1).chosen
    b = match(tables, "random", seed=1).chosen
    assert (a == b).all() and a.min() >= 0 and a.max() < 6


def test_unknown_human_category_counts_as_uniform():
    chosen, log_w, _, _ = match([table([[0.9, 0.1], [0.2, 0.8]], [-1, 1])], "greedy")
    assert chosen[1] == 1
    assert log_w[0] == pytest.approx(np.log(0.5))


@pytest.mark.parametrize("memory", [2**30, 0], ids=["dense", "pruned"])
def test_max_weight_needs_enough_personas(memory):
    with pytest.raises(ConfigError, match="at least as many personas as humans") as error:
        match([table([[0.5, 0.5]], [0, 1])], "max-weight", memory=memory)
    assert "\n" not in str(error.value)


def realistic_tables(n_humans, n_personas, seed):
    """Peaked persona distributions (Dirichlet around a true category) and skewed human categories,
    a few unknown, over three traits: many humans share a profile."""
    rng = np.random.default_rng(seed)
    tables = []
    for k, size in enumerate((4, 3, 5)):
        population = rng.dirichlet(np.ones(size))
        humans = rng.choice(size, size=n_humans, p=population)
        humans[rng.random(n_humans) < 0.05] = -1
        alpha = np.full((n_personas, size), 0.3)
        alpha[np.arange(n_personas), rng.choice(size, size=n_personas, p=population)] += 3.0
        personas = rng.gamma(alpha)
        tables.append(table(personas / personas.sum(axis=1, keepdims=True), humans, name=f"t{k}"))
    return tables


@pytest.mark.parametrize("objective", ["weight", "log"])
def test_pruned_max_weight_matches_the_exact_objective(objective):
    def gain(log_w):
        return np.exp(log_w).sum() if objective == "weight" else log_w.sum()

    # Personas outnumber humans by a third or more: the default k finds the optimum.
    for n_humans, n_personas in [(60, 80), (200, 260)]:
        tables = realistic_tables(n_humans, n_personas, seed=n_humans)
        exact = match(tables, "max-weight", objective=objective)
        pruned = match(tables, "max-weight", objective=objective, memory=0)
        assert exact.solver == "exact dense" and pruned.solver == f"top-{pruned.k} pruned"
        assert len(set(pruned.chosen)) == n_humans
        assert gain(pruned.log_weight) == pytest.approx(gain(exact.log_weight), rel=1e-12)
    # Square, the hardest case: k = n_personas lets every human take any rank from its own place in its
    # profile on, which is exact.
    tables = realistic_tables(90, 90, seed=90)
    exact = match(tables, "max-weight", objective=objective)
    full = match(tables, "max-weight", objective=objective, memory=0, candidates=90)
    assert full.k == 90 and len(set(full.chosen)) == 90
    assert gain(full.log_weight) == pytest.approx(gain(exact.log_weight), rel=1e-12)


def test_pruning_grows_k_until_a_full_matching_exists():
    # Two profiles that both rank persona 0 first: with k = 1 they compete for it alone.
    tables = [
        table([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]], [0, 0], name="a"),
        table([[0.5, 0.5], [0.6, 0.4], [0.5, 0.5]], [0, 1], name="b"),
    ]
    result = match(tables, "max-weight", memory=0, candidates=1)
    assert result.solver == "top-2 pruned" and result.k == 2
    assert list(result.chosen) == [1, 0]  # 0.3 + 0.45, the optimum
    assert list(match(tables, "max-weight").chosen) == [1, 0]


@pytest.mark.parametrize("objective", ["weight", "log"])
def test_pruning_stops_growing_k_at_its_edge_budget_and_completes_with_spare_edges(objective):
    """Personas that all answer nearly alike (a weak model) rank the same few first for every profile,
    so k would double towards the number of humans (65,000 x 100,000 ran out of 24 GB that way); past
    its edge budget the search stops and each human left out gets a spare edge to a free persona."""
    from anthology.method.matching import EDGE_BYTES

    rng = np.random.default_rng(5)
    tables = []
    for k in range(2):
        personas = rng.dirichlet(np.ones(3)) + 1e-3 * rng.random((200, 3))
        tables.append(table(personas / personas.sum(axis=1, keepdims=True), rng.integers(0, 3, 150), f"t{k}"))
    exact = match(tables, "max-weight", objective=objective)
    grown = match(tables, "max-weight", objective=objective, memory=0, candidates=1)
    assert grown.k >= 16 and "spare" not in grown.solver  # unbounded: k doubles and doubles
    budget = 150 * 2 * EDGE_BYTES - 1  # k = 2 would not fit: stop at k = 1
    capped = match(tables, "max-weight", objective=objective, memory=0, candidates=1, edge_memory=budget)
    assert capped.k == 1 and re.fullmatch(r"top-1 pruned, \d+ spare edges", capped.solver)
    assert len(set(capped.chosen)) == 150
    if objective == "weight":
        gap = 1 - np.exp(capped.log_weight).sum() / np.exp(exact.log_weight).sum()
    else:
        gap = (exact.log_weight.sum() - capped.log_weight.sum()) / abs(exact.log_weight.sum())
    assert 0 <= gap < 1e-3


def test_greedy_is_the_float64_argmax_on_a_realistic_instance():
    tables = realistic_tables(300, 400, seed=3)
    # Two personas with identical distributions: the first one wins a tie, as argmax.
    for t in tables:
        t.personas[7] = t.personas[5]
    weights = weight_matrix(tables)
    result = match(tables, "greedy")
    assert (result.chosen == weights.argmax(axis=1)).all()
    assert np.allclose(result.log_weight, np.log(weights.max(axis=1)))


def test_humans_sharing_a_profile_share_candidates_without_growing_k():
    # 30 identical humans: the profile keeps its best 30 + k - 1 personas, so k = 1 is enough.
    tables = [table(np.random.default_rng(0).dirichlet(np.ones(3), size=40), [2] * 30)]
    result = match(tables, "max-weight", memory=0, candidates=1)
    assert result.k == 1 and len(set(result.chosen)) == 30
    assert set(result.chosen) == set(np.argsort(-tables[0].personas[:, 2])[:30])


def test_match_survey_finds_each_humans_twin(tmp_path):
    survey = load_survey(write_doc_example(tmp_path))
    people = survey.respondents.traits
    rows = []
    for respondent_id, person in people.iterrows():
        for name, survey_trait in survey.codebook.traits.items():
            if name not in CANONICAL_TRAITS:
                continue
            categories = CANONICAL_TRAITS[name].categories
            label = person.get(name)
            mapped = (
                next((c.persona for c in survey_trait.categories if c.label == label), ())
                if pd.notna(label)
                else ()
            )
            for option in categories:
                share = 1.0 / len(mapped) if option in mapped else 0.0
                rows.append(
                    {
                        "persona_id": f"twin-{respondent_id}",
                        "trait": name,
                        "option": option,
                        "probability": share if mapped else 1.0 / len(categories),
                    }
                )
    demographics = pd.DataFrame(rows)
    matches, report = match_survey(survey, demographics, seed=0)
    greedy = matches[matches["method"] == "greedy"]
    assert len(greedy) == len(people)
    # Each human's weight under their own twin is the best available (ties with look-alikes allowed).
    twins = greedy["persona_id"].str.removeprefix("twin-")
    own = matches[(matches["method"] == "max-weight")]
    assert set(own["persona_id"]) == {f"twin-{r}" for r in people.index}  # one-to-one
    agree_cols = [c for c in report.columns if c.startswith("agree_")]
    assert (report.set_index("method").loc["greedy", agree_cols] == 1.0).all()
    assert (twins.to_numpy() == greedy["respondent_id"].astype(str).to_numpy()).mean() > 0.5
    assert report.set_index("method").loc["max-weight", "solver"] == "exact dense"
    pruned, pruned_report = match_survey(survey, demographics, ["max-weight"], memory=0)
    assert pruned_report["solver"].iloc[0].endswith("pruned")
    assert set(pruned["persona_id"]) == set(own["persona_id"])


# -- the real tiny model, end to end, resumable through the cache --------------------------------


def test_stages_on_the_tiny_model_rerun_without_model_calls(tiny_model, tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    config = BackstoryConfig(preamble=False, max_tokens=48, min_tokens=1, first_person="off")
    first = CachedModel(tiny_model, cache)
    stories = generate_backstories(first, 3, seed=7, config=config)
    demo_config = DemographicsConfig(samples=3, max_tokens=8, traits=("age", "party"))
    demographics = survey_demographics(first, stories, seed=7, config=demo_config)
    scored = survey_demographics(first, stories, seed=7, config=DemographicsConfig(mode="logprob"))
    assert first.stats.model_calls > 0
    assert set(demographics["trait"]) == {"age", "party"}
    sums = scored.groupby(["persona_id", "trait"]).apply(
        lambda g: g["probability"].sum() + g["noncompliant"].iloc[0]
    )
    assert np.allclose(sums, 1.0)

    again = CachedModel(tiny_model, cache)
    pd.testing.assert_frame_equal(generate_backstories(again, 3, seed=7, config=config), stories)
    pd.testing.assert_frame_equal(
        survey_demographics(again, stories, seed=7, config=demo_config), demographics
    )
    assert again.stats.model_calls == 0
