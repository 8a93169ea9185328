"""Blocking writes to a local storage tree for the duration of an incident: the write bits of every folder
and file under it are removed (nothing can be created, renamed, deleted or rewritten there by an account
that is not root), after the original modes were saved in a record beside the tree,
``.<name>.writes-blocked.json``. Unblocking gives back the write bits the record holds and removes it; a
run cut short leaves the record, so the block can be undone later (or by hand: ``chmod -R u+w <tree>``).

Root ignores permission bits: an application (or an attacker) running as root is not stopped by this.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from drlib.exceptions import DrlibError
from drlib.files import write_whole

WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class WriteBlockFailed(DrlibError):
    code = "write-block"


@dataclass(frozen=True)
class WriteBlock:
    """A tree whose writes are blocked, and the record of its original modes."""

    root: Path
    record: Path
    entries: int

    def describe(self) -> str:
        return (
            f"writes to {self.root} blocked (write bits removed from {self.entries} folders and files; original "
            f"modes in {self.record}); undo: unblock_writes({str(self.root)!r}) or chmod -R u+w {self.root}"
        )


def record_path(root: Path) -> Path:
    return root.parent / f".{root.name}.writes-blocked.json"


def _walk(root: Path) -> Iterable[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            yield Path(dirpath) / name


def block_writes(root: Path) -> WriteBlock:
    """Save every entry's mode, then remove its write bits (a record left by an earlier block is kept: its
    modes are the originals)."""
    if not root.is_dir():
        raise WriteBlockFailed(f"cannot block writes to {root}: it is not a folder")
    record = record_path(root)
    modes: dict[str, int] = _read(record) if record.exists() else {}
    for path in _walk(root):
        info = path.lstat()
        if not stat.S_ISLNK(info.st_mode):
            modes.setdefault(path.relative_to(root).as_posix(), stat.S_IMODE(info.st_mode))
    write_whole(record, json.dumps(modes, indent=0, sort_keys=True))
    for relative, mode in sorted(modes.items(), reverse=True):  # files before the folders holding them
        path = root / relative
        if path.exists() and not path.is_symlink():
            os.chmod(path, mode & ~WRITE_BITS)
    return WriteBlock(root=root, record=record, entries=len(modes))


def writes_blocked(root: Path) -> bool:
    """Whether a block record exists for ``root`` (a block in place, or one a run left behind)."""
    return record_path(root).exists()


def unblock_writes(root: Path, *, also: Iterable[Path] = ()) -> int:
    """Give back the write bits the record saved to ``root`` (and to ``also``: the same tree moved aside by a
    restore), then remove the record; returns how many entries got their bits back."""
    record = record_path(root)
    if not record.exists():
        return 0
    modes = _read(record)
    restored = 0
    for tree in (root, *also):
        for relative, mode in modes.items():
            path = tree / relative
            if not path.exists() or path.is_symlink():
                continue
            current = stat.S_IMODE(path.lstat().st_mode)
            if current & WRITE_BITS != mode & WRITE_BITS:
                os.chmod(path, current | (mode & WRITE_BITS))
                restored += 1
    record.unlink()
    return restored


def _read(record: Path) -> dict[str, int]:
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise WriteBlockFailed(
            f"the write-block record {record} is unreadable ({type(exc).__name__}): give the tree its write bits "
            f"back by hand (chmod -R u+w {record.parent / record.name[1:].removesuffix('.writes-blocked.json')}), "
            "then delete the record"
        ) from exc
