"""S3 storage over real HTTP (the sandbox's S3-compatible endpoint): prefix snapshots, sync back with
and without --delete, single objects, versions at a time, and an endpoint that is down."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drlib.config import Profile
from drlib.exceptions import ConnectionFailed
from drlib.plans import RestorePlan
from drlib.processes import free_port
from drlib.sandbox.seed import upload_tree
from drlib.sandbox.stack import Sandbox
from drlib.storage.backends import S3Storage, s3_client
from drlib.storage.backup import archive_local, push_to_bucket, snapshot_bucket
from drlib.storage.catalogue import list_storage_backups, select_storage_backup
from drlib.storage.restore import (
    StorageRestoreResult,
    restore_bucket,
    restore_object,
    restore_versions,
    verify_storage_backup,
)
from drlib.storage.verify import verify_storage


@pytest.fixture
def client(profile: Profile) -> Any:
    return s3_client(profile)


@pytest.fixture
def live(client: Any, healthy_sandbox: Sandbox, profile: Profile) -> Iterator[S3Storage]:
    """A fresh versioned bucket holding a copy of the sandbox's storage tree."""
    name = f"live-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    upload_tree(client, name, healthy_sandbox.storage_root)
    yield S3Storage(client, name, endpoint=profile.storage.endpoint_url)


@pytest.fixture
def backups_bucket(client: Any) -> str:
    name = f"backups-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_a_bucket_snapshot_is_a_server_side_prefix_copy_with_a_manifest(
    live: S3Storage, backups_bucket: str, client: Any
) -> None:
    backup = snapshot_bucket(live=live, backups_bucket=backups_bucket)
    assert backup.location == f"s3://{backups_bucket}/storage/{datetime.now(UTC):%Y-%m-%d}/"
    copied = S3Storage(client, backups_bucket, prefix=f"storage/{backup.name}/")
    assert sorted(f.key for f in copied.files()) == sorted(f.key for f in live.files())
    found = list_storage_backups(backup_dir=None, s3=(client, backups_bucket, "storage/"))
    assert [b.name for b in found] == [backup.name] and found[0].manifest is not None
    assert found[0].manifest.total_files == len(list(live.files()))


def test_sync_back_restores_deleted_objects_and_deletes_extras_only_with_confirm(
    live: S3Storage, backups_bucket: str, client: Any
) -> None:
    backup = snapshot_bucket(live=live, backups_bucket=backups_bucket)
    verified = verify_storage_backup(backup)
    gone = sorted(verified.manifest.files)[:3]
    client.delete_objects(Bucket=live.bucket, Delete={"Objects": [{"Key": k} for k in gone]})
    client.put_object(Bucket=live.bucket, Key="videos/stray.mp4", Body=b"not in the backup")
    plan = restore_bucket(verified, live=live, delete_extra=True)
    assert isinstance(plan, RestorePlan) and not live.exists(gone[0]) and live.exists("videos/stray.mp4")
    kept = restore_bucket(verified, live=live, confirm=True)
    assert isinstance(kept, StorageRestoreResult) and kept.deleted == []
    assert all(live.exists(k) for k in gone) and live.exists("videos/stray.mp4")
    assert {c.name: c.status for c in verify_storage(live, verified.manifest)}["file_count:videos"] == "fail"
    synced = restore_bucket(verified, live=live, delete_extra=True, confirm=True)
    assert isinstance(synced, StorageRestoreResult) and synced.deleted == ["videos/stray.mp4"]
    assert verify_storage(live, verified.manifest).passed


def test_a_changed_object_is_found_and_named(live: S3Storage, backups_bucket: str, client: Any) -> None:
    backup = snapshot_bucket(live=live, backups_bucket=backups_bucket)
    key = sorted(backup.manifest.files)[4]  # type: ignore[union-attr]
    client.put_object(Bucket=live.bucket, Key=key, Body=b"ransomware was here")
    result = {c.name: c for c in verify_storage(live, backup.manifest)}  # type: ignore[arg-type]
    assert result["checksums"].status == "fail" and result["checksums"].detail == f"changed: {key}"


def test_a_single_object_can_be_restored_alone(live: S3Storage, backups_bucket: str, client: Any) -> None:
    backup = snapshot_bucket(live=live, backups_bucket=backups_bucket)
    verified = verify_storage_backup(backup)
    key = sorted(verified.manifest.files)[0]
    client.delete_object(Bucket=live.bucket, Key=key)
    result = restore_object(verified, key, live=live, confirm=True)
    assert isinstance(result, StorageRestoreResult) and live.sha256(key) == verified.manifest.files[key].sha256


def test_a_versioned_bucket_is_put_back_as_it_was_at_a_time(live: S3Storage, client: Any) -> None:
    keys = sorted(f.key for f in live.files())
    before = {k: live.sha256(k) for k in keys[:2]}
    time.sleep(1.1)
    at = datetime.now(UTC)
    time.sleep(1.1)
    client.put_object(Bucket=live.bucket, Key=keys[0], Body=b"encrypted by ransomware")
    client.delete_object(Bucket=live.bucket, Key=keys[1])
    client.put_object(Bucket=live.bucket, Key="ransom-note.txt", Body=b"pay up")
    plan = restore_versions(live=live, at=at, delete_newer=True)
    assert isinstance(plan, RestorePlan) and live.exists("ransom-note.txt")
    result = restore_versions(live=live, at=at, confirm=True, delete_newer=True)
    assert isinstance(result, StorageRestoreResult) and result.deleted == ["ransom-note.txt"]
    assert {k: live.sha256(k) for k in keys[:2]} == before
    assert not live.exists("ransom-note.txt")


def test_a_local_archive_can_be_pushed_to_the_backups_bucket(
    healthy_sandbox: Sandbox, backups_bucket: str, client: Any, tmp_path: Path
) -> None:
    backup = archive_local(root=healthy_sandbox.storage_root, backup_dir=tmp_path)
    uri = push_to_bucket(backup, client=client, bucket=backups_bucket)
    assert uri.endswith(backup.name)
    found = list_storage_backups(backup_dir=tmp_path, s3=(client, backups_bucket, "storage/"))
    assert [b.location for b in found] == [str(backup.path), uri]
    assert select_storage_backup(found).manifest is not None


def test_an_s3_endpoint_that_is_down_is_one_clear_error_and_nothing_is_deleted(
    profile: Profile, live: S3Storage, backups_bucket: str
) -> None:
    backup = snapshot_bucket(live=live, backups_bucket=backups_bucket)
    count = len(list(live.files()))
    down = replace(profile, storage=replace(profile.storage, endpoint_url=f"http://127.0.0.1:{free_port()}"))
    dead = S3Storage(s3_client(down, timeout=1, attempts=1), live.bucket, endpoint=down.storage.endpoint_url)
    with pytest.raises(ConnectionFailed, match="cannot reach the S3 endpoint"):
        restore_bucket(verify_storage_backup(backup), live=dead, delete_extra=True, confirm=True)
    with pytest.raises(ConnectionFailed, match="cannot reach the S3 endpoint"):
        list_storage_backups(backup_dir=None, s3=(dead.client, backups_bucket, "storage/"))
    assert len(list(live.files())) == count
