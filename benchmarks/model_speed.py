"""Model-layer speed: option scoring with a shared backstory prefix against the full prompt per
question, and batched generation against one sequence at a time.

Scoring workload (issue 2): ``personas`` x ``tokens``-token backstories x ``questions`` questions,
answered by scoring the option letters after ``Answer: (``; the full-prompt way runs on the first
``naive_personas`` personas and is compared per answer (the two ways' log-probabilities must agree).
Model FLOP utilisation counts 2 x non-embedding parameters per token processed (padding counted,
attention excluded) against the measured matrix-multiply peak of the same device and dtype.
Generation: ``gen_sequences`` samples of ``gen_tokens`` tokens of the paper's interview prompt, batched
with the model's decoding loop for that length (the compiled static-cache step on a GPU, with its
compilation excluded, and then also the eager loop), against ``gen_naive`` of them one at a time.
Bandwidth utilisation is the time the weights and KV cache need to stream from memory once per
decoding step (at the measured copy bandwidth) over the time taken.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from figures import Figure
from workload import (
    TOPICS,
    backstory,
    count_tokens,
    matmul_peak,
    memory_bandwidth,
    non_embedding_parameters,
    question,
    timed,
)

from anthology.models.base import GenerateRequest, ScoreRequest

INTERVIEW = (
    "Question: Tell me about yourself. How old are you? Where did you grow up? What events made you "
    "who you are? What matters to you and what do you enjoy?\n\nAnswer:"
)


def figures(model, args: SimpleNamespace) -> list[Figure]:
    """Scoring and generation figures for a loaded HF model."""
    return scoring(model, args) + generation(model, args)


def scoring(model, args: SimpleNamespace) -> list[Figure]:
    device = model.device
    params = non_embedding_parameters(model)
    peak = matmul_peak(device, model.dtype)
    tokens = count_tokens(model)
    rng = random.Random(0)
    stories = [backstory(rng, model.tokenizer, args.tokens) for _ in range(args.personas)]
    per_persona = [
        [ScoreRequest(story + question(t), ("A", "B", "C")) for t in TOPICS[: args.questions]]
        for story in stories
    ]
    requests = [r for group in per_persona for r in group]
    naive = [r for group in per_persona[: args.naive_personas] for r in group]

    model.score(requests[:2])  # warm-up
    tokens.clear()
    shared, t_shared = timed(lambda: model.score(requests), device)
    tokens_shared = sum(tokens)
    model.share_prefix = False
    tokens.clear()
    full, t_full = timed(lambda: model.score(naive), device)
    tokens_full = sum(tokens)
    model.share_prefix = True
    diff = max(
        abs(a - b)
        for x, y in zip(shared[: len(naive)], full, strict=True)
        for a, b in zip(x.logprobs, y.logprobs, strict=True)
    )

    def mfu(n_tokens: int, seconds: float) -> str:
        return f"{100 * 2 * params * n_tokens / seconds / 1e12 / peak:.0f}% MFU"

    section = (
        f"scoring: {args.personas} personas x {args.tokens}-token backstories x {args.questions} questions "
        f"(peak {peak:.3g} TFLOP/s measured)"
    )
    return [
        Figure(
            section,
            "option scoring, shared backstory prefix (packed)",
            len(requests) / t_shared,
            "answers/s",
            utilisation=mfu(tokens_shared, t_shared),
        ),
        Figure(
            section,
            "option scoring, full prompt per question",
            len(naive) / t_full,
            "answers/s",
            ratio=(len(requests) / t_shared) / (len(naive) / t_full),
            utilisation=mfu(tokens_full, t_full),
            note=f"max |log-prob diff| {diff:.1e}",
        ),
    ]


def generation(model, args: SimpleNamespace) -> list[Figure]:
    device = model.device
    bandwidth = memory_bandwidth(device)
    weights = sum(p.numel() * p.element_size() for p in model.model.parameters())
    config = model.model.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * model.model.dtype.itemsize
    gen = [
        GenerateRequest(INTERVIEW, n=1, first_sample=i, max_tokens=args.gen_tokens, seed=0)
        for i in range(args.gen_sequences)
    ]
    mode = model._decoding_for([len(model.tokenizer(INTERVIEW)["input_ids"])], [args.gen_tokens])

    def run(decoding: str, call, warm_up):
        """``call`` timed with the given decoding loop, after ``warm_up`` (which compiles its shapes)."""
        saved, model.decoding = model.decoding, decoding
        try:
            warm_up()
            return timed(call, device)
        finally:
            model.decoding = saved

    def batch(requests):
        return lambda: model.generate(requests)

    batched, t_batched = run(mode, batch(gen), batch(gen if mode != "eager" else gen[:1]))
    naive = gen[: args.gen_naive]
    alone, t_alone = run("eager", lambda: [model.generate([g])[0] for g in naive], batch(gen[:1]))
    same = all(a == b for a, b in zip(batched[: args.gen_naive], alone, strict=True))

    def floor_seconds(results) -> float:
        """Seconds to read the weights once per step and each live sequence's KV cache."""
        lengths = [(r.prompt_tokens, s.completion_tokens) for r in results for s in r.samples]
        steps = max(c for _, c in lengths)
        kv = sum(p * c + c * (c - 1) // 2 for p, c in lengths) * kv_per_token
        return (steps * weights + kv) / (bandwidth * 1e9)

    def tokens(results) -> int:
        return sum(s.completion_tokens for r in results for s in r.samples)

    def bandwidth_use(results, seconds: float) -> str:
        return f"{100 * floor_seconds(results) / seconds:.0f}% bandwidth"

    section = f"generation: {args.gen_tokens}-token samples (copy bandwidth {bandwidth:.3g} GB/s measured)"
    loop = {"eager": "eager loop", "static": "static cache", "compiled": "compiled static cache"}
    rate_batched = tokens(batched) / t_batched
    figures = [
        Figure(
            section,
            f"generation, batch of {args.gen_sequences}, {loop[mode]}",
            rate_batched,
            "tokens/s",
            utilisation=bandwidth_use(batched, t_batched),
        )
    ]
    if mode != "eager":
        eager, t_eager = run("eager", batch(gen), batch(gen[:1]))
        figures.append(
            Figure(
                section,
                f"generation, batch of {args.gen_sequences}, eager loop",
                tokens(eager) / t_eager,
                "tokens/s",
                ratio=rate_batched / (tokens(eager) / t_eager),
                utilisation=bandwidth_use(eager, t_eager),
                note=f"same samples as {loop[mode]}: {eager == batched}",
            )
        )
    rate_alone = tokens(alone) / t_alone
    figures.append(
        Figure(
            section,
            "generation, one sequence at a time, eager loop",
            rate_alone,
            "tokens/s",
            ratio=rate_batched / rate_alone,
            target=4,
            utilisation=f"{100 * sum(floor_seconds([r]) for r in alone) / t_alone:.0f}% bandwidth",
            note=f"same samples as batched: {same}",
        )
    )
    return figures
