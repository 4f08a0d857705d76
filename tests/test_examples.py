"""Every config under examples/ works as written. Each one loads and passes the checks made before any
model call (its survey, data file and sizes), from a copy of the folder, so paths resolve from the
config's folder as they do for a user. Those that can run here run end to end with the tiny test model
in place of their model (a tiny Llama for Hugging Face models, the fake OpenAI-compatible server for a
server), at small sizes, with the backstory filters and the citizenship preamble off (a random-weight
model writes no life stories and never says yes); their survey, profile, modes and methods stay as
written. The others are only validated: paper.yaml and pew-w34.yaml need Pew's non-redistributable data
(here a synthetic .sav) and, at the paper's sampled settings, far more than a CPU test can spend;
ray.yaml needs a Ray cluster (the Ray executor has its own tests in test_ray.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_openai_server import FakeOpenAIServer
from surveys_support import write_pew_sav

from anthology.config import load_config
from anthology.study import plan
from anthology.surveys import load_survey

pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RUN = ("own-survey.yaml", "norway.yaml", "gpu-llama3.yaml", "vllm.yaml")
VALIDATED = ("paper.yaml", "pew-w34.yaml", "ray.yaml")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture
def examples(tmp_path, monkeypatch) -> Path:
    """A copy of examples/ with a synthetic 'ATP W34.sav' beside the configs that name it; the working
    directory is the copy's parent, where the configs' ``out`` folders go."""
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder)
    write_pew_sav(folder / "ATP W34.sav", load_survey("pew-atp-w34").codebook)
    monkeypatch.chdir(tmp_path)
    return folder


def test_every_example_is_run_or_validated():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(RUN + VALIDATED)


@pytest.mark.parametrize("name", RUN + VALIDATED)
def test_example_passes_the_checks_before_any_model_call(examples, name):
    config = load_config(examples / name)
    study = plan(config)
    assert study.survey is not None and study.survey.respondents is not None
    assert len(study.survey.respondents) > 0


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_parts) -> str:
    """The tiny Llama saved to a folder, with a chat template for the examples that interview as chat."""
    folder = tmp_path_factory.mktemp("tiny-chat")
    model, tokenizer = tiny_parts
    tokenizer.chat_template = CHAT_TEMPLATE
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.chat_template = None
    return str(folder)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def small(example: dict, *, model: dict, out: Path) -> dict:
    """The example at test sizes (14 personas, a seeded 4 of its respondents, short texts, few samples
    and resamples), with ``model`` for its model."""
    return {
        **example,
        "out": str(out),
        "model": model,
        "executor": {"kind": "local"},
        "survey": {**example["survey"], "respondents": 4},
        "backstories": {
            **example.get("backstories", {}),
            "n": 14,
            "max_tokens": 12,
            "min_tokens": 1,
            "first_person": "off",
            "preamble": False,
        },
        # Sampled modes (the paper's) stay sampled, with few and short samples.
        "demographics": {**example.get("demographics", {}), "samples": 2, "max_tokens": 4},
        "ask": {**example.get("ask", {}), "dp_max_tokens": 12, "max_attempts": 2, "max_tokens": 4},
        "evaluate": {"splits": 4, "resamples": 20},
    }


@pytest.mark.slow  # minutes on a busy 2-core machine: four whole studies, paper modes included
@pytest.mark.parametrize("name", RUN)
def test_example_runs_with_the_tiny_model(examples, name, tiny_folder, server):
    example = yaml.safe_load((examples / name).read_text())
    if example["model"]["name"].startswith("openai:"):
        model = {**example["model"], "base_url": server.base_url}
    else:
        model = {"name": tiny_folder, "device": "cpu", "dtype": "float32"}
    # Beside the example, so that its relative paths resolve the same way.
    config = examples / f"test-{name}"
    config.write_text(yaml.safe_dump(small(example, model=model, out=examples.parent / "run")))
    result = subprocess.run(
        [sys.executable, "-m", "anthology", "run", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for produced in ("answers.parquet", "metrics.csv", "report.html"):
        assert (examples.parent / "run" / produced).is_file()
