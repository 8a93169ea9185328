"""A restored database is proven identical object by object and row by row, and every kind of
damage to it is named by `verify_database` (issue #7's list, one test each).

One rich database (tests/richdb.py) is backed up and restored once (Option B) per module; each damage
test works on its own `CREATE DATABASE … TEMPLATE` clone of the restored copy (the clone gets the
backup's database-level properties first, as a restore gives them)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from drlib.checks import Checks
from drlib.config import load_profile
from drlib.postgres.backup import Backup, backup_database
from drlib.postgres.catalog import discover_tables
from drlib.postgres.connection import PgTarget, drop_database
from drlib.postgres.globals import DatabaseProperties, apply_database_properties, read_database_properties
from drlib.postgres.integrity import verify_backup
from drlib.postgres.restore import RestoreResult, restore_in_place, restore_to_new_database
from drlib.postgres.verify import verify_database
from drlib.sandbox.stack import Sandbox
from tests.richdb import RichDatabase, create_rich_database, drop_rich_database, schema_dump, table_rows


@dataclass(frozen=True)
class Restored:
    rich: RichDatabase
    backup: Backup
    copy: PgTarget


@pytest.fixture(scope="module")
def restored(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restored]:
    server = PgTarget.from_profile(load_profile("sandbox"))
    rich = create_rich_database(server)
    copy_name = f"{rich.target.name}_restored"
    try:
        backup = backup_database(target=rich.target, backup_dir=tmp_path_factory.mktemp("rich-backups"))
        result = restore_to_new_database(
            verify_backup(backup), target=rich.target, jobs=2, confirm=True, new_name=copy_name
        )
        assert isinstance(result, RestoreResult)
        yield Restored(rich=rich, backup=backup, copy=rich.target.with_database(copy_name))
    finally:
        drop_rich_database(rich, also=(copy_name,))


def failing(checks: Checks) -> dict[str, str]:
    return {c.name: f"{c.observed} | {c.detail}" for c in checks if c.status == "fail"}


def test_a_clean_option_b_restore_equals_the_original_and_raises_no_alarm(restored: Restored) -> None:
    rich, copy = restored.rich, restored.copy
    assert schema_dump(copy) == schema_dump(rich.target)
    assert table_rows(copy) == table_rows(rich.target)
    with rich.target.connect() as original, copy.connect() as restored_conn:
        assert read_database_properties(restored_conn) == read_database_properties(original)
    checks = verify_database(target=copy, manifest=restored.backup.manifest)
    assert checks.passed, repr(Checks(c for c in checks if c.status != "pass"))
    names = {c.name for c in checks}
    assert {'content:public."Album"', "content:sales.invoice_2025", "schema:partition", "roles"} <= names
    assert "orphans:sales.invoice.invoice_customer_id_region_fkey" in names  # a two-column key
    warned = {c.name for c in checks if c.status == "warn"}
    assert "newest_row:public.track" in warned  # no timestamp column: shown as not checked


def test_the_manifest_describes_the_rich_database(restored: Restored) -> None:
    manifest = restored.backup.manifest
    assert manifest is not None and manifest.manifest_version == 2
    assert {'public."Album"', "sales.invoice_2025", "sales.invoice_default"} <= set(manifest.tables)
    assert manifest.tables['public."Artist"'].newest_column == "created_at"
    assert manifest.tables["public.track"].newest_column is None
    assert "public.track_genre_id_idx" in manifest.schema["index"]
    assert manifest.schema["partition"]["sales.invoice_2025"].startswith("partition of sales.invoice FOR VALUES")
    assert manifest.schema["extension"]["citext"].startswith("version ")
    assert manifest.database_properties["settings"] == ["work_mem=8MB"]
    assert set(restored.rich.roles) <= set(manifest.roles)
    roles_file = restored.backup.path.with_name(manifest.roles_file)
    assert roles_file.stat().st_mode & 0o777 == 0o600
    assert "SCRAM-SHA-256$" in roles_file.read_text()  # the hash stays in the backup folder…
    assert "SCRAM" not in restored.backup.path.with_name(restored.backup.path.name + ".manifest.json").read_text()


@pytest.fixture
def damaged(restored: Restored) -> Iterator[PgTarget]:
    """A clone of the restored copy, with the backup's database properties, to damage."""
    name = f"dmg_{secrets.token_hex(3)}"
    server = restored.copy
    with server.maintenance.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(server.name))
        )
    clone = server.with_database(name)
    manifest = restored.backup.manifest
    assert manifest is not None
    with clone.connect() as conn:
        apply_database_properties(conn, DatabaseProperties.from_dict(manifest.database_properties))
    yield clone
    drop_database(server, name)


def run(target: PgTarget, statement: str) -> None:
    with psycopg.connect(target.conninfo(), password=target.password, autocommit=True) as conn:
        conn.execute(statement)


#: (id, SQL that damages the database ({db}, {reader}, {writer} filled in), failing check, words it names)
DAMAGE = [
    (
        "rows changed in place",
        "UPDATE public.track SET name = name || '!' WHERE track_id = 5",
        "content:public.track",
        "same row count but rows changed in place",
    ),
    ("rows deleted", "DELETE FROM sales.note WHERE id = 1", "row_count:sales.note", "9"),
    (
        "index dropped",
        "DROP INDEX public.track_genre_id_idx",
        "schema:index",
        "missing index public.track_genre_id_idx",
    ),
    (
        "unexpected index",
        "CREATE INDEX extra_idx ON public.track (name)",
        "schema:index",
        "unexpected index public.extra_idx",
    ),
    (
        "primary key dropped",
        "ALTER TABLE public.track DROP CONSTRAINT track_pkey",
        "schema:constraint",
        "missing primary key public.track.track_pkey",
    ),
    (
        "trigger dropped",
        "DROP TRIGGER note_touch ON sales.note",
        "schema:trigger",
        "missing trigger sales.note.note_touch",
    ),
    (
        "partition detached",
        "ALTER TABLE sales.invoice DETACH PARTITION sales.invoice_2025",
        "schema:partition",
        "missing partition sales.invoice_2025",
    ),
    (
        "domain check dropped",
        "ALTER DOMAIN public.positive_money DROP CONSTRAINT positive_money_check",
        "schema:constraint",
        "missing check constraint public.positive_money.positive_money_check",
    ),
    (
        "function dropped",
        "DROP FUNCTION public.album_count(int)",
        "schema:function",
        "missing function public.album_count(integer)",
    ),
    (
        "procedure changed",
        "CREATE OR REPLACE PROCEDURE sales.close_year(y int) LANGUAGE plpgsql AS $$ BEGIN END $$",
        "schema:function",
        "changed procedure sales.close_year(integer)",
    ),
    (
        "sequence behind",
        "SELECT setval('public.track_track_id_seq', 3)",
        "sequences",
        "sequence public.track_track_id_seq is at 3",
    ),
    ("view dropped", "DROP VIEW public.album_view", "schema:view", "missing view public.album_view"),
    (
        "materialized view dropped",
        "DROP MATERIALIZED VIEW sales.revenue",
        "schema:view",
        "missing materialized view sales.revenue",
    ),
    (
        "policy dropped",
        "DROP POLICY customer_region ON sales.customer",
        "schema:policy",
        "missing policy sales.customer.customer_region",
    ),
    (
        "row level security off",
        "ALTER TABLE sales.customer DISABLE ROW LEVEL SECURITY",
        "schema:table",
        "changed table sales.customer",
    ),
    (
        "grant revoked",
        'REVOKE SELECT ON public.track FROM "{reader}"',
        "schema:grant",
        "missing grants on public.track",  # the ACL is the owner's default again: compared as no grants
    ),
    ("enum changed", "ALTER TYPE public.mood ADD VALUE 'angry'", "schema:type", "changed type public.mood"),
    (
        "column default dropped",
        'ALTER TABLE public."Artist" ALTER COLUMN mood DROP DEFAULT',
        "schema:column",
        'changed column public."Artist".mood',
    ),
    (
        "foreign key dropped",
        "ALTER TABLE public.track DROP CONSTRAINT track_album_id_fkey",
        "foreign_keys",
        "public.track.track_album_id_fkey",
    ),
    (
        "orphans",
        "ALTER TABLE public.track DROP CONSTRAINT track_album_id_fkey; "
        "INSERT INTO public.track (album_id, name, ms) VALUES (99999, 'orphan', 1)",
        "orphans:public.track.track_album_id_fkey",
        "1 |",
    ),
    ("database owner changed", 'ALTER DATABASE {db} OWNER TO "{writer}"', "database_properties", "database owner"),
    (
        "connect granted to PUBLIC again",
        "GRANT CONNECT ON DATABASE {db} TO PUBLIC",
        "database_properties",
        "database privileges",
    ),
    ("database setting lost", "ALTER DATABASE {db} RESET work_mem", "database_properties", "database settings"),
    ("database comment lost", "COMMENT ON DATABASE {db} IS NULL", "database_properties", "database comment"),
]


@pytest.mark.parametrize(("what", "statement", "check_name", "named"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_verify_names_each_kind_of_damage(
    restored: Restored, damaged: PgTarget, what: str, statement: str, check_name: str, named: str
) -> None:
    rich = restored.rich
    run(damaged, statement.format(db=f'"{damaged.name}"', reader=rich.reader, writer=rich.writer))
    failures = failing(verify_database(target=damaged, manifest=restored.backup.manifest))
    assert check_name in failures, f"{what}: {failures}"
    assert named in failures[check_name], f"{what}: {failures[check_name]}"


def test_a_changed_role_is_named(restored: Restored) -> None:
    writer = restored.rich.writer
    run(restored.copy, f'ALTER ROLE "{writer}" CONNECTION LIMIT 3')
    try:
        failures = failing(verify_database(target=restored.copy, manifest=restored.backup.manifest))
    finally:
        run(restored.copy, f'ALTER ROLE "{writer}" CONNECTION LIMIT -1')
    assert f"changed role {writer}" in failures["roles"]


@pytest.mark.parametrize("option", ["A", "B"])
def test_roles_and_database_properties_come_back_on_a_server_without_them(
    sandbox: Sandbox, tmp_path: Path, option: str
) -> None:
    """The full-system case: the database and its roles are gone; the backup brings both back."""
    server = PgTarget.from_profile(load_profile("sandbox"))
    rich = create_rich_database(server)
    try:
        backup = backup_database(target=rich.target, backup_dir=tmp_path)
        before = schema_dump(rich.target), table_rows(rich.target)
        with rich.target.connect() as conn:
            properties = read_database_properties(conn)
        drop_rich_database(rich)  # database and roles gone, as on a fresh server
        if option == "A":
            result = restore_in_place(verify_backup(backup), target=rich.target, confirm=True)
        else:
            result = restore_to_new_database(
                verify_backup(backup), target=rich.target, jobs=2, confirm=True, new_name=rich.target.name
            )
        assert isinstance(result, RestoreResult)
        assert (schema_dump(rich.target), table_rows(rich.target)) == before
        checks = verify_database(target=rich.target, manifest=backup.manifest)
        assert checks.passed, repr(checks)
        reader = rich.target.with_database(rich.target.name)
        login = psycopg.connect(
            host=reader.settings.host,
            port=reader.settings.port,
            dbname=reader.name,
            user=rich.reader,
            password="reader-secret-pw",
        )  # the password hash came back with the role
        login.close()
        with rich.target.connect() as conn:  # owner, REVOKE CONNECT … FROM PUBLIC, settings, comment
            assert read_database_properties(conn) == properties
    finally:
        drop_rich_database(rich)


def settings_with(restored: Restored, **changes: object) -> PgTarget:
    return PgTarget(settings=replace(restored.copy.settings, **changes), password=restored.copy.password)


def test_include_and_exclude_patterns_choose_the_tables(restored: Restored) -> None:
    only_sales = settings_with(restored, include=("sales.*",), exclude=("sales.booking",))
    with only_sales.connect() as conn:
        names = {t.name for t in discover_tables(conn, only_sales.settings)}
    assert names == {
        "sales.customer",
        "sales.invoice_2025",
        "sales.invoice_2026",
        "sales.invoice_default",
        "sales.note",
    }
    capitalised = settings_with(restored, include=("Album", "public.Artist"))  # no dot: public; case kept
    with capitalised.connect() as conn:
        assert {t.name for t in discover_tables(conn, capitalised.settings)} == {'public."Album"', 'public."Artist"'}


def test_the_newest_row_column_is_detected_and_can_be_overridden(restored: Restored) -> None:
    target = settings_with(restored, newest_row_columns={"public.track": "track_id", 'public."Artist"': ""})
    with target.connect() as conn:
        tables = {t.name: t.newest_row_column for t in discover_tables(conn, target.settings)}
    assert tables["public.track"] == "track_id"  # the profile's choice
    assert tables['public."Artist"'] is None  # "" turns the check off
    assert tables["sales.invoice_2025"] == "invoiced_at"  # the only timestamp column
    assert tables['public."Album"'] == "released"


def test_content_fingerprints_stop_at_the_size_limit_unless_asked_for(restored: Restored, tmp_path: Path) -> None:
    target = settings_with(restored, content_fingerprint_limit=0, content_fingerprint_tables=("public.track",))
    made = backup_database(target=target, backup_dir=tmp_path)
    assert made.manifest is not None
    tables = made.manifest.tables
    assert tables["public.track"].content is not None  # asked for by name
    assert tables["sales.note"].content is None and "content_fingerprint_limit" in tables["sales.note"].content_skipped
    checks = {c.name: c for c in verify_database(target=target, manifest=made.manifest)}
    assert checks["content:sales.note"].status == "warn" and checks["content:sales.note"].observed == "not checked"
    assert checks["content:public.track"].status == "pass"
    assert checks["content_fingerprint"].observed.startswith("1 tables")


def test_option_a_puts_back_the_database_properties_and_every_row(sandbox: Sandbox, tmp_path: Path) -> None:
    server = PgTarget.from_profile(load_profile("sandbox"))
    rich = create_rich_database(server)
    try:
        backup = backup_database(target=rich.target, backup_dir=tmp_path)
        before = schema_dump(rich.target), table_rows(rich.target)
        for statement in (
            "DELETE FROM sales.invoice WHERE invoice_id < 50",
            "ALTER TABLE sales.invoice DETACH PARTITION sales.invoice_2026",
            f'ALTER DATABASE "{rich.target.name}" OWNER TO "{rich.writer}"',
            f'GRANT CONNECT ON DATABASE "{rich.target.name}" TO PUBLIC',
            f'ALTER DATABASE "{rich.target.name}" RESET work_mem',
            f"COMMENT ON DATABASE \"{rich.target.name}\" IS 'changed'",
        ):
            run(rich.target, statement)
        assert failing(verify_database(target=rich.target, manifest=backup.manifest))
        result = restore_in_place(verify_backup(backup), target=rich.target, confirm=True)
        assert isinstance(result, RestoreResult) and result.option == "A"
        assert (schema_dump(rich.target), table_rows(rich.target)) == before
        checks = verify_database(target=rich.target, manifest=backup.manifest)
        assert checks.passed, repr(Checks(c for c in checks if c.status != "pass"))
    finally:
        drop_rich_database(rich)


@pytest.mark.parametrize("option", ["A", "B"])
def test_hostile_database_properties_are_applied_as_values_never_as_code(
    sandbox: Sandbox, tmp_path: Path, option: str
) -> None:
    """A role that may only connect sets values that would close a DO block and run `\\!` in psql."""
    server = PgTarget.from_profile(load_profile("sandbox"))
    rich = create_rich_database(server)
    proof = tmp_path / "pwned"
    db = f'"{rich.target.name}"'
    try:
        for statement in (
            f"ALTER ROLE \"{rich.reader}\" IN DATABASE {db} SET application_name = 'x$drlib$ \\! touch {proof} #'",
            f"COMMENT ON DATABASE {db} IS E'it''s $drlib$ \\\\! touch {proof}\\n'",
            f"ALTER DATABASE {db} SET search_path = sales, public",
            f"ALTER DATABASE {db} SET statement_timeout = '5min'",
        ):
            run(rich.target, statement)
        backup = backup_database(target=rich.target, backup_dir=tmp_path / "b")
        with rich.target.connect() as conn:
            before = read_database_properties(conn)
        run(rich.target, f"ALTER DATABASE {db} RESET ALL")
        if option == "A":
            result = restore_in_place(verify_backup(backup), target=rich.target, confirm=True)
            restored = rich.target
        else:
            result = restore_to_new_database(verify_backup(backup), target=rich.target, jobs=2, confirm=True)
            assert isinstance(result, RestoreResult)
            restored = rich.target.with_database(result.database)
        assert isinstance(result, RestoreResult)
        assert not proof.exists()
        with restored.connect() as conn:
            after = read_database_properties(conn)
            path = conn.execute("SELECT setting FROM pg_settings WHERE name = 'search_path'").fetchone()
        assert after.settings == before.settings and after.role_settings == before.role_settings
        assert after.comment == before.comment
        assert path is not None and path[0] == "sales, public"  # two schemas, not one named "sales, public"
        assert verify_database(target=restored, manifest=backup.manifest).passed
    finally:
        with server.maintenance.connect() as conn:
            names = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{rich.target.name}_%",))
            for (name,) in names.fetchall():
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        drop_rich_database(rich)


def test_infinite_and_odd_values_back_up_restore_and_verify_clean(sandbox: Sandbox, tmp_path: Path) -> None:
    server = PgTarget.from_profile(load_profile("sandbox"))
    rich = create_rich_database(server)
    copy = f"{rich.target.name}_b"
    try:
        for statement in (
            f"ALTER ROLE \"{rich.reader}\" VALID UNTIL 'infinity'",
            "INSERT INTO public.\"Artist\" (name, created_at) VALUES ('forever', 'infinity')",
            "CREATE TABLE public.parent (id int, name text)",
            "CREATE TABLE public.child (extra int) INHERITS (public.parent)",
            "ALTER TABLE public.parent ADD COLUMN z int",  # a restore orders child's columns differently
            "INSERT INTO public.child VALUES (1, 'a', 7, 9)",
            "CREATE TABLE public.events (id int, at date)",
            "INSERT INTO public.events VALUES (1, '0044-03-15 BC')",
        ):
            run(rich.target, statement)
        backup = backup_database(target=rich.target, backup_dir=tmp_path)
        assert backup.manifest is not None
        assert backup.manifest.tables['public."Artist"'].newest_created_at == "infinity"
        result = restore_to_new_database(verify_backup(backup), target=rich.target, jobs=2, confirm=True, new_name=copy)
        assert isinstance(result, RestoreResult)
        checks = verify_database(target=rich.target.with_database(copy), manifest=backup.manifest)
        assert checks.passed, repr(Checks(c for c in checks if c.status == "fail"))
        live = verify_database(target=rich.target, manifest=backup.manifest, exact=False)
        assert live.passed, repr(Checks(c for c in live if c.status == "fail"))
    finally:
        drop_rich_database(rich, also=(copy,))


def test_backups_in_the_same_second_each_get_their_own_name(sandbox: Sandbox, tmp_path: Path) -> None:
    import threading

    server = PgTarget.from_profile(load_profile("sandbox"))
    rich = create_rich_database(server)
    outcomes: list[object] = []

    def take() -> None:
        try:
            outcomes.append(backup_database(target=rich.target, backup_dir=tmp_path))
        except Exception as exc:  # the loser of a same-second race
            outcomes.append(exc)

    try:
        for _ in range(3):
            threads = [threading.Thread(target=take) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        made = [o for o in outcomes if isinstance(o, Backup)]
        assert len(made) == 6, outcomes  # each gets its own name (the next free second)…
        assert len({b.path.name for b in made}) == 6
        for backup in made:  # …and verifies against its own manifest
            verify_backup(backup)
        assert not list(tmp_path.glob("*.partial"))
    finally:
        drop_rich_database(rich)
