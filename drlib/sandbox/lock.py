"""One operator at a time: ``sandbox up`` and ``down`` serialise on a lock file in the sandbox folder.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the holder exits, even
on a crash: a stale lock file can never block anyone. The holder writes its pid into the file so a
waiter that gives up can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from drlib.exceptions import SandboxError

POLL_SECONDS = 0.1


@contextlib.contextmanager
def exclusive(path: Path, *, timeout: float, what: str) -> Iterator[None]:
    """Hold the lock at ``path`` for the ``with`` block; wait up to ``timeout`` seconds for it."""
    fd = acquire(path, timeout=timeout, what=what)
    try:
        yield
    finally:
        release(fd)


def acquire(path: Path, *, timeout: float, what: str) -> int:
    """Lock ``path`` (blocking, at most ``timeout`` seconds) and return the open file descriptor."""
    deadline = time.monotonic() + timeout
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _wait_for(fd, path, deadline=deadline, timeout=timeout, what=what)
            if _still_at(fd, path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was deleted (``down --purge``) while we waited: lock the new one


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def holder(path: Path) -> str:
    """The pid written by whoever holds the lock (``unknown`` when it has not written it yet)."""
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def _wait_for(fd: int, path: Path, *, deadline: float, timeout: float, what: str) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"another drlib process (pid {holder(path)}) has held the {what} lock {path} for over "
                    f"{timeout:.0f}s; wait for it to finish and try again (the lock frees itself when that "
                    "process exits)"
                ) from None
            time.sleep(POLL_SECONDS)


def _still_at(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
