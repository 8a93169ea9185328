"""One drill per stack at a time. The lock is an ``flock`` on a file under the state folder, named
after the stack; the file also says who holds it (pid, host, start time, scenario). The kernel drops
an ``flock`` when its holder dies, however it dies, so a lock left by a killed drill is recognised as
stale and taken over (the report says so)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drlib.config import state_dir
from drlib.evidence import utcnow
from drlib.exceptions import DrillLocked


@dataclass
class StackLock:
    """A held drill lock: ``fd`` is inherited by the watchdog so the lock outlives a killed CLI
    until its children are stopped."""

    path: Path
    fd: int
    holder: dict[str, Any]
    stale: dict[str, Any] | None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def lock_path(stack: str) -> Path:
    """The lock file of ``stack`` (a profile name or a database address)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stack).strip("_") or "stack"
    return state_dir() / "locks" / f"{safe}.lock"


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        holder = json.loads(data) if data.strip() else None
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None


def acquire(stack: str, *, scenario: str) -> StackLock:
    """Take the lock of ``stack`` or raise :class:`DrillLocked` naming the holder."""
    path = lock_path(stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd) or {}
        os.close(fd)
        raise DrillLocked(
            f"another drill is running on {stack}: pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"started {holder.get('started_at', '?')} (scenario {holder.get('scenario', '?')}). One drill per "
            "stack at a time: wait for it to finish (its report says when), then run this one again."
        ) from None
    stale = _read_holder(fd)
    holder = {"pid": os.getpid(), "host": platform.node(), "started_at": utcnow().isoformat(), "scenario": scenario}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode())
    return StackLock(path=path, fd=fd, holder=holder, stale=stale)


@contextlib.contextmanager
def drill_lock(stack: str, *, scenario: str) -> Iterator[StackLock]:
    lock = acquire(stack, scenario=scenario)
    try:
        yield lock
    finally:
        lock.release()
