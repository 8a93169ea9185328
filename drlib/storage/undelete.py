"""Bringing back deleted files without rolling the storage back: the files a backup's manifest lists
under the paths asked for that the live storage no longer has, copied back one by one (never over a
file that exists), each checked against the manifest's sha256.

A local archive is extracted (with the archive guard's checks) into a staging folder beside the live
tree, and only the missing files are moved from it; a ``full`` copy is read directly; an S3 backup is
copied object by object (server side)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drlib.checks import CheckResult, check
from drlib.exceptions import BackupCorrupt, ParameterError
from drlib.hashing import sha256_file
from drlib.plans import RestorePlan
from drlib.storage.archive import extract_archive
from drlib.storage.backends import LocalStorage, S3Storage
from drlib.storage.restore import VerifiedStorageBackup, restore_object


@dataclass(frozen=True)
class MissingFiles:
    """Files the backup has under ``paths`` and the live storage lost."""

    backup: str
    paths: tuple[str, ...]
    keys: tuple[str, ...]
    bytes: int
    #: paths asked for that match nothing in the backup
    unknown: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{len(self.keys)} file(s), {self.bytes} bytes" if self.keys else "no missing files"


def _under(key: str, path: str) -> bool:
    folder = path.strip("/")
    return not folder or key == folder or key.startswith(folder + "/")


def normalise_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """Storage keys or folders relative to the storage root; refused when absolute or escaping it."""
    cleaned = []
    for raw in paths:
        path = raw.strip().replace("\\", "/").strip("/")
        if not path:
            continue
        parts = path.split("/")
        if raw.strip().startswith("/") or ".." in parts or "" in parts:
            raise ParameterError(
                f"path {raw!r} must be a file or folder relative to the storage root (e.g. voiceovers/a.wav)"
            )
        cleaned.append(path)
    return tuple(dict.fromkeys(cleaned))


def find_missing_files(
    verified: VerifiedStorageBackup, *, live: LocalStorage | S3Storage, paths: Sequence[str] = ()
) -> MissingFiles:
    """The backup's files under ``paths`` (every file when empty) that ``live`` no longer has."""
    wanted = normalise_paths(paths)
    listed = verified.manifest.files
    chosen = [k for k in sorted(listed) if not wanted or any(_under(k, p) for p in wanted)]
    present = {f.key for f in live.files()}
    missing = tuple(k for k in chosen if k not in present)
    unknown = tuple(p for p in wanted if not any(_under(k, p) for k in listed))
    return MissingFiles(
        backup=verified.backup.name,
        paths=wanted,
        keys=missing,
        bytes=sum(listed[k].size for k in missing),
        unknown=unknown,
    )


@dataclass(frozen=True)
class FilesRestored:
    restored: tuple[str, ...]
    #: files that came back between the plan and the copy: left as they are
    skipped: tuple[str, ...]
    bytes: int
    seconds: float


def restore_missing_files(
    verified: VerifiedStorageBackup,
    missing: MissingFiles,
    *,
    live: LocalStorage | S3Storage,
    confirm: bool = False,
) -> FilesRestored | RestorePlan:
    """Copy the files of ``missing`` back into ``live``; a file that exists again is left alone."""
    if not confirm:
        return RestorePlan(
            action=f"bring back {missing.describe()} from {missing.backup}",
            steps=tuple(f"restore {key}" for key in missing.keys[:50])
            + ((f"… and {len(missing.keys) - 50} more",) if len(missing.keys) > 50 else ()),
        )
    if not missing.keys:
        return FilesRestored(restored=(), skipped=(), bytes=0, seconds=0.0)
    started = time.monotonic()
    if isinstance(live, S3Storage):
        return _to_bucket(verified, missing, live, started)
    return _to_folder(verified, missing, live, started)


def _to_bucket(
    verified: VerifiedStorageBackup, missing: MissingFiles, live: S3Storage, started: float
) -> FilesRestored:
    done, skipped = [], []
    for key in missing.keys:
        if live.exists(key):
            skipped.append(key)
            continue
        restore_object(verified, key, live=live, confirm=True)
        done.append(key)
    return FilesRestored(
        restored=tuple(done),
        skipped=tuple(skipped),
        bytes=sum(verified.manifest.files[k].size for k in done),
        seconds=time.monotonic() - started,
    )


def _to_folder(
    verified: VerifiedStorageBackup, missing: MissingFiles, live: LocalStorage, started: float
) -> FilesRestored:
    """From a ``full`` copy directly; from an archive via a staging folder on the live tree's volume."""
    if verified.backup.in_s3:
        raise ParameterError(
            f"{verified.backup.name} is in S3 but the live storage is a local folder: pick a local backup"
        )
    live.root.mkdir(parents=True, exist_ok=True)
    staging_parent = Path(tempfile.mkdtemp(prefix=".drlib-undo-", dir=live.root.parent))
    try:
        if verified.backup.kind == "archive":
            source = staging_parent / "tree"
            extract_archive(verified.backup.path, source, manifest=verified.manifest)
        else:
            source = verified.backup.path
        done, skipped = [], []
        for key in missing.keys:
            target = live.root / key
            if target.exists():
                skipped.append(key)
                continue
            record = verified.manifest.files[key]
            if sha256_file(source / key) != record.sha256:
                raise BackupCorrupt(f"{key} in {verified.backup.name} fails its checksum: pick another backup")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.drlib-partial")
            shutil.copy2(source / key, partial)
            if record.mode is not None:
                os.chmod(partial, record.mode)
            try:
                os.link(partial, target)  # never over a file that came back meanwhile
                done.append(key)
            except FileExistsError:
                skipped.append(key)
            finally:
                partial.unlink()
    finally:
        shutil.rmtree(staging_parent, ignore_errors=True)
    return FilesRestored(
        restored=tuple(done),
        skipped=tuple(skipped),
        bytes=sum(verified.manifest.files[k].size for k in done),
        seconds=time.monotonic() - started,
    )


def files_back_check(
    backup: VerifiedStorageBackup, missing: MissingFiles, *, live: LocalStorage | S3Storage
) -> CheckResult:
    """``deleted_files_back``: every file that was missing is in live storage again with the backup's sha256."""
    expected = backup.manifest.files
    wrong = [k for k in missing.keys if not live.exists(k) or live.sha256(k) != expected[k].sha256]
    return check(
        "deleted_files_back",
        not wrong,
        expected="every missing file back, matching the backup's sha256",
        observed=wrong[:20] or f"{len(missing.keys)} file(s) back",
    )
