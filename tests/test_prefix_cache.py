"""The paper's sequential answering without re-prefilling: the transformers backend keeps recent
prompts' keys and values (``hf_prefix.PrefixCache``), so a member's next question computes only the
answer and the new question block. The answers must be those of re-prefilling every prompt: the same
texts and positions in sampled mode, probabilities within 1e-5 (fp32) in log-prob mode, on a
full-attention Llama, on a Gemma 3 whose sliding window is far shorter than the prompts, and on the
bundled SmolLM2-135M."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from conftest import computed_tokens, tiny_hf  # noqa: E402
from test_hf import _tiny_gemma3  # noqa: E402

from anthology.method.answering import AskConfig, ask  # noqa: E402
from anthology.models.base import Capabilities, GenerateRequest, GenerateResult, Sample  # noqa: E402
from anthology.models.hf_prefix import MIN_REUSE, PrefixCache  # noqa: E402
from anthology.surveys import load_survey  # noqa: E402
from anthology.surveys.schema import Questionnaire  # noqa: E402

STORY = (
    "Question: Tell me about yourself.\n\nAnswer: I grew up in a small town in Ohio, where my father "
    "worked at the mill. I am a nurse and a mother of two. What matters to me is my family, my faith "
    "and my garden. I enjoy fishing on weekends with my {who}."
)


def _panel(n: int) -> pd.DataFrame:
    who = ["husband", "sister", "father", "friends"]
    return pd.DataFrame(
        {
            "method": "test",
            "respondent_id": range(n),
            "persona_id": [f"p{i}" for i in range(n)],
            "style": "completion",
            "context": [STORY.format(who=who[i % len(who)]) for i in range(n)],
        }
    )


def _first(questionnaire: Questionnaire, n: int) -> Questionnaire:
    return Questionnaire(name=questionnaire.name, questions=questionnaire.questions[:n])


def _both_ways(make, mode: str, members: int = 3, questions: int = 6):
    questionnaire = load_survey("gss2018-spending").questionnaire
    questionnaire = _first(questionnaire, questions)
    config = AskConfig(context="sequential", mode=mode, max_attempts=3, max_tokens=12)
    runs = {}
    for label, options in (("re-prefilled", {}), ("kv reused", {"prefix_cache": 1})):
        model = make(**options)
        with computed_tokens(model.model) as counted:
            answers, _ = ask(model, _panel(members), questionnaire, seed=3, config=config)
        runs[label] = (answers, sum(counted))
    return runs["re-prefilled"], runs["kv reused"]


def _assert_same(slow: pd.DataFrame, fast: pd.DataFrame, mode: str) -> None:
    assert list(slow["position"].fillna(-1)) == list(fast["position"].fillna(-1))
    if mode == "sample":
        assert list(slow["text"]) == list(fast["text"])
        assert list(slow["attempts"]) == list(fast["attempts"])
    else:
        worst = np.abs(np.array(slow["probabilities"].tolist()) - np.array(fast["probabilities"].tolist()))
        assert worst.max() < 1e-5


@pytest.mark.parametrize("mode", ["sample", "logprob"])
@pytest.mark.parametrize("architecture", ["llama", "gemma3-sliding-window"])
def test_kv_reuse_equals_re_prefilling(tiny_parts, architecture, mode):
    from anthology.models.hf import HFModel

    def make(**options):
        if architecture == "llama":
            return tiny_hf(tiny_parts, **options)
        tokenizer = tiny_parts[1]
        return HFModel(
            "tiny-gemma",
            model=_tiny_gemma3(tokenizer),
            tokenizer=tokenizer,
            device="cpu",
            dtype="float32",
            **options,
        )

    (slow, slow_tokens), (fast, fast_tokens) = _both_ways(
        make, mode, questions=6 if architecture == "llama" else 4
    )
    _assert_same(slow, fast, mode)
    # Only the first question prefills the backstory; later ones compute the answer and the new block.
    assert fast_tokens < 0.5 * slow_tokens


@pytest.mark.slow
def test_kv_reuse_on_the_bundled_model():
    from anthology.models.registry import load_model

    def make(**options):
        return load_model("smollm2-135m", device="cpu", dtype="float32", **options)

    (slow, slow_tokens), (fast, fast_tokens) = _both_ways(make, "logprob", members=2, questions=6)
    _assert_same(slow, fast, "logprob")
    assert fast_tokens < 0.5 * slow_tokens


def test_resampling_starts_from_the_cached_prompt(tiny_parts):
    """A non-compliant answer's next sample computes the prompt's last token only."""
    model = tiny_hf(tiny_parts, prefix_cache=1)
    request = GenerateRequest(STORY.format(who="dog"), max_tokens=4, seed=1)
    with computed_tokens(model.model) as counted:
        [first] = model.generate([request])
        prefill = counted[0]
        counted.clear()
        [again] = model.generate([GenerateRequest(request.prompt, max_tokens=4, seed=1)])
    assert again.texts == first.texts
    assert counted[0] == 1 and prefill > MIN_REUSE


def _layers(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.zeros(1, n, 2), torch.zeros(1, n, 2))]


def test_prefix_cache_takes_the_longest_prefix_and_keeps_its_budget():
    cache = PrefixCache(budget=200)
    base = list(range(100))
    cache.put(base[:40], _layers(40))
    cache.put(base[:60], _layers(60))  # extends the first: it replaces it
    assert len(cache) == 1 and cache.tokens == 60
    hit = cache.longest(base, limit=99)
    assert hit is not None and hit.length == 60
    assert cache.longest(base, limit=50).length == 50  # never past the limit
    assert cache.longest([7] * 100, limit=99) is None  # nothing shared
    cache.put([5] * 10, _layers(10))  # shorter than MIN_REUSE: not kept
    assert len(cache) == 1
    other = [1000 + i for i in range(80)]
    cache.put(other, _layers(80))
    cache.put([2000 + i for i in range(90)], _layers(90))  # over budget: the least recently used goes
    assert cache.tokens <= 200 and cache.longest(base, limit=99) is None
    assert cache.longest(other, limit=79).length == 79


class _Recorder:
    """Records each generate batch's members; answers (A) at once."""

    def __init__(self, conversation_tokens: int | None) -> None:
        self.conversation_tokens = conversation_tokens
        self.batches: list[list[str]] = []

    identity = property(lambda self: {"backend": "recorder"})
    capabilities = Capabilities(True, False, False, None, None, True)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.batches.append([r.prompt.split("weekends with my ")[1].split(".")[0] for r in requests])
        return [GenerateResult((Sample("(A)", "stop", 2),), 10) for _ in requests]

    def close(self) -> None:
        pass


def test_sequential_members_go_through_the_questionnaire_in_cohorts_that_fit_the_cache():
    questionnaire = _first(load_survey("gss2018-spending").questionnaire, 2)
    panel = _panel(4)
    by_default = _Recorder(None)
    ask(by_default, panel, questionnaire)
    assert [len(b) for b in by_default.batches] == [4, 4]  # a server: one cohort of up to 64
    small = _Recorder(conversation_tokens=650)  # room for two conversations of about 300 tokens
    answers, _ = ask(small, panel, questionnaire)
    assert [sorted(b) for b in small.batches] == [["husband", "sister"]] * 2 + [["father", "friends"]] * 2
    pd.testing.assert_frame_equal(answers, ask(by_default, panel, questionnaire)[0])


def test_the_prefix_cache_setting_reaches_the_local_backend(tiny_parts, tmp_path):
    from anthology.cli.common import open_model
    from anthology.config import ExecutorSettings, ModelSettings

    model, tokenizer = tiny_parts
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    sizes = {}
    for gib in (None, 2, 0.001, 0):
        settings = ModelSettings(name=str(tmp_path), device="cpu", dtype="float32", prefix_cache=gib)
        opened, _ = open_model(settings, ExecutorSettings(), cache_path=None, no_cache=True)
        sizes[gib] = opened.conversation_tokens
    # 2 layers x 2 heads x 16 dims x keys and values x 4 bytes: 512 bytes a token
    assert sizes == {None: None, 2: (2 << 30) // 512, 0.001: int(0.001 * (1 << 30)) // 512, 0: None}
