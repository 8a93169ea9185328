"""Storage restore.

Local: the archive is extracted (or the full copy copied) into a staging folder beside the live
tree, every file verified against the manifest on the way, and only then swapped in by renaming;
the replaced tree is kept as ``<name>.old-<time>`` until dropped with ``confirm``. A failed or
interrupted restore removes the staging folder and leaves the live tree as it was.

S3: a backup prefix is copied back into the live bucket by server-side copy (``aws s3 sync``);
deleting live objects the backup does not have (``--delete``) happens only with ``confirm``.
Single objects can be restored alone, and a versioned bucket can be put back as it was at a time.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drlib.checks import CheckResult, Checks, check
from drlib.exceptions import BackupCorrupt, BackupNotFound, ConfirmationRequired, DrlibError, RestoreFailed
from drlib.hashing import copy_hashing, parallel_map, sha256_file
from drlib.lazy import lazy_module
from drlib.plans import RestorePlan, timestamp_suffix
from drlib.preflight import free_bytes, require_free_space
from drlib.storage.archive import extract_archive
from drlib.storage.backends import LocalStorage, S3Storage, transfer_config
from drlib.storage.catalogue import StorageBackup
from drlib.storage.manifest import StorageManifest, manifest_path_for, read_manifest
from drlib.units import format_bytes

if TYPE_CHECKING:
    import botocore.exceptions
else:
    botocore = lazy_module("botocore.exceptions")

GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
#: Free space wanted on top of the files' bytes (directories, metadata) ...
STORAGE_HEADROOM = 1.05
#: ... and per file, for the partly used last block of each.
PER_FILE_BYTES = 4096


@dataclass(frozen=True)
class VerifiedStorageBackup:
    backup: StorageBackup
    manifest: StorageManifest
    checks: Checks


@dataclass(frozen=True)
class StorageRestoreResult:
    backup: str
    target: str
    files: int
    bytes: int
    seconds: float
    kept_old: str | None = None
    deleted: list[str] = field(default_factory=list)


def verify_storage_backup(backup: StorageBackup) -> VerifiedStorageBackup:
    """Refuse a missing, empty, truncated or altered storage backup before anything is touched."""
    if backup.in_s3:
        if backup.manifest is None:
            raise BackupCorrupt(f"{backup.location} has no manifest: it cannot be verified; pick another backup")
        return VerifiedStorageBackup(
            backup,
            backup.manifest,
            Checks(
                [
                    check(
                        "storage_backup_manifest",
                        True,
                        expected="manifest present",
                        observed=f"{backup.manifest.total_files} files",
                    )
                ]
            ),
        )
    path = backup.path
    if not path.exists():
        raise BackupNotFound(f"storage backup {path} does not exist: list the catalogue and pick another one")
    manifest = backup.manifest or read_manifest(manifest_path_for(path))
    results = [
        check(
            "storage_backup_manifest",
            True,
            expected="manifest present",
            observed=f"{manifest.total_files} files, {manifest.total_bytes} bytes",
        )
    ]
    if backup.kind == "archive":
        try:
            results.append(_check_archive_file(path, manifest))
        except OSError as exc:
            raise BackupCorrupt(
                f"cannot read storage archive {path} ({exc.strerror}): check its permissions and the disk, "
                "or pick another backup"
            ) from exc
    elif not path.is_dir():
        raise BackupCorrupt(f"full copy {path} is not a folder")
    return VerifiedStorageBackup(backup, manifest, Checks(results))


def _check_archive_file(path: Path, manifest: StorageManifest) -> CheckResult:
    """Size, format and sha256 of an archive against its manifest (raises :class:`BackupCorrupt`)."""
    size = path.stat().st_size
    if size == 0:
        raise BackupCorrupt(f"storage archive {path} is 0 bytes: pick an earlier backup")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not (head.startswith(GZIP_MAGIC) or head.startswith(ZSTD_MAGIC)):
        raise BackupCorrupt(f"storage archive {path} has the wrong format: not gzip or zstd compressed")
    if size != manifest.archive_size:
        raise BackupCorrupt(
            f"storage archive {path} is {size} bytes but its manifest says "
            f"{manifest.archive_size}: it is {'truncated' if size < manifest.archive_size else 'altered'}"
        )
    digest = sha256_file(path)
    if digest != manifest.archive_sha256:
        raise BackupCorrupt(f"storage archive {path} fails its checksum: it changed after it was written")
    return check(
        "storage_backup_checksum",
        True,
        expected=manifest.archive_sha256[:16],
        observed=digest[:16],
        detail="sha256 of the archive",
    )


def restore_live_storage(
    verified: VerifiedStorageBackup,
    *,
    live: LocalStorage | S3Storage,
    delete_extra: bool = False,
    confirm: bool = False,
) -> StorageRestoreResult | RestorePlan:
    """Restore the live storage, whichever kind it is, from a verified backup (``delete_extra``: S3 only;
    a local restore replaces the whole tree and keeps the old one)."""
    if isinstance(live, S3Storage):
        return restore_bucket(verified, live=live, delete_extra=delete_extra, confirm=confirm)
    return restore_local(verified, live_root=live.root, confirm=confirm)


def restore_local(
    verified: VerifiedStorageBackup,
    *,
    live_root: Path,
    confirm: bool = False,
    workers: int | None = None,
    now: datetime | None = None,
) -> StorageRestoreResult | RestorePlan:
    """Restore a local archive or full copy into a staging folder, verify, then swap it in."""
    backup, manifest = verified.backup, verified.manifest
    stamp = timestamp_suffix(now)
    staging = live_root.parent / f".{live_root.name}.restore-{stamp}"
    old = live_root.parent / f"{live_root.name}.old-{stamp}"
    needed = restore_space_needed(manifest)
    free = require_free_space(
        path=live_root.parent,
        required_bytes=needed,
        what=f"the storage restore from {backup.name} ({manifest.total_files} files)",
        then="Nothing was written. Free space on that volume, or restore elsewhere (another live_root), then retry.",
    )
    if not confirm:
        how = f"tar -x of {backup.name}" if backup.kind == "archive" else f"copy of {backup.name}/"
        return RestorePlan(
            action=f"restore storage from {backup.name}",
            steps=(
                f"free space: about {format_bytes(needed)} needed, {format_bytes(free)} free at {live_root.parent}",
                f"{how} into {staging}, checking every file's sha256 against the manifest",
                f"rename {live_root} -> {old} (kept)"
                if live_root.exists()
                else f"{live_root} is missing: nothing to keep",
                f"rename {staging} -> {live_root}",
            ),
        )
    started = time.monotonic()
    try:
        if backup.kind == "archive":
            extraction = extract_archive(backup.path, staging, manifest=manifest)
            bad, got, size = extraction.mismatched + extraction.unexpected, set(extraction.digests), extraction.bytes
        else:
            keys = sorted(manifest.files)
            staging.mkdir(parents=True)
            ok = parallel_map(
                lambda k: copy_hashing(backup.path / k, staging / k) == manifest.files[k].sha256, keys, workers=workers
            )
            bad, got = [k for k, good in zip(keys, ok, strict=True) if not good], set(keys)
            size = sum(manifest.files[k].size for k in keys)
        missing = sorted(set(manifest.files) - got)
        if bad or missing:
            raise RestoreFailed(
                f"the backup's files do not match its manifest (changed: {', '.join(bad[:5]) or 'none'};"
                f" missing: {', '.join(missing[:5]) or 'none'})"
            )
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RestoreFailed(
            f"storage restore from {backup.name} failed: {_failure_reason(exc, staging, needed)}. The live tree "
            f"{live_root} was not touched and the staging folder was removed."
        ) from exc
    kept = _swap_in(staging, live_root=live_root, old=old, backup=backup.name)
    return StorageRestoreResult(
        backup=backup.name,
        target=str(live_root),
        files=len(got),
        bytes=size,
        seconds=time.monotonic() - started,
        kept_old=kept,
    )


def restore_space_needed(manifest: StorageManifest) -> int:
    """About how many bytes restoring ``manifest``'s files takes on disk."""
    return int(manifest.total_bytes * STORAGE_HEADROOM) + PER_FILE_BYTES * manifest.total_files


def _failure_reason(exc: BaseException, staging: Path, needed: int) -> str:
    """Why a restore into ``staging`` failed, said for an operator (after staging was removed)."""
    if isinstance(exc, DrlibError):
        return exc.message
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on device in {staging.parent}: the restore needs about {format_bytes(needed)}, "
            f"{format_bytes(free_bytes(staging.parent))} is free now; free space or restore elsewhere"
        )
    if isinstance(exc, OSError):
        where = exc.filename or staging
        return f"{exc.strerror or type(exc).__name__} at {where}; fix that (permissions, mounts) and retry"
    return f"interrupted ({type(exc).__name__})"


def _swap_in(staging: Path, *, live_root: Path, old: Path, backup: str) -> str | None:
    """Rename the live tree to ``old`` and ``staging`` to the live tree; put things back on failure."""
    kept = None
    try:
        if live_root.exists():
            os.replace(live_root, old)
            kept = str(old)
        os.replace(staging, live_root)
    except OSError as exc:
        if kept is not None and not live_root.exists():
            os.replace(old, live_root)
        shutil.rmtree(staging, ignore_errors=True)
        raise RestoreFailed(
            f"storage restore from {backup} could not swap the restored tree in ({exc.strerror}): the live tree "
            f"{live_root} was put back as it was and the staging folder was removed; fix the folder and retry"
        ) from exc
    return kept


def drop_old_tree(path: Path, *, live_root: Path, confirm: bool = False) -> str | RestorePlan:
    """Delete a tree kept by a swap (only with ``confirm``, never the live tree)."""
    if path.resolve() == live_root.resolve():
        raise ConfirmationRequired(f"refusing to delete the live storage tree {live_root}")
    if not confirm:
        return RestorePlan(action=f"delete {path}", steps=(f"rm -r {path}",))
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise RestoreFailed(
            f"could not delete the kept tree {path} ({exc.strerror} at {exc.filename}): part of it may remain; "
            "fix the permissions and drop it again"
        ) from exc
    return f"deleted {path}"


def _s3_call(storage: S3Storage, func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise storage.error(exc) from exc


def _copy_back(live: S3Storage, bucket: str, prefix: str, key: str) -> None:
    """Server-side copy of ``key`` from the backup prefix ``s3://bucket/prefix`` to the live bucket."""
    _s3_call(
        live,
        live.client.copy,
        {"Bucket": bucket, "Key": prefix + key},
        live.bucket,
        live.prefix + key,
        Config=transfer_config(),
    )


def _backup_prefix(backup: StorageBackup) -> tuple[str, str]:
    bucket, _, prefix = backup.location.removeprefix("s3://").partition("/")
    return bucket, prefix


def restore_bucket(
    verified: VerifiedStorageBackup,
    *,
    live: S3Storage,
    delete_extra: bool = False,
    confirm: bool = False,
    workers: int | None = None,
) -> StorageRestoreResult | RestorePlan:
    """``aws s3 sync s3://backups/storage/DATE/ s3://live/ [--delete]`` by server-side copy."""
    backup, manifest = verified.backup, verified.manifest
    bucket, prefix = _backup_prefix(backup)
    if not confirm:
        steps = [f"copy {manifest.total_files} objects from {backup.location} to s3://{live.bucket}/"]
        steps.append(
            "delete live objects the backup does not have"
            if delete_extra
            else "keep live objects the backup does not have (delete_extra=False)"
        )
        return RestorePlan(action=f"restore bucket {live.bucket} from {backup.name}", steps=tuple(steps))
    live.check_reachable()
    S3Storage(live.client, bucket, endpoint=live.endpoint).check_reachable()
    started = time.monotonic()
    keys = sorted(manifest.files)
    parallel_map(lambda k: _copy_back(live, bucket, prefix, k), keys, workers=workers)
    deleted: list[str] = []
    if delete_extra:
        deleted = sorted({f.key for f in live.files()} - set(keys))
        live.delete(deleted)
    return StorageRestoreResult(
        backup=backup.name,
        target=f"s3://{live.bucket}/{live.prefix}",
        files=len(keys),
        bytes=manifest.total_bytes,
        seconds=time.monotonic() - started,
        deleted=deleted,
    )


def restore_object(
    verified: VerifiedStorageBackup, key: str, *, live: S3Storage, confirm: bool = False
) -> StorageRestoreResult | RestorePlan:
    """``aws s3 cp`` of one object from the backup prefix back to the live bucket."""
    if key not in verified.manifest.files:
        raise BackupNotFound(f"{key!r} is not in backup {verified.backup.name}")
    bucket, prefix = _backup_prefix(verified.backup)
    if not confirm:
        return RestorePlan(
            action=f"restore {key}", steps=(f"copy s3://{bucket}/{prefix}{key} -> s3://{live.bucket}/{key}",)
        )
    live.check_reachable()
    started = time.monotonic()
    _copy_back(live, bucket, prefix, key)
    return StorageRestoreResult(
        backup=verified.backup.name,
        target=f"s3://{live.bucket}/{key}",
        files=1,
        bytes=verified.manifest.files[key].size,
        seconds=time.monotonic() - started,
    )


def restore_versions(
    *, live: S3Storage, at: datetime, confirm: bool = False, delete_newer: bool = False
) -> StorageRestoreResult | RestorePlan:
    """Put a versioned bucket back as it was at ``at``: each key's version current then becomes current
    again; keys created later are deleted (a delete marker) only with ``delete_newer``."""
    live.check_reachable()
    versions: dict[str, list[dict[str, Any]]] = {}
    paginator = live.client.get_paginator("list_object_versions")
    for page in _s3_call(live, lambda: list(paginator.paginate(Bucket=live.bucket, Prefix=live.prefix))):
        for item in page.get("Versions", []):
            versions.setdefault(item["Key"], []).append({**item, "deleted": False})
        for item in page.get("DeleteMarkers", []):
            versions.setdefault(item["Key"], []).append({**item, "deleted": True})
    to_copy: list[tuple[str, str]] = []
    to_delete: list[str] = []
    for key, items in versions.items():
        items.sort(key=lambda v: v["LastModified"])
        then = [v for v in items if v["LastModified"] <= at]
        now_item = items[-1]
        if not then or then[-1]["deleted"]:
            if not now_item["deleted"]:
                to_delete.append(key)
        elif now_item["VersionId"] != then[-1]["VersionId"]:
            to_copy.append((key, then[-1]["VersionId"]))
    if not confirm:
        steps = [f"restore {key} to version {vid}" for key, vid in to_copy[:20]]
        steps += [
            f"{'delete' if delete_newer else 'keep (delete_newer=False)'} {key}, created after {at:%Y-%m-%d %H:%M:%S}"
            for key in to_delete[:20]
        ]
        return RestorePlan(
            action=f"restore s3://{live.bucket} to {at.isoformat()}", steps=tuple(steps) or ("nothing to do",)
        )
    started = time.monotonic()
    parallel_map(
        lambda kv: _s3_call(
            live,
            live.client.copy_object,
            Bucket=live.bucket,
            Key=kv[0],
            CopySource={"Bucket": live.bucket, "Key": kv[0], "VersionId": kv[1]},
        ),
        to_copy,
    )
    deleted = to_delete if delete_newer else []
    for key in deleted:
        _s3_call(live, live.client.delete_object, Bucket=live.bucket, Key=key)
    return StorageRestoreResult(
        backup=f"versions at {at.astimezone(UTC).isoformat()}",
        target=f"s3://{live.bucket}/",
        files=len(to_copy),
        bytes=0,
        seconds=time.monotonic() - started,
        deleted=deleted,
    )
