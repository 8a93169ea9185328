"""Building storage archives for the tests, hostile ones included, with a manifest that matches them
(so only the member checks of a restore can catch them)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from drlib.hashing import sha256_file
from drlib.storage.catalogue import StorageBackup
from drlib.storage.manifest import FileRecord, StorageManifest, manifest_path_for, write_manifest

PAYLOAD = b"pwned"


def file(name: str, data: bytes = PAYLOAD) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def link(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = (tarfile.LNKTYPE if hard else tarfile.SYMTYPE), target
    return info, b""


def special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, b""


def hostile_archive(folder: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> StorageBackup:
    """A gzip'd tar of a good file then ``members``, with a manifest listing every regular file with
    its true checksum, so only the member checks can catch it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "storage_2026-01-13.tar.gz"
    members = [file("voiceovers/ok.wav", b"abc"), *members]
    records = {}
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
            if info.isreg():
                records[info.name] = FileRecord(
                    size=len(data), sha256=hashlib.sha256(data).hexdigest(), mtime=0.0, mode=0o644
                )
    manifest = StorageManifest(
        kind="archive",
        source="test",
        created_at="2026-01-13T00:00:00+00:00",
        files=records,
        archive_sha256=sha256_file(path),
        archive_size=path.stat().st_size,
    )
    write_manifest(manifest_path_for(path), manifest)
    return StorageBackup(
        kind="archive",
        name=path.name,
        location=str(path),
        created_at=datetime(2026, 1, 13, tzinfo=UTC),
        manifest=manifest,
    )
