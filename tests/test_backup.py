"""Backups, their manifests, the catalogue, and the integrity checks that refuse bad input."""

from __future__ import annotations

import itertools
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from drlib import faults
from drlib.exceptions import BackupCorrupt, BackupNotFound, CredentialsRejected
from drlib.postgres.backup import Backup, backup_database
from drlib.postgres.catalogue import list_backups, parse_backup_time, select_backup
from drlib.postgres.connection import PgTarget
from drlib.postgres.integrity import verify_backup
from drlib.postgres.manifest import manifest_path


def copy_backup(backup: Backup, folder: Path) -> Backup:
    """A copy of ``backup`` (and its manifest) to damage without touching the original."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / backup.path.name
    if backup.path.is_dir():
        shutil.copytree(backup.path, dest)
    else:
        shutil.copy2(backup.path, dest)
    shutil.copy2(manifest_path(backup.path), manifest_path(dest))
    return Backup(path=dest, created_at=backup.created_at, manifest=None)


def test_backup_is_named_as_the_runbook_names_it(backup: Backup) -> None:
    assert backup.name.startswith("content_crew_") and backup.name.endswith(".dump")
    assert parse_backup_time(backup.name) == backup.created_at.replace(microsecond=0)


def test_manifest_records_checksum_size_version_counts_and_newest_rows(backup: Backup, target: PgTarget) -> None:
    manifest = backup.manifest
    assert manifest is not None
    assert manifest.size_bytes == backup.path.stat().st_size
    assert len(manifest.sha256) == 64
    assert manifest.server_version.startswith("15") or manifest.server_version[0].isdigit()
    assert set(manifest.tables) == {
        f"public.{t}" for t in ("users", "organizations", "content_jobs", "content_artifacts", "billing_events")
    }
    with target.connect() as conn:
        jobs = conn.execute("SELECT count(*), max(created_at) FROM content_jobs").fetchone()
    assert manifest.tables["public.content_jobs"].rows == jobs[0]
    newest = manifest.tables["public.content_jobs"].newest_created_at
    assert newest is not None and datetime.fromisoformat(newest) == jobs[1]  # as PostgreSQL prints it, in UTC
    assert manifest.tables["public.content_jobs"].newest_column == "created_at"
    assert "public.content_jobs.content_jobs_user_id_fkey" in manifest.foreign_keys


def test_directory_format_backup_verifies(healthy_sandbox, profile, target: PgTarget, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    made = backup_database(target=target, backup_dir=tmp_path, prefix="content_crew", fmt="directory", jobs=2)
    assert made.path.is_dir() and made.name.endswith(".dir")
    assert verify_backup(made).toc_entries > 0


def test_catalogue_picks_the_newest_backup_before_the_failure(backup: Backup, profile) -> None:  # type: ignore[no-untyped-def]
    backups = list_backups(profile.backups.postgres_dir, prefix="content_crew")
    assert select_backup(backups).name == backups[-1].name
    assert select_backup(backups, before=backup.created_at + timedelta(seconds=1)).created_at <= backup.created_at
    assert select_backup(backups, selection=backup.name).name == backup.name
    with pytest.raises(BackupNotFound, match="no backup taken before"):
        select_backup(backups, before=backups[0].created_at - timedelta(days=1))
    with pytest.raises(BackupNotFound, match="no backup named"):
        select_backup(backups, selection="content_crew_1999-01-01_000000.dump")


def test_a_missing_backup_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackupNotFound, match="does not exist"):
        list_backups(tmp_path / "nope", prefix="content_crew")


def test_a_missing_backup_is_refused(backup: Backup, tmp_path: Path) -> None:
    gone = copy_backup(backup, tmp_path)
    gone.path.unlink()
    with pytest.raises(BackupNotFound, match="does not exist"):
        verify_backup(gone)


def test_a_zero_byte_backup_is_refused(backup: Backup, tmp_path: Path) -> None:
    empty = copy_backup(backup, tmp_path)
    faults.empty_file(empty.path)
    with pytest.raises(BackupCorrupt, match="0 bytes"):
        verify_backup(empty)


def test_a_truncated_backup_is_refused(backup: Backup, tmp_path: Path) -> None:
    cut = copy_backup(backup, tmp_path)
    faults.truncate_file(cut.path)
    with pytest.raises(BackupCorrupt, match="truncated"):
        verify_backup(cut)


def test_a_truncated_backup_without_manifest_is_refused_by_the_deep_read(backup: Backup, tmp_path: Path) -> None:
    cut = copy_backup(backup, tmp_path)
    manifest_path(cut.path).unlink()
    faults.truncate_file(cut.path, keep_fraction=0.9)
    with pytest.raises(BackupCorrupt):
        verify_backup(cut, require_manifest=False)


def test_a_checksum_mismatch_is_refused(backup: Backup, tmp_path: Path) -> None:
    rotten = copy_backup(backup, tmp_path)
    faults.flip_byte(rotten.path)
    with pytest.raises(BackupCorrupt, match="fails its checksum"):
        verify_backup(rotten)


def test_a_file_that_is_not_a_dump_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "content_crew_2026-01-13_020000.dump"
    fake.write_text("hello, I am not a database dump\n")
    with pytest.raises(BackupCorrupt, match="wrong format"):
        verify_backup(Backup(path=fake, created_at=parse_backup_time(fake.name), manifest=None))  # type: ignore[arg-type]


def test_a_plain_sql_dump_is_refused_with_a_hint(tmp_path: Path) -> None:
    fake = tmp_path / "content_crew_2026-01-13_020000.dump"
    fake.write_text("--\n-- PostgreSQL database dump\n--\nSET statement_timeout = 0;\n")
    with pytest.raises(BackupCorrupt, match="plain SQL dump"):
        verify_backup(Backup(path=fake, created_at=parse_backup_time(fake.name), manifest=None))  # type: ignore[arg-type]


def test_a_backup_without_manifest_is_refused_unless_allowed(backup: Backup, tmp_path: Path) -> None:
    bare = copy_backup(backup, tmp_path)
    manifest_path(bare.path).unlink()
    with pytest.raises(BackupCorrupt, match="no manifest"):
        verify_backup(bare)
    verified = verify_backup(bare, require_manifest=False)
    assert {c.name: c.status for c in verified.checks}["backup_manifest"] == "warn"


def test_a_wrong_password_is_refused_without_showing_it(healthy_sandbox, target: PgTarget, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wrong = PgTarget(settings=target.settings, password="not-the-password-123")
    with pytest.raises(CredentialsRejected) as info:
        backup_database(target=wrong, backup_dir=tmp_path)
    assert "rejected the credentials" in str(info.value)
    assert "not-the-password-123" not in str(info.value)
    assert not list(tmp_path.iterdir())


def middle_of_largest_data_block(dump: Path) -> int:
    """An offset inside the largest table's compressed rows (the middle of the file may fall between blocks
    or in one pg_restore never reads, depending on how the seed data came out)."""
    from drlib.postgres import archive

    with dump.open("rb") as handle:
        reader = archive._Reader(handle)
        starts = sorted(archive._read_entries(reader, archive._read_header(reader)))
    bounds = [*starts, dump.stat().st_size]
    start, end = max(itertools.pairwise(bounds), key=lambda b: b[1] - b[0])
    return (start + end) // 2


def damage_and_rewrite_manifest(backup: Backup, folder: Path, fault: str) -> Backup:
    """A copy whose data block is damaged and whose manifest was rewritten to match the damage
    (as if the dump had been damaged before it was catalogued)."""
    import dataclasses

    from drlib.postgres.manifest import dump_checksums, read_manifest, write_manifest

    damaged = copy_backup(backup, folder)
    if fault == "flip":
        faults.flip_byte(damaged.path, offset=middle_of_largest_data_block(damaged.path))
    else:
        faults.truncate_file(damaged.path, keep_fraction=0.9)
    overall, files, size = dump_checksums(damaged.path)
    manifest = dataclasses.replace(
        read_manifest(manifest_path(damaged.path)), sha256=overall, size_bytes=size, files=files
    )
    write_manifest(manifest_path(damaged.path), manifest)
    return damaged


@pytest.mark.parametrize("fault", ["flip", "truncate"])
def test_deep_verification_catches_a_damaged_data_block_whose_manifest_matches(
    backup: Backup, tmp_path: Path, fault: str
) -> None:
    damaged = damage_and_rewrite_manifest(backup, tmp_path, fault)
    shallow = verify_backup(damaged)  # size, checksum and table of contents all look fine
    assert shallow.deep is False
    with pytest.raises(BackupCorrupt, match="cannot be read to the end"):
        verify_backup(damaged, deep=True)


def test_a_deep_verification_is_recorded_on_the_verified_backup(backup: Backup) -> None:
    verified = verify_backup(backup, deep=True)
    assert verified.deep is True
    assert {c.name: c.status for c in verified.checks}["backup_readable_to_end"] == "pass"


def test_a_backup_folder_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "postgres"
    not_a_folder.write_text("oops")
    with pytest.raises(BackupNotFound, match="is a file, not a folder"):
        list_backups(not_a_folder, prefix="content_crew")


def test_names_that_only_look_like_backups_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "content_crew_2026-13-45_250000.dump").write_bytes(b"PGDMP")
    assert list_backups(tmp_path, prefix="content_crew") == []


def test_an_unreadable_manifest_is_refused_as_corrupt_not_a_traceback(backup: Backup, tmp_path: Path) -> None:
    odd = copy_backup(backup, tmp_path)
    manifest_path(odd.path).unlink()
    manifest_path(odd.path).mkdir()  # reading it raises IsADirectoryError
    with pytest.raises(BackupCorrupt, match="unreadable"):
        verify_backup(odd)


def test_a_backup_folder_that_cannot_be_created_is_one_clear_error(target: PgTarget, tmp_path: Path) -> None:
    from drlib.postgres.backup import BackupFailed

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BackupFailed, match="cannot create the backup folder"):
        backup_database(target=target, backup_dir=blocker / "postgres")


def test_a_failing_statement_is_one_clear_error_naming_what_was_done(target: PgTarget) -> None:
    from drlib.postgres.connection import DatabaseCommandFailed, create_database

    with pytest.raises(DatabaseCommandFailed, match=f"CREATE DATABASE {target.name} on .* failed: .*already exists"):
        create_database(target, target.name)


def test_a_postgres_program_that_runs_too_long_is_stopped_with_a_clear_error(target: PgTarget) -> None:
    from drlib.postgres.connection import DatabaseCommandFailed, run_pg_tool

    with pytest.raises(DatabaseCommandFailed, match="did not finish"):
        run_pg_tool("pg_dump", ["--schema-only", target.name], target=target, timeout=0.001)
