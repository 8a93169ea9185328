"""Samples of a file's bytes and their Shannon entropy: up to three windows (the start, the middle and
the end), read from the live storage (a local file, or ranged GETs of an object) or from a storage backup
(a full copy, a bucket snapshot, or a streamed archive: its members are read in memory, never written).

Encrypted bytes are indistinguishable from random: their entropy is close to the most a sample of that
length can show (8 bits per byte, less for short samples, whose estimate is biased low). Compressed media
is too, so a high entropy alone is no alarm: compare with the backed-up copy, and with the file's
signature (the magic bytes of a known compressed format), which encryption destroys.
"""

from __future__ import annotations

import math
import subprocess
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from drlib.exceptions import BackupCorrupt
from drlib.hashing import parallel_map
from drlib.lazy import lazy_module
from drlib.storage.archive import decompressor_for
from drlib.storage.backends import LocalStorage, S3Storage
from drlib.storage.catalogue import StorageBackup

if TYPE_CHECKING:
    import botocore.exceptions
else:
    botocore = lazy_module("botocore.exceptions")

WINDOW = 16 * 1024
#: shorter windows are not judged: the entropy of a few hundred bytes says little
MIN_JUDGED = 1024
#: a window is high-entropy within this many bits per byte of what random bytes of its length show
RANDOM_MARGIN = 0.15

#: magic bytes of compressed or media formats, whose entropy is high by nature: (offset, bytes, name)
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"GIF8", "gif"),
    (0, b"RIFF", "riff (wav, webp, avi)"),
    (4, b"ftyp", "mp4/mov"),
    (0, b"\x1a\x45\xdf\xa3", "matroska/webm"),
    (0, b"ID3", "mp3"),
    (0, b"\xff\xfb", "mp3"),
    (0, b"\xff\xf3", "mp3"),
    (0, b"\xff\xf2", "mp3"),
    (0, b"OggS", "ogg"),
    (0, b"fLaC", "flac"),
    (0, b"%PDF", "pdf"),
    (0, b"PK\x03\x04", "zip"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),
    (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"),
    (0, b"Rar!", "rar"),
)


@dataclass(frozen=True)
class Sample:
    """What the windows of one file show: the highest entropy of its judged windows (None: too short to
    judge), whether that is as high as random bytes, and the file's format signature, if any."""

    entropy: float | None
    high: bool
    signature: str | None

    @property
    def looks_encrypted(self) -> bool:
        """As random as encrypted bytes, without the signature of a compressed format."""
        return self.high and self.signature is None


def shannon_entropy(data: bytes) -> float:
    """Bits per byte, 0 (one repeated byte) to 8 (every byte value equally often)."""
    if not data:
        return 0.0
    total = len(data)
    return -sum(n / total * math.log2(n / total) for n in Counter(data).values())


def random_entropy(length: int) -> float:
    """About what ``length`` random bytes show (the plug-in estimate is biased low by ~255/(2n ln 2))."""
    return 8.0 - 255 / (2 * length * math.log(2))


def windows(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the start, middle and end windows of a file of ``size`` bytes."""
    if size <= WINDOW:
        return [(0, size)] if size else []
    starts = sorted({0, max(0, size // 2 - WINDOW // 2), size - WINDOW})
    return [(start, WINDOW) for start in starts]


def signature_of(head: bytes) -> str | None:
    for offset, magic, name in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def sample_of(chunks: list[bytes]) -> Sample:
    """The sample of a file from its windows' bytes (the first window starts the file)."""
    judged = [c for c in chunks if len(c) >= MIN_JUDGED]
    signature = signature_of(chunks[0][:16]) if chunks else None
    if not judged:
        return Sample(entropy=None, high=False, signature=signature)
    scores = [(shannon_entropy(c), len(c)) for c in judged]
    high = any(h >= random_entropy(n) - RANDOM_MARGIN for h, n in scores)
    return Sample(entropy=round(max(h for h, _ in scores), 3), high=high, signature=signature)


def read_windows(handle: IO[bytes], size: int, *, seekable: bool) -> list[bytes]:
    """The windows of an open file; a stream that cannot seek is read forward, skipping between them."""
    chunks, position = [], 0
    for start, length in windows(size):
        if seekable:
            handle.seek(start)
        while not seekable and position < start:
            skipped = handle.read(min(start - position, WINDOW))
            if not skipped:
                break
            position += len(skipped)
        data = handle.read(length)
        position = start + len(data)
        chunks.append(data)
    return chunks


def sample_local(root: Path, key: str) -> Sample:
    path = root / key
    with path.open("rb") as handle:
        return sample_of(read_windows(handle, path.stat().st_size, seekable=True))


def sample_object(storage: S3Storage, key: str, size: int) -> Sample:
    """Ranged GETs of an object's windows."""
    chunks = []
    for start, length in windows(size):
        try:
            body = storage.client.get_object(
                Bucket=storage.bucket, Key=storage.prefix + key, Range=f"bytes={start}-{start + length - 1}"
            )["Body"]
            with body:
                chunks.append(body.read())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise storage.error(exc) from exc
    return sample_of(chunks)


def sample_live(storage: LocalStorage | S3Storage, keys: Iterable[tuple[str, int]]) -> dict[str, Sample]:
    """Samples of ``(key, size)`` files of the live storage, read in parallel."""
    items = list(keys)

    def one(item: tuple[str, int]) -> Sample:
        key, size = item
        if isinstance(storage, S3Storage):
            return sample_object(storage, key, size)
        return sample_local(storage.root, key)

    return dict(zip((k for k, _ in items), parallel_map(one, items), strict=True))


def sample_backup(backup: StorageBackup, keys: set[str] | None, *, client: Any = None) -> dict[str, Sample]:
    """Samples of the files ``keys`` (None: every file) of a backup, as its manifest lists them."""
    if backup.manifest is None:
        raise BackupCorrupt(f"{backup.name} has no manifest: its files cannot be sampled; pick another backup")
    files = backup.manifest.files
    wanted = set(files) if keys is None else keys & set(files)
    if backup.kind == "archive" and not backup.in_s3:
        return _sample_archive(backup.path, wanted)
    storage: LocalStorage | S3Storage = LocalStorage(backup.path)
    if backup.in_s3:
        if backup.kind != "s3" or client is None:
            raise BackupCorrupt(f"{backup.location} is a {backup.kind} backup in S3: sample a local copy of it")
        bucket, _, prefix = backup.location.removeprefix("s3://").partition("/")
        storage = S3Storage(client, bucket, prefix=prefix)
    return sample_live(storage, ((k, files[k].size) for k in sorted(wanted)))


def _sample_archive(archive: Path, wanted: set[str]) -> dict[str, Sample]:
    """One streamed pass through the archive, sampling the members in ``wanted``."""
    found: dict[str, Sample] = {}
    if not wanted:
        return found
    process = subprocess.Popen(decompressor_for(archive), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            for member in tar:
                key = member.name.removeprefix("./")
                if not member.isfile() or key not in wanted:
                    continue
                handle = tar.extractfile(member)
                assert handle is not None
                found[key] = sample_of(read_windows(handle, member.size, seekable=False))
                if len(found) == len(wanted):
                    break
    except tarfile.TarError as exc:
        raise BackupCorrupt(f"{archive.name} cannot be read as a tar archive ({exc}): pick another backup") from exc
    finally:
        process.stdout.close()
        process.kill()
        process.wait()
    return found
