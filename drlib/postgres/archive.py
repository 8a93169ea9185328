"""Where a custom-format ``pg_dump`` archive's table of contents ends.

The header and the table of contents (every object's SQL, the ``COPY`` statements, owners and the
offsets of the data blocks) sit at the start of the file; the rows follow, one compressed block per
table. Everything ``pg_restore`` will *execute* is in that first part. A backup's manifest records its
length and sha256, so a restore can prove it unchanged in milliseconds before the first statement runs,
and check the rest of the file (rows only: they can change nothing but the new copy's rows) while the
copy is being restored (:mod:`drlib.postgres.restore`).

The layout is ``ReadHead`` / ``ReadToc`` / ``_ReadExtraToc`` of PostgreSQL's
``src/bin/pg_dump/pg_backup_archiver.c`` and ``pg_backup_custom.c``, archive versions 1.12 to 1.16
(PostgreSQL 9.6 to 17). An archive this parser does not understand gets no prefix digest, and is then
checksummed whole before the restore starts, as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"PGDMP"
CUSTOM_FORMAT = 1
OFFSET_POSITION_SET = 2
OLDEST, NEWEST = (1, 12), (1, 16)
#: a table of contents larger than this is not believed (a damaged length field)
MAX_TOC_BYTES = 1 << 30


class NotParsed(Exception):
    """The file is not a custom-format archive this parser understands."""


@dataclass(frozen=True)
class TocPrefix:
    """The archive's first ``length`` bytes (header + table of contents) and their sha256."""

    length: int
    sha256: str


class _Reader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.int_size = 4
        self.off_size = 8

    def take(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) != n:
            raise NotParsed("the archive ends inside its table of contents")
        return data

    def byte(self) -> int:
        return self.take(1)[0]

    def integer(self) -> int:
        negative = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if negative else value

    def string(self) -> bytes | None:
        length = self.integer()
        if length < 0:
            return None
        if length > MAX_TOC_BYTES:
            raise NotParsed("a string in the table of contents is implausibly long")
        return self.take(length)

    def offset(self) -> tuple[int, int]:
        flag = self.byte()
        return flag, int.from_bytes(self.take(self.off_size), "little")


def _read_header(r: _Reader) -> tuple[int, int]:
    if r.take(5) != MAGIC:
        raise NotParsed("no PGDMP magic")
    version = (r.byte(), r.byte())
    r.byte()  # revision
    if not OLDEST <= version <= NEWEST:
        raise NotParsed(f"archive version {version[0]}.{version[1]} is not one this parser knows")
    r.int_size, r.off_size = r.byte(), r.byte()
    if not 1 <= r.int_size <= 8 or not 1 <= r.off_size <= 8:
        raise NotParsed("implausible integer sizes in the header")
    if r.byte() != CUSTOM_FORMAT:
        raise NotParsed("not a custom-format archive")
    if version >= (1, 15):
        r.byte()  # compression algorithm
    else:
        r.integer()  # compression level
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        r.integer()
    for _ in range(3):  # database name, server version, pg_dump version
        r.string()
    return version


def _read_entries(r: _Reader, version: tuple[int, int]) -> list[int]:
    """Skip every table-of-contents entry; return the offsets of the data blocks it points at."""
    count = r.integer()
    if not 0 <= count <= 10_000_000:
        raise NotParsed("implausible number of entries")
    offsets = []
    for _ in range(count):
        r.integer()  # dump id
        r.integer()  # had dumper
        for _ in range(4):  # table oid, oid, tag, desc
            r.string()
        r.integer()  # section
        for _ in range(6):  # defn, drop statement, copy statement, namespace, tablespace, table AM
            r.string()
        if version >= (1, 16):
            r.integer()  # relkind
        r.string()  # owner
        r.string()  # "false" (WITH OIDS)
        while r.string() is not None:  # dependencies, ended by a NULL string
            pass
        flag, position = r.offset()
        if flag == OFFSET_POSITION_SET:
            offsets.append(position)
    return offsets


def toc_prefix(path: Path) -> TocPrefix | None:
    """The header + table of contents of a custom-format archive, or None when the file is not one this
    parser reads with certainty (the first data block must start exactly where the parse ended)."""
    try:
        with path.open("rb") as handle:
            reader = _Reader(handle)
            version = _read_header(reader)
            offsets = _read_entries(reader, version)
            length = handle.tell()
            size = path.stat().st_size
            if (min(offsets) if offsets else size) != length:
                return None
            handle.seek(0)
            return TocPrefix(length=length, sha256=hashlib.sha256(handle.read(length)).hexdigest())
    except (NotParsed, OSError):
        return None


def prefix_sha256(path: Path, length: int) -> str:
    """The sha256 of the file's first ``length`` bytes (fewer if the file is shorter)."""
    with path.open("rb") as handle:
        return hashlib.sha256(handle.read(length)).hexdigest()
