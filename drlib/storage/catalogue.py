"""The catalogue of storage backups across the local backup folder and the backups bucket."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drlib.config import Profile
from drlib.exceptions import ConfigError
from drlib.lazy import lazy_module
from drlib.selection import select_backup
from drlib.storage.backends import S3Storage, s3_client
from drlib.storage.manifest import MANIFEST_SUFFIX, StorageManifest, manifest_path_for, read_manifest

if TYPE_CHECKING:
    import botocore.exceptions
    import pandas as pd
else:
    botocore = lazy_module("botocore.exceptions")
    pd = lazy_module("pandas")

_DATE = r"(?P<date>\d{4}-\d{2}-\d{2})(?:_(?P<time>\d{6}))?"
ARCHIVE_NAME = re.compile(rf"^storage_{_DATE}\.tar\.(?P<ext>gz|zst)$")
FULL_NAME = re.compile(rf"^full_{_DATE}$")
S3_NAME = re.compile(rf"^{_DATE}$")


@dataclass(frozen=True)
class StorageBackup:
    """A storage backup: ``archive`` or ``full`` (local path or pushed to S3) or ``s3`` (a bucket prefix)."""

    kind: str
    name: str
    location: str
    created_at: datetime
    manifest: StorageManifest | None = None

    @property
    def in_s3(self) -> bool:
        return self.location.startswith("s3://")

    @property
    def path(self) -> Path:
        return Path(self.location)


def name_time(match: re.Match[str]) -> datetime:
    text = f"{match['date']} {match['time'] or '000000'}"
    return datetime.strptime(text, "%Y-%m-%d %H%M%S").replace(tzinfo=UTC)


def _local(backup_dir: Path) -> list[StorageBackup]:
    found: list[StorageBackup] = []
    if not backup_dir.exists():
        return found
    if not backup_dir.is_dir():
        raise ConfigError(
            f"the storage backups folder {backup_dir} is a file, not a folder: point backups.storage_dir in "
            "the profile at the backups folder (or move the file away), then retry"
        )
    try:
        paths = list(backup_dir.iterdir())
    except OSError as exc:
        raise ConfigError(
            f"cannot list the storage backups folder {backup_dir} ({exc.strerror}): fix its permissions, then retry"
        ) from exc
    for path in paths:
        archive, full = ARCHIVE_NAME.match(path.name), FULL_NAME.match(path.name)
        match = archive or full
        if not match:
            continue
        kind = "archive" if archive else "full"
        manifest = None
        when = name_time(match)
        if manifest_path_for(path).is_file():
            try:
                manifest = read_manifest(manifest_path_for(path))
                when = manifest.created
            except Exception:
                manifest = None
        found.append(StorageBackup(kind=kind, name=path.name, location=str(path), created_at=when, manifest=manifest))
    return found


def _remote(client: Any, bucket: str, prefix: str) -> list[StorageBackup]:
    found: dict[str, StorageBackup] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        names = [c["Prefix"][len(prefix) :].rstrip("/") for c in page.get("CommonPrefixes", [])]
        # a snapshot of an empty bucket has no objects, only its manifest
        names += [
            i["Key"][len(prefix) :].removesuffix(MANIFEST_SUFFIX)
            for i in page.get("Contents", [])
            if i["Key"].endswith(MANIFEST_SUFFIX)
        ]
        for name in names:
            match = S3_NAME.match(name) or FULL_NAME.match(name)
            if match and name not in found:
                kind = "s3" if S3_NAME.match(name) else "full"
                found[name] = StorageBackup(
                    kind=kind, name=name, location=f"s3://{bucket}/{prefix}{name}/", created_at=name_time(match)
                )
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix) :]
            match = ARCHIVE_NAME.match(name)
            if match:
                found[name] = StorageBackup(
                    kind="archive", name=name, location=f"s3://{bucket}/{item['Key']}", created_at=name_time(match)
                )
    return [_with_remote_manifest(client, bucket, prefix, b) for b in found.values()]


def _with_remote_manifest(client: Any, bucket: str, prefix: str, backup: StorageBackup) -> StorageBackup:
    try:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}{backup.name}{MANIFEST_SUFFIX}")["Body"].read()
    except botocore.exceptions.ClientError:
        return backup
    try:
        manifest = StorageManifest.from_json(body.decode())
    except (ValueError, TypeError, KeyError):
        return backup  # an unreadable manifest: listed without one; verifying it refuses it
    return StorageBackup(
        kind=backup.kind, name=backup.name, location=backup.location, created_at=manifest.created, manifest=manifest
    )


def list_storage_backups(*, backup_dir: Path | None, s3: tuple[Any, str, str] | None = None) -> list[StorageBackup]:
    """Backups in the local folder and, given ``(client, bucket, prefix)``, in the bucket; oldest first."""
    found = _local(backup_dir) if backup_dir else []
    if s3 is not None:
        client, bucket, prefix = s3
        storage = S3Storage(client, bucket)
        storage.check_reachable()
        try:
            found += _remote(client, bucket, prefix)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise storage.error(exc) from exc
    return sorted(found, key=lambda b: (b.created_at, b.in_s3))


def select_storage_backup(
    backups: list[StorageBackup], *, selection: str = "latest", before: datetime | None = None, kind: str | None = None
) -> StorageBackup:
    """The newest backup before ``before`` (optionally of one kind), or one by name."""
    pool = [b for b in backups if kind is None or b.kind == kind]
    return select_backup(pool, selection=selection, before=before, what=f"{kind or 'storage'} backup")


def catalogue_for(profile: Profile, *, storage_kind: str) -> list[StorageBackup]:
    """The catalogue a restore of ``storage_kind`` looks at: the local backup folder, and for S3
    also the backups bucket."""
    s3 = None
    if storage_kind == "s3":
        s3 = (s3_client(profile), profile.require_storage().backups_bucket, profile.backups.s3_prefix)
    return list_storage_backups(backup_dir=profile.backups.storage_dir, s3=s3)


def restorable(backups: list[StorageBackup], *, storage_kind: str, form: str | None = None) -> list[StorageBackup]:
    """Backups that can restore ``storage_kind``: bucket snapshots for S3; local archives or full
    copies (``form`` picks one) for a local tree."""
    if storage_kind == "s3":
        return [b for b in backups if b.kind == "s3"]
    forms = (form,) if form else ("archive", "full")
    return [b for b in backups if b.kind in forms and not b.in_s3]


def storage_catalogue_table(backups: list[StorageBackup]) -> pd.DataFrame:
    rows = [
        {
            "backup": b.name,
            "kind": b.kind,
            "taken_at_utc": b.created_at.isoformat(timespec="seconds"),
            "files": b.manifest.total_files if b.manifest else None,
            "bytes": b.manifest.total_bytes if b.manifest else None,
            "location": b.location,
        }
        for b in backups
    ]
    return pd.DataFrame(rows, columns=["backup", "kind", "taken_at_utc", "files", "bytes", "location"])
