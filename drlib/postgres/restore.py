"""Restoring a verified backup: Option A (into the existing database) and Option B (into a
new database, verified, then swapped in by renaming; the old database is kept).

Option A cannot half-restore: the whole archive is read through before the first write, then one
transaction resets the database to an empty one and replays the dump (:mod:`drlib.postgres.reset`,
:mod:`drlib.postgres.replay`); it commits only when all of it succeeded, and rolls back otherwise.
Every failure message says what state the live database, any copy, and the undo are in.

Without ``confirm=True`` every function returns a :class:`RestorePlan` saying what it
*would* do and touches nothing.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from drlib.checks import CheckResult
from drlib.exceptions import BackupCorrupt, ConfirmationRequired, DrlibError, ParameterError, RestoreFailed
from drlib.plans import MAX_NAME_BYTES, RestorePlan, derived_name, timestamp_suffix
from drlib.postgres.connection import (
    PgTarget,
    create_database,
    database_exists,
    drop_database,
    rename_database,
    sql_errors,
    terminate_connections,
)
from drlib.postgres.globals import (
    DatabaseProperties,
    Role,
    apply_database_properties,
    backup_globals,
    create_missing_roles,
    database_properties_sql,
)
from drlib.postgres.integrity import BackgroundChecksum, VerifiedBackup, finish_checksum, read_whole_archive
from drlib.postgres.replay import end_sessions, psql_argv, replay_dump, restore_argv
from drlib.postgres.reset import (
    CannotReset,
    check_resettable,
    drop_empty_public_sql,
    lock_timeout_sql,
    option_a_prologue,
)
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
    #: Option A runs as one transaction (all or nothing) in one session, so with one job
    single_transaction: bool = False
    #: what the restored database could not be given like the original (e.g. a tablespace this server lacks)
    notes: tuple[str, ...] = ()
    #: checks made during the restore (the backup's whole-file checksum, when it was left to it)
    checks: tuple[CheckResult, ...] = ()


@dataclass(frozen=True)
class SwapResult:
    database: str
    restored_from: str
    old_database: str | None
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def undo(self) -> str:
        """The SQL that puts the old database back under the live name (run from another database)."""
        return undo_swap_command(self)


def pg_restore_args(
    verified: VerifiedBackup, *, database: str, jobs: int, clean: bool, single_transaction: bool = False
) -> list[str]:
    """The pg_restore command line; ``single_transaction`` forces one job (pg_restore refuses ``-j`` with it)."""
    args = ["--exit-on-error", "--no-password", "-d", database]
    if single_transaction:
        args += ["--single-transaction"]
    elif jobs > 1:
        args += ["-j", str(jobs)]
    if clean:
        args += ["--clean", "--if-exists"]
    return [pg_program("pg_restore"), *args, str(verified.path)]


#: how often a running pg_restore looks at its ``abort`` event
ABORT_POLL_SECONDS = 0.25


class Aborted(Exception):
    """The ``abort`` event of :func:`run_pg_restore` was set (the caller knows why)."""


def run_pg_restore(
    argv: list[str], *, target: PgTarget, timeout: float | None = None, abort: threading.Event | None = None
) -> float:
    """Run pg_restore to completion; on error, timeout, interrupt or ``abort`` being set kill it and its
    workers and wait until the server has ended their sessions (so their open transactions are rolled back)."""
    started = time.monotonic()
    env = target.tool_env()
    env["PGAPPNAME"] = f"drlib-restore-{secrets.token_hex(4)}"
    try:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise RestoreFailed(f"cannot run {argv[0]} ({type(exc).__name__}): check the PostgreSQL installation") from exc
    try:
        stderr = _wait(process, started=started, timeout=timeout, abort=abort)
    except BaseException as exc:
        kill_tree(process.pid, timeout=5)
        process.communicate()
        end_sessions(target, env["PGAPPNAME"])
        if isinstance(exc, Aborted):
            raise
        reason = (
            "timed out" if isinstance(exc, subprocess.TimeoutExpired) else f"was interrupted ({type(exc).__name__})"
        )
        raise RestoreFailed(f"pg_restore {reason}") from exc
    if process.returncode != 0:
        end_sessions(target, env["PGAPPNAME"])
        raise RestoreFailed(f"pg_restore failed (exit {process.returncode}): {redact(_last_lines(stderr))}")
    return time.monotonic() - started


def _wait(
    process: subprocess.Popen[str], *, started: float, timeout: float | None, abort: threading.Event | None
) -> str:
    """pg_restore's stderr once it exits; raise TimeoutExpired after ``timeout``, Aborted once ``abort`` is set."""
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        step = left if abort is None else ABORT_POLL_SECONDS if left is None else min(left, ABORT_POLL_SECONDS)
        try:
            return process.communicate(timeout=step)[1]
        except subprocess.TimeoutExpired:
            if abort is not None and abort.is_set():
                raise Aborted() from None
            if left is not None and left <= ABORT_POLL_SECONDS:
                raise


def create_roles(target: PgTarget, roles: list[Role]) -> list[str]:
    """Create the backup's roles that the server lacks (before pg_restore needs them as owners)."""
    if not roles:
        return []
    with (
        sql_errors(
            target,
            doing="creating the roles the backup uses",
            advice="create them by hand, or connect as a user with CREATEROLE",
        ),
        target.maintenance.connect() as conn,
        conn.transaction(),  # all of them or none: a failure never leaves some created
    ):
        return create_missing_roles(conn, roles)


def _check_jobs(jobs: int) -> None:
    """Refuse a job count pg_restore cannot use, before anything is touched."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_RESTORE_JOBS:
        raise ParameterError(
            f"jobs must be a whole number from 1 to {MAX_RESTORE_JOBS}, not {jobs!r}: give the number of parallel "
            "pg_restore jobs (4 suits most servers)"
        )


def _kept_roles(created: list[str]) -> str:
    """What a failed restore says about the roles it created before failing (they are the server's: kept)."""
    if not created:
        return ""
    return f"; the missing roles the backup uses were created before the failure and kept: {', '.join(created)}"


def _no_public(verified: VerifiedBackup) -> bool:
    """The backup's database had no ``public`` schema (its manifest lists the schemas, and not public)."""
    manifest = verified.manifest
    schemas = manifest.schema.get("schema") if manifest is not None and isinstance(manifest.schema, dict) else None
    return isinstance(schemas, dict) and "public" not in schemas


#: pg_restore -j above this opens more connections than a server usually allows and gains nothing
MAX_RESTORE_JOBS = 32


def _last_lines(text: str, lines: int = 15, limit: int = 3000) -> str:
    """The end of a tool's output: enough to say why, never megabytes in a message or a report."""
    kept = text.strip().splitlines()[-lines:]
    tail = "\n".join(kept)[-limit:]
    return tail if len(kept) == len(text.strip().splitlines()) else f"(last {len(kept)} lines) {tail}"


def restore_in_place(
    verified: VerifiedBackup,
    *,
    target: PgTarget,
    jobs: int = 4,
    confirm: bool = False,
    timeout: float | None = None,
    before_sql: str = "",
    after_sql: Callable[[str], str] | None = None,
) -> RestoreResult | RestorePlan:
    """Option A: one transaction that resets the live database to an empty one (as ``CREATE DATABASE …
    TEMPLATE template0`` makes it), replays the whole dump, and commits only if all of it succeeded.

    Before the first write the whole archive is read through (unless ``verified.deep``) and a database
    the reset cannot empty is refused (:class:`~drlib.postgres.reset.CannotReset`). Any failure, timeout
    or interrupt rolls back: the database is exactly as it was. A missing database is restored as
    ``<name>_restoring_<time>`` and renamed once complete. ``before_sql`` runs first in the transaction,
    ``after_sql(name)`` last (``name`` is the database's name during the transaction); neither may
    contain transaction control. ``jobs`` is ignored: one transaction is one session (``jobs`` is 1).
    """
    _check_jobs(jobs)
    roles, props = backup_globals(verified.path, verified.manifest)
    epilogue_sql = _epilogue_sql(after_sql, props, drop_public=_no_public(verified))
    if not confirm:
        plan = _option_a_plan(verified, target=target, before_sql=before_sql, after_sql=after_sql)
        if roles:
            first = f"create the roles the backup uses that are missing ({len(roles)} in the backup)"
            plan = RestorePlan(action=plan.action, steps=(first, *plan.steps))
        return plan
    finish_checksum(verified)  # Option A never writes before the whole file is proven
    if not verified.deep:
        read_whole_archive(verified.path)
    unchanged = f"nothing was changed: {target.name} is exactly as it was"
    try:
        existed = database_exists(target, target.name)
        live = check_resettable(target) if existed else None
        created = create_roles(target, roles)  # roles are the server's, not the database's: only ever added
    except CannotReset:
        raise
    except DrlibError as exc:
        raise RestoreFailed(f"Option A could not start ({exc.message}); {unchanged}") from exc
    if created:
        unchanged = f"{target.name} is exactly as it was{_kept_roles(created)}"
    if live is None:  # nothing to overwrite: restore under another name, so a cut-short run never leaves
        return _restore_missing(
            verified,
            target=target,
            timeout=timeout,
            before_sql=before_sql,
            epilogue_sql=epilogue_sql,
            props=props,
            created_roles=created,
        )
    try:
        seconds = replay_dump(
            verified.path,
            target=target,
            prologue=option_a_prologue(live, before_sql),
            after_sql=epilogue_sql(target.name),
            timeout=timeout,
        )
    except RestoreFailed as exc:
        state = f"It ran as one transaction, which was rolled back: {unchanged}"
        if LOCK_TIMEOUT_MARK in exc.message:
            raise RestoreFailed(
                f"another session holds a lock on {target.name}{_lock_holders(target)}: stop the application or "
                f"end that session, then retry. {state}."
            ) from exc
        raise RestoreFailed(f"{exc.message}. {state}. Fix the cause, or use Option B.") from exc
    return RestoreResult(
        option="A", backup=verified.path.name, database=target.name, seconds=seconds, jobs=1, single_transaction=True
    )


#: what PostgreSQL says when a statement gave up waiting for a lock (``lock_timeout``)
LOCK_TIMEOUT_MARK = "canceling statement due to lock timeout"


def _lock_holders(target: PgTarget) -> str:
    """The other sessions that hold locks in ``target``'s database, said for the failure message."""
    with contextlib.suppress(DrlibError, psycopg.Error), target.maintenance.connect() as conn:
        rows = conn.execute(
            "SELECT DISTINCT a.pid, coalesce(a.state, ''), a.application_name FROM pg_catalog.pg_locks l "
            "JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid JOIN pg_catalog.pg_database d ON d.oid = l.database "
            "WHERE d.datname = %s AND l.granted AND a.pid <> pg_catalog.pg_backend_pid() ORDER BY 1 LIMIT 10",
            (target.name,),
        ).fetchall()
        if rows:
            sessions = ", ".join(f"pid {pid} ({state}{', ' + app if app else ''})" for pid, state, app in rows)
            return f" (sessions holding locks there: {sessions}; SELECT pg_terminate_backend(pid) ends one)"
    return ""


def _epilogue_sql(
    after_sql: Callable[[str], str] | None, props: DatabaseProperties | None, *, drop_public: bool
) -> Callable[[str], str]:
    """What Option A runs after the dump, before COMMIT: the lock timeout again (the dump's SQL clears
    it), the ``public`` schema dropped for a backup without one, the backup's own database properties,
    then the caller's ``after_sql``."""
    fixed = lock_timeout_sql() + (drop_empty_public_sql() if drop_public else "")
    if props is not None:
        fixed += database_properties_sql(props)
    return lambda name: fixed + (after_sql(name) if after_sql else "")


def _option_a_plan(
    verified: VerifiedBackup, *, target: PgTarget, before_sql: str, after_sql: Callable[[str], str] | None
) -> RestorePlan:
    steps = [] if verified.deep else [f"read every data block of {verified.path.name} (pg_restore -f /dev/null)"]
    steps += [
        f"refuse, before any write, if {target.name} holds what the reset cannot remove (objects made inside "
        "system schemas, subscriptions; for a non-superuser, objects of other owners)",
        f"if {target.name} is missing: restore into a new database {derived_name(target.name, 'restoring_<time>')} "
        f"(TEMPLATE template0, with the backup's encoding, collation, locale provider and tablespace), renamed to "
        f"{target.name} once complete",
        "one transaction in one psql session: psql " + " ".join(psql_argv(target.name, Path("prologue.sql"))[1:]),
        "  BEGIN",
        *(["  the caller's before_sql"] if before_sql.strip() else []),
        f"  reset {target.name} to an empty database, as CREATE DATABASE ... TEMPLATE template0 makes it: drop "
        "event triggers, extensions (but plpgsql), publications, foreign data wrappers and servers, every "
        "schema (public recreated with the server's defaults), large objects, and the database's own casts, "
        "transforms, languages and access methods; default privileges back to the built-in ones; fail if "
        "anything is left",
        "  replay the dump as SQL: "
        + " ".join(["pg_restore", *restore_argv(verified.path)[1:]])
        + " (instead of pg_restore --clean --if-exists, which cannot drop partitioned tables and leaves "
        "behind what the dump does not name)",
        "  give the database the backup's owner, privileges, settings and comment (and drop the public schema "
        "the reset recreated when the backup's database had none)"
        + (", then the caller's after_sql" if after_sql else ""),
        "  COMMIT, only once pg_restore has exited cleanly: any failure, timeout or interrupt rolls everything "
        "back and leaves the database as it was",
        "one transaction, so one job (-j not used)",
    ]
    return RestorePlan(action=f"Option A restore of {verified.path.name} into {target.name}", steps=tuple(steps))


def _restore_missing(
    verified: VerifiedBackup,
    *,
    target: PgTarget,
    timeout: float | None,
    before_sql: str,
    epilogue_sql: Callable[[str], str],
    props: DatabaseProperties | None,
    created_roles: list[str],
) -> RestoreResult:
    """Option A when the live database is missing: restore into ``<name>_restoring_<time>`` (made like the
    backup's database) and rename it once complete. Cut short, the live name stays missing, as it was; a
    failure drops the copy again."""
    building = derived_name(target.name, f"restoring_{timestamp_suffix()}")
    try:
        notes = create_database(target, building, like=props)
    except DrlibError as exc:
        raise RestoreFailed(
            f"{exc.message}. Nothing was restored: {target.name} did not exist before and is still missing"
            f"{_kept_roles(created_roles)}."
        ) from exc
    try:
        copy = target.with_database(building)
        seconds = replay_dump(
            verified.path,
            target=copy,
            prologue=option_a_prologue(check_resettable(copy), before_sql),
            after_sql=epilogue_sql(building),
            timeout=timeout,
        )
    except BaseException as exc:
        dropped = _drop_created(target, building) + _kept_roles(created_roles)
        if isinstance(exc, DrlibError):
            raise RestoreFailed(f"{exc.message}. {dropped}. Fix the cause, or use Option B.") from exc
        raise
    rename_database(target, building, target.name)
    return RestoreResult(
        option="A",
        backup=verified.path.name,
        database=target.name,
        seconds=seconds,
        jobs=1,
        single_transaction=True,
        notes=tuple(notes),
    )


def _drop_created(target: PgTarget, name: str) -> str:
    try:
        drop_database(target, name)
    except DrlibError:
        return (
            f"nothing was restored; {target.name} did not exist before and is still missing; drop the partial "
            f"copy with DROP DATABASE {name};"
        )
    return f"nothing was changed: {target.name} did not exist before, and the copy {name} was dropped again"


def restore_to_new_database(
    verified: VerifiedBackup,
    *,
    target: PgTarget,
    jobs: int = 4,
    confirm: bool = False,
    new_name: str | None = None,
    timeout: float | None = None,
    checksum: BackgroundChecksum | None = None,
) -> RestoreResult | RestorePlan:
    """Option B, first half: restore into a new database (``<name>_restored_<time>``, made like the
    backup's database: encoding, collation, locale provider, tablespace); the live one is not touched.

    When the backup's whole-file checksum is still pending (``verified.checksum_pending``) it is read
    beside pg_restore (``checksum``, if already started): a mismatch stops the restore and drops the copy."""
    _check_jobs(jobs)
    new_name = new_name or restored_name(target.name)
    if len(new_name.encode()) > MAX_NAME_BYTES:
        raise ParameterError(
            f"the new database name {new_name} is longer than {MAX_NAME_BYTES} bytes, and PostgreSQL would cut it: "
            "choose a shorter one (or leave it out: drlib picks <name>_restored_<time>)"
        )
    argv = pg_restore_args(verified, database=new_name, jobs=jobs, clean=False)
    roles, props = backup_globals(verified.path, verified.manifest)
    drop_public = _no_public(verified)
    if not confirm:
        return RestorePlan(
            action=f"Option B restore of {verified.path.name}",
            steps=(
                *([f"create the roles the backup uses that are missing ({len(roles)} in the backup)"] if roles else []),
                f"CREATE DATABASE {new_name} TEMPLATE template0"
                + (" with the backup's encoding, collation, locale provider and tablespace" if props else ""),
                "pg_restore " + " ".join(argv[1:]),
                *([f"drop the public schema of {new_name} unless the dump put objects in it"] if drop_public else []),
                *(
                    [f"give {new_name} the backup's owner ({props.owner}), privileges, settings and comment"]
                    if props
                    else []
                ),
                f"verify {new_name}, then swap it in as {target.name} (old one kept)",
            ),
        )
    untouched = f"The live database {target.name} was not touched"
    try:
        taken = database_exists(target, new_name)
    except DrlibError as exc:
        raise RestoreFailed(f"Option B could not start ({exc.message}). {untouched}; nothing was created.") from exc
    if taken:
        raise RestoreFailed(
            f"database {new_name} already exists: drop it (DROP DATABASE {new_name};) or choose another "
            f"name. {untouched}; nothing was created."
        )
    try:
        created = create_roles(target, roles)
    except DrlibError as exc:
        raise RestoreFailed(f"{exc.message}. {untouched}; nothing was created.") from exc
    try:
        notes = create_database(target, new_name, like=props)
    except DrlibError as exc:
        raise RestoreFailed(f"{exc.message}. {untouched}; no database was created{_kept_roles(created)}.") from exc
    except BaseException as exc:  # interrupted: the server may have made the copy before the signal landed
        cleanup = _drop_partial(target, new_name)
        raise RestoreFailed(
            f"restore interrupted ({type(exc).__name__}). {untouched}{_kept_roles(created)}. {cleanup}"
        ) from exc
    try:
        if checksum is None and verified.checksum_pending:
            checksum = BackgroundChecksum(verified)
        seconds = run_pg_restore(argv, target=target, timeout=timeout, abort=checksum.failed if checksum else None)
        copy = target.with_database(new_name)
        with sql_errors(copy, doing=f"giving {new_name} the backup's database properties"), copy.connect() as conn:
            if drop_public:  # before the owner changes: the restoring user owns the new database until then
                conn.execute(drop_empty_public_sql().encode())
            if props is not None:
                apply_database_properties(conn, props)
        checked = checksum.result() if checksum else None
    except BaseException as exc:
        if checksum is not None and isinstance(exc, Aborted | DrlibError):
            exc = checksum.error() or exc  # a damaged file is why pg_restore failed, or was stopped
        cleanup = _drop_partial(target, new_name)
        message = exc.message if isinstance(exc, DrlibError) else f"restore interrupted ({type(exc).__name__})"
        roles_kept = _kept_roles(created)
        failure = BackupCorrupt if isinstance(exc, BackupCorrupt) else RestoreFailed
        raise failure(f"{message.rstrip('.')}. {untouched}{roles_kept}. {cleanup}") from exc
    return RestoreResult(
        option="B",
        backup=verified.path.name,
        database=new_name,
        seconds=seconds,
        jobs=jobs,
        notes=tuple(notes),
        checks=(checked,) if checked else (),
    )


def restored_name(live: str, now: datetime | None = None) -> str:
    """``<live>_restored_<time>``: the database Option B restores into (within PostgreSQL's 63 bytes)."""
    return derived_name(live, f"restored_{timestamp_suffix(now)}")


def _drop_partial(target: PgTarget, name: str) -> str:
    try:
        drop_database(target, name)
        return f"The partial copy {name} was dropped."
    except Exception:
        return f"The partial copy {name} is still there: drop it by hand with DROP DATABASE {name};"


def _rename(conn: psycopg.Connection, old: str, new: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _allow_connections(conn: psycopg.Connection, name: str, allow: bool) -> None:
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")
        )
    )


def swap_databases(
    *, target: PgTarget, restored: str, confirm: bool = False, now: datetime | None = None
) -> SwapResult | RestorePlan:
    """Option B, second half: rename live → ``<name>_old_<ts>`` and restored → live.

    Both renames run in one transaction. Every failure says where the live database and the
    restored copy are, and the command that undoes what was done."""
    old_name = derived_name(target.name, f"old_{timestamp_suffix(now)}")
    try:
        live_exists = database_exists(target, target.name)
        for attempt in range(1, 100):  # two swaps in one second must not collide
            if not live_exists or not database_exists(target, old_name):
                break
            old_name = derived_name(target.name, f"old_{timestamp_suffix(now)}_{attempt}")
    except DrlibError as exc:
        raise RestoreFailed(
            f"cannot start the swap ({exc.message}). Nothing was renamed: the live database {target.name} and "
            f"the restored copy {restored} are as they were."
        ) from exc
    steps = (
        [f"terminate sessions on {target.name}", f"ALTER DATABASE {target.name} RENAME TO {old_name}"]
        if live_exists
        else []
    )
    steps += [f"ALTER DATABASE {restored} RENAME TO {target.name}"]
    if not confirm:
        return RestorePlan(action=f"swap {restored} in as {target.name}", steps=tuple(steps))
    try:
        conn = target.maintenance.connect()
    except DrlibError as exc:
        raise RestoreFailed(
            f"cannot start the swap ({exc.message}). Nothing was renamed: the live database {target.name} and "
            f"the restored copy {restored} are as they were."
        ) from exc
    with conn:
        _swap(conn, target=target, restored=restored, old_name=old_name, live_exists=live_exists)
    return SwapResult(database=target.name, restored_from=restored, old_database=old_name if live_exists else None)


def _swap(conn: psycopg.Connection, *, target: PgTarget, restored: str, old_name: str, live_exists: bool) -> None:
    live = target.name
    reopen = f"ALTER DATABASE {live} WITH ALLOW_CONNECTIONS true;"
    try:
        if live_exists:
            _allow_connections(conn, live, False)
            terminate_connections(conn, live)
        terminate_connections(conn, restored)
        with conn.transaction():
            if live_exists:
                _rename(conn, live, old_name)
            _rename(conn, restored, live)
    except psycopg.Error as exc:
        reason = redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        state = f"Nothing was renamed: the live database is still {live} and the restored copy is still {restored}"
        if live_exists:
            try:
                _allow_connections(conn, live, True)
                state += f"; {live} accepts connections again"
            except psycopg.Error:
                state += f", but {live} still refuses connections: run {reopen}"
        raise RestoreFailed(f"swapping {restored} in as {live} failed ({reason}). {state}.") from exc
    if live_exists:
        try:
            _allow_connections(conn, old_name, True)
        except psycopg.Error as exc:
            raise RestoreFailed(
                f"the swap is done ({restored} is now {live}; the old database is {old_name}), but {old_name} "
                f"still refuses connections: run ALTER DATABASE {old_name} WITH ALLOW_CONNECTIONS true; "
                f"To undo the swap: ALTER DATABASE {live} RENAME TO {restored}; "
                f"ALTER DATABASE {old_name} RENAME TO {live};"
            ) from exc


def undo_swap_command(swap: SwapResult) -> str:
    """The SQL that puts the old database back under the live name (run from another database)."""
    if swap.old_database is None:
        return f"ALTER DATABASE {swap.database} RENAME TO {swap.restored_from};"
    return (
        f"ALTER DATABASE {swap.database} RENAME TO {swap.restored_from}; "
        f"ALTER DATABASE {swap.old_database} RENAME TO {swap.database};"
    )


def drop_old_database(*, target: PgTarget, name: str, confirm: bool = False) -> str | RestorePlan:
    """Drop a database kept by a swap; only with ``confirm=True`` and never the live one."""
    if name == target.name:
        raise ConfirmationRequired(f"refusing to drop the live database {name}")
    if not confirm:
        return RestorePlan(action=f"drop {name}", steps=(f"DROP DATABASE {name}",))
    drop_database(target, name)
    return f"dropped {name}"
