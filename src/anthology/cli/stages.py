"""The method's stages as commands over a run directory: ``backstories`` -> ``demographics`` ->
``match`` -> ``ask`` -> ``evaluate`` -> ``report``.

Each command's flags are generated from its stage's settings classes, and it runs the stage through
the same runner as ``anthology run`` (:func:`anthology.study.run_study`): it takes the directory's lock,
starts from the run's recorded settings and model (on a new directory: the profile's), changes only
what its flags say, and skips the stage when nothing it depends on changed (``--force`` runs it anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from anthology.cli.common import model_options
from anthology.cli.options import field_type, settings_options
from anthology.config import PROFILES, SECTIONS, RunConfig, SurveySettings, load_config
from anthology.errors import ConfigError
from anthology.redact import redact
from anthology.settings import Settings

if TYPE_CHECKING:
    from anthology.store import RunDir

run_dir_argument = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
seed_option = click.option(
    "--seed", type=field_type(RunConfig, "seed"), help="Seed of every random step (default: the run's)."
)
yes_option = click.option(
    "--yes",
    is_flag=True,
    help="Run even when the estimate says the study would take over a week or more memory than "
    "this machine has (not past --max-cost).",
)
profile_option = click.option(
    "--profile",
    type=click.Choice(PROFILES),
    help="Settings profile: paper (the default: the paper's method) or fast (log-prob modes).",
)
#: The stage flags whose names differ from their fields'.
FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "backstories": {"n": ("-n", "--n", "--personas")},  # --personas as `anthology run` has it
    "survey": {"name": ("--survey",)},
    "matching": {"methods": ("--method", "--methods")},
}
Shown = Callable[[dict[str, Any], "RunDir"], None]


def _print_table(title: str, frame) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


def _records(records: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame(records)


def stage_config(
    run_dir: Path,
    given: dict[str, dict[str, Any]],
    *,
    profile: str | None,
    seed: int | None,
    model_flags: dict[str, Any] | None = None,
    executor_flags: dict[str, Any] | None = None,
) -> RunConfig:
    """A stage command's settings: the run's recorded configuration (a new directory: the profile's
    defaults) with the sections' values ``given`` by flags. A model named by ``--model`` other than the
    run's starts from the model defaults; other model flags change the recorded model."""
    from anthology.store import RunDir

    recorded = (RunDir(run_dir).manifest().get("config") if run_dir.is_dir() else None) or {}
    base = dict(recorded)
    model_flags = model_flags or {}
    # (the recorded name has its secrets redacted: the same name given again is the same model)
    if "name" in model_flags and redact(model_flags["name"]) != recorded.get("model", {}).get("name"):
        base.pop("model", None)
    overrides = {
        f"{section}.{key}": value for section, values in given.items() for key, value in values.items()
    }
    overrides |= {f"model.{key}": value for key, value in model_flags.items()}
    overrides |= {f"executor.{key}": value for key, value in (executor_flags or {}).items()}
    overrides |= {"seed": seed, "profile": profile, "out": str(run_dir)}
    return load_config(None, overrides, base=base)


def _stage_command(
    stage: str,
    sections: tuple[str, ...],
    show: Shown,
    *,
    model: bool,
    doc: str,
    extra: tuple[Callable[[Any], Any], ...] = (),
) -> click.Command:
    """A command that runs one stage with flags for each of its ``sections``."""

    def command(
        run_dir: Path,
        profile: str | None,
        seed: int | None,
        force: bool,
        model_flags: dict[str, Any] | None = None,
        executor_flags: dict[str, Any] | None = None,
        cache_path: Path | None = None,
        no_cache: bool = False,
        agreement: bool = False,
        yes: bool = False,
        **given: dict[str, Any],
    ) -> None:
        from anthology.cli.common import open_model, run_cache_path
        from anthology.pipeline import BY_NAME
        from anthology.study import run_study

        config = stage_config(
            run_dir,
            {section: given[f"section_{section}"] for section in sections},
            profile=profile,
            seed=seed,
            model_flags=model_flags,
            executor_flags=executor_flags,
        )

        if BY_NAME[stage].reads and not run_dir.is_dir():
            raise ConfigError(
                f"run directory {run_dir} does not exist: run `anthology backstories` on it first, "
                "or `anthology run`"
            )

        def opened(c: RunConfig, run: RunDir):
            return open_model(
                c.model,
                c.executor,
                cache_path=run_cache_path(cache_path, run),
                no_cache=no_cache,
                progress=stage,
            )

        run = run_study(
            config, open_model=opened, stages=[stage], force=force, compare_modes=agreement, huge_ok=yes
        )
        show(run.manifest()["stages"][stage], run)

    command.__doc__ = doc
    decorated: Callable[..., Any] = command
    decorators: list[Callable[[Any], Any]] = [
        run_dir_argument,
        *(
            settings_options(SECTION_CLASSES[section], into=f"section_{section}", flags=FLAGS.get(section))
            for section in sections
        ),
        *extra,
        profile_option,
        seed_option,
        click.option("--force", is_flag=True, help="Run the stage even when nothing it depends on changed."),
    ]
    if model:
        decorators += [model_options(), yes_option]
    for decorator in reversed(decorators):
        decorated = decorator(decorated)
    return click.command(stage)(decorated)


SECTION_CLASSES: dict[str, type[Settings]] = {**SECTIONS, "survey": SurveySettings}


def _show_backstories(entry: dict[str, Any], run: RunDir) -> None:
    report = entry["summary"]
    Console().print(
        f"backstories: {report['generated']} generated, {report['kept']} kept; dropped: "
        f"{report['dropped'] or 'none'}; {report['stopped_at_max_tokens']} hit --max-tokens"
    )


def _show_demographics(entry: dict[str, Any], run: RunDir) -> None:
    import pandas as pd

    shares = entry["noncompliant"]
    _print_table(
        "non-compliant share per trait",
        pd.DataFrame({"trait": list(shares), "noncompliant": list(shares.values())}),
    )
    if "agreement" in entry:
        _print_table("log-prob vs sampled estimates", _records(entry["agreement"]))


def _show_match(entry: dict[str, Any], run: RunDir) -> None:
    from anthology.method.raked_panel import describe
    from anthology.method.settings import RAKED

    survey = entry["survey"]
    matchings = [row for row in entry["report"] if row["method"] != RAKED]
    if matchings:
        _print_table(
            f"matching {survey['respondents']} respondents of {survey['name']}",
            _records(matchings).dropna(axis=1, how="all").convert_dtypes(),  # counts print as counts
        )
    for row in entry["report"]:
        if row["method"] == RAKED:
            Console().print(describe(row), soft_wrap=True, highlight=False)


def _show_pool(entry: dict[str, Any], run: RunDir) -> None:
    from anthology.pool_summary import pool_lines

    for line in pool_lines(entry):
        Console().print(line, soft_wrap=True, highlight=False)


def _show_ask(entry: dict[str, Any], run: RunDir) -> None:
    if "dp" in entry:
        Console().print(
            f"dp: {entry['dp']['kept']} of {entry['dp']['generated']} demographics-primed backstories kept"
        )
    _print_table("answers", _records(entry["compliance"]))


def _show_evaluation(entry: dict[str, Any], run: RunDir) -> None:
    from anthology.cli.evaluate import print_evaluation
    from anthology.evaluation import FILES, read_evaluation

    print_evaluation(read_evaluation(run.root), entry["settings"]["evaluate"]["splits"])
    Console().print(f"[dim]wrote {', '.join(FILES.values())} in {run.root}[/dim]")


def _show_report(entry: dict[str, Any], run: RunDir) -> None:
    click.echo(entry["path"])


backstories = _stage_command(
    "backstories",
    ("backstories",),
    _show_backstories,
    model=True,
    doc="Stage 1: generate a pool of backstories into RUN_DIR/backstories.parquet.",
)
demographics = _stage_command(
    "demographics",
    ("demographics",),
    _show_demographics,
    model=True,
    doc="Stage 2: ask every kept backstory the demographic survey (RUN_DIR/demographics.parquet).",
    extra=(
        click.option(
            "--agreement",
            is_flag=True,
            help="Also run the other mode and report how far log-prob and sampled estimates agree.",
        ),
    ),
)
pool = _stage_command(
    "pool",
    ("pool",),  # the survey is the run's (its flags would clash with --model's)
    _show_pool,
    model=True,
    doc="Audit the pool's coverage of the run's survey respondents and, with --top-up N, generate and survey "
    "up to N more backstories until it passes (RUN_DIR/audit.parquet, topup_backstories.parquet, "
    "topup_demographics.parquet).",
)
match = _stage_command(
    "match",
    ("survey", "matching"),
    _show_match,
    model=False,
    doc="Stage 3: match personas to the survey's respondents (RUN_DIR/matches.parquet, humans.parquet).",
)
ask = _stage_command(
    "ask",
    ("ask",),
    _show_ask,
    model=True,
    doc="Stage 4: matched personas and baselines answer the survey (RUN_DIR/answers.parquet, "
    "distributions.parquet).",
)
evaluate = _stage_command(
    "evaluate",
    ("evaluate",),
    _show_evaluation,
    model=False,
    doc="Compare every method's answers with the humans: print the paper's table and write metrics.csv, "
    "metrics_per_question.csv, metrics_per_subgroup.csv and score_coverage.csv into RUN_DIR.",
)
report = _stage_command(
    "report",
    (),
    _show_report,
    model=False,
    doc="Write RUN_DIR/report.html, one self-contained page (from the run's own evaluation).",
)
