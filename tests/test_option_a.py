"""Option A on a database that is not Content Crew: partitions, triggers, extensions, large objects,
roles of its own. The oracle is ``pg_dump --schema-only`` plus every row and large object, compared
before and after; every failure and interruption must leave the live database exactly as it was."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from psycopg import sql

from drlib.config import Profile
from drlib.exceptions import RestoreFailed
from drlib.plans import RestorePlan
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget, create_database, database_exists, drop_database
from drlib.postgres.globals import ROLES_SUFFIX
from drlib.postgres.integrity import VerifiedBackup, verify_backup
from drlib.postgres.replay import (
    CHUNK,
    IN_TRANSACTION,
    TAIL_KEEP,
    ScriptShapeError,
    _cut,
    without_closing_commit,
    without_opening_begin,
)
from drlib.postgres.reset import CannotReset, check_resettable, guard_sql, option_a_prologue
from drlib.postgres.restore import RestoreResult, restore_in_place
from drlib.postgres.tools import pg_program
from tests.richdb import RichDatabase, create_rich_database, drop_rich_database, schema_dump, table_rows

REPO = Path(__file__).resolve().parent.parent

Snapshot = tuple[str, dict[str, list[str]], list[tuple[str, str, str]]]


def snapshot(target: PgTarget) -> Snapshot:
    """Every object (pg_dump --schema-only), every row, every large object (owner and content)."""
    schema = schema_dump(target)
    with target.connect() as conn:
        blobs = conn.execute(
            "SELECT oid::text, pg_get_userbyid(lomowner)::text, encode(lo_get(oid), 'escape') "
            "FROM pg_largeobject_metadata ORDER BY oid"
        ).fetchall()
    return schema, table_rows(target), [tuple(b) for b in blobs]


def run(target: PgTarget, *statements: str) -> None:
    with target.connect() as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def restore_sessions(target: PgTarget) -> int:
    with target.maintenance.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'drlib-restore-%'"
        ).fetchone()
    return int(row[0]) if row else -1


def tools_running(*words: str) -> list[str]:
    """psql / pg_restore processes on this machine whose command line names one of ``words``."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] in ("psql", "pg_restore") and any(word in cmdline for word in words):
            found.append(cmdline)
    return found


def wait_until(condition: Callable[[], bool], *, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def restore_waiting(target: PgTarget) -> Callable[[], bool]:
    """Whether the restore's session is waiting for a lock (so it is midway)."""

    def waiting() -> bool:
        with target.maintenance.connect() as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'drlib-restore-%%' "
                    "AND wait_event_type IN ('Lock', 'LWLock') AND datname = %s",
                    (target.name,),
                ).fetchone()
                is not None
            )

    return waiting


def locks_held_by_restore(target: PgTarget) -> int:
    with target.maintenance.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.application_name LIKE 'drlib-restore-%' AND l.granted AND l.locktype = 'relation' "
            "AND l.mode = 'AccessExclusiveLock'"
        ).fetchone()
    return int(row[0]) if row else 0


ADVISORY_KEY = 424242
#: after_sql that waits for an advisory lock the test holds: the restore stops after the whole dump, before COMMIT
WAIT_AT_THE_END = f"SELECT pg_catalog.pg_advisory_xact_lock({ADVISORY_KEY});"


class AdvisoryLock:
    """Holds the advisory lock WAIT_AT_THE_END waits for, in a session of its own."""

    def __init__(self, target: PgTarget) -> None:
        self.conn = target.connect()
        self.conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.close()


@pytest.fixture
def rich(profile: Profile) -> Iterator[RichDatabase]:
    made = create_rich_database(PgTarget.from_profile(profile))
    run(made.target, "SELECT lo_from_bytea(0, 'a large object kept by the dump')")
    try:
        yield made
    finally:
        with made.target.maintenance.connect() as conn:
            copies = [
                r[0]
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{made.target.name}_%",)
                ).fetchall()
            ]
        drop_rich_database(made, also=tuple(copies))


def take_backup(rich: RichDatabase, folder: Path) -> VerifiedBackup:
    return verify_backup(backup_database(target=rich.target, backup_dir=folder, prefix=rich.target.name))


def damage(target: PgTarget) -> None:
    """Rows, tables, partitions, functions, large objects, and objects a dump never names."""
    run(
        target,
        "DELETE FROM public.track WHERE track_id % 3 = 0",
        "UPDATE sales.customer SET region = region",  # same rows, new row versions
        "DROP TABLE sales.note",
        "CREATE TABLE public.added (x int PRIMARY KEY)",
        "ALTER TABLE sales.invoice DETACH PARTITION sales.invoice_2026",
        "CREATE OR REPLACE FUNCTION public.album_count(int) RETURNS bigint LANGUAGE sql STABLE "
        "AS $$ SELECT 42::bigint $$",
        "SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata",
        "SELECT lo_from_bytea(0, 'written after the backup')",
        "CREATE SCHEMA added",
        "CREATE TABLE added.t (x int) PARTITION BY LIST (x)",
        "CREATE TABLE added.t1 PARTITION OF added.t FOR VALUES IN (1)",
        "CREATE EXTENSION hstore",
        "CREATE FUNCTION added.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$",
        "CREATE EVENT TRIGGER added_on_ddl ON ddl_command_start EXECUTE FUNCTION added.on_ddl()",
        "CREATE PUBLICATION added_publication FOR TABLE public.track",
        "CREATE FOREIGN DATA WRAPPER added_fdw",
        "CREATE SERVER added_server FOREIGN DATA WRAPPER added_fdw",
        "CREATE USER MAPPING FOR PUBLIC SERVER added_server",
        "CREATE CAST (date AS integer) WITH INOUT",
        "CREATE LANGUAGE added_language HANDLER plpgsql_call_handler",
        "CREATE ACCESS METHOD added_heap TYPE TABLE HANDLER heap_tableam_handler",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
        "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA sales GRANT SELECT ON TABLES TO PUBLIC",
        "CREATE TEMPORARY TABLE scratch (x int)",  # its pg_temp_N schema stays when the session ends
        "ALTER SCHEMA public OWNER TO CURRENT_USER",
        "REVOKE USAGE ON SCHEMA public FROM PUBLIC",
    )


# -- what a restore does ------------------------------------------------------------------------------


def test_option_a_brings_a_damaged_partitioned_database_back_to_the_backup(rich: RichDatabase, tmp_path: Path) -> None:
    original = snapshot(rich.target)
    verified = take_backup(rich, tmp_path)
    damage(rich.target)
    assert snapshot(rich.target) != original
    other_session = rich.target.connect()  # another session's temporary table, open during the restore
    other_session.execute("CREATE TEMPORARY TABLE other_scratch (x int)")
    try:
        result = restore_in_place(verified, target=rich.target, confirm=True)
    finally:
        other_session.close()
    assert isinstance(result, RestoreResult) and result.option == "A" and result.single_transaction
    assert snapshot(rich.target) == original


def test_option_a_twice_in_a_row_works(rich: RichDatabase, tmp_path: Path) -> None:
    original = snapshot(rich.target)
    verified = take_backup(rich, tmp_path)
    for _ in range(2):
        damage(rich.target)
        restore_in_place(verified, target=rich.target, confirm=True)
        assert snapshot(rich.target) == original


def test_a_dry_run_shows_the_plan_and_changes_nothing(rich: RichDatabase, tmp_path: Path) -> None:
    verified = take_backup(rich, tmp_path)
    damage(rich.target)
    before = snapshot(rich.target)
    plan = restore_in_place(verified, target=rich.target, before_sql="SELECT 1", after_sql=lambda name: "SELECT 2")
    assert isinstance(plan, RestorePlan)
    text = str(plan)
    for expected in (
        "reset",
        "partitioned",
        "pg_restore --single-transaction -f -",
        "before_sql",
        "after_sql",
        "COMMIT",
    ):
        assert expected in text
    assert snapshot(rich.target) == before


def test_before_sql_runs_first_and_after_sql_last_in_the_same_transaction(rich: RichDatabase, tmp_path: Path) -> None:
    verified = take_backup(rich, tmp_path)
    role = f"drlib_hook_{secrets.token_hex(3)}"
    names: list[str] = []

    def after_sql(name: str) -> str:
        names.append(name)
        return (
            f"COMMENT ON DATABASE {sql.Identifier(name).as_string()} IS 'restored by Option A';"
            f"GRANT SELECT ON sales.customer TO {role};"  # the role before_sql made, the table the dump made
        )

    try:
        restore_in_place(
            verified, target=rich.target, confirm=True, before_sql=f"CREATE ROLE {role};", after_sql=after_sql
        )
        assert names == [rich.target.name]
        with rich.target.connect() as conn:
            comment = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            granted = conn.execute("SELECT has_table_privilege(%s, 'sales.customer', 'SELECT')", (role,)).fetchone()
        assert comment == ("restored by Option A",) and granted == (True,)
    finally:
        with rich.target.connect() as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(f"DROP OWNED BY {role}")  # type: ignore[arg-type]
                conn.execute(f"DROP ROLE {role}")  # type: ignore[arg-type]


# -- failures and interruptions leave the database as it was ------------------------------------------------


def test_a_failing_after_sql_rolls_back_the_whole_restore(rich: RichDatabase, tmp_path: Path) -> None:
    verified = take_backup(rich, tmp_path)
    damage(rich.target)
    before = snapshot(rich.target)
    role = f"drlib_hook_{secrets.token_hex(3)}"
    with pytest.raises(RestoreFailed, match="nothing was changed") as info:
        restore_in_place(
            verified,
            target=rich.target,
            confirm=True,
            before_sql=f"CREATE ROLE {role};",
            after_sql=lambda name: "SELECT 1 / 0;",
        )
    assert "division by zero" in str(info.value) and "rolled back" in str(info.value)
    assert snapshot(rich.target) == before
    with rich.target.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None
    assert restore_sessions(rich.target) == 0


def test_a_dump_that_needs_a_dropped_role_fails_and_leaves_the_database_as_it_was(
    rich: RichDatabase, tmp_path: Path
) -> None:
    verified = take_backup(rich, tmp_path)
    damage(rich.target)
    writer = sql.Identifier(rich.writer).as_string()
    run(rich.target, f"DROP OWNED BY {writer}", f"DROP ROLE {writer}")
    # without its roles file the backup cannot bring the role back (with it, it would: test_fingerprints)
    verified.path.with_name(verified.path.name + ROLES_SUFFIX).unlink()
    before = snapshot(rich.target)
    with pytest.raises(RestoreFailed, match="nothing was changed") as info:
        restore_in_place(verified, target=rich.target, confirm=True)
    assert f'role "{rich.writer}" does not exist' in str(info.value)
    assert snapshot(rich.target) == before
    assert restore_sessions(rich.target) == 0


def test_a_timeout_during_the_reset_leaves_the_database_as_it_was(rich: RichDatabase, tmp_path: Path) -> None:
    verified = take_backup(rich, tmp_path)
    damage(rich.target)
    before = snapshot(rich.target)
    blocker = rich.target.connect(autocommit=False)  # public is dropped last: by then sales is gone
    blocker.execute("LOCK TABLE public.track IN ACCESS SHARE MODE")
    held: list[int] = []
    watcher = threading.Thread(
        target=lambda: (wait_until(restore_waiting(rich.target)), held.append(locks_held_by_restore(rich.target)))
    )
    watcher.start()
    try:
        with pytest.raises(RestoreFailed, match="timed out") as info:
            restore_in_place(verified, target=rich.target, confirm=True, timeout=4)
    finally:
        watcher.join()
        blocker.close()
    assert held and held[0] >= 5, held  # midway: the reset had already taken (dropped) other tables
    assert "nothing was changed" in str(info.value)
    assert snapshot(rich.target) == before
    assert restore_sessions(rich.target) == 0 and not tools_running(rich.target.name, str(verified.path))


def test_a_timeout_after_the_whole_dump_before_commit_leaves_the_database_as_it_was(
    rich: RichDatabase, tmp_path: Path
) -> None:
    verified = take_backup(rich, tmp_path)
    damage(rich.target)
    before = snapshot(rich.target)
    lock = AdvisoryLock(rich.target)
    try:
        with pytest.raises(RestoreFailed, match="timed out"):
            restore_in_place(verified, target=rich.target, confirm=True, timeout=3, after_sql=lambda n: WAIT_AT_THE_END)
    finally:
        lock.release()
    assert snapshot(rich.target) == before
    assert restore_sessions(rich.target) == 0 and not tools_running(rich.target.name, str(verified.path))


RESTORE_SCRIPT = """
import sys
from pathlib import Path
from drlib.config import load_profile
from drlib.exceptions import RestoreFailed
from drlib.postgres.backup import Backup
from drlib.postgres.connection import PgTarget
from drlib.postgres.integrity import verify_backup
from drlib.postgres.restore import restore_in_place

target = PgTarget.from_profile(load_profile("sandbox"), database=sys.argv[1])
verified = verify_backup(Backup(path=Path(sys.argv[2]), created_at=None, manifest=None), deep=True)
print("restoring", flush=True)
try:
    restore_in_place(verified, target=target, confirm=True, after_sql=lambda name: sys.argv[3])
except RestoreFailed as exc:
    print(f"error: {exc}", flush=True)
    sys.exit(1)
print("restored", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_to_the_process_running_option_a_leaves_the_database_as_it_was(
    rich: RichDatabase, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGINT is handled (the restore stops psql and pg_restore and says so); SIGTERM and SIGKILL end the
    process at once: psql's input then ends without a COMMIT, and the server rolls back all the same."""
    verified = take_backup(rich, tmp_path)
    damage(rich.target)
    before = snapshot(rich.target)
    lock = AdvisoryLock(rich.target)
    process = subprocess.Popen(
        [sys.executable, "-c", RESTORE_SCRIPT, rich.target.name, str(verified.path), WAIT_AT_THE_END],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(restore_waiting(rich.target), what="the restore to wait before its COMMIT")
        os.kill(process.pid, sig)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        lock.release()
    if sig == signal.SIGINT:
        assert process.returncode == 1 and "was interrupted (KeyboardInterrupt)" in output, output
        assert "nothing was changed" in output
    else:
        assert process.returncode == -sig
    wait_until(lambda: restore_sessions(rich.target) == 0, what="the restore's session to end")
    wait_until(lambda: not tools_running(rich.target.name, str(verified.path)), what="psql and pg_restore to exit")
    assert snapshot(rich.target) == before


def is_restore_of(process: psutil.Process, dump: Path) -> bool:
    """A pg_restore reading ``dump`` (other children, e.g. the sandbox's servers, may exit meanwhile)."""
    try:
        return process.name() == "pg_restore" and str(dump) in process.cmdline()
    except psutil.Error:
        return False


def test_a_pg_restore_that_dies_midway_commits_nothing(rich: RichDatabase, tmp_path: Path) -> None:
    """psql --single-transaction would commit whatever it had read when its input ends; Option A does not."""
    run(rich.target, "CREATE TABLE public.bulk AS SELECT g, md5(g::text) AS h FROM generate_series(1, 300000) g")
    verified = take_backup(rich, tmp_path)  # megabytes of SQL: pg_restore is still writing when psql waits
    damage(rich.target)
    before = snapshot(rich.target)
    blocker = rich.target.connect(autocommit=False)
    blocker.execute("LOCK TABLE public.track IN ACCESS SHARE MODE")
    errors: list[BaseException] = []

    def restore() -> None:
        try:
            restore_in_place(verified, target=rich.target, confirm=True)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=restore)
    worker.start()
    try:
        wait_until(restore_waiting(rich.target), what="the restore to wait for the lock")
        pg_restores = [p for p in psutil.Process().children(recursive=True) if is_restore_of(p, verified.path)]
        assert pg_restores, "pg_restore had already finished: the dump is too small for this test"
        for process in pg_restores:
            process.kill()
    finally:
        blocker.close()
        worker.join(timeout=60)
    assert len(errors) == 1 and isinstance(errors[0], RestoreFailed), errors
    assert "pg_restore failed" in str(errors[0]) and "nothing was changed" in str(errors[0])
    assert snapshot(rich.target) == before
    assert restore_sessions(rich.target) == 0


# -- a missing live database ----------------------------------------------------------------------------


def test_a_missing_partitioned_database_is_restored_under_another_name_then_renamed(
    rich: RichDatabase, tmp_path: Path
) -> None:
    original = snapshot(rich.target)
    verified = take_backup(rich, tmp_path)
    drop_database(rich.target, rich.target.name)
    names: list[str] = []

    def after_sql(name: str) -> str:
        names.append(name)
        return ""

    result = restore_in_place(verified, target=rich.target, confirm=True, after_sql=after_sql)
    assert isinstance(result, RestoreResult) and result.database == rich.target.name
    assert len(names) == 1 and names[0].startswith(f"{rich.target.name}_restoring_")
    assert not database_exists(rich.target, names[0])
    assert snapshot(rich.target) == original


def test_a_failing_restore_into_a_missing_database_drops_its_copy(rich: RichDatabase, tmp_path: Path) -> None:
    verified = take_backup(rich, tmp_path)
    drop_database(rich.target, rich.target.name)
    with pytest.raises(RestoreFailed, match="dropped again"):
        restore_in_place(verified, target=rich.target, confirm=True, after_sql=lambda name: "SELECT 1 / 0;")
    with rich.target.maintenance.connect() as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{rich.target.name}%",)
        ).fetchall()
    assert left == []


# -- refused before any write -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "undo", "named"),
    [
        (
            "CREATE FUNCTION pg_catalog.drlib_stray() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "",
            "function pg_catalog.drlib_stray() was created inside a system schema",
        ),
        (
            "CREATE SUBSCRIPTION drlib_sub CONNECTION 'dbname=none' PUBLICATION p "
            "WITH (connect = false, enabled = false, create_slot = false, slot_name = NONE)",
            "DROP SUBSCRIPTION drlib_sub",
            "subscription drlib_sub",
        ),
    ],
    ids=["object-in-pg_catalog", "subscription"],
)
def test_what_the_reset_cannot_remove_is_refused_before_any_write(
    rich: RichDatabase, tmp_path: Path, setup: str, undo: str, named: str
) -> None:
    verified = take_backup(rich, tmp_path)
    damage(rich.target)
    run(rich.target, setup)
    try:
        before = snapshot(rich.target)
        with pytest.raises(CannotReset, match="Use Option B") as info:
            restore_in_place(verified, target=rich.target, confirm=True)
        assert named in str(info.value) and "Nothing was changed" in str(info.value)
        assert info.value.code == "restore-refused"
        assert snapshot(rich.target) == before
    finally:
        if undo:
            run(rich.target, undo)


@pytest.fixture
def owner_db(profile: Profile) -> Iterator[PgTarget]:
    """A database owned by a role that is not a superuser, with a partitioned table of its own."""
    server = PgTarget.from_profile(profile)
    token = secrets.token_hex(3)
    role, password, name = f"drlib_owner_{token}", secrets.token_hex(12), f"owned_{token}"
    run(server.maintenance, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    create_database(server, name)
    run(server.maintenance, f"ALTER DATABASE {name} OWNER TO {role}")
    target = PgTarget(settings=replace(server.settings, user=role, name=name), password=password)
    run(
        target,
        "CREATE TABLE public.event (id int, at date) PARTITION BY RANGE (at)",
        "CREATE TABLE public.event_2026 PARTITION OF public.event FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        "INSERT INTO public.event SELECT g, date '2026-01-01' + g FROM generate_series(1, 100) g",
        "SELECT lo_from_bytea(0, 'owned')",
    )
    try:
        yield target
    finally:
        drop_database(server, name)
        run(server.maintenance, f"DROP ROLE {role}")


def test_a_database_owner_that_is_not_a_superuser_can_use_option_a(owner_db: PgTarget, tmp_path: Path) -> None:
    original = snapshot(owner_db)
    verified = verify_backup(backup_database(target=owner_db, backup_dir=tmp_path, prefix=owner_db.name))
    run(
        owner_db,
        "DELETE FROM public.event WHERE id < 50",
        "ALTER TABLE public.event DETACH PARTITION public.event_2026",
    )
    restore_in_place(verified, target=owner_db, confirm=True)
    assert snapshot(owner_db) == original


def test_for_a_non_superuser_objects_of_other_owners_are_refused_before_any_write(
    owner_db: PgTarget, profile: Profile, tmp_path: Path
) -> None:
    verified = verify_backup(backup_database(target=owner_db, backup_dir=tmp_path, prefix=owner_db.name))
    as_superuser = PgTarget.from_profile(profile, database=owner_db.name)
    run(as_superuser, "CREATE SCHEMA not_theirs", "SELECT lo_from_bytea(0, 'not theirs either')")
    before = snapshot(as_superuser)  # the owner may not read the other large object
    with pytest.raises(CannotReset, match="schema not_theirs is owned by") as info:
        restore_in_place(verified, target=owner_db, confirm=True)
    assert "large object" in str(info.value) and "Use Option B" in str(info.value)
    assert snapshot(as_superuser) == before


# -- the reset and the guard on their own -----------------------------------------------------------------


def psql(target: PgTarget, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pg_program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target.name, "-f", "-"],
        input=script,
        env=target.tool_env(),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def fresh(profile: Profile) -> Iterator[PgTarget]:
    server = PgTarget.from_profile(profile)
    name = f"fresh_{secrets.token_hex(3)}"
    create_database(server, name)
    yield server.with_database(name)
    drop_database(server, name)


def test_the_reset_turns_a_rich_database_into_a_fresh_one(rich: RichDatabase, fresh: PgTarget) -> None:
    damage(rich.target)
    done = psql(rich.target, option_a_prologue(check_resettable(rich.target), "") + "COMMIT;\n")
    assert done.returncode == 0, done.stderr
    assert snapshot(rich.target) == snapshot(fresh)
    with rich.target.connect() as conn, fresh.connect() as other:
        query = (
            "SELECT nspowner::regrole::text, nspacl::text, obj_description(oid, 'pg_namespace') "
            "FROM pg_namespace WHERE nspname = 'public'"
        )
        assert conn.execute(query).fetchone() == other.execute(query).fetchone()


def test_the_guard_passes_on_a_fresh_database_and_fails_on_anything_left(fresh: PgTarget) -> None:
    assert psql(fresh, guard_sql()).returncode == 0
    run(fresh, "CREATE SCHEMA forgotten", "CREATE TABLE public.forgotten (x int)")
    done = psql(fresh, guard_sql())
    assert done.returncode == 3
    assert "could not reset the database" in done.stderr and "schema forgotten" in done.stderr
    assert "table" in done.stderr


def test_a_value_longer_than_the_relays_buffers_is_replayed_intact(fresh: PgTarget, tmp_path: Path) -> None:
    run(fresh, "CREATE TABLE public.big AS SELECT repeat(md5('x'), 400000) || 'COMMIT;' AS v")  # one 12.8 MB line
    original = snapshot(fresh)
    verified = verify_backup(backup_database(target=fresh, backup_dir=tmp_path, prefix=fresh.name))
    run(fresh, "DELETE FROM public.big")
    restore_in_place(verified, target=fresh, confirm=True)
    assert snapshot(fresh) == original


# -- the shape of pg_restore's SQL (no server) --------------------------------------------------------------


HEAD = b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n-- Dumped from 15\n\nBEGIN;\n\nSET x = 1;\n"
TAIL = (
    b"COPY t (x) FROM stdin;\nCOMMIT;\n\\.\n\n\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n"
    b"\\unrestrict abc\n\n"
)


def test_the_opening_begin_becomes_a_check_that_the_transaction_is_open() -> None:
    assert without_opening_begin(HEAD) == HEAD.replace(b"BEGIN;\n", IN_TRANSACTION)
    assert without_opening_begin(HEAD[:40]) is None  # not there yet: read on
    with pytest.raises(ScriptShapeError):
        without_opening_begin(b"--\nSET x = 1;\nBEGIN;\n")


def test_the_relay_holds_back_whole_lines_and_passes_one_very_long_line_on() -> None:
    lines = b"x" * 100 + b"\n" + b"y" * (TAIL_KEEP + 10) + b"\n"
    assert _cut(lines) == (101, True)  # what is held back starts a line
    assert _cut(b"z" * 100) == (0, True)  # too little to pass anything on
    one_line = b"v" * (9 * CHUNK)
    assert _cut(one_line) == (len(one_line) - TAIL_KEEP, False)


def test_only_the_closing_commit_is_removed_not_a_commit_in_copy_data() -> None:
    kept = without_closing_commit(TAIL, starts_a_line=True)
    assert kept.count(b"COMMIT;") == 1 and b"COMMIT;\n\\.\n" in kept and kept.endswith(b"\\unrestrict abc\n\n")
    with pytest.raises(ScriptShapeError):
        without_closing_commit(b"COPY t FROM stdin;\n1\n\\.\n", starts_a_line=True)
    with pytest.raises(ScriptShapeError):  # the held tail starts mid-line: "COMMIT;" may be the end of a value
        without_closing_commit(b"COMMIT;\n\\unrestrict abc\n", starts_a_line=False)
