"""The local transformers backend, driven through the real transformers code path on a tiny model."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from conftest import computed_tokens, tiny_hf  # noqa: E402

from anthology.errors import CapabilityError  # noqa: E402
from anthology.models.base import GenerateRequest, ScoreRequest  # noqa: E402

# All open with the same interview question, as real backstories do: prefix sharing must still run each
# backstory once rather than shrink to the opening they have in common.
OPENING = "Question: Tell me about yourself. What matters to you and what do you enjoy?\n\nAnswer:"
BACKSTORIES = [
    OPENING + " I grew up in a small town in Ohio, where my father worked at the mill." * 6,
    OPENING + " I am a nurse and a mother of two." * 5,
    OPENING + " What matters to me is my family, my faith and my garden. I enjoy fishing." * 4,
]
QUESTIONS = [
    "\n\nQuestion: How old are you?\n(A) 18-29\n(B) 30-49\n(C) 50-64\n(D) 65 or Above\nAnswer:",
    "\n\nQuestion: Do you agree?\n(A) Strongly agree\n(B) Somewhat agree\nAnswer:",
    "\n\nQuestion: What matters to you?\nAnswer:",
]
OPTIONS = [(" A", " B", " C", " D"), (" Strongly agree", " Somewhat agree"), (" (A)", " family")]


def _requests() -> list[ScoreRequest]:
    return [
        ScoreRequest(story + q, opts)
        for story in BACKSTORIES
        for q, opts in zip(QUESTIONS, OPTIONS, strict=True)
    ]


def _reference_logprob(model, tokenizer, context: str, option: str) -> float:
    """log P(option | context) from one plain forward pass over the whole text."""
    ctx = tokenizer(context)["input_ids"]
    full = tokenizer(context + option)["input_ids"]
    assert full[: len(ctx)] == ctx
    with torch.no_grad():
        logits = model(torch.tensor([full], device=model.device)).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return float(sum(logprobs[pos - 1, full[pos]] for pos in range(len(ctx), len(full))))


def test_shared_prefix_scores_equal_full_prompt_scores(tiny_parts):
    tiny_model = tiny_hf(tiny_parts, prefix_cache=0)  # the second pass must not start from the first's KV
    requests = _requests()
    with computed_tokens(tiny_model.model) as tokens:
        shared = tiny_model.score(requests)
        shared_tokens = sum(tokens)
        tokens.clear()
        tiny_model.share_prefix = False
        full = tiny_model.score(requests)
        full_tokens = sum(tokens)
    model, tokenizer = tiny_parts
    worst = 0.0
    for req, a, b in zip(requests, shared, full, strict=True):
        assert len(a.logprobs) == len(req.options)
        for option, lp_shared, lp_full in zip(req.options, a.logprobs, b.logprobs, strict=True):
            reference = _reference_logprob(model, tokenizer, req.context, option)
            worst = max(worst, abs(lp_shared - reference), abs(lp_full - reference))
    assert worst < 1e-4
    # Each backstory was run once, not once per question and option.
    assert shared_tokens < full_tokens / 2.5


def test_coverage_is_probability_mass_on_options(tiny_model):
    [result] = tiny_model.score([ScoreRequest("Answer:", (" A", " B"))])
    assert result.coverage == pytest.approx(sum(torch.tensor(result.logprobs).exp().tolist()))
    assert 0 < result.coverage < 1
    assert sum(result.probabilities()) == pytest.approx(1.0)


def test_trailing_space_in_context_moves_to_option(tiny_model):
    [a, b] = tiny_model.score([ScoreRequest("Answer: ", ("A", "B")), ScoreRequest("Answer:", (" A", " B"))])
    assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_results_in_request_order(tiny_model):
    requests = _requests()
    together = tiny_model.score(requests)
    for req, expected in zip(reversed(requests), reversed(together), strict=True):
        [alone] = tiny_model.score([req])
        assert alone.logprobs == pytest.approx(expected.logprobs, abs=1e-4)


def _gen_requests() -> list[GenerateRequest]:
    return [
        GenerateRequest("I grew up in", n=3, max_tokens=12, seed=7),
        GenerateRequest(
            "Question: Tell me about yourself.\n\nAnswer:", n=2, max_tokens=20, seed=8, top_p=0.9
        ),
        GenerateRequest("What", n=1, max_tokens=5, seed=9, temperature=0.7),
        GenerateRequest("Strongly agree", n=2, max_tokens=16, seed=10, temperature=0),
    ]


def test_batched_generation_equals_one_at_a_time(tiny_model):
    requests = _gen_requests()
    batched = tiny_model.generate(requests)
    for req, result in zip(requests, batched, strict=True):
        assert len(result.samples) == req.n
        for k, sample in enumerate(result.samples):
            [alone] = tiny_model.generate(
                [
                    GenerateRequest(
                        req.prompt,
                        n=1,
                        first_sample=req.first_sample + k,
                        max_tokens=req.max_tokens,
                        seed=req.seed,
                        top_p=req.top_p,
                        temperature=req.temperature,
                    )
                ]
            )
            assert alone.samples[0] == sample
            assert sample.completion_tokens <= req.max_tokens


def test_seeds_change_samples_and_repeat(tiny_model):
    [a] = tiny_model.generate([GenerateRequest("I grew up in", n=4, max_tokens=10, seed=1)])
    [b] = tiny_model.generate([GenerateRequest("I grew up in", n=4, max_tokens=10, seed=1)])
    [c] = tiny_model.generate([GenerateRequest("I grew up in", n=4, max_tokens=10, seed=2)])
    assert a == b
    assert len(set(a.texts)) > 1
    assert a.texts != c.texts


def test_greedy_matches_transformers_generate(tiny_model, tiny_parts):
    model, tokenizer = tiny_parts
    prompts = ["I grew up in a small town", "What", "Question: How old are you?\n(A) 18-29"]
    ours = tiny_model.generate([GenerateRequest(p, max_tokens=15, temperature=0) for p in prompts])
    for prompt, result in zip(prompts, ours, strict=True):
        ids = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False).to(model.device)
        out = model.generate(**ids, max_new_tokens=15, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert result.samples[0].text == expected


def test_stop_strings_cut_each_sequence(tiny_model):
    [free] = tiny_model.generate([GenerateRequest("I grew up in", max_tokens=30, temperature=0)])
    text = free.samples[0].text
    assert len(text) > 6
    stop = text[4:7]
    [cut, other] = tiny_model.generate(
        [
            GenerateRequest("I grew up in", max_tokens=30, temperature=0, stop=(stop,)),
            GenerateRequest("What", max_tokens=30, temperature=0),
        ]
    )
    assert cut.samples[0].text == text[: text.index(stop)]
    assert cut.samples[0].finish_reason == "stop"
    assert other.samples[0].completion_tokens > 0


def test_max_tokens_gives_length_finish(tiny_model):
    [r] = tiny_model.generate([GenerateRequest("I grew up in", max_tokens=3, seed=0, n=2)])
    for s in r.samples:
        assert s.completion_tokens <= 3
        if s.completion_tokens == 3:
            assert s.finish_reason == "length"


def test_chat_without_template_is_refused_before_work(tiny_model):
    assert not tiny_model.capabilities.chat
    with pytest.raises(CapabilityError, match="chat template"):
        tiny_model.generate([GenerateRequest(({"role": "user", "content": "hi"},))])


def test_identity_names_model_revision_dtype_device(tiny_model):
    identity = tiny_model.identity
    assert identity == {
        "backend": "hf",
        "model": "tiny-llama",
        "revision": "test",
        "dtype": "float32",
        "device": identity["device"],
    }
    assert identity["device"].startswith(tiny_model.device.type)


def test_sampler_follows_softmax_and_top_p():
    from anthology.models.decoding import sample_tokens as _sample

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    draws = 20_000
    seeds = torch.arange(draws, dtype=torch.int64) * 7919 + 11
    many = logits.expand(draws, -1)
    ones = torch.ones(draws)
    for temp in (1.0, 0.5):
        tokens = _sample(many, ones * temp, ones, seeds, step=3)
        freq = torch.bincount(tokens, minlength=5).double() / draws
        expected = torch.softmax(logits[0].double() / temp, -1)
        assert torch.allclose(freq, expected, atol=0.012), (freq, expected)
    # top_p 0.8 keeps the smallest set of most likely tokens with mass >= 0.8: tokens 0 and 1 here.
    tokens = _sample(many, ones, ones * 0.8, seeds, step=3)
    assert set(tokens.tolist()) == {0, 1}
    kept = torch.softmax(logits[0, :2].double(), -1)
    assert (tokens == 0).double().mean().item() == pytest.approx(kept[0].item(), abs=0.012)
    # Greedy ignores the noise; each row's draw depends on its seed and step only.
    assert set(_sample(many, ones * 0, ones, seeds, step=3).tolist()) == {0}
    alone = _sample(logits, ones[:1], ones[:1], seeds[5:6], step=3)
    assert alone.item() == _sample(many, ones, ones, seeds, step=3)[5].item()


def test_option_rows_that_prefix_another_are_read_off_it(tiny_model, tiny_parts):
    model, tokenizer = tiny_parts
    context = BACKSTORIES[0] + QUESTIONS[0]
    # " (" is one token here: its row is the context alone, a prefix of the " (A" rows (context + " (").
    options = (" (A", " (B", " (C", " (")
    assert len(tokenizer(" (", add_special_tokens=False)["input_ids"]) == 1
    tiny_model.share_prefix = False
    with computed_tokens(tiny_model.model) as tokens:
        [result] = tiny_model.score([ScoreRequest(context, options)])
    ctx_len = len(tokenizer(context)["input_ids"])
    assert sum(tokens) == ctx_len + 1  # one row: the context and " ("
    for option, logprob in zip(options, result.logprobs, strict=True):
        assert logprob == pytest.approx(_reference_logprob(model, tokenizer, context, option), abs=1e-4)


def _tiny_gemma3(tokenizer):
    """A random Gemma 3 text model whose sliding window (8 tokens) is far shorter than the prompts, with
    final-logit soft-capping on: packing must keep both exact."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        final_logit_softcapping=30.0,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("architecture", ["gemma3-sliding-window", "llama-eager-attention"])
def test_packed_scores_equal_plain_forward(tiny_parts, architecture):
    from anthology.models.hf import HFModel

    _, tokenizer = tiny_parts
    if architecture.startswith("gemma3"):
        model = _tiny_gemma3(tokenizer)
    else:
        from anthology.models.testing import random_llama

        model = random_llama(
            tokenizer,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            attn_implementation="eager",
        )
    hf = HFModel("tiny", model=model, tokenizer=tokenizer, device="cpu", dtype="float32")
    assert hf.model.config._attn_implementation == ("eager" if "eager" in architecture else "sdpa")
    requests = _requests()
    worst = 0.0
    for req, result in zip(requests, hf.score(requests), strict=True):
        for option, logprob in zip(req.options, result.logprobs, strict=True):
            worst = max(worst, abs(logprob - _reference_logprob(model, tokenizer, req.context, option)))
    assert worst < 1e-4


def test_group_larger_than_a_pack_repeats_its_prefix(tiny_model, tiny_parts, monkeypatch):
    from anthology.models import hf, hf_packing

    model, tokenizer = tiny_parts
    tiny_model._pack_tokens = 64  # a backstory's questions no longer fit one packed sequence
    requests = [ScoreRequest(BACKSTORIES[0] + q, opts) for q, opts in zip(QUESTIONS, OPTIONS, strict=True)]
    packs = []

    def lay_out(*args, **kwargs):
        packs.extend(hf_packing.lay_out(*args, **kwargs))
        return packs

    monkeypatch.setattr(hf, "lay_out", lay_out)
    results = tiny_model.score(requests)
    assert len(packs) > 1 and all(p.prefix_len > 16 for p in packs)
    for req, result in zip(requests, results, strict=True):
        for option, logprob in zip(req.options, result.logprobs, strict=True):
            assert logprob == pytest.approx(
                _reference_logprob(model, tokenizer, req.context, option), abs=1e-4
            )


def _decoding_requests() -> list[GenerateRequest]:
    return [
        *_gen_requests(),
        GenerateRequest("I grew up in", n=4, max_tokens=30, seed=3, stop=("e", "an")),
        GenerateRequest("What", n=4, max_tokens=30, seed=4, stop=("\n", " the")),
        GenerateRequest("Question: How old are you?", n=2, max_tokens=25, seed=5, temperature=0, stop=("o",)),
    ]


def _with_decoding(tiny_parts, decoding: str):
    from conftest import tiny_hf

    return tiny_hf(tiny_parts, decoding=decoding)


def _generate_strictly(model, requests):
    """Generate with the fallback to the eager loop turned into an error, so the path under test ran."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return model.generate(requests)


@pytest.mark.parametrize("architecture", ["llama", "gemma3-sliding-window"])
def test_static_cache_decoding_gives_the_eager_loops_text(tiny_parts, architecture):
    _, tokenizer = tiny_parts
    if architecture.startswith("gemma3"):  # generations run far past its 8-token window
        tiny_parts = (_tiny_gemma3(tokenizer), tokenizer)
    requests = _decoding_requests()
    eager = _with_decoding(tiny_parts, "eager").generate(requests)
    static = _generate_strictly(_with_decoding(tiny_parts, "static"), requests)
    assert static == eager
    finishes = {s.finish_reason for r in eager for s in r.samples}
    assert finishes == {"stop", "length"}


def test_static_cache_decoding_ends_rows_at_end_of_sequence(tiny_parts):
    model, tokenizer = tiny_parts
    request = GenerateRequest("I grew up in", n=6, max_tokens=20, seed=11)
    [free] = _with_decoding(tiny_parts, "eager").generate([request])
    # Make a token that the free samples produce mid-way an end-of-sequence token.
    ids = tokenizer(free.samples[0].text, add_special_tokens=False)["input_ids"]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, ids[len(ids) // 2]]
    try:
        [eager] = _with_decoding(tiny_parts, "eager").generate([request])
        [static] = _generate_strictly(_with_decoding(tiny_parts, "static"), [request])
    finally:
        model.generation_config.eos_token_id = saved
    assert static == eager
    assert any(s.finish_reason == "stop" and s.completion_tokens < 20 for s in eager.samples)


@pytest.mark.slow
def test_compiled_decoding_gives_the_eager_loops_text(tiny_parts):
    requests = _decoding_requests()
    eager = _with_decoding(tiny_parts, "eager").generate(requests)
    assert _generate_strictly(_with_decoding(tiny_parts, "compiled"), requests) == eager


def test_auto_decoding_is_eager_on_the_cpu_and_unknown_modes_are_refused(tiny_parts):
    model = _with_decoding(tiny_parts, "auto")
    on_gpu = model.device.type == "cuda"
    assert model._decoding_for([40, 40], [512, 512]) == ("compiled" if on_gpu else "eager")
    assert model._decoding_for([40, 40], [8, 8]) == "eager"
    assert model._decoding_for([600] * 40, [128] * 40) == "eager"  # 40 samples of one backstory
    from anthology.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown decoding 'fast'"):
        _with_decoding(tiny_parts, "fast")


def test_stop_marks_hold_every_token_that_completes_a_stop_string(tiny_parts):
    """The static loop checks stop strings only after marked tokens: every step at which a stop string
    first shows in the decoded tail must end in a marked token."""
    from anthology.models.decoding import StopStrings

    _, tokenizer = tiny_parts
    stops = StopStrings(tokenizer, ["e", "an", " the", "\n", "ome"])
    marks = stops.ending_tokens(len(tokenizer))
    assert 0 < int(marks.sum()) < len(tokenizer)
    rng = torch.Generator().manual_seed(0)
    firsts = 0
    for _ in range(300):
        seq = torch.randint(0, len(tokenizer), (12,), generator=rng).tolist()
        for stop in stops.stops:
            hits = [stops.hit(seq[: i + 1], (stop,)) for i in range(len(seq))]
            if True in hits:
                first = hits.index(True)
                firsts += 1
                assert marks[seq[first]], (stop, tokenizer.decode(seq[: first + 1]))
    assert firsts > 100


def test_answer_forms_lay_their_shared_tokens_once(tiny_model, tiny_parts):
    """A question's answer forms share the question block: the packed pass lays every distinct token
    path once (a hand count of the distinct row prefixes), and each form's score is still exact."""
    from anthology.method.prompts import option_continuations

    model, tokenizer = tiny_parts
    forms = option_continuations(4)
    requests = [ScoreRequest(BACKSTORIES[0] + q, forms) for q in QUESTIONS]
    with computed_tokens(tiny_model.model) as tokens:
        results = tiny_model.score(requests)
    inputs = set()  # every token a forward pass must read: each full row but its last token
    for req in requests:
        for option in forms:
            full = tokenizer(req.context + option)["input_ids"]
            inputs |= {tuple(full[: k + 1]) for k in range(len(full) - 1)}
    assert sum(tokens) == len(inputs)
    for req, result in zip(requests, results, strict=True):
        for option, logprob in zip(forms, result.logprobs, strict=True):
            reference = _reference_logprob(model, tokenizer, req.context, option)
            assert logprob == pytest.approx(reference, abs=1e-4)
