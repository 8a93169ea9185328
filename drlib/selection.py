"""Picking a backup from a catalogue: the newest before a time, or one by name."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from drlib.exceptions import BackupNotFound, DrlibError


class Catalogued(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


B = TypeVar("B", bound=Catalogued)


def select_backup(
    backups: Sequence[B], *, selection: str = "latest", before: datetime | None = None, what: str = "backup"
) -> B:
    """``latest`` (optionally the newest taken before ``before``) or a backup by file name or path."""
    if selection not in ("latest", ""):
        wanted = Path(selection).name
        for backup in backups:
            if backup.name == wanted:
                return backup
        raise BackupNotFound(f"no {what} named {wanted!r}; available: {', '.join(b.name for b in backups) or 'none'}")
    ordered = sorted(backups, key=lambda b: b.created_at)
    candidates = [b for b in ordered if before is None or b.created_at <= before]
    if not candidates:
        when = f" taken before {before.isoformat()}" if before else ""
        oldest = f", oldest {ordered[0].created_at.isoformat()}" if ordered else ""
        raise BackupNotFound(
            f"no {what}{when} in the catalogue ({len(backups)} in all{oldest}): look in the "
            "off-site copy (S3) or pick a backup by name"
        )
    return candidates[-1]


def make_backup_folder(folder: Path, *, what: str, setting: str, error: type[DrlibError]) -> None:
    """Create a backups folder, or raise ``error`` saying which profile setting to check."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(
            f"cannot create the {what} folder {folder} ({type(exc).__name__}: {exc.strerror or exc}): "
            f"check [backups] {setting} and its permissions"
        ) from exc


def check_backup_folder(folder: Path, *, what: str, setting: str) -> None:
    """Refuse a backups folder that is missing or is a file, with what to check."""
    if folder.is_dir():
        return
    if folder.exists():
        raise BackupNotFound(
            f"the {what} folder {folder} is a file, not a folder: point the profile's [backups] {setting} "
            "at the folder that holds the backups"
        )
    raise BackupNotFound(
        f"{what} folder {folder} does not exist: check the profile's [backups] {setting}, or that the "
        "backup volume is mounted"
    )
