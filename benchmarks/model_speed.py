"""Model-layer speed: option scoring with a shared prefix vs the full prompt per question, and batched
vs one-at-a-time generation. Prints a table; each figure is compared with the naive way measured in the
same run.

Workload (issue 2): 32 personas x 400-token backstories x 18 questions, answered by scoring the option
letters after ``Answer: (``. The full-prompt way is measured on the first ``--naive-personas`` personas
(it is slow by design) and compared per answer; results on those personas must agree.

    python benchmarks/model_speed.py                   # bundled smollm2-135m on this CPU
    python benchmarks/model_speed.py --model PATH --device cuda
    python benchmarks/model_speed.py --random-shape llama3-8b --device cuda   # random weights, bf16

With ``--random-shape`` the model is a random-weight Llama of that shape (no download) with a small
byte-level BPE tokenizer trained on the benchmark's own sentences; the output layer keeps the shape's
full vocabulary, so the compute is that of the real model. On CUDA the run also measures the bf16
matrix-multiply peak and reports model FLOP utilisation (2 x non-embedding parameters per token
processed, attention excluded, padding counted as work).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

from anthology.models.base import GenerateRequest, ScoreRequest
from anthology.models.registry import load_model

SENTENCES = [
    "I grew up in {place}, where my {relative} worked at the {work}.",
    "When I was {age}, we moved to {place} and everything changed for our family.",
    "I studied {subject} for a while, but money was always tight.",
    "These days I work as a {job}, and I have done it for {years} years.",
    "What matters most to me is my {value}, and I try to live by it every day.",
    "On weekends I enjoy {hobby} with my {relative}.",
    "My {relative} taught me to be honest and to work hard, even when nobody is watching.",
    "I worry about the cost of {cost}, and I think about it more than I would like to.",
    "Church was a big part of growing up, though I go less often now.",
    "I voted in the last election, and I talk about politics with my {relative} sometimes.",
]
FILL = {
    "place": ["Ohio", "rural Texas", "Queens", "a small town in Georgia", "Tacoma", "Fresno", "Maine"],
    "relative": ["father", "mother", "grandmother", "uncle", "older sister", "husband", "wife"],
    "work": ["mill", "hospital", "post office", "auto plant", "school", "farm co-op"],
    "age": ["seven", "twelve", "fifteen", "nineteen", "thirty"],
    "subject": ["nursing", "accounting", "history", "welding", "biology"],
    "job": ["nurse", "truck driver", "teacher", "software developer", "electrician", "cashier"],
    "years": ["three", "ten", "twenty", "thirty"],
    "value": ["family", "faith", "independence", "community", "health"],
    "hobby": ["fishing", "gardening", "watching football", "baking", "hiking", "reading"],
    "cost": ["health care", "rent", "college", "groceries", "gas"],
}
TOPICS = [
    "improving and protecting the environment",
    "improving and protecting the nation's health",
    "solving the problems of big cities",
    "halting the rising crime rate",
    "dealing with drug addiction",
    "improving the nation's education system",
    "improving the condition of Black people",
    "the military, armaments and defense",
    "foreign aid",
    "welfare",
    "highways and bridges",
    "Social Security",
    "mass transportation",
    "parks and recreation",
    "assistance for childcare",
    "supporting scientific research",
    "developing alternative energy sources",
    "space exploration",
]


def backstory(rng: random.Random, tokenizer, n_tokens: int) -> str:
    text = "Question: Tell me about yourself.\n\nAnswer:"
    while len(tokenizer(text)["input_ids"]) < n_tokens:
        template = rng.choice(SENTENCES)
        text += " " + template.format(**{k: rng.choice(v) for k, v in FILL.items()})
    ids = tokenizer(text)["input_ids"][:n_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


def question(topic: str) -> str:
    return (
        f"\n\nQuestion: Are we spending too much, too little, or about the right amount on {topic}?\n"
        "(A) Too little\n(B) About right\n(C) Too much\nAnswer with (A), (B), or (C).\nAnswer: ("
    )


SHAPES = {
    "llama3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
    ),
}


def random_model(shape: str, device: str, dtype: str):
    """A random-weight Llama of a named shape with a tokenizer trained on the benchmark's sentences."""
    import torch

    from anthology.models.hf import HFModel
    from anthology.models.testing import byte_bpe_tokenizer, random_llama

    rng = random.Random(1)
    corpus = [t.format(**{k: rng.choice(v) for k, v in FILL.items()}) for t in SENTENCES * 50]
    tokenizer = byte_bpe_tokenizer(corpus + [question(t) for t in TOPICS], vocab_size=2000)
    target = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    with target:
        model = random_llama(tokenizer, **SHAPES[shape])
    model = model.to(torch.bfloat16 if target.type == "cuda" else torch.float32)
    return HFModel(
        f"random-{shape}",
        model=model,
        tokenizer=tokenizer,
        device=str(target),
        dtype=dtype,
        revision="random",
    )


def matmul_peak(device) -> float:
    """Measured bf16 TFLOP/s of an 8192^3 matrix product (mean of 10 after warm-up)."""
    import torch

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12


def count_tokens(model) -> list[int]:
    """Count tokens entering the transformer (padding included): a pre-hook on the base model."""
    seen: list[int] = []
    model.model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(int(kwargs["input_ids"].numel())), with_kwargs=True
    )
    return seen


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--random-shape", choices=sorted(SHAPES), help="random-weight model instead")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--personas", type=int, default=32)
    parser.add_argument("--naive-personas", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--questions", type=int, default=18)
    parser.add_argument("--gen-sequences", type=int, default=16)
    parser.add_argument("--gen-naive", type=int, default=4)
    parser.add_argument("--gen-tokens", type=int, default=64)
    args = parser.parse_args()

    import torch

    if args.random_shape:
        model = random_model(args.random_shape, args.device, args.dtype)
        args.model = f"random {args.random_shape}"
    else:
        model = load_model(args.model, device=args.device, dtype=args.dtype)
    tok = model.tokenizer
    params = sum(
        p.numel() for n, p in model.model.named_parameters() if "embed" not in n and "lm_head" not in n
    )
    tokens = count_tokens(model)
    rng = random.Random(0)
    stories = [backstory(rng, tok, args.tokens) for _ in range(args.personas)]
    per_persona = [
        [ScoreRequest(story + question(t), ("A", "B", "C")) for t in TOPICS[: args.questions]]
        for story in stories
    ]
    requests = [r for group in per_persona for r in group]
    naive = [r for group in per_persona[: args.naive_personas] for r in group]

    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    model.score(requests[:2])  # warm-up
    tokens.clear()
    shared, t_shared = timed(lambda: (model.score(requests), sync())[0])
    tokens_shared = sum(tokens)
    model.share_prefix = False
    tokens.clear()
    full, t_full = timed(lambda: (model.score(naive), sync())[0])
    tokens_full = sum(tokens)
    model.share_prefix = True
    diff = max(
        abs(a - b)
        for x, y in zip(shared[: len(naive)], full, strict=True)
        for a, b in zip(x.logprobs, y.logprobs, strict=True)
    )
    rate_shared, rate_full = len(requests) / t_shared, len(naive) / t_full

    prompt = (
        "Question: Tell me about yourself. How old are you? Where did you grow up? What events made you "
        "who you are? What matters to you and what do you enjoy?\n\nAnswer:"
    )
    gen = [
        GenerateRequest(prompt, n=1, first_sample=i, max_tokens=args.gen_tokens, seed=0)
        for i in range(args.gen_sequences)
    ]
    model.generate(gen[:1])  # warm-up
    batched, t_batched = timed(lambda: model.generate(gen))
    alone, t_alone = timed(lambda: [model.generate([g])[0] for g in gen[: args.gen_naive]])
    same = all(a == b for a, b in zip(batched[: args.gen_naive], alone, strict=True))
    tok_batched = sum(s.completion_tokens for r in batched for s in r.samples) / t_batched
    tok_alone = sum(s.completion_tokens for r in alone for s in r.samples) / t_alone

    device = model.device
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = matmul_peak(device) if device.type == "cuda" else None

    def flops(n_tokens: int, seconds: float) -> str:
        achieved = 2 * params * n_tokens / seconds / 1e12
        mfu = f", {100 * achieved / peak:.0f}% of measured bf16 peak {peak:.0f}" if peak else ""
        return f"{achieved:.3f} TFLOP/s{mfu}"

    print(
        f"model {args.model} {model.identity['dtype']} on {device} ({card}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cores"
    )
    print(
        f"scoring workload: {args.personas} personas x {args.tokens}-token backstories x "
        f"{args.questions} questions, 3 options each"
    )
    rows = [
        (
            "option scoring, full prompt per question",
            f"{rate_full:8.2f} answers/s",
            "1.00x",
            f"{len(naive)} answers in {t_full:.1f}s; {flops(tokens_full, t_full)}",
        ),
        (
            "option scoring, shared backstory prefix",
            f"{rate_shared:8.2f} answers/s",
            f"{rate_shared / rate_full:.2f}x",
            f"{len(requests)} answers in {t_shared:.1f}s; max |diff| {diff:.1e}; "
            f"{flops(tokens_shared, t_shared)}",
        ),
        (
            "generation, one sequence at a time",
            f"{tok_alone:8.2f} tokens/s",
            "1.00x",
            f"{args.gen_naive} x {args.gen_tokens} tokens in {t_alone:.1f}s",
        ),
        (
            f"generation, batch of {args.gen_sequences}",
            f"{tok_batched:8.2f} tokens/s",
            f"{tok_batched / tok_alone:.2f}x",
            f"{t_batched:.1f}s; same samples as alone: {same}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'what'.ljust(width)}  {'rate':>20}  {'vs naive':>8}  detail")
    for what, rate, ratio, detail in rows:
        print(f"{what.ljust(width)}  {rate:>20}  {ratio:>8}  {detail}")


if __name__ == "__main__":
    main()
