"""Independent noise: every sampled request's seed is a hash of (run seed, stage, unit, item), so no
two personas or traits share random numbers, and the samples still follow the model's distribution."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_hf
from scipy import stats

from anthology.method.backstories import BackstoryConfig, generate_backstories
from anthology.method.demographics import DemographicsConfig, survey_demographics
from anthology.models.base import sample_seed

CONTEXT = "Question: Tell me about yourself.\n\nAnswer: I grew up in a small town in Ohio."


class Recording:
    """Wraps a model and keeps every generate request and result. A random model never says "yes" to
    the citizenship question, so its answers there get a "Yes, " in front."""

    def __init__(self, model):
        self.model = model
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, requests):
        results = self.model.generate(requests)
        for i, request in enumerate(requests):
            if isinstance(request.prompt, str) and request.prompt.endswith("citizen?\n\nAnswer:"):
                samples = tuple(replace(s, text="Yes, " + s.text) for s in results[i].samples)
                results[i] = replace(results[i], samples=samples)
        self.calls += list(zip(requests, results, strict=True))
        return results


def _stories(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "persona_id": [f"p{i:05d}" for i in range(n)],
            "style": "completion",
            "context": CONTEXT,
            "kept": True,
        }
    )


def test_identical_prompts_get_independent_samples_distributed_as_the_logits_say(tiny_parts):
    personas, samples = 64, 40
    model = Recording(tiny_hf(tiny_parts))
    config = DemographicsConfig(samples=samples, max_tokens=1, stop=(), traits=("gender",))
    survey_demographics(model, _stories(personas), seed=0, config=config)
    assert len(model.calls) == personas
    # Every persona saw the very same prompt, so the same logits.
    assert len({request.prompt for request, _ in model.calls}) == 1
    texts = [result.texts for _, result in model.calls]
    assert all(len(t) == samples for t in texts)
    # No two personas drew the same sequence, and the k-th samples differ across personas.
    assert len({tuple(t) for t in texts}) == personas
    for k in range(samples):
        assert len({t[k] for t in texts}) > 1

    # Pooled over personas, the one-token samples follow the model's next-token distribution.
    request = model.calls[0][0]
    ids = model.tokenizer(request.prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model.model.model(input_ids=ids).logits[0, -1].double()
    probs = torch.softmax(logits, -1).numpy()
    expected: Counter[str] = Counter()
    for token, p in enumerate(probs):
        expected[model.tokenizer.decode([token], skip_special_tokens=True)] += p
    observed = Counter(t for row in texts for t in row)
    total = personas * samples
    assert set(observed) <= set(expected)
    frequent = sorted(k for k, p in expected.items() if p * total >= 5)
    rest_p = 1 - sum(expected[k] for k in frequent)
    f_obs = [observed[k] for k in frequent] + [total - sum(observed[k] for k in frequent)]
    f_exp = [expected[k] * total for k in frequent] + [rest_p * total]
    assert len(frequent) >= 10
    assert stats.chisquare(f_obs, f_exp).pvalue > 1e-3


def test_every_sampled_request_of_a_stage_has_its_own_seed(tiny_parts):
    model = Recording(tiny_hf(tiny_parts))
    config = BackstoryConfig(max_tokens=4, min_tokens=0, near_duplicate=2.0)
    stories = generate_backstories(model, 6, seed=7, config=config)
    survey_demographics(
        model, stories.assign(kept=True), seed=7, config=DemographicsConfig(samples=3, max_tokens=2)
    )
    seeds = [
        sample_seed(r.seed, k) for r, _ in model.calls for k in range(r.first_sample, r.first_sample + r.n)
    ]
    # Preamble samples, backstories and every (persona, trait) sample: one stream each.
    assert len(seeds) == len(set(seeds))
    # The same seed gives the same text again.
    again = Recording(tiny_hf(tiny_parts))
    generate_backstories(
        again, 6, seed=7, config=BackstoryConfig(max_tokens=4, min_tokens=0, near_duplicate=2.0)
    )
    first = [res.texts for _, res in model.calls[: len(again.calls)]]
    assert first == [res.texts for _, res in again.calls]


@pytest.mark.parametrize("seed", [0, 1])
def test_demographic_seeds_hash_stage_persona_and_trait(seed):
    from anthology.method.seeds import stable_int

    values = {stable_int(seed, "demographics", f"p{i:05d}", t) for i in range(50) for t in ("age", "gender")}
    assert len(values) == 100
    assert all(0 <= v < 2**63 for v in values)
    assert np.unique([v & 0xFFFF for v in values]).size > 90
