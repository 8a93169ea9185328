"""``drlib undo deletion`` and ``drlib undo files``: bring back deleted rows (with the rows that depended
on them and their files) or deleted files from the backup taken before the deletion, without rolling
anything back. Dry run by default: it shows the rows and files it would bring back; ``--confirm`` puts
them back. Exit status as ``drlib restore`` (:mod:`drlib.cli_restore`)."""

from __future__ import annotations

import json
from typing import Any

import click

from drlib.cli_restore import _confirm_option, _run, _shared_options
from drlib.exceptions import ParameterError
from drlib.terminal import handles_errors


@click.group()
def undo() -> None:
    """Bring back deleted rows or files from the backup before the deletion (dry run unless --confirm)."""


@undo.command("deletion")
@_shared_options
@_confirm_option
@click.option("--table", required=True, help="the table the rows were deleted from (e.g. public.users)")
@click.option(
    "--key",
    "keys",
    multiple=True,
    help="primary key of a deleted row, repeatable (a two-column key: 'a,b'); none: every deleted row",
)
@click.option("--no-dependants", is_flag=True, help="only the table's rows, not the rows that referenced them")
@click.option("--keep-scratch", is_flag=True, help="keep the scratch database the backup is restored into")
@handles_errors
def undo_deletion(table: str, keys: tuple[str, ...], no_dependants: bool, keep_scratch: bool, **shared: Any) -> None:
    """Deleted rows of TABLE (and, by foreign key, of every table that depended on them) back from the
    backup taken before the deletion (-p failure_time …), with the files their storage_key names."""
    if any(not key.strip() for key in keys):  # `--key "$ID"` with ID unset would bring back every deleted row
        raise ParameterError("--key '' is empty: give the deleted row's key, or leave --key out for every deleted row")
    flags = {
        "table": table,
        "keys": json.dumps(list(keys)) if keys else None,  # a key may hold "," or ";"
        "dependants": False if no_dependants else None,
        "keep_scratch": True if keep_scratch else None,
    }
    _run("undo", "deletion", flags=flags, **shared)


@undo.command("files")
@click.argument("paths", nargs=-1, required=True)
@_shared_options
@_confirm_option
@handles_errors
def undo_files(paths: tuple[str, ...], **shared: Any) -> None:
    """Deleted files or folders (PATHS, relative to the storage root) back from the storage backup taken
    before the deletion; files that exist are never overwritten."""
    _run("undo", "files", flags={"paths": json.dumps(list(paths)), "rows": False}, **shared)  # names with "," too
