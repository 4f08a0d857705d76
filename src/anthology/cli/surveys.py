"""``anthology surveys``: list the built-in surveys; show any survey's questions, trait mapping,
respondents and weighted answer distributions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from anthology.surveys.schema import Survey, SurveyCategory


@click.group()
def surveys() -> None:
    """Surveys: built-in (GSS 2018, ANES 1996, Pew ATP waves 34/92/99) or your own data with a YAML
    codebook (format: docs/codebook.md)."""


@surveys.command("list")
def list_surveys() -> None:
    """Show the built-in surveys and where their respondent data comes from."""
    from anthology.surveys.builtin import BUILTINS
    from anthology.surveys.codebook import read_codebook

    table = Table(title="Built-in surveys (use the name with `anthology surveys show`)")
    for column in ("name", "title", "questions", "respondent data"):
        table.add_column(column, overflow="fold")
    for builtin in BUILTINS.values():
        codebook = read_codebook(builtin.codebook_path)
        table.add_row(builtin.name, escape(codebook.title), str(len(codebook.questions)), builtin.data_source)
    console = Console()
    console.print(table)
    console.print(
        "Your own survey: anthology surveys show PATH/TO/codebook.yaml [--data FILE] (docs/codebook.md)."
    )


@surveys.command("show")
@click.argument("name")
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Respondent data: a .csv, .parquet, .sav or .dta file (Pew waves need their .sav file).",
)
def show(name: str, data: Path | None) -> None:
    """Show survey NAME (a built-in or a codebook .yaml): questions, options, trait mapping,
    respondents, exclusions and each question's weighted answer distribution."""
    from anthology.surveys.builtin import BUILTINS
    from anthology.surveys.registry import load_survey

    survey = load_survey(name, data)
    console = Console()
    _print_summary(console, survey, BUILTINS[name].data_source if name in BUILTINS else None)
    console.print(_traits_table(survey))
    for line in _wave_lines(survey):
        console.print(line, highlight=False)
    console.print(_questions_table(survey))
    if survey.codebook.open_questions:
        console.print(_open_questions_table(survey))


@surveys.command("init")
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the codebook (default: next to DATA, with the extension .yaml).",
)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
def init(data: Path, output: Path | None, force: bool) -> None:
    """Draft a codebook from DATA (.sav, .dta, .csv, .parquet, ...): variable labels become wordings,
    value labels ordered options, "Refused" and user-missing codes missing codes; the weight, the
    respondent id and the persona traits' columns are proposed. Every guess is marked "# GUESS:" in the
    file; what could not be guessed is listed at its end and here."""
    from anthology.errors import ConfigError
    from anthology.files import atomic_write
    from anthology.surveys.draft import draft_codebook

    target = output or data.with_suffix(".yaml")
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; pass --force to overwrite it, or choose another path with -o")
    draft = draft_codebook(data, target)
    if not target.parent.is_dir():
        raise ConfigError(f"folder {target.parent} does not exist; create it or choose another path with -o")
    atomic_write(target, lambda tmp: tmp.write_text(draft.text, encoding="utf-8"))
    codebook = draft.codebook
    if codebook is not None:
        traits = ", ".join(f"{name} ({trait.column})" for name, trait in codebook.traits.items()) or "none"
        click.echo(
            f"wrote {target}: {len(codebook.questions)} questions; traits: {traits}; "
            f"weight: {codebook.weight or 'none'}; respondent id: {codebook.respondent_id or 'none'}"
        )
    else:
        click.echo(f"wrote {target} (it does not load yet: see the to-do list)")
    click.echo(f'{draft.guesses} guesses are marked "# GUESS:" in the file: check them.')
    for title, items in (("to do", draft.todo), ("left out", draft.left_out)):
        if items:
            click.echo(f"{title}:")
            for item in items:
                click.echo(f"  - {item}")
    click.echo(f"then: anthology surveys show {target} --data {data}")


def _print_summary(console: Console, survey: Survey, data_source: str | None) -> None:
    codebook = survey.codebook
    console.print(f"[bold]{survey.name}[/bold]: {escape(codebook.title)}", highlight=False)
    for label, text in (("source", codebook.source), ("about", codebook.description)):
        if text:
            console.print(f"[dim]{label}:[/dim] {escape(text)}", highlight=False)
    console.print(f"[dim]codebook:[/dim] {escape(codebook.origin.file)}", highlight=False)
    people, report = survey.respondents, survey.report
    if people is None or report is None:
        hint = data_source or "pass --data PATH, or name the file under `data:` in the codebook"
        console.print(f"respondents: none loaded; respondent data: {escape(hint)}", highlight=False)
        return
    rows = f"{len(people):,} of {report.rows:,} rows in {escape(report.source)}"
    console.print(f"respondents: {rows}", highlight=False)
    for exclusion in report.exclusions:
        examples = escape(", ".join(str(e) for e in exclusion.examples))
        console.print(
            f"excluded: {exclusion.count:,} who {exclusion.reason} (e.g. ids {examples})", highlight=False
        )
    asked = ", ".join(t.name for t in codebook.matched_traits)
    declared = f" (declared here: {', '.join(codebook.persona_traits)})" if codebook.persona_traits else ""
    console.print(f"asked of personas and matched on: {asked}{declared}", highlight=False)
    weights = (
        f"column {escape(codebook.weight or '')}"
        if people.weighted
        else "none in the data: every respondent counts once"
    )
    console.print(f"weights: {weights}", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)


def _wave_lines(survey: Survey) -> list[str]:
    """One line per wave: its name and its questions in order, a repeat with what it repeats
    (nothing for a survey without waves)."""
    questionnaire = survey.questionnaire
    lines = []
    for i, (name, part) in enumerate(questionnaire.parts(), 1):
        if name is None:
            return []
        asked = ", ".join(q.id + (f" (repeats {q.repeats})" if q.repeats else "") for q in part.questions)
        lines.append(f"wave {i} {escape(name)}: {escape(asked)}")
    return lines


def _traits_table(survey: Survey) -> Table:
    from anthology.surveys.distributions import trait_shares

    codebook = survey.codebook
    people = survey.respondents
    table = Table(title="Demographics and their persona mapping")
    for column in ("trait", "column", "category", "codes", "persona categories summed into it"):
        table.add_column(column, overflow="fold")
    if people is not None:
        table.add_column("share", justify="right")
    for name, trait in codebook.traits.items():
        shares = trait_shares(people, name) if people is not None else None
        for i, category in enumerate(trait.categories):
            row = [
                name if i == 0 else "",
                escape(trait.column) if i == 0 else "",
                escape(category.label),
                escape(_codes_text(category)),
                escape("; ".join(category.persona))
                or ("(excluded: left out)" if category.exclude else "(not a persona trait)"),
            ]
            if shares is not None:
                row.append(f"{shares[category.label]:.1%}")
            table.add_row(*row)
        notes = [trait.note] if trait.note else []
        no_value = int(people.traits[name].isna().sum()) if people is not None else 0
        if no_value:
            notes.insert(0, f"no value (refused or missing): {no_value:,} respondents")
        unmapped = (
            f"not mapped (dropped before matching): {'; '.join(trait.unmapped)}" if trait.unmapped else ""
        )
        if notes or unmapped:
            padding = [""] * (len(table.columns) - 5)
            cells = (f"[dim]{escape(' '.join(notes))}[/dim]", "", f"[dim]{escape(unmapped)}[/dim]")
            table.add_row("", "", *cells, *padding)
        table.add_section()
    for name, reason in codebook.absent.items():
        table.add_row(name, "", f"[dim]absent: {escape(reason)}[/dim]", *[""] * (len(table.columns) - 3))
    return table


def _codes_text(category: SurveyCategory) -> str:
    parts = [_code_text(c) for c in category.codes]
    if category.range is not None:
        low, high = category.range
        parts.append(
            f"{_number(low) if low is not None else ''}..{_number(high) if high is not None else ''}"
        )
    return ", ".join(parts) or "by label"


def _code_text(code: float | str) -> str:
    return repr(code) if isinstance(code, str) else _number(code)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _questions_table(survey: Survey) -> Table:
    people = survey.respondents
    distributions = survey.distributions() if people is not None else None
    title = "Questions: options in ordinal order" + (
        ", weighted share of answers" if distributions is not None else ""
    )
    table = Table(title=title, show_lines=True)
    table.add_column("id", overflow="fold")
    table.add_column("question", overflow="fold")
    table.add_column("options", overflow="fold")
    for question in survey.questionnaire.questions:
        wording = escape(question.wording) + (
            f"\n[dim]{escape(question.note)}[/dim]" if question.note else ""
        )
        shares = {}
        if distributions is not None:
            rows = distributions[distributions["question_id"] == question.id]
            shares = dict(zip(rows["position"], rows["share"], strict=True))
        lines = [
            (f"{shares[o.position]:>6.1%}  " if o.position in shares else "")
            + f"{o.position}. {escape(o.label)}"
            + (f" [dim](code {escape(_code_text(o.code))})[/dim]" if o.code is not None else "")
            for o in question.options
        ]
        if people is not None:
            counts = people.nonresponse[question.id].value_counts(sort=False)
            absent = "".join(f", {kind} {n:,}" for kind, n in counts.items() if n)
            lines.append(f"[dim]answered {int(people.answers[question.id].notna().sum()):,}{absent}[/dim]")
        table.add_row(escape(question.id), wording, "\n".join(lines))
    return table


def _open_questions_table(survey: Survey) -> Table:
    """The open questions: wording, where the humans' free text is, and the categories coded into."""
    codebook = survey.codebook
    table = Table(title="Open questions: free text, coded into categories", show_lines=True)
    for column in ("id", "question", "categories"):
        table.add_column(column, overflow="fold")
    for question in codebook.open_questions:
        notes = [f"closed: {question.closed}"] if question.closed else []
        notes += [f"humans' text: column {question.column}"] if question.column else []
        wording = escape(question.wording) + "".join(f"\n[dim]{escape(n)}[/dim]" for n in notes)
        categories = [
            f"{k}. {escape(c.label)}" + (f" [dim]({escape(c.description)})[/dim]" if c.description else "")
            for k, c in enumerate(codebook.open_categories[question.id], 1)
        ]
        table.add_row(escape(question.id), wording, "\n".join(categories))
    return table
