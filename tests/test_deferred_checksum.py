"""The backup's checksum in two parts: the header and table of contents (everything pg_restore executes)
proven before anything is touched, the rest of the file read while Option B restores into its copy.

A changed byte in the table of contents is refused before the first write; a changed byte in the rows
stops the restore and drops the copy before it could be swapped in; a dry run and Option A still read
the whole file first. Plus the parser's own oracle: pg_restore reads the table of contents from exactly
the bytes the manifest records, and not from one byte fewer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drlib.checks import CheckResult
from drlib.exceptions import BackupCorrupt, DrillInterrupted, RestoreFailed
from drlib.plans import RestorePlan
from drlib.postgres.archive import prefix_sha256, toc_prefix
from drlib.postgres.backup import Backup, backup_database
from drlib.postgres.connection import PgTarget, database_exists
from drlib.postgres.integrity import VerifiedBackup, verify_backup
from drlib.postgres.manifest import read_manifest
from drlib.postgres.restore import restore_in_place, restore_to_new_database
from drlib.postgres.tools import pg_program
from drlib.postgres.verify import verify_database
from tests.scratchdb import Made

ROWS = (
    "CREATE TABLE parent (id int PRIMARY KEY, note text)",
    "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id))",
    "INSERT INTO parent SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 20000) g",
    "INSERT INTO child SELECT g, g FROM generate_series(1, 20000) g",
)


def flip(path: Path, offset: int) -> None:
    """Change one byte of ``path`` in place (same size: only the checksums can tell)."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def rows(db: PgTarget) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        return conn.execute("SELECT count(*), sum(length(note)) FROM parent").fetchall()


@pytest.fixture
def dumped(make_db: Made, tmp_path: Path) -> tuple[PgTarget, Backup]:
    db = make_db(*ROWS)
    return db, backup_database(target=db, backup_dir=tmp_path)


def test_the_manifest_records_where_the_table_of_contents_ends(dumped: tuple[PgTarget, Backup], tmp_path: Path) -> None:
    _, backup = dumped
    manifest = read_manifest(backup.path.with_name(backup.path.name + ".manifest.json"))
    prefix = toc_prefix(backup.path)
    assert prefix is not None and (manifest.toc_bytes, manifest.toc_sha256) == (prefix.length, prefix.sha256)
    assert 0 < manifest.toc_bytes < manifest.size_bytes

    def lists(length: int) -> bool:
        cut = tmp_path / f"cut_{length}.dump"
        cut.write_bytes(backup.path.read_bytes()[:length])
        return subprocess.run([pg_program("pg_restore"), "--list", str(cut)], capture_output=True).returncode == 0

    assert lists(manifest.toc_bytes)  # pg_restore finds its whole table of contents in those bytes
    assert not lists(manifest.toc_bytes - 1)  # and not in one byte fewer


@pytest.mark.parametrize(
    "content",
    [b"", b"PGDMP", b"PGDMP\x01\x0e\x00\x04\x08\x01" + b"\xff" * 40, b"--\n-- PostgreSQL database dump\n"],
    ids=["empty", "magic-only", "garbage-toc", "plain-sql"],
)
def test_files_the_parser_does_not_understand_get_no_prefix(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "odd.dump"
    path.write_bytes(content)
    assert toc_prefix(path) is None


def test_a_changed_table_of_contents_is_refused_before_anything_is_created(
    dumped: tuple[PgTarget, Backup], target: PgTarget
) -> None:
    _, backup = dumped
    manifest = read_manifest(backup.path.with_name(backup.path.name + ".manifest.json"))
    flip(backup.path, manifest.toc_bytes // 2)
    with pytest.raises(BackupCorrupt, match=r"table of contents .* fails its checksum"):
        verify_backup(backup, defer_checksum=True)


def test_changed_rows_stop_the_restore_and_drop_the_copy(dumped: tuple[PgTarget, Backup], target: PgTarget) -> None:
    db, backup = dumped
    before = rows(db)
    flip(backup.path, backup.path.stat().st_size - 100)  # inside the last data block
    verified = verify_backup(backup, defer_checksum=True)
    assert verified.checksum_pending
    assert "backup_toc_checksum" in [c.name for c in verified.checks]
    copy = f"{db.name}_copy"
    with pytest.raises(BackupCorrupt, match=r"fails its checksum.*not touched.*copy .* was dropped"):
        restore_to_new_database(verified, target=db, jobs=2, confirm=True, new_name=copy)
    assert not database_exists(target, copy)
    assert rows(db) == before


def test_an_intact_backup_restores_with_the_checksum_read_alongside(
    dumped: tuple[PgTarget, Backup], target: PgTarget
) -> None:
    db, backup = dumped
    verified = verify_backup(backup, defer_checksum=True)
    result = restore_to_new_database(verified, target=db, jobs=2, confirm=True, new_name=f"{db.name}_copy")
    assert not isinstance(result, RestorePlan)
    assert [c.name for c in result.checks] == ["backup_checksum"] and result.checks[0].status == "pass"
    assert rows(db.with_database(result.database)) == rows(db)


def test_a_dry_run_and_option_a_read_the_whole_file_first(dumped: tuple[PgTarget, Backup]) -> None:
    db, backup = dumped
    pending = verify_backup(backup, defer_checksum=True)  # proven table of contents, rows still to read
    flip(backup.path, backup.path.stat().st_size - 100)
    with pytest.raises(BackupCorrupt, match="fails its checksum"):
        verify_backup(backup)  # what a dry run and the drill's preflight do
    before = rows(db)
    with pytest.raises(BackupCorrupt, match="fails its checksum"):
        restore_in_place(pending, target=db, confirm=True)
    assert rows(db) == before


def fresh_copy_checks(db: PgTarget, verified: VerifiedBackup) -> dict[str, CheckResult]:
    """``verified`` restored by Option B into ``<db>_copy``, and that fresh copy verified, by check name."""
    result = restore_to_new_database(verified, target=db, jobs=1, confirm=True, new_name=f"{db.name}_copy")
    assert not isinstance(result, RestorePlan)
    copy = db.with_database(result.database)
    return {c.name: c for c in verify_database(target=copy, manifest=verified.manifest, fresh_restore=True)}


def test_a_fresh_copy_trusts_only_validated_keys(make_db: Made, tmp_path: Path) -> None:
    """In a copy pg_restore just made, a validated key proves there are no orphans; a NOT VALID one
    (which let orphans in) is still queried, and fails."""
    db = make_db(
        "CREATE TABLE parent (id int PRIMARY KEY)",
        "CREATE TABLE child (id int PRIMARY KEY, parent_id int)",
        "CREATE TABLE twin (id int PRIMARY KEY, parent_id int REFERENCES parent (id))",
        "INSERT INTO parent VALUES (1)",
        "INSERT INTO child VALUES (1, 1), (2, 99)",
        "INSERT INTO twin VALUES (1, 1)",
        "ALTER TABLE child ADD CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES parent (id) NOT VALID",
    )
    verified = verify_backup(backup_database(target=db, backup_dir=tmp_path))
    checks = fresh_copy_checks(db, verified)
    orphans = checks["orphans:public.child.child_parent"]
    assert orphans.status == "fail" and orphans.observed == 1
    twin = checks["orphans:public.twin.twin_parent_id_fkey"]
    assert twin.status == "pass" and "proven by the constraint twin_parent_id_fkey" in twin.detail


def test_a_restore_command_starts_without_pandas_boto3_or_redis() -> None:
    code = (
        "import sys, drlib.cli, drlib.operate, drlib.cli_restore; "
        "print(sorted({'pandas', 'boto3', 'botocore', 'redis', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_key_on_a_table_with_inheritance_children_proves_nothing_about_them(make_db: Made, tmp_path: Path) -> None:
    """A foreign key is not inherited by a plain-inheritance child, yet the orphan query counts the child's
    rows too: the validated key must not stand in for it, or an orphan in the child passes unnoticed."""
    db = make_db(
        "CREATE TABLE parent (id int PRIMARY KEY)",
        "CREATE TABLE kid (id int PRIMARY KEY, parent_id int REFERENCES parent (id))",
        "CREATE TABLE grandkid (extra int) INHERITS (kid)",
        "INSERT INTO parent VALUES (1)",
        "INSERT INTO kid VALUES (1, 1)",
        "INSERT INTO grandkid VALUES (2, 99, 0)",  # no parent 99: the key does not cover grandkid
    )
    verified = verify_backup(backup_database(target=db, backup_dir=tmp_path))
    live = {c.name: c for c in verify_database(target=db, manifest=verified.manifest)}
    assert live["orphans:public.kid.kid_parent_id_fkey"].observed == 1
    checks = fresh_copy_checks(db, verified)
    orphans = checks["orphans:public.kid.kid_parent_id_fkey"]
    assert orphans.status == "fail" and orphans.observed == 1


def edit_manifest(backup: Backup, **fields: object) -> Backup:
    """``backup`` with its manifest file changed (what a damaged or hand-edited manifest says)."""
    path = backup.path.with_name(backup.path.name + ".manifest.json")
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
    return Backup(path=backup.path, created_at=backup.created_at, manifest=None)


def test_a_proven_prefix_shorter_than_the_table_of_contents_is_not_trusted(dumped: tuple[PgTarget, Backup]) -> None:
    """A manifest whose toc_bytes ends mid-entry (its toc_sha256 matching those bytes) proved only part of
    what pg_restore executes: a change after it must be found before anything is created."""
    _, backup = dumped
    manifest = read_manifest(backup.path.with_name(backup.path.name + ".manifest.json"))
    short = manifest.toc_bytes // 2
    edited = edit_manifest(backup, toc_bytes=short, toc_sha256=prefix_sha256(backup.path, short))
    flip(backup.path, manifest.toc_bytes - 10)  # inside the table of contents, after the short prefix
    with pytest.raises(BackupCorrupt, match="fails its checksum"):
        verify_backup(edited, defer_checksum=True)


@pytest.mark.parametrize(
    "toc_bytes", ["100", 1.5, True, -5, 1 << 40], ids=["text", "float", "bool", "negative", "huge"]
)
def test_a_malformed_toc_length_reads_the_whole_file_first(dumped: tuple[PgTarget, Backup], toc_bytes: object) -> None:
    _, backup = dumped
    edited = edit_manifest(backup, toc_bytes=toc_bytes)
    verified = verify_backup(edited, defer_checksum=True)  # no TypeError, no whole file read as a "prefix"
    assert not verified.checksum_pending and "backup_checksum" in [c.name for c in verified.checks]


def test_an_interrupt_as_create_database_returns_drops_the_copy(
    dumped: tuple[PgTarget, Backup], target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal lands after the server made the copy, before the restore's own clean-up is armed
    (the window is too short to hit with a real signal, so the test raises what its handler raises)."""
    import drlib.postgres.restore as restore_module

    db, backup = dumped
    real = restore_module.create_database

    def created_then_interrupted(*args: object, **kwargs: object) -> list[str]:
        real(*args, **kwargs)  # type: ignore[arg-type]
        raise DrillInterrupted("SIGTERM")

    monkeypatch.setattr(restore_module, "create_database", created_then_interrupted)
    copy = f"{db.name}_copy"
    with pytest.raises(RestoreFailed, match=r"interrupted \(DrillInterrupted\).*not touched.*copy .* was dropped"):
        restore_to_new_database(verify_backup(backup, defer_checksum=True), target=db, confirm=True, new_name=copy)
    assert not database_exists(target, copy)
