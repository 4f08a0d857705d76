"""The ``anthology`` command line. Errors the user can fix print one line and exit with status 2."""

from __future__ import annotations

import logging
import sqlite3
import sys

import click

from anthology import __version__
from anthology.cli.interrupts import interruptible, message
from anthology.cli.models import models
from anthology.cli.run import run
from anthology.cli.stages import ask, backstories, demographics, evaluate, match, pool, report
from anthology.cli.surveys import surveys
from anthology.errors import AnthologyError
from anthology.files import disk_problem


class _WarningLines(logging.Handler):
    """Show the package's warnings (``anthology.files.warn``) as ``warning: ...`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


_WARNINGS = _WarningLines(logging.WARNING)


class _Group(click.Group):
    """A command group that turns :class:`AnthologyError`, and a disk that refuses a write (full,
    read-only, forbidden: :func:`anthology.files.disk_problem`), into a one-line message and exit
    status 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        logger = logging.getLogger("anthology")
        if _WARNINGS not in logger.handlers:
            logger.addHandler(_WARNINGS)
        try:
            with interruptible():
                return super().invoke(ctx)
        except AnthologyError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except (OSError, sqlite3.Error) as exc:
            line = disk_problem(exc)
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:  # a bad flag or argument: one line too, naming the help to read
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the work finished so far is kept
            line, status = message(exc)
            click.echo(line, err=True)
            ctx.exit(status)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anthology")
def app() -> None:
    """Virtual personas for language models from an anthology of backstories.

    Build a panel of LLM personas conditioned on self-written life stories, match them to the
    respondents of a real survey, have them answer it, and compare with the people.
    """


app.add_command(models)
app.add_command(surveys)
for command in (run, backstories, demographics, pool, match, ask, evaluate, report):
    app.add_command(command)


def main(argv: list[str] | None = None) -> None:
    app.main(args=argv if argv is not None else sys.argv[1:], prog_name="anthology")
