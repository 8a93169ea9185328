"""Local storage backups, restores into staging + swap, unsafe archives, and every storage check failing
when its fault is injected."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drlib import faults, preflight
from drlib.exceptions import BackupCorrupt, ConfigError, InsufficientDiskSpace, RestoreFailed
from drlib.hashing import sha256_file
from drlib.plans import RestorePlan
from drlib.sandbox.stack import Sandbox
from drlib.storage import archive as archive_module
from drlib.storage import restore as restore_module
from drlib.storage.backends import LocalStorage
from drlib.storage.backup import archive_local, copy_full
from drlib.storage.catalogue import StorageBackup, list_storage_backups, select_storage_backup
from drlib.storage.manifest import StorageManifest, manifest_path_for, read_manifest, write_manifest
from drlib.storage.restore import StorageRestoreResult, drop_old_tree, restore_local, verify_storage_backup
from drlib.storage.verify import (
    api_serves_file_check,
    archive_listing_check,
    storage_key_checks,
    verify_storage,
)
from tests.archives import hostile_archive


@pytest.fixture
def tree(healthy_sandbox: Sandbox, tmp_path: Path) -> Path:
    """A copy of the sandbox's storage tree to back up, damage and restore."""
    root = tmp_path / "storage"
    shutil.copytree(healthy_sandbox.storage_root, root)
    return root


@pytest.fixture
def archive(tree: Path, tmp_path: Path) -> StorageBackup:
    return archive_local(root=tree, backup_dir=tmp_path / "backups")


def statuses(checks) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c.name: c.status for c in checks}


def test_the_archive_manifest_lists_every_file_with_size_checksum_and_mtime(tree: Path, archive: StorageBackup) -> None:
    assert archive.name == f"storage_{datetime.now(UTC):%Y-%m-%d}.tar.gz"
    manifest = read_manifest(manifest_path_for(archive.path))
    files = sorted(LocalStorage(tree).files(), key=lambda f: f.key)
    assert sorted(manifest.files) == [f.key for f in files]
    sample = files[0]
    assert manifest.files[sample.key].size == sample.size
    assert manifest.files[sample.key].sha256 == sha256_file(tree / sample.key)
    assert manifest.files[sample.key].mtime == pytest.approx(sample.mtime)
    assert set(manifest.folders) == {"voiceovers", "videos", "artifacts"}
    assert manifest.total_files == len(files) and manifest.archive_sha256 == sha256_file(archive.path)
    assert json.loads(manifest.to_json())["totals"] == {"files": len(files), "bytes": sum(f.size for f in files)}


def test_a_second_backup_the_same_day_gets_a_time_and_the_catalogue_picks_the_newest(
    tree: Path, tmp_path: Path
) -> None:
    first = archive_local(root=tree, backup_dir=tmp_path / "b")
    second = archive_local(
        root=tree, backup_dir=tmp_path / "b", compression="zst", now=first.created_at + timedelta(seconds=2)
    )
    full = copy_full(root=tree, backup_dir=tmp_path / "b", now=first.created_at + timedelta(seconds=4))
    assert second.name.endswith(".tar.zst") and full.name.startswith("full_")
    backups = list_storage_backups(backup_dir=tmp_path / "b")
    assert [b.name for b in backups] == [first.name, second.name, full.name]
    assert select_storage_backup(backups).name == full.name
    assert select_storage_backup(backups, kind="archive").name == second.name
    assert select_storage_backup(backups, before=first.created_at + timedelta(seconds=1)).name == first.name


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_an_archive_restore_goes_through_staging_and_keeps_the_old_tree(
    tree: Path, tmp_path: Path, compression: str
) -> None:
    backup = archive_local(root=tree, backup_dir=tmp_path / "b", compression=compression)
    victim = next(iter(LocalStorage(tree).files())).key
    (tree / victim).unlink()
    verified = verify_storage_backup(backup)
    plan = restore_local(verified, live_root=tree)
    assert isinstance(plan, RestorePlan) and not (tree / victim).exists()
    result = restore_local(verified, live_root=tree, confirm=True)
    assert isinstance(result, StorageRestoreResult) and result.kept_old
    assert verify_storage(LocalStorage(tree), verified.manifest).passed
    old = Path(result.kept_old)
    assert old.is_dir() and not (old / victim).exists()
    assert isinstance(drop_old_tree(old, live_root=tree), RestorePlan) and old.exists()
    drop_old_tree(old, live_root=tree, confirm=True)
    assert not old.exists()
    assert not [p for p in tree.parent.iterdir() if ".restore-" in p.name]


def test_a_full_copy_restores_a_deleted_tree(tree: Path, tmp_path: Path) -> None:
    backup = copy_full(root=tree, backup_dir=tmp_path / "b")
    shutil.rmtree(tree)
    result = restore_local(verify_storage_backup(backup), live_root=tree, confirm=True)
    assert isinstance(result, StorageRestoreResult) and result.kept_old is None
    assert verify_storage(LocalStorage(tree), backup.manifest).passed  # type: ignore[arg-type]


def test_a_full_copy_with_a_changed_file_is_not_swapped_in(tree: Path, tmp_path: Path) -> None:
    backup = copy_full(root=tree, backup_dir=tmp_path / "b")
    key = sorted(backup.manifest.files)[0]  # type: ignore[union-attr]
    faults.flip_byte(backup.path / key)
    before = sorted(p.name for p in tree.parent.iterdir())
    with pytest.raises(RestoreFailed, match=f"changed: {key}.*was not touched"):
        restore_local(verify_storage_backup(backup), live_root=tree, confirm=True)
    assert sorted(p.name for p in tree.parent.iterdir()) == before


@pytest.mark.parametrize(
    ("fault", "message"),
    [(faults.truncate_file, "truncated"), (faults.flip_byte, "fails its checksum"), (faults.empty_file, "0 bytes")],
)
def test_a_damaged_archive_is_refused_before_anything_is_touched(archive: StorageBackup, fault, message: str) -> None:  # type: ignore[no-untyped-def]
    fault(archive.path)
    with pytest.raises(BackupCorrupt, match=message):
        verify_storage_backup(archive)


def malicious_archive(folder: Path, member: tarfile.TarInfo) -> StorageBackup:
    """A gzip'd tar holding ``member``, with a manifest that matches it (so only extraction can catch it)."""
    return hostile_archive(folder, [(member, b"pwned" if member.isfile() else b"")])


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 5 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../../escaped.txt"), "escapes the target"),
        (_member("/etc/drlib-pwned"), "absolute path"),
        (_member("videos/link", tarfile.SYMTYPE, "../../../etc/passwd"), "pointing outside"),
        (_member("videos/dev", tarfile.CHRTYPE), "device or special file"),
    ],
)
def test_an_archive_member_that_would_escape_the_target_is_refused(
    tree: Path, tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    backup = malicious_archive(tmp_path / "evil", member)
    before = sorted(p.name for p in tree.parent.iterdir())
    with pytest.raises(RestoreFailed, match=message):
        restore_local(verify_storage_backup(backup), live_root=tree, confirm=True)
    assert sorted(p.name for p in tree.parent.iterdir()) == before
    assert not Path("/etc/drlib-pwned").exists() and not (tmp_path / "escaped.txt").exists()


def test_an_intact_tree_passes_every_storage_check(tree: Path, archive: StorageBackup) -> None:
    checks = verify_storage(LocalStorage(tree), archive.manifest)  # type: ignore[arg-type]
    assert checks.passed, repr(checks)
    assert archive_listing_check(archive.path, archive.manifest).status == "pass"  # type: ignore[arg-type]


def test_a_deleted_file_fails_the_count_and_checksum_checks_and_is_named(tree: Path, archive: StorageBackup) -> None:
    key = sorted(archive.manifest.files)[3]  # type: ignore[union-attr]
    (tree / key).unlink()
    result = {c.name: c for c in verify_storage(LocalStorage(tree), archive.manifest)}  # type: ignore[arg-type]
    assert result[f"file_count:{key.split('/')[0]}"].status == "fail"
    assert result["checksums"].status == "fail" and f"missing: {key}" in result["checksums"].detail


def test_a_single_flipped_byte_is_found_and_named(tree: Path, archive: StorageBackup) -> None:
    key = sorted(archive.manifest.files)[5]  # type: ignore[union-attr]
    faults.flip_byte(tree / key)
    result = {c.name: c for c in verify_storage(LocalStorage(tree), archive.manifest)}  # type: ignore[arg-type]
    assert result["checksums"].status == "fail"
    assert result["checksums"].detail == f"changed: {key}"
    assert statuses(verify_storage(LocalStorage(tree), archive.manifest))["no_zero_byte_files"] == "pass"  # type: ignore[arg-type]


def test_a_zero_byte_file_fails_the_size_check(tree: Path, archive: StorageBackup) -> None:
    key = sorted(archive.manifest.files)[2]  # type: ignore[union-attr]
    faults.empty_file(tree / key)
    result = {c.name: c for c in verify_storage(LocalStorage(tree), archive.manifest)}  # type: ignore[arg-type]
    assert result["no_zero_byte_files"].status == "fail" and key in result["no_zero_byte_files"].detail


def test_a_world_writable_file_fails_the_permission_check(tree: Path, archive: StorageBackup) -> None:
    key = sorted(archive.manifest.files)[1]  # type: ignore[union-attr]
    os.chmod(tree / key, 0o666)
    result = {c.name: c for c in verify_storage(LocalStorage(tree), archive.manifest)}  # type: ignore[arg-type]
    assert result["permissions"].status == "fail" and key in result["permissions"].detail


def test_the_archive_listing_must_match_the_manifest(archive: StorageBackup) -> None:
    manifest = archive.manifest
    assert manifest is not None
    fewer = StorageManifest(**{**manifest.__dict__, "files": dict(list(manifest.files.items())[1:])})
    assert archive_listing_check(archive.path, fewer).status == "fail"


def test_a_missing_storage_key_fails_and_an_unreferenced_file_warns(tree: Path, target) -> None:  # type: ignore[no-untyped-def]
    from drlib.storage.verify import referenced_keys

    key = referenced_keys(target)[0]
    (tree / key).unlink()
    (tree / "artifacts" / "stray.json").write_text("{}")
    result = {c.name: c for c in storage_key_checks(target, LocalStorage(tree))}
    assert result["storage_keys_exist"].status == "fail" and key in result["storage_keys_exist"].detail
    assert (
        result["unreferenced_files"].status == "warn" and "artifacts/stray.json" in result["unreferenced_files"].detail
    )


def test_the_api_serves_a_restored_file_check_can_fail(healthy_sandbox: Sandbox, profile) -> None:  # type: ignore[no-untyped-def]
    storage = LocalStorage(healthy_sandbox.storage_root)
    key = "voiceovers/test.wav"
    assert api_serves_file_check(profile.app.base_url, storage, key).status == "pass"
    moved = healthy_sandbox.storage_root / "voiceovers" / "test.wav.bak"
    (healthy_sandbox.storage_root / key).rename(moved)
    try:
        assert api_serves_file_check(profile.app.base_url, storage, key).status == "fail"
    finally:
        moved.rename(healthy_sandbox.storage_root / key)


def test_a_truncated_archive_is_caught_while_streaming_even_with_a_matching_checksum(
    tree: Path, tmp_path: Path
) -> None:
    backup = archive_local(root=tree, backup_dir=tmp_path / "b")
    faults.truncate_file(backup.path, keep_fraction=0.6)
    manifest = backup.manifest
    assert manifest is not None
    forged = StorageManifest(
        **{**manifest.__dict__, "archive_sha256": sha256_file(backup.path), "archive_size": backup.path.stat().st_size}
    )
    write_manifest(manifest_path_for(backup.path), forged)
    before = sorted(p.name for p in tree.parent.iterdir())
    with pytest.raises(RestoreFailed, match=r"truncated|decompress|missing"):
        restore_local(verify_storage_backup(replace(backup, manifest=None)), live_root=tree, confirm=True)
    assert sorted(p.name for p in tree.parent.iterdir()) == before


def test_long_and_unicode_file_names_survive_an_archive_round_trip(tree: Path, tmp_path: Path) -> None:
    deep = tree / "artifacts" / ("ü" * 40) / ("a-very-long-file-name-" * 8 + ".json")
    deep.parent.mkdir(parents=True)
    deep.write_text("{}")
    backup = archive_local(root=tree, backup_dir=tmp_path / "b")
    shutil.rmtree(tree)
    restore_local(verify_storage_backup(backup), live_root=tree, confirm=True)
    assert deep.read_text() == "{}"
    assert verify_storage(LocalStorage(tree), backup.manifest).passed  # type: ignore[arg-type]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """A 2 MiB tmpfs (when mounting is permitted) holding a live tree; ``True`` when it is real."""
    disk = tmp_path / "small"
    disk.mkdir()
    mount = shutil.which("mount") or "mount"
    mounted = subprocess.run([mount, "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    live = disk / "live"
    (live / "voiceovers").mkdir(parents=True)
    (live / "voiceovers" / "current.wav").write_bytes(b"live audio")
    yield disk, mounted.returncode == 0
    if mounted.returncode == 0:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture
def big_backup(tmp_path: Path, request: pytest.FixtureRequest) -> StorageBackup:
    """A 3 MiB backup (incompressible): more than the small disk holds."""
    source = tmp_path / "source"
    for i in range(3):
        (source / "videos").mkdir(parents=True, exist_ok=True)
        (source / "videos" / f"clip-{i}.mp4").write_bytes(os.urandom(1024 * 1024))
    kind = getattr(request, "param", "archive")
    make = archive_local if kind == "archive" else copy_full
    return make(root=source, backup_dir=tmp_path / "backups")


def tree_state(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("confirm", [False, True])
def test_a_storage_restore_bigger_than_the_free_space_is_refused_before_anything_is_written(
    small_disk: tuple[Path, bool], big_backup: StorageBackup, monkeypatch: pytest.MonkeyPatch, confirm: bool
) -> None:
    disk, real = small_disk
    if not real:  # no tmpfs: pretend the volume has 2 MiB free
        monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(2**21, 0, 2**21))  # type: ignore[attr-defined]
    before = tree_state(disk)
    with pytest.raises(InsufficientDiskSpace, match=r"not enough free disk space.*restore elsewhere"):
        restore_local(verify_storage_backup(big_backup), live_root=disk / "live", confirm=confirm)
    assert tree_state(disk) == before and sorted(p.name for p in disk.iterdir()) == ["live"]


@pytest.mark.parametrize("big_backup", ["archive", "full"], indirect=True)
def test_a_disk_that_fills_up_during_a_storage_restore_is_named_and_the_live_tree_is_untouched(
    small_disk: tuple[Path, bool], big_backup: StorageBackup, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk, real = small_disk
    monkeypatch.setattr(restore_module, "require_free_space", lambda **_: 0)  # the pre-check was fooled
    if not real:  # no tmpfs: make writing fail the way a full disk does

        def full(*_: object, **__: object) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(archive_module, "_copy", full)
        monkeypatch.setattr(restore_module, "copy_hashing", full)
    before = tree_state(disk)
    with pytest.raises(RestoreFailed, match=r"no space left on device in .*needs about .*free space or restore else"):
        restore_local(verify_storage_backup(big_backup), live_root=disk / "live", confirm=True)
    assert tree_state(disk) == before and sorted(p.name for p in disk.iterdir()) == ["live"]


def test_a_failed_swap_puts_the_live_tree_back(
    tree: Path, archive: StorageBackup, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace, calls = os.replace, []

    def second_rename_fails(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) == 2:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        real_replace(src, dst)

    monkeypatch.setattr(restore_module.os, "replace", second_rename_fails)
    before = tree_state(tree)
    with pytest.raises(RestoreFailed, match=r"could not swap.*put back as it was"):
        restore_local(verify_storage_backup(archive), live_root=tree, confirm=True)
    monkeypatch.undo()
    assert tree_state(tree) == before
    assert not [p for p in tree.parent.iterdir() if ".restore-" in p.name or ".old-" in p.name]


def test_a_storage_backups_folder_that_is_a_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "backups").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"is a file, not a folder.*backups\.storage_dir"):
        list_storage_backups(backup_dir=tmp_path / "backups")


def test_an_unreadable_file_fails_the_checksum_check_and_is_named(
    tree: Path, archive: StorageBackup, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = sorted(archive.manifest.files)[4]  # type: ignore[union-attr]
    real = LocalStorage.sha256

    def denied(self: LocalStorage, name: str) -> str:
        if name == key:  # root reads any file, so a chmod 000 would not show this
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tree / name))
        return real(self, name)

    monkeypatch.setattr(LocalStorage, "sha256", denied)
    result = {c.name: c for c in verify_storage(LocalStorage(tree), archive.manifest)}  # type: ignore[arg-type]
    assert result["checksums"].status == "fail" and f"unreadable: {key}" in result["checksums"].detail


def test_an_unreadable_archive_is_refused_with_a_clear_message(
    archive: StorageBackup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: Path) -> str:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(restore_module, "sha256_file", denied)
    with pytest.raises(BackupCorrupt, match=r"cannot read storage archive .*Permission denied.*permissions"):
        verify_storage_backup(archive)


def test_a_storage_tree_whose_parent_folder_is_missing_is_refused_as_misconfigured(tmp_path: Path) -> None:
    LocalStorage(tmp_path / "storage").check_reachable()  # the tree itself may be what was lost
    with pytest.raises(ConfigError, match=r"does not exist: check the profile's \[storage\] path"):
        LocalStorage(tmp_path / "unmounted" / "storage").check_reachable()
