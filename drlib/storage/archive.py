"""Safe, streaming extraction of a storage archive, verifying every file against the manifest as
it is written.

Decompression runs in its own process (``gzip -dc`` / ``zstd -dc``), feeding Python through a
pipe, so decompressing and writing use two cores as ``tar -xzf`` does; tarfile parses the
headers. Every member that would write or point outside the target (absolute paths,
``..``, links pointing outside, chains of links, writes through a link, devices) is refused before
anything of it is written, and the whole extraction goes to a staging folder.
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from drlib.exceptions import BackupCorrupt, DrlibError
from drlib.hashing import CHUNK
from drlib.storage.manifest import StorageManifest

STREAM_BUFFER = 1024 * 1024
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


_FILTER_REASONS: dict[type[Exception], str] = {
    tarfile.AbsolutePathError: "an absolute path",
    tarfile.OutsideDestinationError: "a path that escapes the target",
    tarfile.AbsoluteLinkError: "a link to an absolute path, pointing outside the target",
    tarfile.LinkOutsideDestinationError: "a link pointing outside the target",
    tarfile.SpecialFileError: "a device or special file",
}


def _data_mode(member: tarfile.TarInfo) -> int:
    """The mode tarfile's ``data`` filter gives a regular file: no setuid, setgid, sticky or
    group/other write bits; owner read and write; exec only if the owner has it."""
    mode = member.mode & 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


class MemberGuard:
    """Refuses every member that would write, or point, outside ``dest``.

    Each member is judged against what the members before it put on disk: tarfile's ``data``
    filter judges every link and special member (absolute and escaping links, devices) against
    the disk as it is, and its mode rules apply to every file. This guard adds the rules that make
    the result independent of order and of ``realpath``: no absolute or ``..`` names, nothing is
    ever written through a symbolic link, a link's target never passes through another symbolic
    link (one extracted before or after it), a hard link only joins a file extracted before it,
    and no path appears twice."""

    def __init__(self, archive: Path, dest: Path) -> None:
        self.archive = archive
        self.dest = str(dest)
        self.kinds: dict[str, str] = {}  # relative path -> "dir" | "file" | "link"
        self.walked: set[str] = set()  # paths some link's target passes through

    def refuse(self, name: str, why: str) -> UnsafeArchiveMember:
        return UnsafeArchiveMember(
            f"{self.archive.name} holds {name!r}, {why}: refusing to restore it. The archive is unsafe; "
            "pick another backup and report this one"
        )

    def check(self, member: tarfile.TarInfo) -> tuple[str, tarfile.TarInfo]:
        """The member's relative path and filtered copy, or :class:`UnsafeArchiveMember`."""
        name = member.name
        if name.startswith("/") or os.path.isabs(name):
            raise self.refuse(name, "an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(name, "which escapes the target with '..'")
        if member.issparse():
            raise self.refuse(name, "a sparse file, which a storage backup never holds")
        if (member.isreg() or member.isdir()) and not member.issparse():
            # tarfile's realpath checks cost ~13 lstat calls per member (measured: +15% on a
            # 20,000-file restore); for a plain file or folder the rules below already pin its real
            # path to dest/<name>, so only the mode is filtered, exactly as the data filter does
            filtered = member if member.isdir() else member.replace(mode=_data_mode(member), deep=False)
        else:
            try:
                filtered = tarfile.data_filter(member, self.dest)
            except tarfile.FilterError as exc:
                raise self.refuse(name, _FILTER_REASONS.get(type(exc), str(exc))) from exc
        relative = "/".join(parts)
        if not relative:
            if member.isdir():
                return relative, filtered
            raise self.refuse(name, "which is the target folder itself")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            kind = self.kinds.get(parent)
            if kind == "link":
                raise self.refuse(name, f"written through the symbolic link {parent!r}")
            if kind == "file":
                raise self.refuse(name, f"under {parent!r}, which is a file")
        earlier = self.kinds.get(relative)
        if earlier is not None and not (earlier == "dir" and member.isdir()):
            raise self.refuse(name, "which appears twice: the second copy would replace the first")
        if member.issym():
            self._check_symlink(name, parts, member.linkname)
        elif member.islnk():
            source = "/".join(p for p in member.linkname.split("/") if p not in ("", "."))
            if self.kinds.get(source) != "file":
                raise self.refuse(name, f"a hard link to {member.linkname!r}, not a file extracted before it")
        return relative, filtered

    def _check_symlink(self, name: str, parts: list[str], linkname: str) -> None:
        here = "/".join(parts)
        if here in self.walked:
            raise self.refuse(name, "a symbolic link where an earlier link's target passes")
        stack = parts[:-1]
        walked = []
        for part in linkname.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise self.refuse(name, f"a link pointing outside the target ({linkname!r})")
                stack.pop()
                continue
            stack.append(part)
            path = "/".join(stack)
            if self.kinds.get(path) == "link":
                raise self.refuse(name, f"a link whose target passes through the symbolic link {path!r}")
            walked.append(path)
        self.walked.update(walked)

    def record(self, relative: str, kind: str) -> None:
        self.kinds[relative] = kind

    def record_parents(self, relative: str) -> None:
        parts = relative.split("/")
        for depth in range(1, len(parts)):
            self.kinds.setdefault("/".join(parts[:depth]), "dir")


class _ForwardReader:
    """A pipe as a file tarfile reads in its normal mode: ``tell`` counts, seeking forward skips.

    tarfile parses every header (ustar, pax, GNU) from it; each file's bytes are then moved
    straight from the pipe with ``readinto``, not through tarfile's stream buffer, which copies
    every byte several times (measured: see ``benchmarks/storage_benchmark.py``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.position = 0

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset < self.position:
            raise tarfile.ReadError("the archive is read as a stream: it cannot go backwards")
        remaining = offset - self.position
        while remaining:
            data = self.read(min(remaining, CHUNK))
            if not data:
                break  # past the end: tarfile's next read finds no data and says so
            remaining -= len(data)
        return self.position

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.position += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        n: int = self.stream.readinto(buffer)  # type: ignore[attr-defined]
        self.position += n
        return n


class _Hasher:
    """Hashes chunks on a second thread (hashlib releases the GIL) while the first one writes:
    verifying every file then costs about no extra time."""

    def __init__(self, buffers: int = 8) -> None:
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(buffers):
            self.free.put(bytearray(CHUNK))
        self.work: queue.Queue[tuple[Any, bytearray | None, int] | None] = queue.Queue()
        self.digests: dict[str, str] = {}
        self.names: list[str] = []
        self.thread = threading.Thread(target=self._run, name="drlib-hasher", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.work.get()) is not None:
            digest, buffer, n = item
            if buffer is None:  # end of a file: ``n`` indexes its name
                self.digests[self.names[n]] = digest.hexdigest()
                continue
            digest.update(memoryview(buffer)[:n])
            self.free.put(buffer)

    def finish_file(self, relative: str, digest: Any) -> None:
        self.names.append(relative)
        self.work.put((digest, None, len(self.names) - 1))

    def close(self) -> dict[str, str]:
        self.work.put(None)
        self.thread.join()
        return self.digests


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _copy(reader: _ForwardReader, size: int, out: BinaryIO, digest: Any, hasher: _Hasher, archive: Path) -> None:
    """Copy ``size`` bytes of a member to ``out``; ``hasher`` hashes them on another core."""
    remaining = size
    while remaining:
        buffer = hasher.free.get()
        n = reader.readinto(memoryview(buffer)[: min(remaining, CHUNK)])
        if not n:
            hasher.free.put(buffer)
            raise BackupCorrupt(f"{archive.name} ends in the middle of a file: it is truncated")
        out.write(memoryview(buffer)[:n])
        hasher.work.put((digest, buffer, n))
        remaining -= n


def _write_members(
    tar: tarfile.TarFile, stream: _ForwardReader, archive: Path, dest: Path, hasher: _Hasher
) -> dict[str, int]:
    """Write every member of ``tar`` (checked first by :class:`MemberGuard`) under ``dest``."""
    guard = MemberGuard(archive, dest)
    root = str(dest)
    sizes: dict[str, int] = {}
    made: set[str] = {root}  # folders already created: one mkdir per folder, not per file
    for member in tar:
        relative, member = guard.check(member)
        if not relative:
            continue
        target = f"{root}/{relative}"  # plain strings: this loop runs once per file
        if member.isdir():
            os.makedirs(target, exist_ok=True)
            made.add(target)
            guard.record_parents(relative)
            guard.record(relative, "dir")
            continue
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
            guard.record_parents(relative)
        if member.issym():
            os.symlink(member.linkname, target)
            guard.record(relative, "link")
            continue
        if member.islnk():
            source = "/".join(p for p in member.linkname.split("/") if p not in ("", "."))
            os.link(f"{root}/{source}", target, follow_symlinks=False)
            guard.record(relative, "file")
            continue
        digest = hashlib.sha256()
        fd = os.open(target, _WRITE_FLAGS, 0o600)
        guard.record(relative, "file")
        with open(fd, "wb", buffering=0) as out:
            _copy(stream, member.size, out, digest, hasher, archive)
            os.fchmod(fd, (member.mode if member.mode is not None else 0o644) & 0o7777)
            os.utime(fd, (member.mtime, member.mtime))
        hasher.finish_file(relative, digest)
        sizes[relative] = member.size
    return sizes


def extract_archive(archive: Path, dest: Path, *, manifest: StorageManifest | None) -> Extraction:
    """Stream ``archive`` into ``dest`` (which must be new), hashing each file on the way.

    tarfile reads the members' headers from a ``gzip -dc``/``zstd -dc`` pipe; every member passes
    :class:`MemberGuard` before anything of it is written."""
    dest.mkdir(parents=True, exist_ok=False)
    result = Extraction()
    expected = manifest.files if manifest else {}
    try:
        process = subprocess.Popen(
            decompressor_for(archive), stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=STREAM_BUFFER
        )
    except FileNotFoundError as exc:
        raise BackupCorrupt(
            f"{archive.name} needs {decompressor_for(archive)[0]} to decompress, and it is not installed: install it"
        ) from exc
    assert process.stdout is not None
    hasher = _Hasher()
    try:
        try:
            stream = _ForwardReader(process.stdout)
            with tarfile.TarFile(fileobj=stream, mode="r") as tar:  # type: ignore[arg-type]
                sizes = _write_members(tar, stream, archive, dest, hasher)
            while process.stdout.read(STREAM_BUFFER):  # the end-of-archive padding: let the decompressor finish
                pass
        except tarfile.TarError as exc:
            raise BackupCorrupt(
                f"{archive.name} cannot be read as a tar archive ({exc}): it is truncated or damaged"
            ) from exc
    finally:
        result.digests = hasher.close()
        process.stdout.close()
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        code = process.wait()
    if code != 0:
        raise BackupCorrupt(f"{archive.name} failed to decompress: {stderr.strip() or f'exit {code}'}")
    result.files, result.bytes = len(sizes), sum(sizes.values())
    for relative, hexdigest in result.digests.items():
        record = expected.get(relative)
        if manifest is not None and record is None:
            result.unexpected.append(relative)
        elif record is not None and record.sha256 != hexdigest:
            result.mismatched.append(relative)
    return result


def list_archive(archive: Path) -> list[str]:
    """The regular files an archive lists (the runbook's ``tar -tzf … | wc -l``)."""
    try:
        process = subprocess.run(["tar", "-tvf", str(archive)], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise DrlibError(f"cannot list {archive.name}: the tar command is not installed; install it") from exc
    if process.returncode != 0:
        raise DrlibError(f"cannot list {archive.name}: {process.stderr.strip()}")
    return [line.split(maxsplit=5)[5] for line in process.stdout.splitlines() if line.startswith("-")]
