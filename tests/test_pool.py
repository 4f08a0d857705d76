"""The backstory pool checked and topped up: the LLM critic of self-contradicting backstories (off,
flag, drop), the coverage audit against the survey's respondents, the top-up that stops when the
audit passes or the budget is spent, and the pool stage of a whole run on the tiny model, resumed
after kill -9 with no model call made twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import yaml

from anthology.method import prompts
from anthology.method.audit import audit
from anthology.method.backstories import (
    CONTRADICTION,
    CRITIC_QUESTION,
    BackstoryConfig,
    generate_backstories,
    persona_id,
    summary,
)
from anthology.method.demographics import DemographicsConfig, survey_demographics
from anthology.method.matching import TraitTable
from anthology.method.seeds import stable_int
from anthology.method.settings import PoolConfig
from anthology.method.topup import top_up
from anthology.models.base import Capabilities, GenerateResult, Sample, ScoreResult
from anthology.pipeline import kept_line
from anthology.surveys import load_survey

SEED = 3


class PoolModel:
    """A fake model with known answers. Backstory ``i`` (found from its request's seed) reads "I am
    persona i." and words of its own (persona ``copies[i]``'s words instead, when given); the critic
    says yes exactly for the personas in ``contradicting``; in the demographic survey a persona in
    ``mirrors`` answers its respondent's profile (``mirrors[i]``: persona option label per trait),
    every other one gives every option the same probability."""

    identity: ClassVar[dict[str, str]] = {"backend": "fake", "model": "pool"}
    capabilities = Capabilities(True, True, True, None, None, True)

    def __init__(
        self,
        contradicting: set[int] = frozenset(),  # type: ignore[assignment]
        mirrors: dict[int, dict[str, str]] | None = None,
        copies: dict[int, int] | None = None,
    ) -> None:
        self.contradicting = contradicting
        self.mirrors = mirrors or {}
        self.copies = copies or {}
        self.index = {stable_int(SEED, "backstory", persona_id(i)): i for i in range(200)}
        self.backstory_seeds: list[int] = []
        self.critic_reads: list[int] = []

    @staticmethod
    def text(i: int) -> str:
        return f"I am persona {i}. " + " ".join(f"w{i}x{j}" for j in range(12))

    def generate(self, requests):
        out = []
        for r in requests:
            if r.prompt.endswith(f"{prompts.CITIZEN_QUESTION}\n\nAnswer:"):
                texts = ["Yes"] * r.n
            else:
                i = self.index[r.seed]
                self.backstory_seeds.append(r.seed)
                texts = [" " + self.text(self.copies.get(i, i))] * r.n
            out.append(GenerateResult(tuple(Sample(t, "stop", 20) for t in texts), 10))
        return out

    def score(self, requests):
        out = []
        for r in requests:
            [i] = [int(n) for n in re.findall(r"I am persona (\d+)\.", r.context)[-1:]]
            if CRITIC_QUESTION in r.context:
                self.critic_reads.append(i)
                best = 0 if i in self.contradicting else 1  # (A) Yes, (B) No
            else:
                block = r.context.rsplit("Question: ", 1)[1]
                labels = [label for _, label in re.findall(r"^\(([A-Z])\) (.*)$", block, flags=re.M)]
                wanted = set(self.mirrors.get(i, {}).values())
                best = next((k for k, label in enumerate(labels) if label in wanted), None)
            if best is None:  # every option alike
                logprobs = tuple(np.log(0.01) for _ in r.options)
            else:
                first = best * prompts.FORMS_PER_OPTION
                logprobs = tuple(np.log(0.9) if k == first else np.log(0.001) for k in range(len(r.options)))
            out.append(ScoreResult(logprobs, float(np.exp(logprobs).sum())))
        return out

    def close(self):
        pass


STORIES = BackstoryConfig(preamble=None, min_tokens=1, first_person="off")


def test_the_critic_flags_exactly_the_contradicting_backstories_and_flag_keeps_them():
    model = PoolModel(contradicting={1, 4})
    frame = generate_backstories(model, 6, seed=SEED, config=STORIES.updated(critic="flag"))
    assert frame["kept"].all()
    assert frame.loc[frame["contradicts"], "persona_id"].tolist() == ["p00001", "p00004"]
    assert (frame.loc[frame["contradicts"], "contradiction"] > 0.99).all()
    assert (frame.loc[~frame["contradicts"], "contradiction"] < 0.01).all()
    found = summary(frame)
    assert found["contradictions"] == {"scored": 6, "flagged": 2, "kept_flagged": 2}
    assert found["dropped"] == {}
    assert kept_line(found) == (
        "kept 6 of 6 backstories; 2 kept flagged as contradicting themselves (LLM critic)"
    )


def test_drop_drops_the_flagged_and_the_critic_reads_only_what_the_other_filters_kept():
    model = PoolModel(contradicting={1, 4}, copies={3: 0})  # persona 3 repeats persona 0
    frame = generate_backstories(model, 6, seed=SEED, config=STORIES.updated(critic="drop"))
    assert frame.loc[~frame["kept"], "drop_reason"].tolist() == [
        CONTRADICTION,
        "duplicate of p00000",
        CONTRADICTION,
    ]
    assert frame.loc[~frame["kept"], "persona_id"].tolist() == ["p00001", "p00003", "p00004"]
    assert sorted(model.critic_reads) == [0, 1, 2, 4, 5]  # not the duplicate
    assert np.isnan(frame.loc[frame["persona_id"] == "p00003", "contradiction"]).all()
    found = summary(frame)
    assert found["dropped"] == {CONTRADICTION: 2, "duplicate": 1}
    assert found["contradictions"] == {"scored": 5, "flagged": 2, "kept_flagged": 0}
    assert kept_line(found) == (f"kept 3 of 6 backstories (dropped: 2 {CONTRADICTION}, 1 duplicate)")


def test_the_critic_off_asks_nothing_and_adds_no_column():
    model = PoolModel(contradicting={1})
    frame = generate_backstories(model, 4, seed=SEED, config=STORIES)
    assert model.critic_reads == [] and "contradiction" not in frame
    assert "contradictions" not in summary(frame) and frame["kept"].all()


def _hand_tables() -> list[TraitTable]:
    """Two traits, three personas, five respondents (h3's B unknown)."""
    a = TraitTable(
        "A", ("a0", "a1"), np.array([[0.9, 0.1], [0.5, 0.5], [0.04, 0.96]]), np.array([0, 1, 1, 0, 0])
    )
    b = TraitTable(
        "B",
        ("b0", "b1", "b2"),
        np.array([[0.8, 0.1, 0.1], [0.25, 0.15, 0.6], [0.01, 0.01, 0.98]]),
        np.array([0, 2, 1, -1, 1]),
    )
    return [a, b]


def test_the_audit_counts_plausible_personas_and_empty_cells_by_hand():
    ids = np.array([10, 11, 12, 13, 14])
    found = audit(_hand_tables(), ids, threshold=0.2, min_plausible=1)
    # weights (A x B): h0 .72 .125 .0004; h1 .01 .3 .94; h2 .01 .075 .0096; h3 (B unknown: 1) .9 .5 .04;
    # h4 .09 .075 .0004
    assert found.plausible.tolist() == [1, 2, 0, 2, 0]
    assert not found.passed and found.short == 2
    traits = found.cells[found.cells["kind"] == "trait"].set_index("cell")
    assert traits["respondents"].to_dict() == {"A=a0": 3, "A=a1": 2, "B=b0": 1, "B=b1": 2, "B=b2": 1}
    assert traits["personas"].to_dict() == {"A=a0": 2, "A=a1": 2, "B=b0": 2, "B=b1": 0, "B=b2": 2}
    assert found.empty_cells("trait")["cell"].tolist() == ["B=b1"]
    assert sorted(found.empty_cells("profile")["cell"]) == ["A=a0, B=b1", "A=a1, B=b1"]
    info = found.summary()
    assert info["empty_traits"] == ["B=b1"] and info["empty_profiles"] == 2
    assert info["plausible_min"] == 0 and info["plausible_median"] == 1.0 and info["personas"] == 3
    # Greedy: h0 p0, h1 p2, h2 p1 (.075), h3 p0 (.9 x 1/3), h4 p0 (.09); agreement on the likeliest category.
    assert info["quality"]["agreement"] == {"A": 0.8, "B": 0.5}
    expected = np.log([0.72, 0.9408, 0.075, 0.9 / 3, 0.09]).mean()  # matching: B unknown counts 1/3
    assert info["quality"]["mean_log_weight"] == pytest.approx(expected)

    assert audit(_hand_tables(), ids, threshold=0.2, min_plausible=2).short == 3
    assert audit(_hand_tables(), ids, threshold=0.005, min_plausible=1).passed


def _profiles(survey) -> list[dict[str, str]]:
    """Each respondent's categories as the persona options that answer them (unknown left out)."""
    out = []
    for _, row in survey.respondents.traits.iterrows():
        profile = {}
        for trait in survey.codebook.matched_traits:
            value = row.get(trait.name)
            if pd.isna(value):
                continue
            [category] = [c for c in survey.codebook.traits[trait.name].categories if c.label == value]
            profile[trait.name] = category.persona[0]
        out.append(profile)
    return out


@pytest.fixture(scope="module")
def survey():
    return load_survey("gss2018-spending", None).sample(5, SEED)


def _pool(model, survey, n=4):
    stories = generate_backstories(model, n, seed=SEED, config=STORIES)
    traits = tuple(survey.codebook.matched_traits)
    demographics = survey_demographics(
        model, stories, seed=SEED, config=DemographicsConfig(mode="logprob"), traits=traits
    )
    return stories, demographics, traits


def _top_up(model, survey, pool: PoolConfig, n=4):
    stories, demographics, traits = _pool(model, survey, n)
    model.backstory_seeds.clear()
    return stories, top_up(
        model,
        survey,
        stories,
        demographics,
        seed=SEED,
        config=pool,
        backstory_config=STORIES,
        demographics_config=DemographicsConfig(mode="logprob"),
        traits=traits,
        batch=n,
    )


def test_top_up_stops_when_the_audit_passes_with_new_seeds(survey):
    # Personas 0-3 (the pool) answer every option alike; 4-8 mirror respondents 0-4, 9-20 would too.
    profiles = _profiles(survey)
    model = PoolModel(mirrors={4 + k: profiles[k % 5] for k in range(17)})
    stories, made = _top_up(model, survey, PoolConfig(top_up=20, batch=5))
    before, after = made.audits[0], made.audits[-1]
    assert not before.passed and before.short == 5 and before.plausible.tolist() == [0] * 5
    assert made.rounds == 1 and after.passed and after.personas == 9
    assert made.backstories["persona_id"].tolist() == [persona_id(i) for i in range(4, 9)]
    assert len(made.demographics.groupby("persona_id")) == 5
    pool_seeds = {stable_int(SEED, "backstory", p) for p in stories["persona_id"]}
    assert set(model.backstory_seeds).isdisjoint(pool_seeds) and len(set(model.backstory_seeds)) == 5
    assert after.quality["mean_log_weight"] > before.quality["mean_log_weight"]


def test_top_up_stops_when_the_budget_is_spent(survey):
    model = PoolModel(mirrors=dict.fromkeys(range(4, 20), _profiles(survey)[0]))
    _, made = _top_up(model, survey, PoolConfig(top_up=6, batch=4, min_plausible=100))
    assert made.rounds == 2 and not made.audits[-1].passed
    assert made.backstories["persona_id"].tolist() == [persona_id(i) for i in range(4, 10)]  # 4, then 2
    assert [a.personas for a in made.audits] == [4, 8, 10]


def test_top_up_drops_near_duplicates_of_the_pool_and_without_a_budget_only_audits(survey):
    model = PoolModel(copies={5: 1})
    _, made = _top_up(model, survey, PoolConfig(top_up=3, batch=3))
    assert made.backstories.set_index("persona_id")["drop_reason"].to_dict() == {
        "p00004": "",
        "p00005": "duplicate of p00001",
        "p00006": "",
    }
    quiet = PoolModel()
    stories, demographics, traits = _pool(quiet, survey)
    calls = len(quiet.backstory_seeds)
    done = top_up(
        quiet,
        survey,
        stories,
        demographics,
        seed=SEED,
        config=PoolConfig(),
        backstory_config=STORIES,
        demographics_config=DemographicsConfig(mode="logprob"),
        traits=traits,
        batch=4,
    )
    assert done.rounds == 0 and done.backstories.empty and done.demographics.empty
    assert len(quiet.backstory_seeds) == calls and len(done.audits) == 1


# --- The pool stage of whole runs on the tiny model --------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anthology", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        timeout=600,
    )


@pytest.fixture(scope="module")
def study(tiny_folder, tmp_path_factory) -> Path:
    config = {
        "seed": 5,
        "profile": "fast",
        "model": {"name": tiny_folder},
        "survey": {"respondents": 3},
        "backstories": {"n": 4, "max_tokens": 12, "preamble": False, "min_tokens": 1, "first_person": "off"},
        "pool": {"batch": 4},
        "matching": {"methods": ["greedy"]},
        "ask": {"methods": ["anthology-greedy", "qa"]},
        "evaluate": {"splits": 5, "resamples": 20},
    }
    path = tmp_path_factory.mktemp("pool") / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


TOP_UP = "12"  # three rounds of 4: the tiny model's personas answer too evenly to ever pass the audit


@pytest.fixture(scope="module")
def straight(study) -> Path:
    out = study.parent / "straight"
    done = cli("run", str(study), "--out", str(out), "--top-up", TOP_UP)
    assert done.returncode == 0, done.stderr
    return out


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_a_run_with_top_up_audits_tops_up_and_reports(straight, tmp_path):
    pool = _manifest(straight)["stages"]["pool"]
    assert pool["rounds"] == 3 and pool["added"]["generated"] == 12 and pool["budget"] == 12
    assert pool["passed"] is False and pool["before"]["personas"] == 4
    assert pool["after"]["personas"] == 4 + pool["added"]["kept"]
    added = pd.read_parquet(straight / "topup_backstories.parquet")
    assert added["persona_id"].tolist() == [persona_id(i) for i in range(4, 16)]
    audit_rows = pd.read_parquet(straight / "audit.parquet")
    assert sorted(set(audit_rows["round"])) == [0, 1, 2, 3] and len(audit_rows) == 4 * 3
    # match and ask see the whole pool: greedy picks among the first pool and the top-up alike.
    surveyed = pd.read_parquet(straight / "topup_demographics.parquet")
    assert set(surveyed["persona_id"]) == set(added.loc[added["kept"], "persona_id"])
    report = (straight / "report.html").read_text()
    assert 'id="pool-audit"' in report and "Pool audit" in report and "After top-up" in report

    # Without a budget the stage only audits: no model call, an empty top-up, and the pool as it was.
    copy = tmp_path / "run"
    shutil.copytree(straight, copy)
    again = cli("pool", str(copy), "--top-up", "0")
    assert again.returncode == 0, again.stderr
    entry = _manifest(copy)["stages"]["pool"]
    assert entry["model_calls"]["computed"] == 0 and entry["rounds"] == 0
    assert pd.read_parquet(copy / "topup_backstories.parquet").empty
    assert entry["before"] == pool["before"]
    assert "audit failed" in again.stdout


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    raw = sqlite3.connect(path, timeout=5)
    try:
        return raw.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        raw.close()


def test_a_run_killed_during_the_top_up_resumes_with_no_repeated_model_call(study, straight, tmp_path):
    stages = _manifest(straight)["stages"]
    before_pool = sum(stages[s]["model_calls"]["computed"] for s in ("backstories", "demographics"))
    pool_units, pool_hits = (stages["pool"]["model_calls"][k] for k in ("computed", "cache_hits"))
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "anthology", "run", str(study), "--out", str(out), "--top-up", TOP_UP],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if _rows(out / "cache.sqlite") >= before_pool + 10:  # the first round stored
            break
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    stored = _rows(out / "cache.sqlite") - before_pool
    assert "pool" not in _manifest(out)["stages"], "killed after the pool stage: not during the top-up"
    assert 0 < stored < pool_units

    resumed = cli("run", str(study), "--out", str(out), "--top-up", TOP_UP)
    assert resumed.returncode == 0, resumed.stderr
    calls = _manifest(out)["stages"]["pool"]["model_calls"]
    assert calls["cache_hits"] == pool_hits + stored  # all done before the kill came from the cache
    assert calls["computed"] == pool_units - stored  # and nothing else was computed twice
    for name in ("topup_backstories", "topup_demographics", "audit", "matches", "answers"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / f"{name}.parquet"), pd.read_parquet(straight / f"{name}.parquet")
        )


def test_the_critic_needs_a_model_with_log_probabilities():
    from anthology.config import load_config
    from anthology.errors import CapabilityError
    from anthology.study import check_capabilities

    class Sampler(PoolModel):
        capabilities = Capabilities(True, True, False, None, None, True)

    config = load_config(
        None, {"backstories.critic": "flag", "demographics.mode": "sample", "ask.mode": "sample"}
    )
    with pytest.raises(CapabilityError, match=r"backstories\.critic: off"):
        check_capabilities(Sampler(), config, ["backstories"])
    check_capabilities(
        Sampler(), config.updated(backstories=config.backstories.updated(critic="off")), ["backstories"]
    )


def test_a_dry_run_counts_the_critics_questions_with_the_backstories():
    from anthology.config import load_config
    from anthology.estimates import Billing, estimate
    from anthology.token_counts import CharacterCounter

    base = {"backstories.n": 10, "backstories.preamble": False, "backstories.max_tokens": 100}
    rows = {
        critic: estimate(
            load_config(None, {**base, "backstories.critic": critic}),
            ["backstories"],
            None,
            counter=CharacterCounter(),
            billing=Billing(),
        )[0]
        for critic in ("off", "drop")
    }
    # One scoring question after each kept backstory: half the pool low, all of it high.
    assert rows["drop"].requests.low == rows["off"].requests.low + 5
    assert rows["drop"].requests.high == rows["off"].requests.high + 10
