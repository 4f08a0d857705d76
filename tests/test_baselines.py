"""The demographic-prompting baselines (stage 6): the exact QA, Bio and Portray contexts, the matched
Anthology panel with appended demographics, and demographics-primed (DP) backstories."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from surveys_support import write_doc_example
from test_answering import FakeModel

from anthology.errors import ConfigError
from anthology.method import prompts
from anthology.method.answering import PANEL_COLUMNS, AskConfig, ask
from anthology.method.backstories import BackstoryConfig
from anthology.method.baselines import (
    anthology_panel,
    baseline_contexts,
    demographic_text,
    dp_backstories,
    dp_panel,
)
from anthology.models.cached_model import CachedModel
from anthology.models.response_cache import ResponseCache
from anthology.surveys import Questionnaire, Survey, load_survey

# GSS respondent 3 has all six traits; seed 0 shuffles them into this order.
QA_3 = """\
Question: Which of the following racial or ethnic groups do you identify with?
(A) White
(B) Black
(C) Other
Answer with (A), (B), or (C).
Answer: (A)

Question: What is your age?
(A) 18-29
(B) 30-49
(C) 50-64
(D) 65 or older
Answer with (A), (B), (C), or (D).
Answer: (B)

Question: What is your annual household income?
(A) Under $10,000
(B) $10,000 to $19,999
(C) $20,000 to $29,999
(D) $30,000 to $39,999
(E) $40,000 to $49,999
(F) $50,000 to $59,999
(G) $60,000 to $74,999
(H) $75,000 to $89,999
(I) $90,000 to $109,999
(J) $110,000 to $149,999
(K) $150,000 or more
Answer with (A), (B), (C), (D), (E), (F), (G), (H), (I), (J), or (K).
Answer: (I)

Question: What is the highest level of education you have completed?
(A) Less than high school
(B) High school
(C) Junior college
(D) Bachelor
(E) Graduate
Answer with (A), (B), (C), (D), or (E).
Answer: (D)

Question: What is your gender?
(A) Male
(B) Female
Answer with (A) or (B).
Answer: (A)

Question: Generally speaking, do you usually think of yourself as a Democrat, a Republican, an Independent \
or what?
(A) Democrat
(B) Independent
(C) Republican
(D) Other party
Answer with (A), (B), (C), or (D).
Answer: (B)"""

BIO_3 = (
    "Below you will be asked to provide a short description of your demographic information, and then "
    "answer some questions.\n\nDescription: I consider my race as White. My age is 30-49. My annual income "
    "is $90,000 to $109,999. My highest level of education is bachelor. I consider my gender as male. "
    "Politically, I consider myself an Independent."
)
PORTRAY_3 = (
    "Answer the following questions as if you are a person with the following demographic information "
    "provided below.\nrace: White\nage: 30-49\nincome: $90,000 to $109,999\neducation: Bachelor\n"
    "gender: Male\npolitical party: Independent"
)
STORY = (
    "I grew up in a small town in Ohio, where my father worked at the mill and my mother kept the books "
    "for the church. I am a nurse now and a mother of two. What matters to me is my family, my faith and "
    "my garden, and I enjoy fishing on the lake on weekends with my brother and his kids."
)


@pytest.fixture(scope="module")
def gss() -> Survey:
    return load_survey("gss2018-spending")


@pytest.fixture
def town(tmp_path) -> Survey:
    return load_survey(write_doc_example(tmp_path))


def test_qa_bio_portray_nothing_contexts_are_the_documented_strings(gss):
    frame = baseline_contexts(gss, respondent_ids=[3])
    assert list(frame.columns) == list(PANEL_COLUMNS)
    contexts = dict(zip(frame["method"], frame["context"], strict=True))
    assert contexts == {"qa": QA_3, "bio": BIO_3, "portray": PORTRAY_3, "nothing": ""}
    assert frame["persona_id"].isna().all() and (frame["style"] == "completion").all()
    assert demographic_text(gss, 3, "qa") == QA_3


def test_chat_baselines_put_the_demographics_in_the_system_message(gss):
    frame = baseline_contexts(gss, respondent_ids=[3], style="chat")
    assert (frame["style"] == "chat").all()
    contexts = {m: json.loads(c) for m, c in zip(frame["method"], frame["context"], strict=True)}
    assert contexts["qa"] == [{"role": "system", "content": QA_3}]
    assert contexts["bio"] == [{"role": "system", "content": BIO_3}]
    assert contexts["portray"] == [{"role": "system", "content": PORTRAY_3}]
    assert contexts["nothing"] == []
    # Answering turns them into chat prompts: the question is the first user turn.
    model = FakeModel()
    one = Questionnaire(name="gss1", questions=gss.questionnaire.questions[:1])
    ask(model, frame, one, config=AskConfig(mode="logprob"))
    [requests] = model.scored
    assert all(isinstance(r.context, tuple) and r.context[-1]["role"] == "user" for r in requests)
    assert requests[0].context[0] == {"role": "system", "content": QA_3}
    with pytest.raises(ConfigError, match="style"):
        baseline_contexts(gss, style="prose")


def test_traits_are_shuffled_per_respondent_and_seed(gss):
    ids = list(gss.respondents.traits.index[:20])
    frame = baseline_contexts(gss, ("portray",), respondent_ids=ids)
    orders = {tuple(line.split(":")[0] for line in c.splitlines()[1:]) for c in frame["context"]}
    assert len(orders) > 3
    reseeded = demographic_text(gss, 3, "portray", seed=1)
    assert reseeded != PORTRAY_3 and sorted(reseeded.splitlines()) == sorted(PORTRAY_3.splitlines())


def test_missing_and_unmapped_traits_are_skipped(town):
    bio = demographic_text(town, "T06", "bio")  # no age or gender; the survey has no race
    assert "My age" not in bio and "gender" not in bio and "race" not in bio
    assert "My annual income is" in bio and "Politically, I consider myself" in bio
    assert "I consider my gender as non-binary." in demographic_text(town, "T05", "bio")
    qa = demographic_text(town, "T06", "qa")
    assert qa.count("Question:") == 3 and "Prefer not to answer" not in qa


def test_baseline_errors(gss, town):
    with pytest.raises(ConfigError, match="unknown baseline"):
        baseline_contexts(gss, ("qa", "vibes"))
    with pytest.raises(ConfigError, match="no respondent 'nobody'"):
        demographic_text(gss, "nobody")
    with pytest.raises(ConfigError, match="no respondent data"):
        baseline_contexts(Survey(town.codebook))


def _backstories() -> pd.DataFrame:
    chat = [{"role": "user", "content": "Tell me about yourself."}, {"role": "assistant", "content": STORY}]
    return pd.DataFrame(
        {
            "persona_id": ["p1", "p2"],
            "style": ["completion", "chat"],
            "context": [f"Question: Tell me about yourself.\n\nAnswer: {STORY}", json.dumps(chat)],
        }
    )


def test_anthology_panel_appends_the_matched_humans_demographics(gss):
    matches = pd.DataFrame(
        {"method": "greedy", "respondent_id": [3, 4], "persona_id": ["p1", "p2"], "log_weight": -1.0}
    )
    stories = _backstories()
    plain = anthology_panel(matches, stories)
    assert list(plain.columns) == list(PANEL_COLUMNS)
    assert plain["method"].tolist() == ["anthology-greedy"] * 2
    assert plain["context"].tolist() == stories["context"].tolist()
    assert plain["style"].tolist() == ["completion", "chat"]

    bio = anthology_panel(matches, stories, survey=gss, append="bio")
    assert bio["context"][0] == f"{stories['context'][0]}\n\n{BIO_3}"
    messages = json.loads(bio["context"][1])
    assert messages[:2] == json.loads(stories["context"][1])
    assert messages[2] == {"role": "user", "content": demographic_text(gss, 4, "bio")}
    qa = anthology_panel(matches, stories, survey=gss, append="qa")
    assert qa["context"][0].endswith(f"\n\n{QA_3}")

    with pytest.raises(ConfigError, match="needs the survey"):
        anthology_panel(matches, stories, append="qa")
    with pytest.raises(ConfigError, match="not in the backstories"):
        anthology_panel(matches.assign(persona_id="p9"), stories)


def test_dp_backstories_prompt_parameters_and_panel(gss):
    fake = FakeModel(reply=lambda prompt, k: f" {STORY}")
    dp = dp_backstories(fake, gss, respondent_ids=[3])
    [[request]] = fake.generated
    assert request.prompt == f"{BIO_3}\n\nQuestion: Tell me about yourself.\n\nAnswer:"
    assert (request.temperature, request.top_p, request.max_tokens) == (1.1, 1.0, 1500)
    assert request.stop == prompts.BACKSTORY_STOP
    row = dp.iloc[0]
    assert (row["persona_id"], row["respondent_id"], row["style"]) == ("dp-3", 3, "completion")
    assert row["context"] == f"{request.prompt} {STORY}" and row["text"] == STORY
    assert bool(row["kept"]) and row["drop_reason"] == ""
    panel = dp_panel(dp)
    assert panel.to_dict("records") == [
        {
            "method": "dp",
            "respondent_id": 3,
            "persona_id": "dp-3",
            "style": "completion",
            "context": row["context"],
        }
    ]


def test_dp_chat_style_and_filters(gss):
    fake = FakeModel(reply=lambda prompt, k: STORY)
    config = BackstoryConfig(style="chat", temperature=1.1)
    dp = dp_backstories(fake, gss, style="qa", config=config, respondent_ids=[3, 4])
    first = fake.generated[0][0].prompt
    assert first == ({"role": "user", "content": f"{QA_3}\n\n{prompts.DP_QUESTION}"},)
    assert json.loads(dp["context"][0]) == [*first, {"role": "assistant", "content": STORY}]
    assert dp["drop_reason"].tolist() == ["", "duplicate of dp-3"]
    assert dp_panel(dp)["persona_id"].tolist() == ["dp-3"]


def test_dp_with_the_tiny_model_answers_like_any_panel(tiny_model, gss, tmp_path):
    config = BackstoryConfig(temperature=1.1, max_tokens=24, min_tokens=1, first_person="off")
    with ResponseCache(tmp_path / "responses.sqlite") as cache:
        model = CachedModel(tiny_model, cache)
        dp = dp_backstories(model, gss, config=config, respondent_ids=[3, 4])
        assert dp["persona_id"].tolist() == ["dp-3", "dp-4"] and dp["tokens"].between(1, 24).all()
        questionnaire = Questionnaire(name="gss2", questions=gss.questionnaire.questions[:2])
        answers, _ = ask(model, dp_panel(dp), questionnaire, config=AskConfig(mode="logprob"))
    assert set(answers["method"]) == {"dp"} and answers["position"].notna().all()
