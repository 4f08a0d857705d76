"""The benchmarks' shared workload: synthetic backstories and questions, the model under test (the
bundled preset or a random-weight model of a real shape), hardware peaks, and a timer."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

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


def story_panel(stories: list[str]):
    """A panel of completion-style members, one per backstory (method ``bench``)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "method": "bench",
            "respondent_id": range(len(stories)),
            "persona_id": None,
            "style": "completion",
            "context": stories,
        }
    )


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


def open_model(name: str, shape: str | None, device: str, dtype: str):
    """The model under test: a preset or path, or a random-weight model of a named shape."""
    from anthology.models.registry import load_model

    return random_model(shape, device, dtype) if shape else load_model(name, device=device, dtype=dtype)


def non_embedding_parameters(model) -> int:
    return sum(
        p.numel() for n, p in model.model.named_parameters() if "embed" not in n and "lm_head" not in n
    )


def count_tokens(model) -> list[int]:
    """Count tokens entering the transformer (padding included): a pre-hook on the base model."""
    seen: list[int] = []
    model.model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(int(kwargs["input_ids"].numel())), with_kwargs=True
    )
    return seen


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: Any = None, repeat: int = 1) -> tuple[T, float]:
    """The result and the best wall seconds of ``repeat`` calls of ``fn`` (GPU work included)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        if device is not None:
            synchronize(device)
        best = min(best, time.perf_counter() - start)
    return out, best


def matmul_peak(device, dtype) -> float:
    """Measured TFLOP/s of a square matrix product in ``dtype`` (8192 on a GPU, 2048 on a CPU): the
    denominator of model FLOP utilisation."""
    import torch

    n, repeats = (8192, 10) if device.type == "cuda" else (2048, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _, seconds = timed(lambda: [a @ b for _ in range(repeats)], device)
    return repeats * 2 * n**3 / seconds / 1e12


def memory_bandwidth(device) -> float:
    """Measured GB/s of copying a large buffer (bytes read plus bytes written): the denominator of
    decoding's bandwidth utilisation."""
    import torch

    n = (2 << 30) if device.type == "cuda" else (512 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _, seconds = timed(lambda: [dst.copy_(src) for _ in range(5)], device)
    return 5 * 2 * n / seconds / 1e9
