"""Integrity of a backup, checked before anything is touched.

Refuses, with one clear message each: a missing file, a 0-byte file, a file that is not a
``pg_dump`` archive, a size or checksum that differs from the manifest (truncation, bit rot),
and an archive whose table of contents ``pg_restore --list`` cannot read. ``deep=True``
also reads every data block (``pg_restore -f /dev/null``), which finds truncation even
without a manifest.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from drlib.checks import CheckResult, Checks, check
from drlib.exceptions import BackupCorrupt, BackupNotFound, ConfigError
from drlib.hashing import sha256_file
from drlib.postgres.backup import Backup
from drlib.postgres.manifest import BackupManifest, dump_checksums, manifest_path, read_manifest
from drlib.postgres.tools import pg_program

ARCHIVE_MAGIC = b"PGDMP"


@dataclass(frozen=True)
class VerifiedBackup:
    """A backup that passed the integrity checks; only these can be restored."""

    backup: Backup
    manifest: BackupManifest | None
    checks: Checks
    toc_entries: int
    #: every data block was read through (``pg_restore -f /dev/null``), not only the table of contents
    deep: bool = False

    @property
    def path(self) -> Path:
        return self.backup.path

    def _repr_html_(self) -> str:
        return f"<p>Backup <code>{self.path.name}</code> verified.</p>" + self.checks._repr_html_()


def _archive_head(path: Path) -> bytes:
    head_file = path / "toc.dat" if path.is_dir() else path
    if not head_file.is_file():
        return b""
    with head_file.open("rb") as handle:
        return handle.read(16)


def _unreadable(path: Path, exc: OSError) -> BackupCorrupt:
    return BackupCorrupt(
        f"backup {path} cannot be read ({type(exc).__name__}: {exc.strerror or exc}): check its "
        "permissions and the backup volume, or pick another backup"
    )


def _pg_restore(args: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    argv = [pg_program("pg_restore"), *args, str(path)]
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot run {argv[0]} ({type(exc).__name__}): check the PostgreSQL installation or DRLIB_PG_BINDIR"
        ) from exc


def read_whole_archive(path: Path) -> None:
    """Decompress every data block of the archive (``pg_restore -f /dev/null``); raise if one is damaged.

    Finds what a manifest cannot: a dump that was already damaged when its manifest was written."""
    full = _pg_restore(["-f", "/dev/null"], path)
    if full.returncode != 0:
        raise BackupCorrupt(
            f"backup {path} cannot be read to the end: {full.stderr.strip()}. "
            "It is truncated or damaged: pick another backup. Nothing was changed."
        )


def _roles_file_check(path: Path, manifest: BackupManifest) -> CheckResult:
    """The roles file beside the dump is there and unchanged (it is applied as a superuser would)."""
    roles = path.with_name(manifest.roles_file)
    if Path(manifest.roles_file).name != manifest.roles_file:
        raise BackupCorrupt(f"the manifest of {path.name} names a roles file outside its folder: pick another backup")
    if not roles.is_file():
        return check(
            "roles_file",
            False,
            expected=roles.name,
            observed="missing",
            detail="the restore cannot create missing roles: copy the file back beside the dump, or create "
            "the roles by hand",
            warn_only=True,
        )
    digest = sha256_file(roles)
    if digest != manifest.roles_sha256:
        raise BackupCorrupt(
            f"the roles file {roles.name} of backup {path.name} fails its checksum: it changed after the backup "
            "was taken. Pick another backup."
        )
    return check("roles_file_checksum", True, expected=manifest.roles_sha256[:16], observed=digest[:16])


def _format_hint(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed (decompress it first, or it is a storage archive)"
    if head[:2] in (b"--", b"SE", b"CR", b"\n-"):
        return "it looks like a plain SQL dump (restore it with psql -f, not pg_restore)"
    return "it is not a pg_dump custom or directory archive"


def verify_backup(backup: Backup, *, require_manifest: bool = True, deep: bool = False) -> VerifiedBackup:
    """Check ``backup`` and return it verified, or raise :class:`BackupCorrupt`/:class:`BackupNotFound`."""
    try:
        return _verify(backup, require_manifest=require_manifest, deep=deep)
    except OSError as exc:
        raise _unreadable(backup.path, exc) from exc


def _verify(backup: Backup, *, require_manifest: bool, deep: bool) -> VerifiedBackup:
    path = backup.path
    results: list[CheckResult] = []
    if not path.exists():
        raise BackupNotFound(f"backup {path} does not exist: list the catalogue and pick another one")
    size = backup.size_bytes
    if size == 0:
        raise BackupCorrupt(f"backup {path} is 0 bytes: the dump never completed. Pick an earlier backup.")
    results.append(check("backup_not_empty", True, expected="> 0 bytes", observed=f"{size} bytes"))
    head = _archive_head(path)
    if not head.startswith(ARCHIVE_MAGIC):
        raise BackupCorrupt(f"backup {path} has the wrong format: {_format_hint(head)}")
    results.append(check("backup_format", True, expected="pg_dump archive", observed=head[:5].decode()))

    manifest = backup.manifest
    mpath = manifest_path(path)
    if manifest is None and mpath.is_file():
        manifest = read_manifest(mpath)
    if manifest is None:
        if require_manifest:
            raise BackupCorrupt(
                f"backup {path} has no manifest ({mpath.name}), so its checksum cannot be verified. "
                "Pick a backup taken by drlib, or pass require_manifest=False (the check then reads "
                "the whole archive instead)."
            )
        deep = True
        results.append(
            check(
                "backup_manifest",
                False,
                expected="manifest present",
                observed="missing",
                detail="verified by reading the whole archive instead",
                warn_only=True,
            )
        )
    else:
        if size != manifest.size_bytes:
            raise BackupCorrupt(
                f"backup {path} is {size} bytes but its manifest says {manifest.size_bytes}: it is "
                f"{'truncated' if size < manifest.size_bytes else 'altered'}. Pick another backup."
            )
        results.append(check("backup_size", True, expected=manifest.size_bytes, observed=size))
        overall, _, _ = dump_checksums(path)
        if overall != manifest.sha256:
            raise BackupCorrupt(
                f"backup {path} fails its checksum (sha256 {overall[:16]}… ≠ manifest "
                f"{manifest.sha256[:16]}…): the file changed after it was written. Pick another backup."
            )
        results.append(
            check("backup_checksum", True, expected=manifest.sha256[:16], observed=overall[:16], detail="sha256")
        )
        if manifest.roles_file:
            results.append(_roles_file_check(path, manifest))

    listing = _pg_restore(["--list"], path)
    if listing.returncode != 0:
        raise BackupCorrupt(f"pg_restore cannot read the archive {path}: {listing.stderr.strip()}")
    entries = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
    results.append(
        check("backup_toc_readable", True, expected="pg_restore --list succeeds", observed=f"{entries} entries")
    )
    if deep:
        read_whole_archive(path)
        results.append(check("backup_readable_to_end", True, expected="all data blocks readable", observed="ok"))
    return VerifiedBackup(backup=backup, manifest=manifest, checks=Checks(results), toc_entries=entries, deep=deep)
