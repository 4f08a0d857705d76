"""A whole ``anthology run`` against a chat-only server (a real HTTP server on 127.0.0.1): every stage,
the baselines included, is sent as chat, and the run records how the server scored and how much of the
option mass was imputed."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from click.testing import CliRunner
from fake_openai_server import FakeOpenAIServer, small_chat_study

from anthology.cli import app


def test_chat_only_server_runs_every_method_as_chat(tmp_path):
    with FakeOpenAIServer() as server:
        config = small_chat_study(str(tmp_path / "run"), name=f"openai:fake@{server.base_url}")
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(config))
        result = CliRunner().invoke(app, ["run", str(path)])
        assert result.exit_code == 0, result.output
        assert set(server.paths()) == {"/v1/chat/completions"}
    run = tmp_path / "run"
    answers = pd.read_parquet(run / "answers.parquet")
    assert {"qa", "bio", "portray", "nothing", "dp", "anthology-greedy"} <= set(answers["method"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["scoring"] == "top-k"
    assert manifest["model"]["identity"]["scoring"] == "top-k"
    coverage = pd.read_csv(run / "score_coverage.csv")
    assert set(coverage["stage"]) == {"demographics", "ask"}
    # The toy model's top-k never holds the answer forms: all of their mass is imputed, none observed,
    # and the run says so in one line per stage and method.
    assert (coverage["mean_coverage"] == 0).all() and (coverage["imputed_share"] == 1).all()
    assert (answers["imputed"] > 0).all()
    assert result.output.count("was imputed, not observed") == len(coverage)
