"""Taking a database backup with ``pg_dump`` plus a manifest describing exactly what it holds.

Row counts and newest ``created_at`` per table are read inside the very snapshot that
``pg_dump`` dumps (``pg_export_snapshot`` + ``--snapshot``), so the manifest and the dump
agree to the row even while the application keeps writing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drlib import __version__
from drlib.exceptions import DrlibError
from drlib.postgres.archive import toc_prefix
from drlib.postgres.catalog import discover_foreign_keys, discover_tables
from drlib.postgres.connection import PgTarget, sql_errors, start_pg_tool
from drlib.postgres.content import read_contents
from drlib.postgres.fingerprint import read_schema, read_sequence_values
from drlib.postgres.globals import ROLES_SUFFIX, read_database_properties, read_roles, write_roles_file
from drlib.postgres.manifest import (
    BackupManifest,
    dump_checksums,
    manifest_path,
    write_manifest,
)
from drlib.postgres.tools import program_version
from drlib.processes import kill_tree
from drlib.secrets import redact
from drlib.selection import make_backup_folder

FORMAT_SUFFIX = {"custom": ".dump", "directory": ".dir"}
FORMAT_FLAG = {"custom": "c", "directory": "d"}


class BackupFailed(DrlibError):
    code = "backup-failed"


@dataclass(frozen=True)
class Backup:
    """A backup on disk and, when present, its manifest."""

    path: Path
    created_at: datetime
    manifest: BackupManifest | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def format(self) -> str:
        return "directory" if self.path.is_dir() or self.path.suffix == ".dir" else "custom"

    @property
    def size_bytes(self) -> int:
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size if self.path.exists() else 0


def backup_name(prefix: str, when: datetime, fmt: str) -> str:
    return f"{prefix}_{when.astimezone(UTC):%Y-%m-%d_%H%M%S}{FORMAT_SUFFIX[fmt]}"


def backup_database(
    *,
    target: PgTarget,
    backup_dir: Path,
    prefix: str | None = None,
    fmt: str = "custom",
    jobs: int = 1,
    compress: int | None = None,
    fingerprint_jobs: int = 2,
) -> Backup:
    """Dump ``target`` into ``backup_dir`` as ``<prefix>_YYYY-MM-DD_HHMMSS.dump`` plus its manifest
    (schema and content fingerprints, database properties, roles) and ``.roles.sql``.

    The manifest is read in the dump's own snapshot; the content fingerprint is read by
    ``fingerprint_jobs`` connections while ``pg_dump`` runs."""
    if fmt not in FORMAT_SUFFIX:
        raise BackupFailed(f"unknown backup format {fmt!r}: use 'custom' or 'directory'")
    make_backup_folder(backup_dir, what="backup", setting="postgres_dir", error=BackupFailed)
    settings = target.settings
    conn = target.connect(autocommit=False)
    with conn, sql_errors(target, doing="reading the snapshot for the backup manifest"):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(
            "SELECT pg_export_snapshot(), now(), current_setting('server_version'), "
            "pg_database_size(current_database())"
        ).fetchone()
        assert row is not None
        snapshot, snapshot_time, server_version, db_size = row
        started = time.monotonic()
        schema = read_schema(conn, settings)
        sequences = read_sequence_values(conn, settings)
        properties = read_database_properties(conn)
        roles = read_roles(conn)
        tables = discover_tables(conn, settings)
        fks = discover_foreign_keys(conn, settings)
        schema_seconds = time.monotonic() - started
        name = backup_name(prefix or target.name, snapshot_time, fmt)
        final = backup_dir / name
        partial = backup_dir / f"{name}.{secrets.token_hex(4)}.partial"  # two runs never share a file
        _remove(partial)
        args = [f"-F{FORMAT_FLAG[fmt]}", f"--snapshot={snapshot}", "-f", str(partial), target.name]
        if fmt == "directory" and jobs > 1:
            args[:0] = ["-j", str(jobs)]
        if compress is not None:
            args[:0] = [f"--compress={compress}"]
        dump = start_pg_tool("pg_dump", args, target=target)
        try:
            started = time.monotonic()
            contents = read_contents(target, tables, settings, jobs=fingerprint_jobs, snapshot=snapshot)
            content_seconds = time.monotonic() - started
            _, stderr = dump.communicate()
        except BaseException:
            kill_tree(dump.pid, timeout=5)
            dump.communicate()
            _remove(partial)
            raise
        if dump.returncode != 0:
            _remove(partial)
            raise BackupFailed(f"pg_dump of {settings.address} failed: {redact(stderr.strip())}")
    try:
        final = _claim(
            partial,
            [
                backup_dir / backup_name(prefix or target.name, snapshot_time + timedelta(seconds=k), fmt)
                for k in range(10)
            ],
        )
        name = final.name
        overall, files, size = dump_checksums(final)
        toc = toc_prefix(final) if fmt == "custom" else None
        roles_path = final.with_name(final.name + ROLES_SUFFIX)
        roles_text = write_roles_file(roles_path, roles)
        manifest = BackupManifest(
            file=name,
            format=fmt,
            database=target.name,
            created_at=snapshot_time.astimezone(UTC).isoformat(),
            size_bytes=size,
            sha256=overall,
            server_version=str(server_version),
            pg_dump_version=program_version("pg_dump"),
            database_size_bytes=int(db_size),
            tables=contents,
            foreign_keys=[fk.label for fk in fks],
            foreign_key_specs=[dataclasses.asdict(fk) for fk in fks],
            files=files,
            drlib_version=__version__,
            manifest_version=2,
            schema=schema,
            sequences=sequences,
            database_properties=properties.to_dict(),
            roles={role.name: role.described() for role in roles},
            roles_file=roles_path.name,
            roles_sha256=hashlib.sha256(roles_text.encode()).hexdigest(),
            fingerprint_seconds={"schema": round(schema_seconds, 3), "content": round(content_seconds, 3)},
            toc_bytes=toc.length if toc else 0,
            toc_sha256=toc.sha256 if toc else "",
        )
        write_manifest(manifest_path(final), manifest)
    except OSError as exc:
        raise BackupFailed(
            f"the dump was written but {final} or its manifest could not be finished "
            f"({type(exc).__name__}: {exc.strerror or exc}): check free space and permissions in {backup_dir}, "
            "then take the backup again"
        ) from exc
    return Backup(path=final, created_at=snapshot_time.astimezone(UTC), manifest=manifest)


def _claim(partial: Path, names: list[Path]) -> Path:
    """Give the finished dump the first free name (the snapshot's second, else the next ones: the
    manifest keeps the exact snapshot time), never overwriting another backup."""
    for final in names:
        if _take_name(partial, final):
            return final
    _remove(partial)
    raise BackupFailed(
        f"{len(names)} backups named {names[0].name} and after were finished at the same time: nothing of this "
        "run was kept; take the backup again"
    )


def _take_name(partial: Path, final: Path) -> bool:
    """Move ``partial`` to ``final`` unless that name is taken (a hard link fails if it is; a directory,
    or a filesystem without hard links, is checked first)."""
    if not partial.is_dir():
        try:
            os.link(partial, final)
        except FileExistsError:
            return False
        except OSError:
            pass  # no hard links here: fall back to check-then-rename
        else:
            partial.unlink()
            return True
    if final.exists():
        return False
    os.replace(partial, final)
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
