"""Safe, streaming extraction of a storage archive, verifying every file against the manifest as
it is written.

Decompression runs in its own process (``gzip -dc`` / ``zstd -dc``), feeding Python through a
pipe, so decompressing and writing use two cores as ``tar -xzf`` does. Members that would escape
the target (absolute paths, ``..``, links pointing outside, devices) are refused.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from drlib.exceptions import BackupCorrupt, DrlibError
from drlib.hashing import CHUNK
from drlib.storage.manifest import StorageManifest

DECOMPRESSORS = {".gz": ["gzip", "-dc"], ".zst": ["zstd", "-q", "-dc"]}


class UnsafeArchiveMember(BackupCorrupt):
    code = "unsafe-archive"


@dataclass
class Extraction:
    files: int = 0
    bytes: int = 0
    mismatched: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)


def decompressor_for(archive: Path) -> list[str]:
    for suffix, argv in DECOMPRESSORS.items():
        if archive.name.endswith(suffix):
            return [*argv, str(archive)]
    raise BackupCorrupt(f"{archive.name}: unknown archive compression (expected .tar.gz or .tar.zst)")


def check_member(member: tarfile.TarInfo, archive: Path) -> str:
    """The member's safe relative path, or :class:`UnsafeArchiveMember`."""
    name = member.name
    normal = posixpath.normpath(name)
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeArchiveMember(f"{archive.name} holds an absolute path {name!r}: refusing to restore it")
    if normal == ".." or normal.startswith("../") or "/../" in f"/{name}/":
        raise UnsafeArchiveMember(f"{archive.name} holds {name!r}, which escapes the target with '..': refusing")
    if member.issym() or member.islnk():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(normal), target)) if member.issym() else target
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveMember(
                f"{archive.name} holds a link {name!r} -> {target!r} pointing outside the target: refusing"
            )
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveMember(f"{archive.name} holds {name!r}, a device or special file: refusing")
    return normal


def extract_archive(archive: Path, dest: Path, *, manifest: StorageManifest | None) -> Extraction:
    """Stream ``archive`` into ``dest`` (which must be new), hashing each file on the way."""
    dest.mkdir(parents=True, exist_ok=False)
    result = Extraction()
    expected = manifest.files if manifest else {}
    process = subprocess.Popen(decompressor_for(archive), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            for member in tar:
                relative = check_member(member, archive)
                target = dest / relative
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if member.issym():
                    os.symlink(member.linkname, target)
                    continue
                if member.islnk():
                    os.link(dest / posixpath.normpath(member.linkname), target)
                    continue
                source = tar.extractfile(member)
                assert source is not None
                digest = hashlib.sha256()
                with target.open("wb") as out:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                os.chmod(target, member.mode & 0o7777)
                os.utime(target, (member.mtime, member.mtime))
                hexdigest = digest.hexdigest()
                result.digests[relative] = hexdigest
                result.files += 1
                result.bytes += member.size
                record = expected.get(relative)
                if manifest is not None and record is None:
                    result.unexpected.append(relative)
                elif record is not None and record.sha256 != hexdigest:
                    result.mismatched.append(relative)
    except tarfile.TarError as exc:
        raise BackupCorrupt(f"{archive.name} cannot be read to the end ({exc}): it is truncated or damaged") from exc
    finally:
        process.stdout.close()
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        code = process.wait()
    if code != 0:
        raise BackupCorrupt(f"{archive.name} failed to decompress: {stderr.strip() or f'exit {code}'}")
    return result


def list_archive(archive: Path) -> list[str]:
    """The regular files an archive lists (the runbook's ``tar -tzf … | wc -l``)."""
    process = subprocess.run(["tar", "-tvf", str(archive)], capture_output=True, text=True, check=False)
    if process.returncode != 0:
        raise DrlibError(f"cannot list {archive.name}: {process.stderr.strip()}")
    return [line.split(maxsplit=5)[5] for line in process.stdout.splitlines() if line.startswith("-")]
