"""Shared fixtures. The tiny model is built from a config inside the tests: a byte-level BPE tokenizer
trained on a few sentences and a random-weight Llama of two layers, so the real transformers code path
runs offline in well under a second."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = [
    "I grew up in a small town in Ohio, where my father worked at the mill.",
    "Question: Tell me about yourself.\n\nAnswer: I am a nurse and a mother of two.",
    "Question: How old are you?\n(A) 18-29\n(B) 30-49\n(C) 50-64\n(D) 65 or Above\nAnswer: (B)",
    "What matters to me is my family, my faith and my garden. I enjoy fishing on weekends.",
    "Strongly agree, somewhat agree, neither agree nor disagree, somewhat disagree.",
]


def build_tiny_llama(seed: int = 0):
    """A random-weight Llama-architecture model and a trained byte-level BPE tokenizer."""
    from anthology.models.testing import byte_bpe_tokenizer, random_llama

    tokenizer = byte_bpe_tokenizer(CORPUS * 20, vocab_size=400)
    model = random_llama(
        tokenizer,
        seed=seed,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_parts():
    pytest.importorskip("torch")
    return build_tiny_llama()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, tiny_parts) -> str:
    """The tiny model saved as a transformers folder, for the CLI and the registry (read only)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = tiny_parts
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_hf(parts, **options):
    """The local backend over a tiny (model, tokenizer); ``options`` go to ``HFModel``."""
    from anthology.models.hf import HFModel

    model, tokenizer = parts
    # ANTHOLOGY_TEST_DEVICE=cuda runs the same checks on a GPU (in float32, so tolerances hold).
    return HFModel(
        "tiny-llama",
        name="tiny-llama",
        revision="test",
        model=model,
        tokenizer=tokenizer,
        device=os.environ.get("ANTHOLOGY_TEST_DEVICE", "cpu"),
        dtype="float32",
        **options,
    )


@contextlib.contextmanager
def computed_tokens(module) -> Iterator[list[int]]:
    """The number of input tokens of each forward pass of a torch ``module`` while the block runs
    (the hook is removed after it: the tiny model is shared by the whole session)."""
    counts: list[int] = []

    def count(_module, args, kwargs):
        counts.append(int((kwargs["input_ids"] if "input_ids" in kwargs else args[0]).numel()))

    handle = module.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


@pytest.fixture
def tiny_model(tiny_parts):
    return tiny_hf(tiny_parts)


@pytest.fixture(autouse=True)
def _fresh_server_facts():
    """What an HTTP server can do is remembered per address in-process; a port the OS reuses in a
    later test is another server, so every test starts without those memories."""
    from anthology.models.openai_compat import forget_servers

    forget_servers()
    yield
    forget_servers()
