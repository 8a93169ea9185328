"""The sidecar manifest written next to every database backup, and file checksums."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drlib.exceptions import BackupCorrupt
from drlib.hashing import sha256_file

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class TableStats:
    rows: int
    newest_created_at: str | None


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds, recorded at backup time inside the dump's own snapshot."""

    file: str
    format: str
    database: str
    created_at: str
    size_bytes: int
    sha256: str
    server_version: str
    pg_dump_version: str
    database_size_bytes: int
    tables: dict[str, TableStats]
    foreign_keys: list[str]
    files: dict[str, str] = field(default_factory=dict)
    drlib_version: str = ""

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupManifest:
        tables = {name: TableStats(**stats) for name, stats in data.pop("tables").items()}
        return cls(tables=tables, **data)


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def read_manifest(path: Path) -> BackupManifest:
    try:
        return BackupManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BackupCorrupt(
            f"backup manifest {path} is unreadable ({type(exc).__name__}: {exc}); the backup "
            "cannot be verified. Pick another backup, or pass require_manifest=False to accept "
            "an unverified dump after checking it by hand."
        ) from exc


def write_manifest(path: Path, manifest: BackupManifest) -> None:
    """Write atomically: a crash never leaves half a manifest."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, path)


def dump_checksums(path: Path) -> tuple[str, dict[str, str], int]:
    """(overall sha256, per-file sha256 for directory dumps, total size in bytes)."""
    if path.is_dir():
        files = {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        overall = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in files.items()).encode()).hexdigest()
        return overall, files, size
    return sha256_file(path), {}, path.stat().st_size
