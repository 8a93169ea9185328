"""``drlib restore database|storage|redis`` and ``drlib verify database|storage|redis``: the runbook
notebooks' steps from the command line (the run itself is :mod:`drlib.operate`).

A restore is a dry run unless ``--confirm``. Exit status: 0 every check passed (or the dry run did),
1 a check failed, 2 bad usage, 3 refused or a drlib error (printed as one line ``error [code]: message``),
128 + N interrupted by signal N. ``--json`` prints the results document on stdout and nothing else."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from drlib.terminal import (
    EXIT_CHECK_FAILED,
    EXIT_DRLIB_ERROR,
    error_line,
    exit_code,
    handles_errors,
    parameter_option,
)

if TYPE_CHECKING:
    from drlib.results import DrillResults

F = TypeVar("F", bound=Callable[..., Any])


def _shared_options(func: F) -> F:
    """The options every restore and verify command takes."""
    for option in reversed(
        (
            click.option("--env", "environment", help="profile (default: $DRLIB_PROFILE, else sandbox)"),
            click.option(
                "--backup", help="backup to use: a file or backup name (default: the newest before failure_time)"
            ),
            parameter_option("any other runbook parameter, repeatable (an unknown NAME lists the valid ones)"),
            click.option(
                "--json", "as_json", is_flag=True, help="print the results as JSON on stdout (progress to stderr)"
            ),
            click.option(
                "--reports", "reports_root", type=click.Path(path_type=Path), help="reports folder (default ./reports)"
            ),
        )
    ):
        func = option(func)
    return func


_confirm_option = click.option(
    "--confirm", is_flag=True, help="do it (without it: a dry run that shows what each step would do)"
)


@click.group()
def restore() -> None:
    """Restore the database, the file storage or Redis from a backup: the runbook's steps, dry run
    unless --confirm."""


@click.group()
def verify() -> None:
    """Verify the live database, storage or Redis against a backup's manifest (only reads)."""


@restore.command("database")
@_shared_options
@_confirm_option
@click.option("--option", type=click.Choice(["A", "B"]), help="B (default): new database, verify, swap; A: in place")
@click.option("--jobs", type=int, help="parallel pg_restore jobs (default 4; Option A uses one)")
@handles_errors
def restore_database(option: str | None, jobs: int | None, **shared: Any) -> None:
    """The PostgreSQL database loss runbook: checklist, stop the app, restore, verify, restart, check."""
    _run("restore", "database", flags={"option": option, "jobs": jobs}, **shared)


@restore.command("storage")
@_shared_options
@_confirm_option
@handles_errors
def restore_storage(**shared: Any) -> None:
    """The file storage loss runbook (-p storage_kind local|s3): locate, restore, verify, test the app."""
    _run("restore", "storage", **shared)


@restore.command("redis")
@_shared_options
@_confirm_option
@handles_errors
def restore_redis(**shared: Any) -> None:
    """The Redis loss runbook: checklist, restore the RDB snapshot, verify, test the app."""
    _run("restore", "redis", **shared)


@verify.command("database")
@_shared_options
@handles_errors
def verify_database(**shared: Any) -> None:
    """Tables, row counts (at least the backup's), keys, orphans and the newest rows of the live database."""
    _run("verify", "database", **shared)


@verify.command("storage")
@_shared_options
@handles_errors
def verify_storage(**shared: Any) -> None:
    """File counts, checksums, 0-byte files and storage keys of the live storage (-p storage_kind local|s3)."""
    _run("verify", "storage", **shared)


@verify.command("redis")
@_shared_options
@handles_errors
def verify_redis(**shared: Any) -> None:
    """Live Redis keys and dataset digest against the RDB backup's manifest."""
    _run("verify", "redis", **shared)


def _run(
    verb: str,
    target: str,
    *,
    environment: str | None,
    backup: str | None,
    parameters: tuple[tuple[str, str], ...],
    as_json: bool,
    reports_root: Path | None,
    confirm: bool = False,
    flags: dict[str, Any] | None = None,
) -> None:
    if target == "database":
        from drlib.postgres.tools import find_programs_early

        find_programs_early()  # beside the imports below
    from drlib.operate import get_operation, resolve_parameters, run_operation
    from drlib.secrets import redact
    from drlib.terminal import show_results

    op = get_operation(verb, target)
    values = resolve_parameters(op, parameters, {op.backup_param: backup, **(flags or {})})

    def say(line: str, **style: Any) -> None:
        click.secho(line, err=as_json, **style)

    mode = ": DRY RUN, nothing will be changed" if op.writes and not confirm else ""
    say(f"== {op.command} ({environment or os.environ.get('DRLIB_PROFILE', 'sandbox')}){mode}", bold=True)
    report = run_operation(
        op, environment=environment, values=values, confirm=confirm, reports_root=reports_root, say=say
    )
    results = report.results
    show_results(results, report.folder, say, name=op.name, show_error=False)
    if results.status == "dry_run":
        say(f"  to do it: {op.command} --confirm (with the same options)", fg="cyan")
    if results.error is not None:
        code = results.error.code or ("interrupted" if results.execution.interrupted else "internal")
        click.secho(error_line(code, " ".join(results.error.message.split())), fg="red", err=True)
    if as_json:
        click.echo(redact(results.to_json()))
    sys.exit(command_exit_code(results))


def command_exit_code(results: DrillResults) -> int:
    """As a drill's (:func:`drlib.terminal.exit_code`), except that a run a drlib error ended exits 3."""
    code = exit_code(results)
    if code == EXIT_CHECK_FAILED and results.status == "error" and results.error and results.error.code:
        return EXIT_DRLIB_ERROR
    return code
