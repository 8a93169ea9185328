"""How a table's rows are hashed for its content fingerprint: as records (each value by its type's hash
function) when every column allows it, as printed text otherwise; the manifest records which, and a
verification hashes as the backup did. Either way a row changed in place is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drlib.plans import RestorePlan
from drlib.postgres.backup import Backup, backup_database
from drlib.postgres.catalog import discover_tables
from drlib.postgres.connection import PgTarget
from drlib.postgres.content import read_contents
from drlib.postgres.integrity import verify_backup
from drlib.postgres.manifest import manifest_path, read_manifest
from drlib.postgres.restore import restore_to_new_database
from drlib.postgres.verify import verify_database
from tests.scratchdb import Made

TABLES = (
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
    "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    # every column a type whose equality is its value: hashed as records
    """CREATE TABLE plain (id int PRIMARY KEY, name text, price numeric(10, 2), at timestamptz, doc jsonb,
       n positive, raw bytea, u uuid)""",
    "CREATE TABLE loose (id int PRIMARY KEY, doc json)",  # json has no hash function: text
    "CREATE TABLE shapes (id int PRIMARY KEY, p point)",  # nor has point
    "CREATE TABLE folded (id int PRIMARY KEY, name text COLLATE ci)",  # 'A' = 'a' here: text
    """INSERT INTO plain SELECT g, 'name ' || g, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 hour',
       jsonb_build_object('g', g), g, '\\x00ff', md5(g::text)::uuid
       FROM generate_series(1, 500) g""",
    "INSERT INTO loose SELECT g, json_build_object('g', g) FROM generate_series(1, 50) g",
    "INSERT INTO shapes SELECT g, point(g, g) FROM generate_series(1, 50) g",
    "INSERT INTO folded SELECT g, 'Name ' || g FROM generate_series(1, 50) g",
)

DAMAGE = {
    "public.plain": "UPDATE plain SET price = price + 0.01 WHERE id = 7",
    "public.loose": """UPDATE loose SET doc = '{"g": 999}' WHERE id = 7""",
    "public.shapes": "UPDATE shapes SET p = point(0, 0) WHERE id = 7",
    "public.folded": "UPDATE folded SET name = upper(name) WHERE id = 7",  # equal under its collation
}


@pytest.fixture
def backed_up(make_db: Made, tmp_path: Path) -> tuple[PgTarget, Backup]:
    db = make_db(*TABLES)
    return db, backup_database(target=db, backup_dir=tmp_path)


def test_each_table_is_hashed_the_fastest_way_that_sees_every_change(backed_up: tuple[PgTarget, Backup]) -> None:
    _, backup = backed_up
    methods = {name: stats.content_method for name, stats in read_manifest(manifest_path(backup.path)).tables.items()}
    assert methods == {
        "public.plain": "record",
        "public.loose": "text",
        "public.shapes": "text",
        "public.folded": "text",
    }


@pytest.mark.parametrize("table", sorted(DAMAGE))
def test_a_row_changed_in_place_is_caught_whichever_way_it_is_hashed(
    backed_up: tuple[PgTarget, Backup], table: str
) -> None:
    db, backup = backed_up
    manifest = read_manifest(manifest_path(backup.path))
    assert verify_database(target=db, manifest=manifest).passed  # no false alarm first
    with db.connect() as conn:
        conn.execute(DAMAGE[table])  # type: ignore[arg-type]
    failed = {c.name for c in verify_database(target=db, manifest=manifest).failures}
    assert failed == {f"content:{table}"}


def test_a_manifest_that_hashed_as_text_is_compared_as_text(backed_up: tuple[PgTarget, Backup], tmp_path: Path) -> None:
    """Manifests written before record hashing say nothing (text): verify hashes as they did."""
    db, backup = backed_up
    data = json.loads(manifest_path(backup.path).read_text())
    with db.connect() as conn:
        tables = discover_tables(conn, db.settings)
    as_text = read_contents(db, tables, db.settings, methods={t.name: "text" for t in tables})
    assert as_text["public.plain"].content != data["tables"]["public.plain"]["content"]  # two ways, two sums
    for name, stats in data["tables"].items():  # what an older drlib wrote
        stats.pop("content_method")
        stats["content"] = as_text[name].content
    old = tmp_path / "old.manifest.json"
    old.write_text(json.dumps(data))
    manifest = read_manifest(old)
    assert verify_database(target=db, manifest=manifest).passed
    with db.connect() as conn:
        conn.execute(DAMAGE["public.plain"])  # type: ignore[arg-type]
    assert {c.name for c in verify_database(target=db, manifest=manifest).failures} == {"content:public.plain"}


def restored_copy(db: PgTarget, backup: Backup) -> PgTarget:
    """``backup`` restored into a new database beside ``db`` (Option B's copy)."""
    result = restore_to_new_database(verify_backup(backup), target=db, jobs=1, confirm=True, new_name=f"{db.name}_copy")
    assert not isinstance(result, RestorePlan)
    return db.with_database(result.database)


def test_an_enum_column_verifies_in_a_restored_copy(make_db: Made, tmp_path: Path) -> None:
    """An enum hashes by its label's OID, which a restore assigns anew: hashed as a record, every table
    with an enum column failed its content check in Option B's copy (and the copy was never swapped in)."""
    db = make_db(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
        "CREATE TABLE feelings (id int PRIMARY KEY, feeling mood, history mood[])",
        "INSERT INTO feelings SELECT g, 'ok', ARRAY['sad', 'happy']::mood[] FROM generate_series(1, 20) g",
    )
    backup = backup_database(target=db, backup_dir=tmp_path)
    manifest = read_manifest(manifest_path(backup.path))
    copy = restored_copy(db, backup)
    content = {c.name: c for c in verify_database(target=copy, manifest=manifest, fresh_restore=True)}
    assert content["content:public.feelings"].status == "pass"


def test_a_bit_column_keeps_its_content_fingerprint(make_db: Made, tmp_path: Path) -> None:
    """bit and varbit have no extended hash function: hashed as records, the table lost its fingerprint."""
    db = make_db(
        "CREATE TABLE flags (id int PRIMARY KEY, f bit(3), v varbit)",
        "INSERT INTO flags SELECT g, B'101', B'1' FROM generate_series(1, 20) g",
    )
    backup = backup_database(target=db, backup_dir=tmp_path)
    stats = read_manifest(manifest_path(backup.path)).tables["public.flags"]
    assert stats.content is not None, stats.content_skipped
    with db.connect() as conn:
        conn.execute("UPDATE flags SET v = B'10' WHERE id = 7")
    failed = {c.name for c in verify_database(target=db, manifest=read_manifest(manifest_path(backup.path))).failures}
    assert failed == {"content:public.flags"}


@pytest.mark.parametrize(
    ("column", "before", "after"),
    [
        ("int[]", "'{1,2,3,4}'", "'{{1,2},{3,4}}'"),  # hash_array hashes the elements only
        ("int[]", "'{1,2}'", "'[0:1]={1,2}'"),  # not their lower bound either
        ("interval", "'1 mon'", "'30 days'"),  # equal as intervals, a day apart from 31 January
        ("interval", "'1 day'", "'24 hours'"),  # an hour apart across a DST change
    ],
)
def test_a_change_the_type_hash_cannot_see_is_caught(
    make_db: Made, tmp_path: Path, column: str, before: str, after: str
) -> None:
    db = make_db(
        f"CREATE TABLE t (id int PRIMARY KEY, v {column})", f"INSERT INTO t VALUES (1, {before}), (2, {before})"
    )
    backup = backup_database(target=db, backup_dir=tmp_path)
    manifest = read_manifest(manifest_path(backup.path))
    with db.connect() as conn:
        conn.execute(f"UPDATE t SET v = {after} WHERE id = 1")  # type: ignore[arg-type]
    assert {c.name for c in verify_database(target=db, manifest=manifest).failures} == {"content:public.t"}
