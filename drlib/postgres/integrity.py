"""Integrity of a backup, checked before anything is touched.

Refuses, with one clear message each: a missing file, a 0-byte file, a file that is not a
``pg_dump`` archive, a size or checksum that differs from the manifest (truncation, bit rot),
and an archive whose table of contents ``pg_restore --list`` cannot read. ``deep=True``
also reads every data block (``pg_restore -f /dev/null``), which finds truncation even
without a manifest.

``defer_checksum=True`` (Option B with ``confirm``) proves the archive's header and table of contents
against the manifest (everything ``pg_restore`` executes: :mod:`drlib.postgres.archive`) and leaves the
whole-file sha256 to :class:`BackgroundChecksum`, which reads it while the copy is restored: a mismatch
stops that restore and drops the copy before it can be swapped in.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from drlib.checks import CheckResult, Checks, check
from drlib.exceptions import BackupCorrupt, BackupNotFound, ConfigError
from drlib.hashing import sha256_file
from drlib.postgres.archive import prefix_sha256, toc_prefix
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
    #: the table of contents is proven; the whole file's sha256 is still to be read (BackgroundChecksum)
    checksum_pending: bool = False

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


def verify_backup(
    backup: Backup, *, require_manifest: bool = True, deep: bool = False, defer_checksum: bool = False
) -> VerifiedBackup:
    """Check ``backup`` and return it verified, or raise :class:`BackupCorrupt`/:class:`BackupNotFound`.

    ``defer_checksum``: when the manifest records the table of contents' digest, prove that now and leave
    the whole file's sha256 to the restore (``checksum_pending``); otherwise it is read now as usual."""
    try:
        return _verify(backup, require_manifest=require_manifest, deep=deep, defer_checksum=defer_checksum)
    except OSError as exc:
        raise _unreadable(backup.path, exc) from exc


def _checksum_mismatch(path: Path, overall: str, manifest: BackupManifest) -> BackupCorrupt:
    return BackupCorrupt(
        f"backup {path} fails its checksum (sha256 {overall[:16]}… ≠ manifest "
        f"{manifest.sha256[:16]}…): the file changed after it was written. Pick another backup."
    )


def _checksum_check(manifest: BackupManifest, overall: str, detail: str = "sha256") -> CheckResult:
    return check("backup_checksum", True, expected=manifest.sha256[:16], observed=overall[:16], detail=detail)


def _toc_digest(path: Path, manifest: BackupManifest) -> tuple[str, str] | None:
    """(expected, actual) sha256 of what pg_restore executes, when the manifest recorded it.

    Custom format: the digest proves everything pg_restore executes only if ``toc_bytes`` is exactly where
    the table of contents ends, so unchanged bytes are parsed again; a length that is not a whole number
    inside the file, or that ends elsewhere (mid-entry), gives None: the whole file is read first."""
    if manifest.format == "directory" and "toc.dat" in manifest.files:
        return manifest.files["toc.dat"], sha256_file(path / "toc.dat")
    length, expected = manifest.toc_bytes, manifest.toc_sha256
    if type(length) is not int or not 0 < length < path.stat().st_size or not isinstance(expected, str) or not expected:
        return None
    actual = prefix_sha256(path, length)
    if actual != expected:
        return expected, actual
    prefix = toc_prefix(path)
    return (expected, actual) if prefix is not None and prefix.length == length else None


def _verify(backup: Backup, *, require_manifest: bool, deep: bool, defer_checksum: bool) -> VerifiedBackup:
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
    toc: tuple[str, str] | None = None
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
        toc = _toc_digest(path, manifest) if defer_checksum and not deep else None
        if toc is not None:
            expected, actual = toc
            if actual != expected:
                raise BackupCorrupt(
                    f"the table of contents of backup {path} fails its checksum (sha256 {actual[:16]}… ≠ manifest "
                    f"{expected[:16]}…): the statements it would run changed after it was written. Pick another "
                    "backup."
                )
            results.append(
                check(
                    "backup_toc_checksum",
                    True,
                    expected=expected[:16],
                    observed=actual[:16],
                    detail="sha256 of the header and table of contents; the whole file is read during the restore",
                )
            )
        else:
            overall, _, _ = dump_checksums(path)
            if overall != manifest.sha256:
                raise _checksum_mismatch(path, overall, manifest)
            results.append(_checksum_check(manifest, overall))
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
    return VerifiedBackup(
        backup=backup,
        manifest=manifest,
        checks=Checks(results),
        toc_entries=entries,
        deep=deep,
        checksum_pending=toc is not None,
    )


def finish_checksum(verified: VerifiedBackup) -> CheckResult | None:
    """Read the whole file's sha256 now if it was left to the restore; raise :class:`BackupCorrupt` if
    it differs. None when there was nothing pending."""
    if not verified.checksum_pending or verified.manifest is None:
        return None
    try:
        overall, _, _ = dump_checksums(verified.path)
    except OSError as exc:
        raise _unreadable(verified.path, exc) from exc
    if overall != verified.manifest.sha256:
        raise _checksum_mismatch(verified.path, overall, verified.manifest)
    return _checksum_check(verified.manifest, overall)


#: the background checksum yields the CPU to the restore it runs beside (nice +10: about a tenth of a core
#: while both want one), and so finishes in the restore's idle moments
BACKGROUND_NICE = 10


class BackgroundChecksum:
    """The whole-file sha256 of a backup whose table of contents was proven, read in a low-priority
    thread while the restore runs. ``failed`` is set as soon as it differs; :meth:`result` waits for it
    and returns the check or raises :class:`BackupCorrupt`."""

    def __init__(self, verified: VerifiedBackup) -> None:
        self.verified = verified
        self.failed = threading.Event()
        self._outcome: CheckResult | BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="drlib-backup-checksum", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux: a thread's own priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        try:
            self._outcome = finish_checksum(self.verified)
        except BaseException as exc:  # handed to result(), in the restoring thread
            self._outcome = exc
            self.failed.set()

    def error(self) -> BaseException | None:
        """Wait for the checksum; what it raised, if anything."""
        self._thread.join()
        return self._outcome if isinstance(self._outcome, BaseException) else None

    def result(self) -> CheckResult | None:
        """Wait for the checksum; its check, or raise what it found."""
        if (error := self.error()) is not None:
            raise error
        assert not isinstance(self._outcome, BaseException)
        return self._outcome
