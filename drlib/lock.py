"""Locks that free themselves: ``fcntl.flock`` on a file that also says who holds it (pid, host,
start time, what for). The kernel drops an ``flock`` when its holder dies, however it dies, so a
lock file left by a killed process never blocks anyone; its contents show who held it last.

Two uses: one drill per stack at a time (:func:`acquire`, refused at once with the holder named),
and one ``sandbox up``/``down`` at a time (:func:`exclusive`, waiting up to a timeout).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drlib.evidence import utcnow
from drlib.exceptions import DrillLocked, SandboxError

if TYPE_CHECKING:
    from drlib.config import Profile

POLL_SECONDS = 0.1


@dataclass
class FileLock:
    """A held lock. ``previous`` is what the file said before (a holder that is gone); ``fd`` can be
    inherited by a child (the drill's watchdog) so the lock outlives a killed holder until it is done."""

    path: Path
    fd: int
    holder: dict[str, Any]
    previous: dict[str, Any] | None

    @property
    def stale(self) -> dict[str, Any] | None:
        return self.previous

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class LockBusy(Exception):
    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(holder)
        self.holder = holder


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 65536, 0)
        holder = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _still_at(fd: int, path: Path) -> bool:
    """False when the file was deleted or replaced while we waited (e.g. ``sandbox down --purge``)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def take(path: Path, *, purpose: str, timeout: float = 0.0) -> FileLock:
    """Lock ``path``, waiting up to ``timeout`` seconds; :class:`LockBusy` names the holder if it cannot."""
    deadline = time.monotonic() + timeout
    while True:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockBusy(_read_holder(fd) or {}) from None
                    time.sleep(POLL_SECONDS)
            if _still_at(fd, path):
                previous = _read_holder(fd)
                holder = {
                    "pid": os.getpid(),
                    "host": platform.node(),
                    "started_at": utcnow().isoformat(),
                    "scenario": purpose,
                }
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder).encode(), 0)
                return FileLock(path=path, fd=fd, holder=holder, previous=previous)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was replaced while we waited: lock the new one


# -- one drill per stack ------------------------------------------------------------------------
def lock_folder() -> Path:
    """Drill locks are per machine and user, not per project folder: two clones drilling one stack
    share them."""
    return Path(tempfile.gettempdir()) / f"drlib-locks-{os.getuid()}"


def lock_path(stack: str) -> Path:
    """The drill lock file of ``stack`` (a database address)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stack).strip("_") or "stack"
    return lock_folder() / f"{safe}.lock"


def acquire(stack: str, *, scenario: str) -> FileLock:
    """Take the drill lock of ``stack`` or raise :class:`DrillLocked` naming the holder."""
    try:
        return take(lock_path(stack), purpose=scenario)
    except LockBusy as busy:
        holder = busy.holder
        raise DrillLocked(
            f"another drill is running on {stack}: pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"started {holder.get('started_at', '?')} (scenario {holder.get('scenario', '?')}). One drill per "
            "stack at a time: wait for it to finish (its report says when), then run this one again."
        ) from None


@contextlib.contextmanager
def no_drill_running(profile: Profile | None, *, command: str) -> Iterator[FileLock]:
    """Hold the drill lock of ``profile``'s stack (``None``: the sandbox) for the ``with`` block: a command
    that would move the stack under a running drill (``sandbox up``, ``failover switch``) is refused at once."""
    held = acquire(stack_key(None if profile is None or profile.is_sandbox else profile), scenario=command)
    try:
        yield held
    finally:
        held.release()


# -- one sandbox operator at a time -----------------------------------------------------------
def take_waiting(path: Path, *, timeout: float, what: str) -> FileLock:
    """Lock ``path``, waiting up to ``timeout`` seconds, or raise :class:`SandboxError` naming the holder."""
    try:
        return take(path, purpose=what, timeout=timeout)
    except LockBusy as busy:
        raise SandboxError(
            f"another drlib process (pid {busy.holder.get('pid', 'unknown')}) has held the {what} lock {path} for "
            f"over {timeout:.0f}s; wait for it to finish and try again (the lock frees itself when that process "
            "exits)"
        ) from None


@contextlib.contextmanager
def exclusive(path: Path, *, timeout: float, what: str) -> Iterator[FileLock]:
    """Hold the lock at ``path`` for the ``with`` block, waiting up to ``timeout`` seconds for it."""
    held = take_waiting(path, timeout=timeout, what=what)
    try:
        yield held
    finally:
        held.release()


def stack_key(profile: Profile | None) -> str:
    """What one drill at a time is about: the database a profile points at, by address (so two names for
    one server, or two profiles for one stack, share the lock); ``None``: the sandbox, before it is up."""
    if profile is None:
        from drlib.sandbox.stack import Sandbox

        sandbox = Sandbox()
        try:
            port = json.loads(sandbox.connection_file.read_text(encoding="utf-8"))["profile"]["database"]["port"]
        except (OSError, ValueError, KeyError):
            return f"sandbox {sandbox.folder}"  # never started: no database anyone else could drill
        return f"127.0.0.1:{port}/content_crew"
    db = profile.database
    try:
        host = socket.gethostbyname(db.host)
    except OSError:
        host = db.host
    return f"{host}:{db.port}/{db.name}"
