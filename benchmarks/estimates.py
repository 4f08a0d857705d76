"""How far ``--dry-run``'s token estimate is from what a real run used: a tiny study estimated on a
fresh run directory, then run, and per stage the estimated prompt and completion tokens (low-high)
against those the stage's model calls used (its manifest entry), with used/low and high/used.

Two backends, no response cache shared between them:

* the embedded default: the bundled Gemma 3 270M with the ``fast`` profile at tiny sizes;
* an OpenAI-compatible server: ``tests/fake_openai_server.py`` (a real HTTP server on 127.0.0.1,
  echo scoring as vLLM does it) whose ``usage`` is counted by the same Gemma tokenizer, while the
  estimate has no tokenizer for the served model (four characters a token, taken as three to five).

    python benchmarks/run.py --only estimates
    python benchmarks/estimates.py --personas 8 --respondents 4
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from figures import Figure, format_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from anthology.config import RunConfig, load_config
from anthology.estimates import StageEstimate
from anthology.planned_requests import Span

#: The stage whose manifest entry holds each estimate row's tokens.
MANIFEST_STAGE = {"ask (dp backstories)": "ask"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("estimates")
    group.add_argument("--estimate-personas", type=int, default=8, help="backstories of the tiny study")
    group.add_argument("--estimate-respondents", type=int, default=4, help="respondents of the tiny study")


def tiny_study(out: Path, personas: int, respondents: int, **model: Any) -> RunConfig:
    """The ``fast`` profile at tiny sizes; the filters off for the server, whose texts are not stories."""
    overrides: dict[str, Any] = {
        "out": str(out),
        "profile": "fast",
        "backstories.n": personas,
        "survey.respondents": respondents,
        "evaluate.splits": 5,
        "evaluate.resamples": 20,
        **{f"model.{k}": v for k, v in model.items()},
    }
    if str(model.get("name", "")).startswith("openai:"):
        overrides |= {
            "backstories.preamble": False,
            "backstories.min_tokens": 1,
            "backstories.first_person": "off",
            "backstories.near_duplicate": 2.0,
        }
    return load_config(None, overrides)


def used_tokens(out: Path) -> dict[str, tuple[int, int]]:
    """Prompt and completion tokens each model stage's calls used, from the run's manifest."""
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {
        name: (entry["model_calls"]["prompt_tokens"], entry["model_calls"]["completion_tokens"])
        for name, entry in stages.items()
        if "model_calls" in entry
    }


def compare(config: RunConfig, opener: Callable[..., Any], *, written: bool = False) -> list[dict[str, Any]]:
    """Estimate the study (``written``: once its backstories are written), run it, and pair each
    stage's estimate with the tokens it used."""
    from anthology.study import estimate_study, run_study

    if written:
        run_study(config, open_model=opener, stages=["backstories"])
    rows = [row for row in estimate_study(config, open_model=opener) if not row.reused]
    run_study(config, open_model=opener)
    used = used_tokens(Path(config.out))
    merged: dict[str, StageEstimate] = {}
    for row in rows:
        stage = MANIFEST_STAGE.get(row.stage, row.stage)
        if stage in merged:
            merged[stage].add(row)
        else:
            merged[stage] = row
    return [
        {
            "stage": stage,
            "prompt": (row.prompt_tokens, used[stage][0]),
            "completion": (row.completion_tokens, used[stage][1]),
        }
        for stage, row in merged.items()
    ]


def _figures(backend: str, pairs: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    for pair in pairs:
        for kind in ("prompt", "completion"):
            estimate, used = pair[kind]
            middle = math.sqrt(estimate.low * estimate.high)
            figures.append(
                Figure(
                    f"tokens: estimate vs run ({backend}); ratio = used / the range's geometric middle",
                    f"{pair['stage']} {kind} tokens used",
                    float(used),
                    "tokens",
                    ratio=used / middle if middle and used else None,
                    note=_note(estimate, used),
                )
            )
    return figures


def _note(estimate: Span, used: int) -> str:
    """``estimate 1,200-1,900, inside``."""
    inside = estimate.low <= used <= estimate.high
    return f"estimate {estimate.low:,.0f}-{estimate.high:,.0f}, {'inside' if inside else 'OUTSIDE'}"


def _local_opener():
    from anthology.cli.common import open_model

    def opened(c: RunConfig, run: Any):
        return open_model(c.model, c.executor, cache_path=run.cache_path)

    return opened


def figures(args: argparse.Namespace) -> list[Figure]:
    """The embedded default and the fake server, each on a fresh tiny study."""
    from fake_openai_server import FakeOpenAIServer

    from anthology.models.presets import PRESETS, materialize

    personas, respondents = args.estimate_personas, args.estimate_respondents
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        local = tiny_study(Path(tmp) / "local", personas, respondents)
        results += _figures("gemma3-270m, local", compare(local, _local_opener()))
        written = tiny_study(Path(tmp) / "written", personas, respondents)
        pairs = compare(written, _local_opener(), written=True)
        results += _figures("gemma3-270m, local, backstories written", pairs)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(materialize(PRESETS["gemma3-270m"])[0]))
        with FakeOpenAIServer(count_tokens=lambda text: len(tokenizer(text)["input_ids"])) as server:
            served = tiny_study(
                Path(tmp) / "server",
                personas,
                respondents,
                name=f"openai:served-model@{server.base_url}",
            )
            results += _figures("OpenAI-compatible server, echo", compare(served, _local_opener()))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    print(format_table(figures(parser.parse_args())))


if __name__ == "__main__":
    main()
