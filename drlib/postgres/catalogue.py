"""The catalogue of database backups in a folder, and picking the right one."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from drlib.exceptions import BackupNotFound
from drlib.postgres.backup import Backup
from drlib.postgres.manifest import manifest_path, read_manifest
from drlib.selection import select_backup

__all__ = ["catalogue_table", "list_backups", "parse_backup_time", "select_backup"]

_NAME = re.compile(r"^(?P<prefix>.+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<time>\d{6})\.(?P<ext>dump|dir)$")


def parse_backup_time(name: str) -> datetime | None:
    """The UTC time encoded in a runbook-style backup name, e.g. ``content_crew_2026-01-13_020000.dump``."""
    match = _NAME.match(name)
    if not match:
        return None
    return datetime.strptime(f"{match['date']} {match['time']}", "%Y-%m-%d %H%M%S").replace(tzinfo=UTC)


def list_backups(backup_dir: Path, *, prefix: str) -> list[Backup]:
    """Backups named ``<prefix>_YYYY-MM-DD_HHMMSS.dump`` (or ``.dir``), oldest first."""
    if not backup_dir.is_dir():
        raise BackupNotFound(
            f"backup folder {backup_dir} does not exist: check the profile's [backups] "
            "postgres_dir, or that the backup volume is mounted"
        )
    found: list[Backup] = []
    for path in backup_dir.iterdir():
        match = _NAME.match(path.name)
        if not match or match["prefix"] != prefix:
            continue
        when = parse_backup_time(path.name)
        assert when is not None
        mpath = manifest_path(path)
        manifest = None
        if mpath.is_file():
            try:
                manifest = read_manifest(mpath)
                when = manifest.created
            except Exception:
                manifest = None
        found.append(Backup(path=path, created_at=when, manifest=manifest))
    return sorted(found, key=lambda b: b.created_at)


def catalogue_table(backups: list[Backup]) -> pd.DataFrame:
    """The catalogue as a table for a notebook."""
    rows = [
        {
            "backup": b.name,
            "taken_at_utc": b.created_at.isoformat(timespec="seconds"),
            "size_bytes": b.size_bytes,
            "format": b.format,
            "manifest": "yes" if b.manifest else "no",
        }
        for b in backups
    ]
    return pd.DataFrame(rows, columns=["backup", "taken_at_utc", "size_bytes", "format", "manifest"])
