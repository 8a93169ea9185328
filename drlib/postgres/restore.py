"""Restoring a verified backup: Option A (into the existing database) and Option B (into a
new database, verified, then swapped in by renaming; the old database is kept).

Without ``confirm=True`` every function returns a :class:`RestorePlan` saying what it
*would* do and touches nothing.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from psycopg import sql

from drlib.exceptions import ConfirmationRequired, DrlibError, RestoreFailed
from drlib.plans import RestorePlan, timestamp_suffix
from drlib.postgres.connection import (
    PgTarget,
    create_database,
    database_exists,
    drop_database,
    terminate_connections,
)
from drlib.postgres.integrity import VerifiedBackup
from drlib.postgres.tools import pg_program
from drlib.processes import kill_tree
from drlib.secrets import redact


@dataclass(frozen=True)
class RestoreResult:
    option: str
    backup: str
    database: str
    seconds: float
    jobs: int
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class SwapResult:
    database: str
    restored_from: str
    old_database: str | None
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def pg_restore_args(verified: VerifiedBackup, *, database: str, jobs: int, clean: bool) -> list[str]:
    args = ["--exit-on-error", "--no-password", "-d", database]
    if jobs > 1:
        args += ["-j", str(jobs)]
    if clean:
        args += ["--clean", "--if-exists"]
    return [pg_program("pg_restore"), *args, str(verified.path)]


def run_pg_restore(argv: list[str], *, target: PgTarget, timeout: float | None = None) -> float:
    """Run pg_restore to completion; on error, timeout or interrupt kill it and its workers."""
    started = time.monotonic()
    process = subprocess.Popen(argv, env=target.tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except BaseException as exc:
        kill_tree(process.pid, timeout=5)
        process.communicate()
        reason = (
            "timed out" if isinstance(exc, subprocess.TimeoutExpired) else f"was interrupted ({type(exc).__name__})"
        )
        raise RestoreFailed(f"pg_restore {reason}") from exc
    if process.returncode != 0:
        raise RestoreFailed(f"pg_restore failed (exit {process.returncode}): {redact(stderr.strip())}")
    return time.monotonic() - started


def restore_in_place(
    verified: VerifiedBackup,
    *,
    target: PgTarget,
    jobs: int = 4,
    confirm: bool = False,
    timeout: float | None = None,
) -> RestoreResult | RestorePlan:
    """Option A: ``pg_restore --clean --if-exists`` into the live database (created if missing).

    Overwrites the live database in place: an interruption leaves it partly restored. Prefer
    Option B whenever the live database still holds anything of value.
    """
    command = " ".join(pg_restore_args(verified, database=target.name, jobs=jobs, clean=True)[1:])
    if not confirm:
        return RestorePlan(
            action=f"Option A restore of {verified.path.name} into {target.name}",
            steps=(f"CREATE DATABASE {target.name} (only if it is missing)", f"pg_restore {command}"),
        )
    if not database_exists(target, target.name):
        create_database(target, target.name)
    try:
        seconds = run_pg_restore(
            pg_restore_args(verified, database=target.name, jobs=jobs, clean=True), target=target, timeout=timeout
        )
    except RestoreFailed as exc:
        raise RestoreFailed(
            f"{exc.message}. Option A restores in place, so {target.name} is now partly restored: "
            "re-run the restore (Option B is safer), then verify before restarting the application."
        ) from exc
    return RestoreResult(option="A", backup=verified.path.name, database=target.name, seconds=seconds, jobs=jobs)


def restore_to_new_database(
    verified: VerifiedBackup,
    *,
    target: PgTarget,
    jobs: int = 4,
    confirm: bool = False,
    new_name: str | None = None,
    timeout: float | None = None,
) -> RestoreResult | RestorePlan:
    """Option B, first half: restore into a new database; the live one is not touched."""
    new_name = new_name or f"{target.name}_restored_{timestamp_suffix()}"
    if not confirm:
        return RestorePlan(
            action=f"Option B restore of {verified.path.name}",
            steps=(
                f"CREATE DATABASE {new_name}",
                "pg_restore " + " ".join(pg_restore_args(verified, database=new_name, jobs=jobs, clean=False)[1:]),
                f"verify {new_name}, then swap it in as {target.name} (old one kept)",
            ),
        )
    if database_exists(target, new_name):
        raise RestoreFailed(f"database {new_name} already exists: drop it or choose another name")
    create_database(target, new_name)
    try:
        seconds = run_pg_restore(
            pg_restore_args(verified, database=new_name, jobs=jobs, clean=False), target=target, timeout=timeout
        )
    except BaseException as exc:
        cleanup = _drop_partial(target, new_name)
        message = exc.message if isinstance(exc, DrlibError) else f"restore interrupted ({type(exc).__name__})"
        raise RestoreFailed(f"{message}. The live database {target.name} was not touched. {cleanup}") from exc
    return RestoreResult(option="B", backup=verified.path.name, database=new_name, seconds=seconds, jobs=jobs)


def _drop_partial(target: PgTarget, name: str) -> str:
    try:
        drop_database(target, name)
        return f"The partial copy {name} was dropped."
    except Exception:
        return f"Drop the partial copy by hand: DROP DATABASE {name};"


def swap_databases(
    *, target: PgTarget, restored: str, confirm: bool = False, now: datetime | None = None
) -> SwapResult | RestorePlan:
    """Option B, second half: rename live → ``<name>_old_<ts>`` and restored → live."""
    old_name = f"{target.name}_old_{timestamp_suffix(now)}"
    live_exists = database_exists(target, target.name)
    steps = (
        [f"terminate sessions on {target.name}", f"ALTER DATABASE {target.name} RENAME TO {old_name}"]
        if live_exists
        else []
    )
    steps += [f"ALTER DATABASE {restored} RENAME TO {target.name}"]
    if not confirm:
        return RestorePlan(action=f"swap {restored} in as {target.name}", steps=tuple(steps))
    with target.maintenance.connect() as conn:
        if live_exists:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(target.name)))
            terminate_connections(conn, target.name)
        terminate_connections(conn, restored)
        try:
            with conn.transaction():
                if live_exists:
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(target.name), sql.Identifier(old_name)
                        )
                    )
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(restored), sql.Identifier(target.name)
                    )
                )
        except Exception as exc:
            if live_exists:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(target.name))
                )
            raise RestoreFailed(
                f"swapping {restored} in as {target.name} failed ({exc}); the live database was left under its own name"
            ) from exc
        if live_exists:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(old_name)))
    return SwapResult(database=target.name, restored_from=restored, old_database=old_name if live_exists else None)


def drop_old_database(*, target: PgTarget, name: str, confirm: bool = False) -> str | RestorePlan:
    """Drop a database kept by a swap; only with ``confirm=True`` and never the live one."""
    if name == target.name:
        raise ConfirmationRequired(f"refusing to drop the live database {name}")
    if not confirm:
        return RestorePlan(action=f"drop {name}", steps=(f"DROP DATABASE {name}",))
    drop_database(target, name)
    return f"dropped {name}"
