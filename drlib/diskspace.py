"""Free space and failed writes per volume, the runbook's "Storage Disk Full" symptoms: each volume's usage
against the ``[monitoring]`` thresholds (the volumes and the check are :mod:`drlib.monitoring`'s), a real
write on each volume (a probe file created, written, fsynced and removed), and a write the database must
persist. A write that fails is named by its cause (ENOSPC, EDQUOT, a read-only filesystem, permissions)
and a volume by its free bytes.

The database's probe is a table of drlib's own (``drlib_probe.write_<token>``), created, filled with
``probe_bytes`` of rows, committed, read back from a second session and dropped with its schema: a new
table makes the server allocate new pages in its data directory and write WAL, which is what fails when
its disk is full. A temporary table would prove nothing: its rows stay in the session's memory (local
buffers, no WAL) until they outgrow it, so it succeeds on a full disk."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.exceptions import DrlibError
from drlib.monitoring import DiskUsage, disk_check, disk_usage, volumes
from drlib.postgres.connection import PgTarget
from drlib.units import format_bytes

#: how much each probe writes: a realistic small write (a few database pages), not a single byte
DEFAULT_PROBE_BYTES = 64 * 1024
PROBE_PREFIX = ".drlib-write-probe-"
#: the schema the database probe's table lives in (dropped again once no probe table is in it)
PROBE_SCHEMA = "drlib_probe"
#: the database's volume: probed through the database, never by writing files into its data directory
DATABASE_VOLUME = "postgres_data"

#: a failed write, named by its cause
WRITE_ERRORS: dict[int, str] = {
    errno.ENOSPC: "no space left on device (ENOSPC)",
    errno.EDQUOT: "disk quota exceeded (EDQUOT)",
    errno.EROFS: "read-only filesystem (EROFS)",
    errno.EACCES: "permission denied (EACCES)",
    errno.EPERM: "operation not permitted (EPERM)",
    errno.EIO: "input/output error (EIO): check the disk",
}
#: database errors, by SQLSTATE
DATABASE_WRITE_ERRORS: dict[str, str] = {
    "53100": "disk full (SQLSTATE 53100)",
    "53200": "out of memory (SQLSTATE 53200)",
    "25006": "read-only transaction (SQLSTATE 25006): a standby, or default_transaction_read_only",
    "42501": "permission denied (SQLSTATE 42501): grant the role CREATE on the database",
    "58030": "I/O error (SQLSTATE 58030): check the disk",
}
#: what the runbook says to do when freeing space was not enough
RUNBOOK_ADVICE = (
    "free more (lower keep_days / keep_last, move old backups off this disk), or: if data was damaged, restore "
    "from backup; add disk space; migrate to larger storage"
)


def write_error(exc: OSError) -> str:
    """An ``OSError`` from a write, named by its cause."""
    known = WRITE_ERRORS.get(exc.errno or 0)
    return known or f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, 'error')})"


@dataclass(frozen=True)
class WriteProbe:
    """One real write: where, whether it worked, and why not."""

    volume: str
    where: str
    ok: bool
    error: str = ""
    bytes: int = 0
    seconds: float = 0.0
    #: not probed at all (e.g. the folder does not exist yet): reported, never a failure
    skipped: str = ""

    def check(self, *, name: str = "", warn_only: bool = False) -> CheckResult:
        name = name or f"write_{self.volume}"
        if self.skipped:
            return check(
                name, False, expected="writes work", observed="not probed", detail=self.skipped, warn_only=True
            )
        return check(
            name,
            self.ok,
            expected=f"a {format_bytes(self.bytes)} write persists",
            observed=f"written in {self.seconds:.3f} s" if self.ok else f"FAILS: {self.error}",
            detail=self.where,
            warn_only=warn_only,
        )


def probe_file_write(volume: str, folder: Path, *, size: int = DEFAULT_PROBE_BYTES) -> WriteProbe:
    """Create, write ``size`` bytes, fsync and remove a probe file in ``folder`` (removed whatever happens)."""
    if not folder.is_dir():
        return WriteProbe(volume, str(folder), ok=True, bytes=size, skipped=f"{folder} does not exist (yet)")
    path = folder / f"{PROBE_PREFIX}{secrets.token_hex(6)}"
    started = time.monotonic()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            block = os.urandom(min(size, 1024 * 1024))  # incompressible, so a compressing filesystem stores it
            left = size
            while left > 0:
                left -= os.write(fd, block[:left])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return WriteProbe(volume, str(folder), ok=False, error=write_error(exc), bytes=size)
    finally:
        with contextlib.suppress(OSError):  # a read-only filesystem cannot have created it either
            path.unlink(missing_ok=True)
    return WriteProbe(volume, str(folder), ok=True, bytes=size, seconds=round(time.monotonic() - started, 3))


def probe_database_write(target: PgTarget, *, size: int = DEFAULT_PROBE_BYTES) -> WriteProbe:
    """A table of drlib's own created, filled with ``size`` bytes of rows, committed, read back from another
    session, and dropped with its schema (unless another probe's table is in it): see the module docstring."""
    table = f"{PROBE_SCHEMA}.write_{secrets.token_hex(6)}"
    rows = max(1, size // 1024)
    where = f"{target.settings.address} ({table})"
    started = time.monotonic()
    try:
        with target.connect(autocommit=False) as conn:
            try:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PROBE_SCHEMA}")
                conn.execute(f"CREATE TABLE {table} (n int, payload text)")
                conn.execute(
                    f"INSERT INTO {table} SELECT g, repeat(md5(g::text || random()::text), 32) "
                    "FROM generate_series(1, %s) g",
                    (rows,),
                )
                conn.commit()  # the server writes and flushes WAL: the rows are durable or this fails
                with target.connect() as other:
                    found = other.execute(f"SELECT count(*) FROM {table}").fetchone()
                persisted = found is not None and int(found[0]) == rows
            finally:
                _drop_probe(conn, table)
    except psycopg.Error as exc:
        state = getattr(exc, "sqlstate", None) or ""
        reason = DATABASE_WRITE_ERRORS.get(state) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return WriteProbe(DATABASE_VOLUME, where, ok=False, error=reason, bytes=size)
    except DrlibError as exc:
        return WriteProbe(DATABASE_VOLUME, where, ok=False, error=f"cannot connect: {exc.message}", bytes=size)
    if not persisted:
        return WriteProbe(DATABASE_VOLUME, where, ok=False, error="committed rows not read back", bytes=size)
    return WriteProbe(DATABASE_VOLUME, where, ok=True, bytes=size, seconds=round(time.monotonic() - started, 3))


def _drop_probe(conn: psycopg.Connection[Any], table: str) -> None:
    """Drop the probe's table, then its schema unless another probe's table is in it (a failed transaction is
    rolled back first)."""
    for statement in (f"DROP TABLE IF EXISTS {table}", f"DROP SCHEMA IF EXISTS {PROBE_SCHEMA} RESTRICT"):
        try:
            conn.rollback()
            conn.execute(statement)
            conn.commit()
        except psycopg.Error:
            conn.rollback()


# -- every volume ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumeState:
    """One volume: its filesystem's usage, the threshold check and the write probe."""

    usage: DiskUsage
    disk: CheckResult
    probe: WriteProbe
    device: int

    @property
    def name(self) -> str:
        return self.usage.volume

    @property
    def full(self) -> bool:
        """Writes fail, or usage is over the critical threshold."""
        return (not self.probe.ok and not self.probe.skipped) or self.disk.status == "fail"


@dataclass(frozen=True)
class DiskState:
    """Every volume, the database's write probe, and notes on volumes that could not be measured."""

    volumes: tuple[VolumeState, ...]
    database: WriteProbe
    notes: tuple[str, ...] = ()

    @property
    def full(self) -> list[VolumeState]:
        return [v for v in self.volumes if v.full]

    @property
    def writes_fail(self) -> bool:
        return not self.database.ok or any(not v.probe.ok and not v.probe.skipped for v in self.volumes)

    def describe(self) -> str:
        """``backups_postgres full (12 KiB free, 99.4 % used; no space left on device (ENOSPC))`` or ``none``."""
        named = []
        for volume in self.full:
            why = [f"{format_bytes(volume.usage.free_bytes)} free", f"{volume.usage.used_percent:g} % used"]
            if not volume.probe.ok:
                why.append(volume.probe.error)
            named.append(f"{volume.name} full ({', '.join(why)})")
        if not self.database.ok:
            named.append(f"database writes fail ({self.database.error})")
        return "; ".join(named) or "none"

    def checks(self, *, prefix: str = "", warn_only: bool = False) -> Checks:
        """Per volume its disk check and its write probe, and the database's write probe; ``warn_only``: the
        symptoms as found, a warning each."""
        results: list[CheckResult] = []
        for volume in self.volumes:
            disk = volume.disk
            if disk.status == "fail" and warn_only:
                disk = replace(disk, status="warn")
            results.append(replace(disk, name=prefix + disk.name))
            if volume.name != DATABASE_VOLUME:
                results.append(volume.probe.check(name=f"{prefix}write_{volume.name}", warn_only=warn_only))
        results.append(self.database.check(name=f"{prefix}write_database", warn_only=warn_only))
        return Checks(results)

    def recovered(self) -> CheckResult:
        """One check for the whole disk: no volume over the critical threshold and every write works; failing,
        it carries the runbook's advice."""
        return check(
            "disk_not_full",
            not self.full and not self.writes_fail,
            expected="no volume over the critical threshold, every write works",
            observed=self.describe() if self.full or self.writes_fail else "writes work on every volume",
            detail=RUNBOOK_ADVICE if self.full or self.writes_fail else "",
        )

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "volume": v.name,
                "path": str(v.usage.path),
                "used_percent": v.usage.used_percent,
                "free": format_bytes(v.usage.free_bytes),
                "free_bytes": v.usage.free_bytes,
                "size": format_bytes(v.usage.total_bytes),
                "writes": "through the database"
                if v.name == DATABASE_VOLUME
                else ("ok" if v.probe.ok and not v.probe.skipped else (v.probe.skipped or v.probe.error)),
            }
            for v in self.volumes
        ]


def device_of(path: Path) -> int:
    """The filesystem holding ``path`` (its nearest existing folder)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return os.stat(existing).st_dev


def read_disk_state(profile: Profile, *, probe_bytes: int = DEFAULT_PROBE_BYTES) -> DiskState:
    """Every volume of ``profile`` (:func:`drlib.monitoring.volumes`) measured and probed, and the database
    probed with a write of its own."""
    paths, notes = volumes(profile)
    database = probe_database_write(PgTarget.from_profile(profile), size=probe_bytes)
    found = []
    for name, path in paths.items():
        usage = disk_usage(name, path)
        if name == DATABASE_VOLUME:
            probe = replace(database, volume=name)
        else:
            probe = probe_file_write(name, path, size=probe_bytes)
        found.append(
            VolumeState(usage=usage, disk=disk_check(usage, profile.monitoring), probe=probe, device=device_of(path))
        )
    return DiskState(volumes=tuple(found), database=database, notes=tuple(notes))


def headroom_after(state: DiskState, freed_by_device: dict[int, int]) -> list[dict[str, Any]]:
    """Per volume: free bytes and used % now, and after ``freed_by_device`` (bytes freed per filesystem)."""
    rows = []
    for volume in state.volumes:
        usage = volume.usage
        freed = freed_by_device.get(volume.device, 0)
        usable = usage.used_bytes + usage.free_bytes
        after = 100 * (usage.used_bytes - freed) / usable if usable else 100.0
        rows.append(
            {
                "volume": volume.name,
                "free_now": format_bytes(usage.free_bytes),
                "used_now_percent": usage.used_percent,
                "freed": format_bytes(freed),
                "free_after": format_bytes(usage.free_bytes + freed),
                "used_after_percent": round(max(0.0, after), 1),
            }
        )
    return rows
