"""Answering the survey (stage 5): the exact prompts, option reversal, sequential and independent
context, resampling, log-prob draws, and an end-to-end run of the real tiny model through the cache.

A fake model is used only where a test needs a known answer; it records every batch it receives."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest

from anthology.errors import ConfigError
from anthology.method import prompts
from anthology.method.answering import ANSWER_COLUMNS, AskConfig, ask, compliance
from anthology.method.baselines import baseline_contexts
from anthology.method.seeds import stable_int
from anthology.models.base import (
    Capabilities,
    GenerateRequest,
    GenerateResult,
    Prompt,
    Sample,
    ScoreRequest,
    ScoreResult,
)
from anthology.models.cached_model import CachedModel
from anthology.models.response_cache import ResponseCache
from anthology.surveys import Question, Questionnaire, load_survey

INSTRUCTION = "Please answer the following question keeping in mind your previous answers."
STORY = "Question: Tell me about yourself.\n\nAnswer: I am a nurse."
CHAT_STORY = [
    {"role": "user", "content": "Tell me about yourself."},
    {"role": "assistant", "content": "I am a nurse."},
]
QUESTIONS = Questionnaire(
    name="toy",
    questions=(
        Question(id="q1", wording="Is it good?", options=("Yes", "Maybe", "No")),
        Question(id="q2", wording="Is it bad?", options=("Too little", "About right", "Too much")),
    ),
)
BLOCK1 = (
    f"{INSTRUCTION}\nQuestion: Is it good?\n(A) Yes\n(B) Maybe\n(C) No\n"
    "Answer with (A), (B), or (C).\nAnswer:"
)
BLOCK2 = (
    f"{INSTRUCTION}\nQuestion: Is it bad?\n(A) Too little\n(B) About right\n(C) Too much\n"
    "Answer with (A), (B), or (C).\nAnswer:"
)
FIXED = {"shuffle_questions": False, "reverse_options": False}


def _mostly_a(request: ScoreRequest) -> list[float]:
    return [0.0] + [-50.0] * (len(request.options) - 1)


class FakeModel:
    """Generates ``reply(prompt, sample_index)`` and scores ``scores(request)`` (log-probabilities);
    records every batch."""

    capabilities = Capabilities(
        completion=True, chat=True, logprobs=True, top_logprobs=None, max_context=None, seeded=True
    )

    @property
    def identity(self) -> dict[str, str]:
        return {"backend": "fake"}

    def __init__(
        self,
        reply: Callable[[Prompt, int], str] = lambda prompt, k: " (A)",
        scores: Callable[[ScoreRequest], list[float]] = _mostly_a,
    ) -> None:
        self.reply, self.scores = reply, scores
        self.generated: list[list[GenerateRequest]] = []
        self.scored: list[list[ScoreRequest]] = []

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.generated.append(list(requests))
        return [
            GenerateResult(
                tuple(self._sample(self.reply(r.prompt, r.first_sample + j)) for j in range(r.n)), 10
            )
            for r in requests
        ]

    @staticmethod
    def _sample(text: str) -> Sample:
        return Sample(text, "stop", len(text.split()))  # one "token" per word

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self.scored.append(list(requests))
        results = []
        for r in requests:
            logprobs = self.scores(r)
            results.append(ScoreResult(tuple(logprobs), coverage=sum(math.exp(x) for x in logprobs)))
        return results

    def close(self) -> None:
        pass


def _hashed_scores(request: ScoreRequest) -> list[float]:
    """Log-probabilities that differ from prompt to prompt, with 0.8 of the mass on the options."""
    weights = np.array([1 + stable_int(json.dumps(request.context), o) % 97 for o in request.options], float)
    return list(np.log(0.8 * weights / weights.sum()))


def panel(n: int = 1, style: str = "completion", method: str = "test") -> pd.DataFrame:
    context = STORY if style == "completion" else json.dumps(CHAT_STORY)
    return pd.DataFrame(
        {
            "method": method,
            "respondent_id": range(n),
            "persona_id": [f"p{i}" for i in range(n)],
            "style": style,
            "context": context,
        }
    )


@pytest.fixture(scope="module")
def gss():
    return load_survey("gss2018-spending")


# -- the exact prompts


def test_sequential_completion_prompts_append_each_answer():
    fake = FakeModel(reply=lambda prompt, k: " (B) Maybe")
    answers, _ = ask(fake, panel(), QUESTIONS, config=AskConfig(**FIXED))
    first = f"{STORY}\n\n{BLOCK1}"
    second = f"{first} (B) Maybe\n\n{BLOCK2}"
    assert [[r.prompt for r in batch] for batch in fake.generated] == [[first], [second]]
    assert answers["position"].tolist() == [2, 2]
    assert answers["text"].tolist() == [" (B) Maybe", " (B) Maybe"]


def test_sequential_chat_prompts_add_system_and_turns():
    fake = FakeModel(reply=lambda prompt, k: " (B) Maybe")
    ask(fake, panel(style="chat"), QUESTIONS, config=AskConfig(**FIXED))
    system = {"role": "system", "content": prompts.CHAT_SYSTEM}
    first = (system, *CHAT_STORY, {"role": "user", "content": BLOCK1})
    second = (*first, {"role": "assistant", "content": "(B) Maybe"}, {"role": "user", "content": BLOCK2})
    assert [[r.prompt for r in batch] for batch in fake.generated] == [[first], [second]]


def test_chat_context_keeps_its_own_system_prompt():
    own = [{"role": "system", "content": "Be brief."}, *CHAT_STORY]
    people = panel(style="chat").assign(context=json.dumps(own))
    fake = FakeModel()
    ask(fake, people, QUESTIONS, config=AskConfig(**FIXED))
    assert fake.generated[0][0].prompt == (*own, {"role": "user", "content": BLOCK1})


@pytest.mark.parametrize("style", ["completion", "chat"])
def test_independent_prompts_share_the_persona_prefix_in_one_batch(style):
    fake = FakeModel()
    people = panel(3, style=style)
    answers, _ = ask(fake, people, QUESTIONS, config=AskConfig(context="independent", **FIXED))
    assert len(fake.generated) == 1 and len(fake.generated[0]) == 6
    if style == "completion":
        expected = [f"{STORY}\n\n{BLOCK1}", f"{STORY}\n\n{BLOCK2}"]
    else:
        system = {"role": "system", "content": prompts.CHAT_SYSTEM}
        expected = [(system, *CHAT_STORY, {"role": "user", "content": b}) for b in (BLOCK1, BLOCK2)]
    assert [r.prompt for r in fake.generated[0]] == expected * 3
    assert set(answers["order"]) == {0, 1}


@pytest.mark.parametrize("style", ["completion", "chat"])
def test_logprob_sequential_appends_the_drawn_letter(style):
    fake = FakeModel()
    answers, _ = ask(fake, panel(style=style), QUESTIONS, config=AskConfig(mode="logprob", **FIXED))
    [[first], [second]] = fake.scored
    if style == "completion":
        assert first.context == f"{STORY}\n\n{BLOCK1}"
        assert second.context == f"{STORY}\n\n{BLOCK1} (A)\n\n{BLOCK2}"
        assert first.options == prompts.option_continuations(3)
        assert first.options[:5] == (" (A", " A)", " A.", " A:", " A\n")
    else:
        assert second.context[-2:] == (
            {"role": "assistant", "content": "(A)"},
            {"role": "user", "content": BLOCK2},
        )
        assert first.options == prompts.option_continuations(3, chat=True)
        assert first.options[5:10] == ("(B", "B)", "B.", "B:", "B\n")
    assert answers["position"].tolist() == [1, 1]
    assert answers["text"].isna().all() and answers["attempts"].eq(1).all()


def test_refused_is_never_offered(gss):
    fake = FakeModel()
    ask(fake, panel(), gss.questionnaire, config=AskConfig(context="independent"))
    assert not any("Refused" in r.prompt for r in fake.generated[0])


# -- option reversal and question order


@pytest.mark.parametrize("mode", ["sample", "logprob"])
def test_reversed_options_map_back_to_the_canonical_position(mode):
    answers, _ = ask(FakeModel(), panel(12), QUESTIONS, config=AskConfig(mode=mode))
    assert answers["reversed"].any() and not answers["reversed"].all()
    expected = np.where(answers["reversed"], 3, 1)
    assert answers["position"].tolist() == expected.tolist()
    if mode == "logprob":  # probabilities are kept in canonical order
        top = [int(np.argmax(p)) + 1 for p in answers["probabilities"]]
        assert top == expected.tolist()


def test_question_order_is_shuffled_per_member():
    answers, _ = ask(FakeModel(), panel(12), QUESTIONS)
    first = answers[answers["order"] == 0].groupby("respondent_id")["question_id"].first()
    assert set(first) == {"q1", "q2"}
    assert (answers.groupby("respondent_id")["order"].apply(sorted) == pd.Series([[0, 1]] * 12)).all()


def test_sequential_asks_each_question_of_everyone_in_one_batch():
    fake = FakeModel()
    ask(fake, panel(5), QUESTIONS)
    assert [len(batch) for batch in fake.generated] == [5, 5]


# -- resampling and compliance


def test_non_compliant_answers_are_resampled():
    fake = FakeModel(reply=lambda prompt, k: "I would rather not say" if k < 2 else " (C) No")
    answers, _ = ask(fake, panel(2), QUESTIONS, config=AskConfig(**FIXED))
    assert answers["attempts"].tolist() == [3, 3, 3, 3]
    assert answers["compliant"].all() and answers["position"].tolist() == [3, 3, 3, 3]
    rounds = fake.generated[:3]  # the first question: three rounds of two members
    assert [[r.first_sample for r in batch] for batch in rounds] == [[0, 0], [1, 1], [2, 2]]
    assert len({batch[0].seed for batch in rounds}) == 1  # the same seeded request, next sample index
    assert rounds[0][0].seed != rounds[0][1].seed  # each member has its own seed


def test_never_compliant_is_recorded_and_left_out_of_the_context():
    fake = FakeModel(reply=lambda prompt, k: "dunno")
    answers, dist = ask(fake, panel(), QUESTIONS, config=AskConfig(max_attempts=4, **FIXED))
    assert answers["position"].isna().all() and not answers["compliant"].any()
    assert answers["attempts"].tolist() == [4, 4] and answers["text"].tolist() == ["dunno", "dunno"]
    assert fake.generated[-1][0].prompt == f"{STORY}\n\n{BLOCK2}"
    assert dist["probability"].isna().all()
    summary = compliance(answers)
    assert summary.to_dict("records") == [
        {"method": "test", "answers": 2, "compliant": 0.0, "mean_attempts": 4.0}
    ]


def test_answers_distribution_excludes_non_compliant():
    def reply(prompt: Prompt, k: int) -> str:  # member 0 says A, 1 and 2 say B, 3 never complies
        return {"0": " (A)", "1": " (B)", "2": " (B)"}.get(str(prompt)[:1], "??")

    people = panel(4).assign(context=[f"{i}: a nurse" for i in range(4)])
    answers, dist = ask(FakeModel(reply=reply), people, QUESTIONS, config=AskConfig(max_attempts=1, **FIXED))
    assert answers["compliant"].sum() == 6
    q1 = dist[(dist["question_id"] == "q1") & (dist["source"] == "answers")]
    assert q1["probability"].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert q1["option"].tolist() == ["Yes", "Maybe", "No"]


# -- log-prob mode


@pytest.mark.parametrize("context", ["sequential", "independent"])
def test_expected_distribution_is_the_mean_of_member_probabilities(context):
    config = AskConfig(mode="logprob", context=context)
    answers, dist = ask(FakeModel(scores=_hashed_scores), panel(8), QUESTIONS, config=config)
    assert answers["coverage"].tolist() == pytest.approx([0.8] * 16)
    for qid, group in answers.groupby("question_id"):
        mean = np.mean(np.array(group["probabilities"].tolist()), axis=0)
        rows = dist[(dist["question_id"] == qid) & (dist["source"] == "expected")]
        assert rows["probability"].tolist() == pytest.approx(mean.tolist())
        assert rows["position"].tolist() == [1, 2, 3]
        assert all(sum(p) == pytest.approx(1.0) for p in group["probabilities"])


@pytest.mark.parametrize("context", ["independent", "sequential"])
@pytest.mark.parametrize("mode", ["sample", "logprob"])
def test_a_large_panel_answers_in_blocks_of_members_with_the_same_answers(monkeypatch, context, mode):
    """The panel is asked a block of whole members at a time (never all its prompts at once), and the
    answers and distributions are those of one block."""
    import anthology.method.answering as answering

    config = AskConfig(context=context, mode=mode)
    people = pd.concat([panel(5, method="a"), panel(4, method="b")], ignore_index=True)

    def run() -> tuple[FakeModel, pd.DataFrame, pd.DataFrame]:
        fake = FakeModel(reply=lambda prompt, k: " (B)" if k else "no idea", scores=_hashed_scores)
        return fake, *ask(fake, people, QUESTIONS, seed=4, config=config)

    whole_fake, whole, whole_dists = run()
    monkeypatch.setattr(answering, "BLOCK_REQUESTS", 9)  # 4 members (2 questions each) per block
    fake, blocked, dists = run()
    pd.testing.assert_frame_equal(blocked, whole)
    pd.testing.assert_frame_equal(dists, whole_dists)
    batches = fake.scored if mode == "logprob" else fake.generated
    whole_batches = whole_fake.scored if mode == "logprob" else whole_fake.generated
    assert max(len(b) for b in whole_batches) == (18 if context == "independent" else 9)
    assert max(len(b) for b in batches) == (8 if context == "independent" else 4)
    assert sum(len(b) for b in batches) == sum(len(b) for b in whole_batches)


def test_draws_are_reproducible_and_independent_of_panel_order_and_batch():
    config = AskConfig(mode="logprob")
    people = pd.concat([panel(10, method="a"), panel(10, method="b")], ignore_index=True)

    def run(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
        answers, _ = ask(FakeModel(scores=_hashed_scores), frame, QUESTIONS, seed=seed, config=config)
        return answers.sort_values(["method", "respondent_id", "question_id"]).reset_index(drop=True)

    base = run(people)
    pd.testing.assert_frame_equal(run(people), base)
    pd.testing.assert_frame_equal(run(people.iloc[::-1]), base)
    subset = run(people.iloc[[3, 15, 7]])
    merged = subset.merge(base, on=["method", "respondent_id", "question_id"], suffixes=("", "_all"))
    assert len(merged) == 6 and (merged["position"] == merged["position_all"]).all()
    other = run(people, seed=1)
    assert not other[["position", "order", "reversed"]].equals(base[["position", "order", "reversed"]])


# -- validation


def test_panel_problems_are_config_errors():
    with pytest.raises(ConfigError, match="twice"):
        ask(FakeModel(), pd.concat([panel(), panel()]), QUESTIONS)
    with pytest.raises(ConfigError, match="lacks"):
        ask(FakeModel(), panel().drop(columns="style"), QUESTIONS)
    with pytest.raises(ConfigError, match="max_attempts"):
        AskConfig(max_attempts=0)


# -- the real tiny model, end to end through the cache


@pytest.mark.parametrize("mode", ["sample", "logprob"])
def test_tiny_model_end_to_end_and_rerun_from_cache(tiny_model, gss, tmp_path, mode):
    ids = gss.respondents.traits.index[:2]
    people = baseline_contexts(gss, ("qa", "bio", "nothing"), respondent_ids=ids)
    questionnaire = Questionnaire(name="gss3", questions=gss.questionnaire.questions[:3])
    config = AskConfig(mode=mode, max_attempts=2, max_tokens=8)
    with ResponseCache(tmp_path / "responses.sqlite") as cache:
        first = CachedModel(tiny_model, cache)
        answers, dist = ask(first, people, questionnaire, seed=3, config=config)
        assert first.stats.model_calls > 0
        again = CachedModel(tiny_model, cache)
        answers2, dist2 = ask(again, people, questionnaire, seed=3, config=config)
        assert again.stats.model_calls == 0 and again.stats.misses == 0
    pd.testing.assert_frame_equal(answers, answers2)
    pd.testing.assert_frame_equal(dist, dist2)
    answers.to_parquet(tmp_path / "answers.parquet")  # the stage's artifacts
    dist.to_parquet(tmp_path / "distributions.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "answers.parquet"), answers, check_dtype=False)
    assert list(answers.columns) == list(ANSWER_COLUMNS) and len(answers) == 6 * 3
    assert str(answers["position"].dtype) == "Int64"
    assert answers["position"].dropna().between(1, 3).all()
    assert (answers["compliant"] == answers["position"].notna()).all()
    if mode == "logprob":
        assert answers["compliant"].all() and answers["coverage"].between(0, 1).all()
        assert set(dist["source"]) == {"answers", "expected"}
    else:
        assert answers["attempts"].between(1, 2).all() and answers["coverage"].isna().all()
    assert set(compliance(answers)["method"]) == {"qa", "bio", "nothing"}
