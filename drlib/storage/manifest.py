"""The manifest of a storage backup: every file's path, size, sha256 and mtime, the file count per
top-level folder (voiceovers, videos, artifacts) and the totals, written at backup time."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drlib.exceptions import BackupCorrupt
from drlib.files import write_whole
from drlib.hashing import parallel_map
from drlib.storage.backends import Storage, StoredFile

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str
    mtime: float
    mode: int | None = None


@dataclass(frozen=True)
class StorageManifest:
    """What a storage backup holds."""

    kind: str  # archive | full | s3
    source: str
    created_at: str
    files: dict[str, FileRecord]
    archive_sha256: str = ""
    archive_size: int = 0
    drlib_version: str = ""
    folders: dict[str, int] = field(default_factory=dict)

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    @property
    def total_files(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    def to_json(self) -> str:
        data = asdict(self)
        data["totals"] = {"files": self.total_files, "bytes": self.total_bytes}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StorageManifest:
        data: dict[str, Any] = json.loads(text)
        data.pop("totals", None)
        data["files"] = {key: FileRecord(**record) for key, record in data["files"].items()}
        return cls(**data)


def folder_counts(keys: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(k.split("/", 1)[0] if "/" in k else "." for k in keys).items()))


def build_manifest(
    storage: Storage, *, kind: str, created_at: datetime, workers: int | None = None, drlib_version: str = ""
) -> StorageManifest:
    """Hash every file of ``storage`` (in parallel) into a manifest."""
    entries: list[StoredFile] = sorted(storage.files(), key=lambda f: f.key)
    digests = parallel_map(lambda f: storage.sha256(f.key), entries, workers=workers)
    files = {
        f.key: FileRecord(size=f.size, sha256=d, mtime=f.mtime, mode=f.mode)
        for f, d in zip(entries, digests, strict=True)
    }
    return StorageManifest(
        kind=kind,
        source=storage.description,
        created_at=created_at.isoformat(),
        files=files,
        folders=folder_counts(list(files)),
        drlib_version=drlib_version,
    )


def manifest_path_for(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def write_manifest(path: Path, manifest: StorageManifest) -> None:
    """Write atomically: a crash never leaves half a manifest."""
    write_whole(path, manifest.to_json())


def read_manifest(path: Path) -> StorageManifest:
    try:
        return StorageManifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BackupCorrupt(
            f"storage manifest {path} is missing or unreadable ({type(exc).__name__}); "
            "the backup cannot be verified: pick another backup"
        ) from exc
