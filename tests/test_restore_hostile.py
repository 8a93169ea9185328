"""Restore fixes from the hostile review: a restored database is made like the original (encoding,
locale, tablespace), keeps a missing ``public`` schema missing, fits long names in 63 bytes, never
waits forever for a lock, says which roles a failed Option A kept, and refuses a job count of 0.

Each test builds its own small database on the sandbox's server (a superuser) and drops it again."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from drlib.cli import main
from drlib.exceptions import ParameterError, RestoreFailed
from drlib.plans import MAX_NAME_BYTES, RestorePlan, derived_name
from drlib.postgres import reset
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget, database_exists, drop_database
from drlib.postgres.integrity import VerifiedBackup, verify_backup
from drlib.postgres.restore import (
    RestoreResult,
    SwapResult,
    restore_in_place,
    restore_to_new_database,
    restored_name,
    swap_databases,
)
from tests.scratchdb import PREFIX, Made


def take(db: PgTarget, folder: Path) -> VerifiedBackup:
    return verify_backup(backup_database(target=db, backup_dir=folder))


def layout(db: PgTarget) -> tuple[str, ...]:
    """The database's encoding, collation, character classes, locale provider, ICU locale, tablespace."""
    with db.maintenance.connect() as conn:
        row = conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, "
            "coalesce(daticulocale, ''), (SELECT spcname FROM pg_tablespace WHERE oid = dattablespace) "
            "FROM pg_database WHERE datname = %s",
            (db.name,),
        ).fetchone()
    assert row is not None, f"{db.name} does not exist"
    return tuple(row)


def schemas(db: PgTarget) -> set[str]:
    with db.connect() as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname !~ '^(pg_|information_)'")}


def option_b(verified: VerifiedBackup, db: PgTarget, **kwargs: object) -> PgTarget:
    result = restore_to_new_database(verified, target=db, jobs=2, confirm=True, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, RestoreResult)
    return db.with_database(result.database)


def option_a(verified: VerifiedBackup, db: PgTarget, **kwargs: object) -> RestoreResult:
    result = restore_in_place(verified, target=db, confirm=True, timeout=60, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, RestoreResult)
    return result


def with_properties(verified: VerifiedBackup, **changes: object) -> VerifiedBackup:
    """``verified`` with its manifest's database properties changed (the manifest is input: it may lie)."""
    assert verified.manifest is not None
    props = {**verified.manifest.database_properties, **changes}
    return replace(verified, manifest=replace(verified.manifest, database_properties=props))


# -- 1. the copy is made like the original -------------------------------------------------------

LAYOUTS = {
    "icu": "TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C.UTF-8'",
    "latin1": "TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'",
}


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_option_b_makes_the_copy_with_the_backups_encoding_and_locale(make_db: Made, tmp_path: Path, kind: str) -> None:
    db = make_db(
        "CREATE TABLE t (id int PRIMARY KEY, name text)", "INSERT INTO t VALUES (1, 'ä')", options=LAYOUTS[kind]
    )
    verified = take(db, tmp_path)
    copy = option_b(verified, db)
    assert layout(copy) == layout(db)


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_option_a_recreates_a_missing_database_with_the_backups_encoding_and_locale(
    make_db: Made, tmp_path: Path, target: PgTarget, kind: str
) -> None:
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)", options=LAYOUTS[kind])
    before = layout(db)
    verified = take(db, tmp_path)
    drop_database(target, db.name)
    option_a(verified, db)
    assert layout(db) == before


@pytest.fixture
def tablespace(healthy_sandbox: object, target: PgTarget) -> Iterator[str]:
    """A tablespace in a folder of the server's own user (dropped afterwards, with every database in it)."""
    folder = tempfile.mkdtemp(prefix="drlib-space-")
    shutil.chown(folder, "postgres", "postgres")
    name = f"rfix_space_{secrets.token_hex(3)}"
    with target.maintenance.connect() as conn:
        conn.execute(f"CREATE TABLESPACE {name} LOCATION '{folder}'")  # type: ignore[arg-type]
    yield name
    with target.maintenance.connect() as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE dattablespace = (SELECT oid FROM pg_tablespace WHERE spcname = %s)",
            (name,),
        ).fetchall()
    for (database,) in rows:
        drop_database(target, database)
    with target.maintenance.connect() as conn:
        conn.execute(f"DROP TABLESPACE {name}")  # type: ignore[arg-type]
    shutil.rmtree(folder, ignore_errors=True)


def test_option_b_puts_the_copy_in_the_backups_tablespace(make_db: Made, tmp_path: Path, tablespace: str) -> None:
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)", options=f"TABLESPACE {tablespace}")
    copy = option_b(take(db, tmp_path), db)
    assert layout(copy)[-1] == tablespace


def test_a_tablespace_the_server_lacks_falls_back_to_the_default_and_says_so(make_db: Made, tmp_path: Path) -> None:
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)")
    verified = with_properties(take(db, tmp_path), tablespace="no_such_space")
    result = restore_to_new_database(verified, target=db, jobs=1, confirm=True)
    assert isinstance(result, RestoreResult)
    assert layout(db.with_database(result.database))[-1] == "pg_default"
    assert any("no_such_space" in note for note in result.notes), result.notes


@pytest.mark.parametrize(
    "field,value",
    [
        ("collate", "C'; CREATE DATABASE rfix_injected; --"),
        ("encoding", "UTF8' TEMPLATE template1 --"),
        ("tablespace", 'pg_default" OWNER postgres --'),
    ],
)
def test_hostile_manifest_values_are_quoted_and_refused_cleanly(
    make_db: Made, tmp_path: Path, target: PgTarget, field: str, value: str
) -> None:
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)")
    verified = with_properties(take(db, tmp_path), **{field: value})
    name = restored_name(db.name)
    try:
        result = restore_to_new_database(verified, target=db, jobs=1, confirm=True, new_name=name)
    except RestoreFailed as exc:  # a locale or encoding the server does not know: one clear message
        assert "CREATE DATABASE" in exc.message and "was not touched" in exc.message, exc.message
        assert not database_exists(target, name)
    else:  # a tablespace that does not exist: the default
        assert isinstance(result, RestoreResult) and result.notes
    assert not database_exists(target, "rfix_injected")


# -- 2. no public schema -------------------------------------------------------------------------


def test_a_database_without_public_restores_without_it_in_both_options(make_db: Made, tmp_path: Path) -> None:
    db = make_db("DROP SCHEMA public", "CREATE SCHEMA app", "CREATE TABLE app.t (id int PRIMARY KEY)")
    verified = take(db, tmp_path)
    assert schemas(option_b(verified, db)) == {"app"}
    option_a(verified, db)
    assert schemas(db) == {"app"}


def test_a_database_with_public_keeps_it_in_both_options(make_db: Made, tmp_path: Path) -> None:
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)")
    verified = take(db, tmp_path)
    assert schemas(option_b(verified, db)) == {"public"}
    option_a(verified, db)
    assert schemas(db) == {"public"}


def test_public_with_objects_in_it_is_never_dropped(make_db: Made) -> None:
    db = make_db("CREATE TABLE public.t (id int)", "CREATE SCHEMA empty_one")
    with db.connect() as conn:
        conn.execute(reset.drop_empty_public_sql().encode())
    assert schemas(db) == {"public", "empty_one"}
    empty = make_db()
    with empty.connect() as conn:
        conn.execute(reset.drop_empty_public_sql().encode())
    assert schemas(empty) == set()


# -- 3. long names ---------------------------------------------------------------------------------


def test_derived_names_fit_in_63_bytes_distinct_and_recognisable() -> None:
    short = derived_name("app", "restored_20260101000000")
    assert short == "app_restored_20260101000000"
    first, second = ("long_" + "ü" * 40 + end for end in ("a", "b"))
    names = [derived_name(base, "restored_20260101000000") for base in (first, second)]
    assert all(len(n.encode()) <= MAX_NAME_BYTES for n in names)
    assert names[0] != names[1]
    assert all(n.startswith("long_üü") and n.endswith("_restored_20260101000000") for n in names)
    names[0].encode().decode("utf-8")  # cut on a character boundary


def names_on(target: PgTarget, prefix: str) -> set[str]:
    with target.maintenance.connect() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)).fetchall()
    return {r[0] for r in rows}


def test_a_60_character_database_name_through_option_b_and_two_swaps(
    make_db: Made, tmp_path: Path, target: PgTarget
) -> None:
    name = PREFIX + "x" * 55
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)", name=name)
    verified = take(db, tmp_path)
    plan = restore_to_new_database(verified, target=db, jobs=1)
    assert isinstance(plan, RestorePlan)
    swaps = []
    for _ in range(2):
        copy = option_b(verified, db)
        assert len(copy.name.encode()) <= MAX_NAME_BYTES and database_exists(target, copy.name)
        swap = swap_databases(target=db, restored=copy.name, confirm=True)
        assert isinstance(swap, SwapResult)
        swaps.append(swap)
    old = [s.old_database for s in swaps]
    assert all(o is not None and len(o.encode()) <= MAX_NAME_BYTES for o in old)
    assert names_on(target, PREFIX + "x" * 20) == {name, *old}  # the names said are the databases there
    assert old[0] != old[1]


def test_a_new_name_postgresql_would_cut_is_refused(make_db: Made, tmp_path: Path, target: PgTarget) -> None:
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)")
    with pytest.raises(ParameterError, match="longer than 63 bytes"):
        restore_to_new_database(take(db, tmp_path), target=db, jobs=1, confirm=True, new_name=PREFIX + "z" * 60)
    assert names_on(target, PREFIX + "z") == set()


def test_a_60_character_database_name_through_option_a(make_db: Made, tmp_path: Path, target: PgTarget) -> None:
    name = PREFIX + "y" * 55
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (7)", name=name)
    verified = take(db, tmp_path)
    option_a(verified, db)  # in place
    drop_database(target, name)

    def record_name(building: str) -> str:  # the name Option A says, and the one the server has
        return f"CREATE TABLE public.seen AS SELECT '{building}'::text AS said, current_database()::text AS real;"

    option_a(verified, db, after_sql=record_name)  # missing: restored as <name>_restoring_<time>, renamed
    assert names_on(target, PREFIX + "y" * 20) == {name}
    with db.connect() as conn:
        assert conn.execute("SELECT id FROM t").fetchall() == [(7,)]
        said, real = conn.execute("SELECT said, real FROM public.seen").fetchone() or ("", "")
    assert said == real and "_restoring_" in said and len(said.encode()) <= MAX_NAME_BYTES


# -- 4. Option A never waits forever ---------------------------------------------------------------


def test_option_a_gives_up_on_a_lock_held_by_an_idle_transaction(
    make_db: Made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    verified = take(db, tmp_path)
    with db.connect() as conn:
        conn.execute("INSERT INTO t VALUES (2)")  # written after the backup: must survive the failed restore
    monkeypatch.setattr(reset, "LOCK_TIMEOUT_SECONDS", 1)
    holder = db.connect(autocommit=False)
    try:
        holder.execute("SELECT * FROM t")  # and stays idle in transaction, holding its lock
        pid = holder.info.backend_pid
        with pytest.raises(RestoreFailed) as failed:
            restore_in_place(verified, target=db, confirm=True, timeout=30)  # without the fix: "timed out"
    finally:
        holder.close()
    message = failed.value.message
    assert f"another session holds a lock on {db.name}" in message, message
    assert "stop the application or end that session, then retry" in message
    assert f"pid {pid}" in message and "rolled back" in message
    with db.connect() as conn:
        assert conn.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (2,)]


# -- 5. roles created before a rolled-back Option A -------------------------------------------------


@pytest.fixture
def lost_role(make_db: Made, target: PgTarget, tmp_path: Path) -> Iterator[tuple[PgTarget, VerifiedBackup, str]]:
    """A database whose table is owned by a role, backed up; then the role is gone from the server."""
    role = f"rfix_owner_{secrets.token_hex(3)}"
    with target.maintenance.connect() as conn:
        conn.execute(f"CREATE ROLE {role}")  # type: ignore[arg-type]
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)", f"ALTER TABLE t OWNER TO {role}")
    verified = take(db, tmp_path)
    with db.connect() as conn:
        conn.execute("ALTER TABLE t OWNER TO CURRENT_USER")
    with target.maintenance.connect() as conn:
        conn.execute(f"DROP ROLE {role}")  # type: ignore[arg-type]
    yield db, verified, role
    with target.maintenance.connect() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'rfix\\_%'").fetchall()
    for (name,) in rows:
        drop_database(target, name)
    with target.maintenance.connect() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")  # type: ignore[arg-type]


def role_exists(target: PgTarget, role: str) -> bool:
    with target.maintenance.connect() as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def test_a_rolled_back_option_a_names_the_roles_it_created_and_kept(
    lost_role: tuple[PgTarget, VerifiedBackup, str], target: PgTarget
) -> None:
    db, verified, role = lost_role
    with pytest.raises(RestoreFailed) as failed:
        restore_in_place(verified, target=db, confirm=True, before_sql="SELECT 1 / 0;")
    message = failed.value.message
    assert "nothing was changed" not in message, message
    assert role in message and "kept" in message and "rolled back" in message
    assert role_exists(target, role)


def test_a_failed_option_b_names_the_roles_it_created_and_kept(
    lost_role: tuple[PgTarget, VerifiedBackup, str], target: PgTarget
) -> None:
    db, verified, role = lost_role
    with pytest.raises(RestoreFailed) as failed:
        restore_to_new_database(verified, target=db, jobs=1, confirm=True, timeout=0.001)
    assert role in failed.value.message and "kept" in failed.value.message, failed.value.message
    assert role_exists(target, role)


# -- 6. jobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [0, -2, 33])
def test_a_job_count_pg_restore_cannot_use_is_refused(
    make_db: Made, tmp_path: Path, target: PgTarget, jobs: int
) -> None:
    db = make_db("CREATE TABLE t (id int PRIMARY KEY)")
    verified = take(db, tmp_path)
    for restore in (restore_in_place, restore_to_new_database):
        with pytest.raises(ParameterError, match="jobs must be a whole number from 1 to 32"):
            restore(verified, target=db, jobs=jobs, confirm=True)
    assert names_on(target, db.name) == {db.name}


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_the_cli_refuses_jobs_below_one(jobs: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRLIB_REPORTS", str(tmp_path))
    monkeypatch.delenv("DRLIB_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["restore", "database", "--jobs", jobs], catch_exceptions=False)
    assert result.exit_code in (2, 3), result.output
    assert "jobs" in result.output and "at least 1" in result.output, result.output
    assert "Traceback" not in result.output
