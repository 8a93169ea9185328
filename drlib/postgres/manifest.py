"""The sidecar manifest written next to every database backup, and file checksums."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from drlib.exceptions import BackupCorrupt
from drlib.files import write_whole
from drlib.hashing import sha256_file

MANIFEST_SUFFIX = ".manifest.json"
#: how a table's rows were hashed for its content fingerprint (drlib.postgres.content)
HashMethod = Literal["text", "record"]


@dataclass(frozen=True)
class TableStats:
    """One table in the backup: rows, newest row and content fingerprint (manifest version 2)."""

    rows: int
    #: the newest value of ``newest_column`` (the name is kept from manifest version 1)
    newest_created_at: str | None
    newest_column: str | None = None
    #: order-independent checksum of the rows (None: not fingerprinted, see ``content_skipped``)
    content: str | None = None
    content_skipped: str = ""
    size_bytes: int = 0
    seconds: float = 0.0
    #: how the rows were hashed: "text" (row printed, manifests before it) or "record" (drlib.postgres.content)
    content_method: HashMethod = "text"


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
    manifest_version: int = 1
    #: kind -> qualified name -> definition (see drlib.postgres.fingerprint)
    schema: dict[str, dict[str, str]] = field(default_factory=dict)
    #: sequence -> its last value (None: never used); a restored one must be at least this
    sequences: dict[str, int | None] = field(default_factory=dict)
    #: owner, privileges, settings, comment (see drlib.postgres.globals.DatabaseProperties)
    database_properties: dict[str, Any] = field(default_factory=dict)
    #: role -> attributes and memberships (the SQL with password hashes is in ``roles_file``)
    roles: dict[str, str] = field(default_factory=dict)
    #: every foreign key: name, child, columns, parent, parent_columns (orphan checks even once dropped)
    foreign_key_specs: list[dict[str, Any]] = field(default_factory=list)
    roles_file: str = ""
    roles_sha256: str = ""
    #: what reading the fingerprints cost at backup time: {"schema": s, "content": s}
    fingerprint_seconds: dict[str, float] = field(default_factory=dict)
    #: custom format: length and sha256 of the header + table of contents (everything pg_restore
    #: executes), proven before a restore starts; 0 / "" when not recorded (drlib.postgres.archive)
    toc_bytes: int = 0
    toc_sha256: str = ""

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupManifest:
        data = dict(data)
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
    write_whole(path, manifest.to_json())


def dump_checksums(path: Path) -> tuple[str, dict[str, str], int]:
    """(overall sha256, per-file sha256 for directory dumps, total size in bytes)."""
    if path.is_dir():
        files = {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        overall = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in files.items()).encode()).hexdigest()
        return overall, files, size
    return sha256_file(path), {}, path.stat().st_size


def backup_summary(manifest: BackupManifest) -> str:
    """What a backup holds and what its fingerprints cost, in two lines for the terminal."""
    objects = sum(len(objects) for objects in manifest.schema.values())
    fingerprinted = sum(1 for t in manifest.tables.values() if t.content is not None)
    skipped = len(manifest.tables) - fingerprinted
    cost = manifest.fingerprint_seconds
    return (
        f"  {len(manifest.tables)} tables, {sum(t.rows for t in manifest.tables.values())} rows, "
        f"{objects} schema objects, {len(manifest.roles)} roles\n"
        f"  fingerprints: schema {cost.get('schema', 0):.2f}s, content of {fingerprinted} tables "
        f"{cost.get('content', 0):.2f}s" + (f" ({skipped} over content_fingerprint_limit)" if skipped else "")
    )
