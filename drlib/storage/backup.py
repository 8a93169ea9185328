"""Storage backups in the runbook's three forms, each with a manifest written at backup time:

- a dated archive ``storage_YYYY-MM-DD.tar.gz`` (or ``.tar.zst``), written in one pass that
  also hashes every file, so the manifest describes exactly what the archive holds;
- an rsync-style full copy ``full_YYYY-MM-DD/``;
- an S3 prefix copy ``storage/YYYY-MM-DD/`` in the backups bucket, by server-side copy.

A second backup on the same day gets ``_HHMMSS`` after the date. Local backups can be pushed
to the backups bucket (multipart uploads), as the runbook's "check S3" steps expect.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from drlib import __version__
from drlib.exceptions import DrlibError
from drlib.hashing import copy_hashing, parallel_map, sha256_file
from drlib.lazy import lazy_module
from drlib.storage.backends import LocalStorage, S3Storage, transfer_config
from drlib.storage.catalogue import StorageBackup
from drlib.storage.manifest import (
    MANIFEST_SUFFIX,
    FileRecord,
    StorageManifest,
    build_manifest,
    folder_counts,
    manifest_path_for,
    write_manifest,
)

if TYPE_CHECKING:
    import botocore.exceptions
else:
    botocore = lazy_module("botocore.exceptions")

COMPRESSORS = {"gz": ["gzip", "-c"], "zst": ["zstd", "-q", "-c", "-T0"]}


class StorageBackupFailed(DrlibError):
    code = "backup-failed"


def dated_name(stem: str, when: datetime, suffix: str, exists: Any) -> str:
    """``<stem>_YYYY-MM-DD<suffix>``, or with ``_HHMMSS`` when that name is taken."""
    day = f"{stem}_{when.astimezone(UTC):%Y-%m-%d}{suffix}"
    return day if not exists(day) else f"{stem}_{when.astimezone(UTC):%Y-%m-%d_%H%M%S}{suffix}"


class _HashingReader:
    """Reads a file for tarfile while hashing it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def archive_local(
    *, root: Path, backup_dir: Path, compression: str = "gz", now: datetime | None = None
) -> StorageBackup:
    """Archive the storage tree into ``storage_YYYY-MM-DD.tar.<gz|zst>`` plus its manifest."""
    if compression not in COMPRESSORS:
        raise StorageBackupFailed(f"unknown compression {compression!r}: use 'gz' or 'zst'")
    if not root.is_dir():
        raise StorageBackupFailed(f"storage folder {root} does not exist: nothing to back up")
    now = now or datetime.now(UTC)
    backup_dir.mkdir(parents=True, exist_ok=True)
    name = dated_name("storage", now, f".tar.{compression}", lambda n: (backup_dir / n).exists())
    final, partial = backup_dir / name, backup_dir / (name + ".partial")
    files: dict[str, FileRecord] = {}
    with partial.open("wb") as out:
        try:
            compressor = subprocess.Popen(COMPRESSORS[compression], stdin=subprocess.PIPE, stdout=out)
        except FileNotFoundError as exc:
            raise StorageBackupFailed(f"{COMPRESSORS[compression][0]} is not installed") from exc
        assert compressor.stdin is not None
        try:
            with tarfile.open(fileobj=compressor.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for dirpath, dirnames, names in os.walk(root):
                    dirnames.sort()
                    base = Path(dirpath)
                    if base != root:
                        tar.add(base, arcname=base.relative_to(root).as_posix(), recursive=False)
                    for file_name in sorted(names):
                        path = base / file_name
                        key = path.relative_to(root).as_posix()
                        info = tar.gettarinfo(path, arcname=key)
                        if not info.isfile():
                            tar.addfile(info)
                            continue
                        with path.open("rb") as handle:
                            reader = _HashingReader(handle)
                            tar.addfile(info, reader)
                        files[key] = FileRecord(
                            size=info.size, sha256=reader.digest.hexdigest(), mtime=info.mtime, mode=info.mode
                        )
        finally:
            compressor.stdin.close()
            code = compressor.wait()
    if code != 0:
        partial.unlink(missing_ok=True)
        raise StorageBackupFailed(f"{COMPRESSORS[compression][0]} failed (exit {code}) writing {final}")
    os.replace(partial, final)
    manifest = StorageManifest(
        kind="archive",
        source=str(root),
        created_at=now.isoformat(),
        files=files,
        folders=folder_counts(list(files)),
        archive_sha256=sha256_file(final),
        archive_size=final.stat().st_size,
        drlib_version=__version__,
    )
    write_manifest(manifest_path_for(final), manifest)
    return StorageBackup(kind="archive", name=name, location=str(final), created_at=now, manifest=manifest)


def copy_full(
    *, root: Path, backup_dir: Path, now: datetime | None = None, workers: int | None = None
) -> StorageBackup:
    """An rsync-style full copy ``full_YYYY-MM-DD/`` (parallel, hashed while copied)."""
    if not root.is_dir():
        raise StorageBackupFailed(f"storage folder {root} does not exist: nothing to back up")
    now = now or datetime.now(UTC)
    backup_dir.mkdir(parents=True, exist_ok=True)
    name = dated_name("full", now, "", lambda n: (backup_dir / n).exists())
    final, partial = backup_dir / name, backup_dir / (name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    entries = sorted(LocalStorage(root).files(), key=lambda f: f.key)
    digests = parallel_map(lambda f: copy_hashing(root / f.key, partial / f.key), entries, workers=workers)
    for dirpath, _, _ in os.walk(root):
        (partial / Path(dirpath).relative_to(root)).mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    files = {
        f.key: FileRecord(size=f.size, sha256=d, mtime=f.mtime, mode=f.mode)
        for f, d in zip(entries, digests, strict=True)
    }
    manifest = StorageManifest(
        kind="full",
        source=str(root),
        created_at=now.isoformat(),
        files=files,
        folders=folder_counts(list(files)),
        drlib_version=__version__,
    )
    write_manifest(manifest_path_for(final), manifest)
    return StorageBackup(kind="full", name=name, location=str(final), created_at=now, manifest=manifest)


def snapshot_bucket(
    *,
    live: S3Storage,
    backups_bucket: str,
    prefix: str = "storage/",
    now: datetime | None = None,
    workers: int | None = None,
) -> StorageBackup:
    """Server-side copy of the live bucket to ``s3://<backups>/storage/YYYY-MM-DD/`` plus manifest."""
    now = now or datetime.now(UTC)
    live.check_reachable()
    client = live.client
    backups = S3Storage(client, backups_bucket, endpoint=live.endpoint)
    backups.check_reachable()
    taken = {
        o.key.split("/", 1)[0] for o in S3Storage(client, backups_bucket, prefix=prefix, endpoint=live.endpoint).files()
    }
    day = f"{now.astimezone(UTC):%Y-%m-%d}"
    name = day if day not in taken else f"{now.astimezone(UTC):%Y-%m-%d_%H%M%S}"
    dest_prefix = f"{prefix}{name}/"
    entries = list(live.files())

    def copy(key: str) -> None:
        try:
            client.copy(
                {"Bucket": live.bucket, "Key": live.prefix + key},
                backups_bucket,
                dest_prefix + key,
                Config=transfer_config(),
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise live.error(exc) from exc

    parallel_map(copy, [f.key for f in entries], workers=workers)
    copied = S3Storage(client, backups_bucket, prefix=dest_prefix, endpoint=live.endpoint)
    manifest = replace(
        build_manifest(copied, kind="s3", created_at=now, workers=workers, drlib_version=__version__),
        source=live.description,
    )
    client.put_object(Bucket=backups_bucket, Key=f"{prefix}{name}{MANIFEST_SUFFIX}", Body=manifest.to_json().encode())
    return StorageBackup(
        kind="s3", name=name, location=f"s3://{backups_bucket}/{dest_prefix}", created_at=now, manifest=manifest
    )


def push_to_bucket(
    backup: StorageBackup, *, client: Any, bucket: str, prefix: str = "storage/", workers: int | None = None
) -> str:
    """Upload a local archive or full copy (and its manifest) to the backups bucket."""
    path = Path(backup.location)
    manifest = manifest_path_for(path)
    try:
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}{path.name}", Config=transfer_config())
        else:
            keys = [p for p in sorted(path.rglob("*")) if p.is_file()]
            parallel_map(
                lambda p: client.upload_file(
                    str(p), bucket, f"{prefix}{path.name}/{p.relative_to(path).as_posix()}", Config=transfer_config()
                ),
                keys,
                workers=workers,
            )
        client.upload_file(str(manifest), bucket, f"{prefix}{manifest.name}")
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise S3Storage(client, bucket).error(exc) from exc
    return f"s3://{bucket}/{prefix}{path.name}"
