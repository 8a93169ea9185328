"""Taking a database backup with ``pg_dump`` plus a manifest describing exactly what it holds.

Row counts and newest ``created_at`` per table are read inside the very snapshot that
``pg_dump`` dumps (``pg_export_snapshot`` + ``--snapshot``), so the manifest and the dump
agree to the row even while the application keeps writing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from drlib import __version__
from drlib.exceptions import DrlibError
from drlib.postgres.check_sets import required_tables
from drlib.postgres.connection import PgTarget, run_pg_tool, sql_errors
from drlib.postgres.manifest import (
    BackupManifest,
    TableStats,
    dump_checksums,
    manifest_path,
    write_manifest,
)
from drlib.postgres.tools import program_version
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


def table_stats(conn: psycopg.Connection, tables: tuple[str, ...], created_at_column: str) -> dict[str, TableStats]:
    """Row count and newest ``created_at`` of each table that exists."""
    stats: dict[str, TableStats] = {}
    for table in tables:
        exists = conn.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()
        if not exists or exists[0] is None:
            continue
        has_column = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema='public' AND table_name=%s AND column_name=%s",
            (table, created_at_column),
        ).fetchone()
        newest = sql.SQL("max({})").format(sql.Identifier(created_at_column)) if has_column else sql.SQL("NULL")
        row = conn.execute(sql.SQL("SELECT count(*), {} FROM {}").format(newest, sql.Identifier(table))).fetchone()
        assert row is not None
        stats[table] = TableStats(rows=int(row[0]), newest_created_at=row[1].isoformat() if row[1] else None)
    return stats


def foreign_keys(conn: psycopg.Connection) -> list[str]:
    """``table.constraint`` for every foreign key (the runbook's ``pg_constraint`` query)."""
    rows = conn.execute(
        "SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint WHERE contype = 'f' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def backup_database(
    *,
    target: PgTarget,
    backup_dir: Path,
    prefix: str | None = None,
    fmt: str = "custom",
    jobs: int = 1,
    compress: int | None = None,
) -> Backup:
    """Dump ``target`` into ``backup_dir`` as ``<prefix>_YYYY-MM-DD_HHMMSS.dump`` plus manifest."""
    if fmt not in FORMAT_SUFFIX:
        raise BackupFailed(f"unknown backup format {fmt!r}: use 'custom' or 'directory'")
    make_backup_folder(backup_dir, what="backup", setting="postgres_dir", error=BackupFailed)
    conn = target.connect(autocommit=False)
    with conn, sql_errors(target, doing="reading the snapshot for the backup manifest"):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(
            "SELECT pg_export_snapshot(), now(), current_setting('server_version'), "
            "pg_database_size(current_database())"
        ).fetchone()
        assert row is not None
        snapshot, snapshot_time, server_version, db_size = row
        stats = table_stats(conn, required_tables(target.settings), target.settings.created_at_column)
        fks = foreign_keys(conn)
        name = backup_name(prefix or target.name, snapshot_time, fmt)
        final = backup_dir / name
        partial = backup_dir / (name + ".partial")
        _remove(partial)
        args = [f"-F{FORMAT_FLAG[fmt]}", f"--snapshot={snapshot}", "-f", str(partial), target.name]
        if fmt == "directory" and jobs > 1:
            args[:0] = ["-j", str(jobs)]
        if compress is not None:
            args[:0] = [f"--compress={compress}"]
        try:
            result = run_pg_tool("pg_dump", args, target=target)
        except DrlibError as exc:
            _remove(partial)
            raise BackupFailed(f"pg_dump of {target.settings.address} failed: {exc.message}") from exc
        if result.returncode != 0:
            _remove(partial)
            raise BackupFailed(f"pg_dump of {target.settings.address} failed: {result.stderr.strip()}")
    try:
        os.replace(partial, final)
        overall, files, size = dump_checksums(final)
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
            tables=stats,
            foreign_keys=fks,
            files=files,
            drlib_version=__version__,
        )
        write_manifest(manifest_path(final), manifest)
    except OSError as exc:
        raise BackupFailed(
            f"the dump was written but {final} or its manifest could not be finished "
            f"({type(exc).__name__}: {exc.strerror or exc}): check free space and permissions in {backup_dir}, "
            "then take the backup again"
        ) from exc
    return Backup(path=final, created_at=snapshot_time.astimezone(UTC), manifest=manifest)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
