"""Ransomware: each detector on a copy of the sandbox's storage with its fault present and absent (no false
alarm on the clean tree, none for a low-entropy rewrite, a rewrite of a file that was random already or a
new compressed upload); the first affected time; the clean-backup choice refusing backups taken after it;
the database's ransom-note table; the write block; the backups bucket's lock checked with the application's
credentials on the sandbox's bucket and on one without versioning or lock; and the drill, which recovers,
and fails when the recovery does not recover."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from drlib.cli import main
from drlib.config import Profile
from drlib.exceptions import DrillRefused
from drlib.faults_ransomware import NOTE, encrypt_storage, leave_note_table
from drlib.plans import RestorePlan
from drlib.postgres.catalogue import list_backups, select_backup
from drlib.postgres.connection import PgTarget
from drlib.postgres.ransom import scan_database_for_ransom
from drlib.sandbox.stack import Sandbox
from drlib.storage.backends import LocalStorage, s3_client
from drlib.storage.backup import archive_local
from drlib.storage.catalogue import StorageBackup, list_storage_backups, select_storage_backup
from drlib.storage.immutability import bucket_protection, immutability_checks, probe_lock
from drlib.storage.restore import VerifiedStorageBackup, restore_local, verify_storage_backup
from drlib.storage.tamper import BackupNotClean, clean_backup_checks, pick_clean_backup, scan_storage
from drlib.storage.writeblock import block_writes, record_path, unblock_writes, writes_blocked

T0 = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)


@pytest.fixture
def tree(sandbox: Sandbox, tmp_path: Path) -> LocalStorage:
    """A copy of the sandbox's storage tree (60 low-entropy artifacts), plus a compressed video, to damage."""
    root = tmp_path / "storage"
    shutil.copytree(sandbox.storage_root, root)
    (root / "videos" / "clip.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + os.urandom(8192))
    return LocalStorage(root)


def backup_of(tree: LocalStorage, when: datetime = T0) -> VerifiedStorageBackup:
    return verify_storage_backup(archive_local(root=tree.root, backup_dir=tree.root.parent / "backups", now=when))


def scramble(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def kinds(scan: Any) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for finding in scan.findings:
        found.setdefault(finding.kind, set()).add(finding.key)
    return found


# -- the detectors ---------------------------------------------------------------------------------
def test_a_clean_tree_raises_no_alarm(tree: LocalStorage) -> None:
    scan = scan_storage(tree, backup_of(tree))
    assert scan.clean and not scan.findings and not scan.new_files and scan.first_affected is None
    assert all(c.status == "pass" for c in scan.checks()), scan.checks()


def test_ordinary_changes_are_not_ransomware_but_encryption_notes_and_renames_are(tree: LocalStorage) -> None:
    baseline = backup_of(tree)
    keys = sorted(k for k in baseline.manifest.files if k.startswith("artifacts/"))
    # ordinary use: a low-entropy rewrite, a random file rewritten randomly, a new compressed upload, a text file
    (tree.root / keys[0]).write_text(json.dumps({"script": "rewritten by the application"} | {"n": list(range(300))}))
    (tree.root / "videos" / "clip.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + os.urandom(9000))
    (tree.root / "videos" / "new-upload.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(4096))
    (tree.root / "artifacts" / "release-notes.txt").write_text(
        "We fixed the export of your files and the payment page."
    )
    assert scan_storage(tree, baseline).clean
    # the attack: one file encrypted in place, three renamed to .locked, a note by name and one by content
    scramble(tree.root / keys[1])
    for key in keys[2:5]:
        (tree.root / key).rename(tree.root / f"{key}.locked")
    (tree.root / "HOW_TO_RECOVER_FILES.html").write_text("<p>hello</p>")
    (tree.root / "artifacts" / "info.txt").write_text(NOTE)
    scan = scan_storage(tree, baseline)
    assert kinds(scan) == {
        "changed": {keys[0], "videos/clip.mp4"},
        "encrypted": {keys[1]},
        "renamed": {f"{k}.locked" for k in keys[2:5]},
        "note": {"HOW_TO_RECOVER_FILES.html", "artifacts/info.txt"},
    }
    assert set(scan.new_files) == {"videos/new-upload.png", "artifacts/release-notes.txt"}
    assert scan.extensions == {".locked"}
    statuses = {c.name: c.status for c in scan.checks()}
    assert statuses == {
        "ransom_notes": "fail",
        "high_entropy_rewrites": "fail",
        "mass_renames": "fail",
        "changed_files": "warn",
        "no_ransomware": "fail",
    }


def test_a_single_rename_is_not_a_mass_rename_unless_the_file_is_encrypted(tree: LocalStorage) -> None:
    baseline = backup_of(tree)
    wav, other = sorted(k for k in baseline.manifest.files if k.startswith("voiceovers/job-"))[:2]
    (tree.root / wav).rename(tree.root / wav.replace(".wav", ".mp3"))
    assert kinds(scan_storage(tree, baseline)) == {"missing": {wav}}
    scramble(tree.root / other)
    (tree.root / other).rename(tree.root / f"{other}.crypt")
    assert kinds(scan_storage(tree, baseline))["renamed"] == {f"{other}.crypt"}


def test_files_merely_named_like_notes_or_derived_from_others_are_no_alarm_but_encrypted_media_is(
    tree: LocalStorage,
) -> None:
    # ordinary content whose names a loose pattern takes for notes, backed up, then unchanged
    (tree.root / "docs").mkdir()
    (tree.root / "docs" / "how_to_restore.md").write_text("Run drlib restore storage, then check the app.")
    (tree.root / "videos" / "transom.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(4096))
    baseline = backup_of(tree)
    # ordinary use: each of three recordings gets an mp3 beside it (the wav stays), a policy upload
    wavs = sorted(k for k in baseline.manifest.files if k.startswith("voiceovers/job-"))[:3]
    for key in wavs:
        (tree.root / key.replace(".wav", ".mp3")).write_text("ID3 " + "a derived, low-entropy rendition " * 60)
    (tree.root / "docs" / "ransomware-policy.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(4096))
    scan = scan_storage(tree, baseline)
    assert scan.clean, scan.rows()
    assert clean_backup_checks(baseline, extensions=scan.extensions, benign=scan.benign_note_names)[1].passed
    # media encrypted in place: random before (compressed), random now, but its signature is gone
    scramble(tree.root / "videos" / "clip.mp4")
    assert kinds(scan_storage(tree, baseline)).get("encrypted") == {"videos/clip.mp4"}


def test_the_first_affected_time_is_the_earliest_modification_of_an_affected_file(
    profile: Profile, tree: LocalStorage
) -> None:
    baseline = backup_of(tree)
    encrypted = encrypt_storage(profile, tree, share=0.3)
    # the notes first (always affected), then the files: a compressed one encrypted again is only "changed"
    touched = [*encrypted.notes, *encrypted.renamed, *encrypted.encrypted]
    for minutes, key in enumerate(touched, start=60):
        when = (T0 + timedelta(minutes=minutes)).timestamp()
        os.utime(tree.root / key, (when, when))
    scan = scan_storage(tree, baseline)
    with pytest.raises(DrillRefused, match="drill_target"):
        encrypt_storage(dataclasses.replace(profile, name="production", drill_target=False), tree)
    assert {f.key for f in scan.affected} >= {*encrypted.notes, *encrypted.renamed}
    assert len(scan.of_kind("encrypted")) >= len(encrypted.encrypted) - 2  # test.wav is too short, clip.mp4 random
    assert scan.first_affected == T0 + timedelta(hours=1)


def test_the_clean_backup_is_the_newest_before_the_attack_and_later_or_unclean_ones_are_refused(
    tree: LocalStorage,
) -> None:
    clean = backup_of(tree, T0)
    (tree.root / "README_TO_DECRYPT.txt").write_text(NOTE)  # an early note, backed up
    noted = backup_of(tree, T0 + timedelta(hours=1))
    later = backup_of(tree, T0 + timedelta(hours=3))
    first = T0 + timedelta(hours=2)
    pool = sorted([clean.backup, noted.backup, later.backup], key=lambda b: b.created_at)

    def judge(backup: StorageBackup) -> Any:
        return clean_backup_checks(verify_storage_backup(backup), extensions={".locked"})

    chosen, checks, rejected = pick_clean_backup(pool, first_affected=first, selection="latest", judge=judge)
    assert chosen.backup.name == clean.backup.name and checks.passed
    assert "README_TO_DECRYPT.txt" in rejected[noted.backup.name]
    with pytest.raises(BackupNotClean, match="after the first affected"):
        pick_clean_backup(pool, first_affected=first, selection=later.backup.name, judge=judge)
    with pytest.raises(BackupNotClean, match="not clean"):
        pick_clean_backup(pool, first_affected=first, selection=noted.backup.name, judge=judge)


def test_a_backup_holding_encrypted_files_is_not_clean(tree: LocalStorage) -> None:
    assert clean_backup_checks(backup_of(tree), extensions=set())[1].passed
    scramble(next(p for p in (tree.root / "artifacts").iterdir()))
    _, checks = clean_backup_checks(backup_of(tree, T0 + timedelta(hours=1)), extensions=set())
    assert [c.name for c in checks.failures] == ["backup_clean:random_files"]


# -- the database ---------------------------------------------------------------------------------
def test_a_ransom_note_table_and_a_dropped_table_are_found_and_a_clean_database_is_not_flagged(
    profile: Profile, db_copy: PgTarget
) -> None:
    newest = select_backup(list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix))
    with db_copy.connect() as conn:  # the application's own new table, merely named like a note
        conn.execute("CREATE TABLE public.restore_data_log AS SELECT 'job ' || g AS line FROM generate_series(1, 5) g")
    clean = scan_database_for_ransom(db_copy, newest.manifest, baseline=newest.name)
    assert not clean.affected and clean.checks().passed
    table = leave_note_table(db_copy)
    with db_copy.connect() as conn:
        conn.execute("DROP TABLE public.content_artifacts")
    found = scan_database_for_ransom(db_copy, newest.manifest, baseline=newest.name)
    assert found.affected and found.note_tables == (table,) and found.dropped_tables == ("public.content_artifacts",)
    assert {c.name for c in found.checks().failures} == {
        "database_ransom_note_tables",
        "database_tables_dropped_or_emptied",
    }


# -- isolation ---------------------------------------------------------------------------------------
def test_writes_are_blocked_and_unblocked_to_the_original_modes(tree: LocalStorage) -> None:
    script = next((tree.root / "artifacts").iterdir())
    os.chmod(script, 0o640)
    block = block_writes(tree.root)
    assert writes_blocked(tree.root) and block.entries > 60
    assert not any(p.stat().st_mode & 0o222 for p in [tree.root, *tree.root.rglob("*")])
    moved = tree.root.parent / "moved"
    shutil.copytree(tree.root, moved, copy_function=shutil.copy2)  # the replaced tree a restore keeps aside
    assert unblock_writes(tree.root, also=[moved]) > 0
    assert stat.S_IMODE(script.stat().st_mode) == 0o640 and not record_path(tree.root).exists()
    assert (tree.root / "videos").stat().st_mode & stat.S_IWUSR and (moved / "videos").stat().st_mode & stat.S_IWUSR


def test_a_killed_drills_encrypted_and_blocked_storage_is_unhealthy_until_sandbox_up_repairs_it(
    healthy_sandbox: Sandbox, profile: Profile
) -> None:
    live = LocalStorage(healthy_sandbox.storage_root)
    encrypt_storage(profile, live, share=0.05)  # as a drill killed with SIGKILL after its fault leaves it
    block_writes(live.root)
    left = healthy_sandbox.status()
    assert not left.healthy and "ransomware drill's encrypted files" in left.describe()
    assert healthy_sandbox.up().healthy
    assert not affected_now(profile) and not writes_blocked(live.root)


# -- prevention --------------------------------------------------------------------------------------
def test_the_sandbox_backups_bucket_keeps_backups_out_of_the_applications_reach(profile: Profile) -> None:
    checks = immutability_checks(profile, probe=True)
    statuses = {c.name: c.status for c in checks}
    assert statuses == {
        "backups_bucket_versioning": "pass",
        "backups_bucket_object_lock": "pass",
        "locked_backup_not_deletable": "pass",
        "locked_backup_not_overwritable": "pass",
        "backups_off_host": statuses["backups_off_host"],  # local archives only: a warning, or pass once pushed
    }
    assert statuses["backups_off_host"] in ("pass", "warn")


def test_a_bucket_without_versioning_or_lock_fails_the_prevention_checks(profile: Profile) -> None:
    client = s3_client(profile)
    bucket = f"plain-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    failed = [
        c.name for c in [*bucket_protection(client, bucket).checks(), *probe_lock(client, bucket)] if not c.passed
    ]
    assert failed == [
        "backups_bucket_versioning",
        "backups_bucket_object_lock",
        "locked_backup_not_deletable",
        "locked_backup_not_overwritable",
    ]


# -- the drill --------------------------------------------------------------------------------------
def drill(*args: str) -> Result:
    return CliRunner().invoke(main, ["drill", "run", "ransomware", *args], catch_exceptions=False)


def newest_results() -> dict[str, Any]:
    folder = max(Path(os.environ["DRLIB_REPORTS"]).glob("*/*-ransomware*"), key=lambda p: p.stat().st_mtime)
    return dict(json.loads((folder / "results.json").read_text()))


def affected_now(profile: Profile) -> set[str]:
    live = LocalStorage(Path(profile.require_storage().path))
    newest = select_storage_backup(list_storage_backups(backup_dir=profile.backups.storage_dir), kind="archive")
    return {f.key for f in scan_storage(live, verify_storage_backup(newest)).affected}


@pytest.mark.slow
def test_the_drill_restores_clean_storage_and_the_database_and_leaves_the_sandbox_healthy(
    healthy_sandbox: Sandbox, profile: Profile
) -> None:
    result = drill("-p", "drill_database", "true")
    assert result.exit_code == 0, result.output
    results = newest_results()
    checks = {c["name"]: c["status"] for c in results["checks"]}
    assert checks["no_ransomware"] == "warn" and checks["verify:no_ransomware"] == "pass"
    assert checks["database_ransom_note_tables"] == "warn" and checks["verify:database_ransom_note_tables"] == "pass"
    assert checks["locked_backup_not_deletable"] == "pass"
    assert results["data_loss"]["storage_files"]["lost"] == 3  # listed, not restored
    assert not affected_now(profile) and not writes_blocked(healthy_sandbox.storage_root)
    assert not list(healthy_sandbox.storage_root.parent.glob("storage.old-*"))  # the encrypted tree was dropped
    assert healthy_sandbox.status().healthy


@pytest.mark.slow
def test_the_drill_fails_when_the_recovery_does_not_recover(healthy_sandbox: Sandbox, profile: Profile) -> None:
    try:
        result = drill("-p", "restore", "false")
        assert result.exit_code == 1, result.output
        assert "FAIL verify:no_ransomware" in result.output and "FAIL clean_at_restart" in result.output
        assert not writes_blocked(healthy_sandbox.storage_root)  # unblocked whatever the verification found
        assert affected_now(profile)
    finally:  # the drill left encrypted files: put back the backup it took
        newest = select_storage_backup(list_storage_backups(backup_dir=profile.backups.storage_dir), kind="archive")
        done = restore_local(verify_storage_backup(newest), live_root=healthy_sandbox.storage_root, confirm=True)
        assert not isinstance(done, RestorePlan) and done.kept_old
        shutil.rmtree(done.kept_old)
        healthy_sandbox.up()
    assert not affected_now(profile)
