"""The runbook's Storage Verification, as checks with expected and observed values.

File counts per folder equal the manifest's (and the archive's listing); no 0-byte files; every
file's sha256 equals the manifest's (a single changed byte is found and named); permissions sane;
every ``storage_key`` in ``content_artifacts`` exists (files no row references: a warning); the
API serves a restored file.
"""

from __future__ import annotations

import hashlib
import stat
from collections import Counter
from pathlib import Path

from drlib.app.health import http_raw
from drlib.checks import CheckResult, Checks, check
from drlib.hashing import parallel_map
from drlib.postgres.connection import PgTarget
from drlib.storage.archive import list_archive
from drlib.storage.backends import LocalStorage, S3Storage, StoredFile
from drlib.storage.manifest import StorageManifest

NAMED = 10  # how many offending files a check names


def _names(keys: list[str]) -> str:
    more = f" (+{len(keys) - NAMED} more)" if len(keys) > NAMED else ""
    return ", ".join(keys[:NAMED]) + more


def count_checks(files: list[StoredFile], manifest: StorageManifest) -> list[CheckResult]:
    observed = Counter(f.folder for f in files)
    results = []
    for folder in sorted(set(manifest.folders) | set(observed)):
        expected = manifest.folders.get(folder, 0)
        results.append(
            check(
                f"file_count:{folder}",
                observed.get(folder, 0) == expected,
                expected=expected,
                observed=observed.get(folder, 0),
            )
        )
    return results


def zero_byte_check(files: list[StoredFile]) -> CheckResult:
    empty = sorted(f.key for f in files if f.size == 0)
    return check(
        "no_zero_byte_files",
        not empty,
        expected=0,
        observed=len(empty),
        detail=_names(empty) if empty else "find -size 0 finds nothing",
    )


def checksum_check(
    storage: LocalStorage | S3Storage, files: list[StoredFile], manifest: StorageManifest, *, workers: int | None = None
) -> CheckResult:
    present = {f.key for f in files}
    keys = sorted(present & set(manifest.files))
    digests = parallel_map(lambda key: _sha256_or_none(storage, key), keys, workers=workers)
    unreadable = [k for k, d in zip(keys, digests, strict=True) if d is None]
    changed = [k for k, d in zip(keys, digests, strict=True) if d is not None and d != manifest.files[k].sha256]
    missing = sorted(set(manifest.files) - present)
    detail = "; ".join(
        part
        for part in (
            f"changed: {_names(changed)}" if changed else "",
            f"missing: {_names(missing)}" if missing else "",
            f"unreadable: {_names(unreadable)}" if unreadable else "",
        )
        if part
    )
    bad = len(changed) + len(unreadable)
    return check(
        "checksums",
        not bad and not missing,
        expected=f"{manifest.total_files} files match",
        observed=f"{len(keys) - bad} match, {len(changed)} changed, {len(missing)} missing"
        + (f", {len(unreadable)} unreadable" if unreadable else ""),
        detail=detail or "every file's sha256 equals the manifest's",
    )


def _sha256_or_none(storage: LocalStorage | S3Storage, key: str) -> str | None:
    """A file's sha256, or None when a local file cannot be read (it vanished, or its permissions)."""
    try:
        return storage.sha256(key)
    except OSError:
        return None


def permission_check(root: Path, files: list[StoredFile]) -> CheckResult:
    """Files readable by their owner and not world-writable; folders traversable."""
    bad = [f.key for f in files if f.mode is not None and (not f.mode & stat.S_IRUSR or f.mode & stat.S_IWOTH)]
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())] if root.is_dir() else []:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXUSR or mode & stat.S_IWOTH:
            bad.append(folder.relative_to(root).as_posix() + "/")
    return check(
        "permissions",
        not bad,
        expected="files owner-readable, nothing world-writable",
        observed=f"{len(bad)} bad",
        detail=_names(sorted(bad)) if bad else "ls -l looks sane",
    )


def layout_checks(storage: LocalStorage | S3Storage, files: list[StoredFile]) -> list[CheckResult]:
    """Checks only a file tree has (permissions); a bucket has none."""
    return [permission_check(storage.root, files)] if isinstance(storage, LocalStorage) else []


def verify_storage(
    storage: LocalStorage | S3Storage, manifest: StorageManifest, *, workers: int | None = None
) -> Checks:
    """Counts, 0-byte files, checksums (and permissions for a local tree) against ``manifest``."""
    files = list(storage.files())
    results = [
        *count_checks(files, manifest),
        zero_byte_check(files),
        checksum_check(storage, files, manifest, workers=workers),
    ]
    return Checks([*results, *layout_checks(storage, files)])


def archive_listing_check(archive: Path, manifest: StorageManifest) -> CheckResult:
    """The runbook's ``tar -tzf … | wc -l`` against the manifest's count."""
    listed = len(list_archive(archive))
    return check(
        "archive_listing",
        listed == manifest.total_files,
        expected=manifest.total_files,
        observed=listed,
        detail=archive.name,
    )


def referenced_keys(target: PgTarget) -> list[str]:
    with target.connect() as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT storage_key FROM content_artifacts").fetchall()]


def storage_key_checks(target: PgTarget, storage: LocalStorage | S3Storage) -> list[CheckResult]:
    """Every ``storage_key`` the database references exists; unreferenced files are a warning."""
    keys = referenced_keys(target)
    present = {f.key for f in storage.files()}
    missing = sorted(set(keys) - present)
    unreferenced = sorted(present - set(keys))
    return [
        check(
            "storage_keys_exist",
            not missing,
            expected=f"{len(keys)} referenced files present",
            observed=f"{len(keys) - len(missing)} present, {len(missing)} missing",
            detail=_names(missing) if missing else "content_artifacts.storage_key → storage",
        ),
        check(
            "unreferenced_files",
            not unreferenced,
            expected=0,
            observed=len(unreferenced),
            warn_only=True,
            detail=_names(unreferenced) if unreferenced else "every file is referenced",
        ),
    ]


def api_serves_file_check(base_url: str, storage: LocalStorage | S3Storage, key: str) -> CheckResult:
    """``GET /v1/storage/<key>`` answers 200 with the same bytes as storage holds."""
    status, body = http_raw("GET", f"{base_url}/v1/storage/{key}")
    expected = storage.sha256(key) if storage.exists(key) else None
    ok = status == 200 and expected is not None and hashlib.sha256(body).hexdigest() == expected
    return check(
        "api_serves_file", ok, expected="200 and identical bytes", observed=status or "unreachable", detail=key
    )
