"""The typed configuration of a whole study: command-line flags > YAML file > profile > defaults.

Each stage's section is its settings class, the only place its settings and defaults are written (the
method's own configuration plus what the stage adds, e.g. the number of backstories); the stage
commands' flags are generated from the same classes (:mod:`anthology.cli.options`).

Two profiles set the settings that trade fidelity to the paper for speed: ``paper`` (the default: the
paper's method, 40 parsed samples per demographic question, sequential sampled answering, long
backstories) and ``fast`` (one log-prob pass per demographic question, each survey question scored on
its own, backstories of up to 160 tokens), which a pilot on a CPU wants.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from anthology.errors import ConfigError
from anthology.method.settings import (
    BASELINES,
    PANELS,
    TOKENS_MAX,
    AskConfig,
    BackstoryConfig,
    DemographicsConfig,
    Method,
    OpenConfig,
    PoolConfig,
)
from anthology.method.settings import METHODS as MATCHING_METHODS
from anthology.models.presets import PRESETS
from anthology.settings import SEED_MAX, Settings, describe_error, distinct, validation_errors

#: The Anthology personas of each panel the match stage builds (the matchings and the raked pool).
ANTHOLOGY_METHODS = tuple(f"anthology-{m}" for m in PANELS)
#: Every persona a study can ask: the panels of Anthology personas, then the baselines.
ASK_METHODS = (*ANTHOLOGY_METHODS, *BASELINES, "dp")
#: The personas a study asks by default: the matchings' (the raked panel is asked for by name).
DEFAULT_ASK_METHODS = (*(f"anthology-{m}" for m in MATCHING_METHODS), *BASELINES, "dp")
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ModelSettings(Settings):
    """The model and how to reach it; all of it is recorded, so a later stage reopens the same model."""

    name: str = Field(
        "gemma3-270m",
        description="Preset, local path, hf:ORG/NAME, openai:MODEL@URL, vllm:MODEL (`anthology models`).",
    )
    chat: bool = Field(False, description="Use chat messages (instruct models, chat servers).")
    base_url: str | None = Field(None, description="Base URL of an OpenAI-compatible server.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (default OPENAI_API_KEY)."
    )
    scoring: Literal["auto", "echo", "top-k"] | None = Field(
        None,
        description="How a server scores options: echo (exact), top-k, or auto (probe the server once).",
    )
    timeout: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="Base seconds per server request (default 60; longer work gets more).",
    )
    retries: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Retries of a failed server request: 429, 5xx, timeout, bad answer (default 6).",
    )
    device: str | None = Field(None, description="Device for local models: auto, cpu, cuda, cuda:1, mps.")
    dtype: Dtype | None = Field(None, description="dtype for local models.")
    decoding: Literal["auto", "eager", "static", "compiled"] | None = Field(
        None, description="Generation loop for local models (auto: a compiled static cache on a GPU)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of hf:ORG/NAME.")
    prefix_cache: float | None = Field(
        None,
        ge=0,
        le=65_536,
        description="GiB of recent prompts' KV a local model keeps between calls (default 0: off).",
    )
    tensor_parallel_size: int | None = Field(
        None, ge=1, le=1024, description="vllm: GPUs one engine spans (tensor parallelism; default 1)."
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="vllm: share of GPU memory the engine takes (default vLLM's, 0.9)."
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        le=10_000_000,
        description="vllm: longest sequence the engine serves (default the model's).",
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0,
        le=65_536,
        description="vllm: GiB of KV cache (default: from gpu_memory_utilization; 4 on a CPU).",
    )
    price_input_per_million: float | None = Field(
        None, ge=0, le=1e6, description="Price of a million prompt tokens, for --dry-run's cost."
    )
    price_output_per_million: float | None = Field(
        None, ge=0, le=1e6, description="Price of a million completion tokens, for --dry-run's cost."
    )
    max_cost: float | None = Field(
        None, gt=0, le=1e12, description="Refuse a study whose estimated cost may exceed this (needs prices)."
    )

    @model_validator(mode="after")
    def _priced(self) -> ModelSettings:
        """Both prices or neither (a missing one would count as free), and a budget only with them."""
        prices = (self.price_input_per_million, self.price_output_per_million)
        if (None in prices) != (prices == (None, None)):
            raise ValueError(
                "give both model.price_input_per_million and model.price_output_per_million, or neither"
            )
        if self.max_cost is not None and prices == (None, None):
            raise ValueError(
                "model.max_cost needs the prices: give model.price_input_per_million and "
                "model.price_output_per_million (--price-input-per-million, --price-output-per-million)"
            )
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, device: str | None) -> str | None:
        if device is not None and not _DEVICE.match(device):
            raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
        return device


class ExecutorSettings(Settings):
    """Where model calls run: in this process, or sharded across Ray workers that each hold a replica
    of a local model (``address``: ``None`` as for ``ray.init()``, ``auto``, ``ray://HEAD:10001``...)."""

    kind: Literal["local", "ray"] = Field(
        "local", description="Run model calls here, or on Ray workers, each with a model replica."
    )
    address: str | None = Field(None, description="Ray cluster: auto, HEAD:6379 or ray://HEAD:10001.")
    workers: int = Field(2, ge=1, le=4096, description="Ray workers, one model replica each.")
    cpus_per_worker: float = Field(1.0, ge=0, le=1024, description="CPUs each Ray worker holds.")
    gpus_per_worker: float = Field(0.0, ge=0, le=64, description="GPUs each Ray worker holds.")


class SurveySettings(Settings):
    name: str = Field(
        "gss2018-spending", min_length=1, description="Built-in survey name or a codebook YAML path."
    )
    data: str | None = Field(
        None, min_length=1, description="Respondent data file (CSV, Parquet, .sav, .dta)."
    )
    respondents: int | None = Field(
        12, ge=1, le=10_000_000, description="A seeded random sample of this many respondents (null: all)."
    )


class BackstoriesSettings(BackstoryConfig):
    n: int = Field(32, ge=1, le=1_000_000, description="Backstories to generate (the persona pool).")


class MatchSettings(Settings):
    methods: tuple[Method, ...] = Field(
        MATCHING_METHODS, min_length=1, description="Matching methods, and raked for the raked pool."
    )
    objective: Literal["weight", "log"] = Field(
        "weight", description="max-weight: maximise the sum of weights (the paper) or of log-weights."
    )
    margins: str | None = Field(
        None,
        min_length=1,
        description="raked: a margins YAML (trait: {category: share}); default: the survey's own.",
    )

    _distinct_methods = field_validator("methods")(distinct)


class AskSettings(AskConfig):
    methods: tuple[str, ...] = Field(DEFAULT_ASK_METHODS, min_length=1, description="Personas to ask.")
    append: Literal["qa", "bio"] | None = Field(None, description="Append the matched human's demographics.")
    dp_style: Literal["bio", "qa"] = Field("bio", description="Demographics-primed backstory prompt.")
    dp_max_tokens: int = Field(
        1500, ge=1, le=TOKENS_MAX, description="Max tokens per demographics-primed backstory."
    )

    @field_validator("methods")
    @classmethod
    def _known(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in methods if m not in ASK_METHODS]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r}: choose from {', '.join(ASK_METHODS)}")
        distinct(methods)
        return methods


class EvaluateSettings(Settings):
    splits: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Random human split-halves of the lower bound, and draws per size of the "
        "worth-in-humans curve.",
    )
    resamples: int = Field(1000, ge=1, le=1_000_000, description="Bootstrap resamples of the intervals.")
    persona_weights: Literal["equal", "survey", "both"] = Field(
        "equal",
        description="Persona side: each persona counts once (equal, the paper's), with its respondent's "
        "survey weight (survey), or both rows.",
    )


#: What each stage's settings class is, by the name of its section.
SECTIONS: dict[str, type[Settings]] = {
    "backstories": BackstoriesSettings,
    "demographics": DemographicsConfig,
    "matching": MatchSettings,
    "ask": AskSettings,
    "evaluate": EvaluateSettings,
    "pool": PoolConfig,
    "open": OpenConfig,
}

_FAST: dict[str, dict[str, Any]] = {
    "backstories": {"max_tokens": 160},
    "demographics": {"mode": "logprob"},
    "ask": {"context": "independent", "mode": "logprob", "dp_max_tokens": 160},
}
Profile = Literal["paper", "fast"]
PROFILES: tuple[str, ...] = ("paper", "fast")
DEFAULT_PROFILE: Profile = "paper"


def profile_values(name: str) -> dict[str, dict[str, Any]]:
    """The settings a profile fixes: ``fast``'s values, or the same keys at their defaults (the
    paper's) for ``paper``."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}: choose from {', '.join(PROFILES)}")
    if name == "fast":
        return {section: dict(values) for section, values in _FAST.items()}
    return {
        section: {key: SECTIONS[section].model_fields[key].default for key in values}
        for section, values in _FAST.items()
    }


class RunConfig(Settings):
    """A whole study."""

    out: str = Field("runs/default", description="Run directory (relative to the working directory).")
    seed: int = Field(0, ge=0, le=SEED_MAX)
    profile: Profile = DEFAULT_PROFILE
    model: ModelSettings = ModelSettings()
    executor: ExecutorSettings = ExecutorSettings()
    survey: SurveySettings = SurveySettings()
    backstories: BackstoriesSettings = BackstoriesSettings()
    demographics: DemographicsConfig = DemographicsConfig()
    matching: MatchSettings = MatchSettings()
    ask: AskSettings = AskSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    pool: PoolConfig = PoolConfig()
    open: OpenConfig = OpenConfig()

    @field_validator("out")
    @classmethod
    def _out(cls, out: str) -> str:
        if not out.strip():
            raise ValueError("the run directory is empty: give a folder path (--out DIR)")
        return out

    @model_validator(mode="after")
    def _backstories_can_be_kept(self) -> RunConfig:
        """Refuse lengths that would drop every backstory (natural, or demographics-primed)."""
        least = self.backstories.min_tokens
        longest = {"backstories.max_tokens": self.backstories.max_tokens}
        if "dp" in self.ask.methods:
            longest["ask.dp_max_tokens"] = self.ask.dp_max_tokens
        for key, tokens in longest.items():
            if tokens < least:
                raise ValueError(
                    f"{key} ({tokens}) < backstories.min_tokens ({least}) would drop every backstory: "
                    "lower backstories.min_tokens or raise the max tokens"
                )
        return self


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def _read_yaml(path: Path) -> dict[str, Any]:
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
    return loaded


def load_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    *,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """``base`` (a run's recorded configuration), then the profile, the YAML file and ``overrides``
    (dotted keys such as ``"survey.respondents"``; ``None`` values are ignored). The profile is the
    one named in ``overrides``, the file or ``base`` (default ``paper``); one named in the file or the
    overrides is applied over ``base``. Any problem is a one-line :class:`ConfigError`."""
    data = _relative_paths(_read_yaml(Path(path)), Path(path).parent) if path is not None else {}
    given: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        target = given
        *parents, last = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    explicit = given.get("profile") or data.get("profile")
    profile = explicit or (base or {}).get("profile") or DEFAULT_PROFILE
    if not isinstance(profile, str):
        raise ConfigError(f"profile: give one of {', '.join(PROFILES)}")
    values = profile_values(profile)
    layers = [base or {}, values] if explicit else [values, base or {}]
    merged: dict[str, Any] = {}
    for layer in (*layers, data, given):
        _merge(merged, _copy(layer))
    needs = _nested(PRESETS[name].settings) if (name := _model_name(merged)) in PRESETS else {}
    merged = _merge(_copy(needs), merged)  # under everything else: what the user set wins
    merged["profile"] = profile
    try:
        with validation_errors():
            return RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, str(path) if path else "")) from None


#: The keys of a config file that hold file paths, by section.
_PATH_KEYS = {"survey": ("name", "data"), "matching": ("margins",)}


def _relative_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A config file's paths (a codebook's, a data file's, a margins file's) as seen from its own
    folder, as a codebook's ``data:`` is; built-in survey names stay names."""
    out = dict(data)
    for section, keys in _PATH_KEYS.items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        resolved = dict(values)
        for key in keys:
            value = values.get(key)
            if not isinstance(value, str) or not value:
                continue
            if (section, key) == ("survey", "name") and Path(value).suffix.lower() not in (".yaml", ".yml"):
                continue  # a built-in survey's name
            path = Path(value).expanduser()
            resolved[key] = value if path.is_absolute() else os.path.abspath(folder / path)
        out[section] = resolved
    return out


def _model_name(merged: dict[str, Any]) -> Any:
    model = merged.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    return name if name is not None else ModelSettings.model_fields["name"].default


def _nested(dotted: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        section, field = key.split(".")
        nested.setdefault(section, {})[field] = value
    return nested


def preset_settings(config: RunConfig) -> dict[str, Any]:
    """The settings the config's bundled model needs that it runs with (dotted keys), for the line
    that says so; empty for other models or when the user chose otherwise."""
    preset = PRESETS.get(config.model.name)
    needs = preset.settings if preset is not None else {}
    return {key: v for key, v in needs.items() if _runs_with(config, key, v)}


def _runs_with(config: RunConfig, key: str, value: Any) -> bool:
    """Whether the config's setting ``key`` (dotted) is ``value`` as its settings class reads it
    (``backstories.preamble: false`` is stored as no preamble)."""
    section_name, field = key.split(".")
    section = getattr(config, section_name)
    wanted = type(section).model_validate({**section.model_dump(), field: value})
    return getattr(section, field) == getattr(wanted, field)


def _copy(layer: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in layer.items()}
