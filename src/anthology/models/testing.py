"""Small models built from a config, with no download: a byte-level BPE tokenizer trained on a few
texts and a random-weight Llama. The test suite and the benchmarks use them, and so can users who test
code built on anthology."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def byte_bpe_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (``<s>``, ``</s>``, ``<pad>`` special tokens) trained on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def random_llama(tokenizer: Any, *, seed: int = 0, **shape: Any) -> Any:
    """A random-weight ``LlamaForCausalLM`` for ``tokenizer``; ``shape`` sets config fields (sizes,
    layers, heads; ``vocab_size`` defaults to the tokenizer's)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **{"vocab_size": len(tokenizer), "max_position_embeddings": 8192, **shape},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()
