"""The typed configuration of a whole study: command-line flags > YAML file > defaults.

The defaults are the embedded default study: the bundled Gemma 3 270M base model and the built-in
GSS 2018 spending battery, sized to finish in minutes on two CPU cores, with the fast modes (log-prob
demographics and independent log-prob answering). The paper's settings are one YAML file away (see
README: ``demographics.mode: sample``, ``ask.context: sequential``, ``ask.mode: sample``...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anthology.errors import ConfigError

#: Every persona a study can ask: the three matchings of Anthology personas, then the baselines.
ASK_METHODS = (
    "anthology-greedy",
    "anthology-max-weight",
    "anthology-random",
    "qa",
    "bio",
    "portray",
    "nothing",
    "dp",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    name: str = "gemma3-270m"
    device: str | None = None
    dtype: str | None = None
    decoding: Literal["auto", "eager", "static", "compiled"] | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    chat: bool = False
    scoring: Literal["auto", "echo", "top-k"] | None = None
    timeout: float | None = Field(default=None, gt=0)


class SurveySection(_Section):
    name: str = "gss2018-spending"
    data: str | None = None
    respondents: int | None = Field(default=12, ge=1)


class BackstoriesSection(_Section):
    n: int = Field(default=32, ge=1)
    style: Literal["completion", "chat"] = "completion"
    max_tokens: int = Field(default=160, ge=1)
    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    preamble: bool = True
    min_tokens: int = 41
    min_words: int = 0
    first_person: Literal["heuristic", "judge", "off"] = "heuristic"
    near_duplicate: float = 0.8


class DemographicsSection(_Section):
    mode: Literal["sample", "logprob"] = "logprob"
    samples: int = Field(default=40, ge=1)
    max_tokens: int = Field(default=128, ge=1)


class MatchingSection(_Section):
    methods: tuple[Literal["greedy", "max-weight", "random"], ...] = ("greedy", "max-weight", "random")
    objective: Literal["weight", "log"] = "weight"


class AskSection(_Section):
    methods: tuple[str, ...] = ASK_METHODS
    context: Literal["sequential", "independent"] = "independent"
    mode: Literal["sample", "logprob"] = "logprob"
    append: Literal["qa", "bio"] | None = None
    max_attempts: int = Field(default=20, ge=1)
    dp_style: Literal["bio", "qa"] = "bio"
    dp_max_tokens: int = Field(default=160, ge=1)


class EvaluateSection(_Section):
    splits: int = Field(default=100, ge=1)
    resamples: int = Field(default=1000, ge=1)


class ExecutorSection(_Section):
    """Where model calls run: in this process, or sharded across Ray workers that each hold a replica
    of a local model (``address``: ``None`` as for ``ray.init()``, ``auto``, ``ray://HEAD:10001``...)."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1.0, ge=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)


class RunConfig(_Section):
    """A whole study."""

    out: str = "runs/default"
    seed: int = 0
    model: ModelSection = ModelSection()
    executor: ExecutorSection = ExecutorSection()
    survey: SurveySection = SurveySection()
    backstories: BackstoriesSection = BackstoriesSection()
    demographics: DemographicsSection = DemographicsSection()
    matching: MatchingSection = MatchingSection()
    ask: AskSection = AskSection()
    evaluate: EvaluateSection = EvaluateSection()


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file, then ``overrides`` (dotted keys such as ``"survey.respondents"``;
    ``None`` values are ignored). Any problem is a one-line :class:`ConfigError` naming the key."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; give the path of a YAML file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a run config is a YAML mapping (keys such as model:, survey:)")
        data = loaded
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        target = data
        *parents, last = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        source = f"{path}: " if path else ""
        raise ConfigError(f"{source}{where}: {error['msg']}") from None
