"""The catalogue of database backups in a folder, and picking the right one."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from drlib.exceptions import BackupCorrupt, BackupNotFound
from drlib.lazy import lazy_module
from drlib.postgres.backup import Backup
from drlib.postgres.manifest import manifest_path, read_manifest
from drlib.selection import check_backup_folder, select_backup

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")

__all__ = ["catalogue_table", "list_backups", "parse_backup_time", "select_backup"]

_NAME = re.compile(r"^(?P<prefix>.+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<time>\d{6})\.(?P<ext>dump|dir)$")


def parse_backup_time(name: str) -> datetime | None:
    """The UTC time encoded in a runbook-style backup name, e.g. ``content_crew_2026-01-13_020000.dump``."""
    match = _NAME.match(name)
    if not match:
        return None
    try:
        return datetime.strptime(f"{match['date']} {match['time']}", "%Y-%m-%d %H%M%S").replace(tzinfo=UTC)
    except ValueError:  # e.g. month 13: not a name drlib wrote
        return None


def list_backups(backup_dir: Path, *, prefix: str) -> list[Backup]:
    """Backups named ``<prefix>_YYYY-MM-DD_HHMMSS.dump`` (or ``.dir``), oldest first."""
    check_backup_folder(backup_dir, what="backup", setting="postgres_dir")
    try:
        paths = list(backup_dir.iterdir())
    except OSError as exc:
        raise BackupNotFound(
            f"backup folder {backup_dir} cannot be listed ({type(exc).__name__}): check its permissions"
        ) from exc
    found: list[Backup] = []
    for path in paths:
        match = _NAME.match(path.name)
        if not match or match["prefix"] != prefix:
            continue
        when = parse_backup_time(path.name)
        if when is None:
            continue
        manifest = None
        try:
            manifest = read_manifest(manifest_path(path)) if manifest_path(path).is_file() else None
        except BackupCorrupt:
            manifest = None  # verify_backup says why when this backup is picked
        if manifest is not None:
            try:
                created = manifest.created
                when = created if created.tzinfo else created.replace(tzinfo=UTC)
            except (TypeError, ValueError):
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
