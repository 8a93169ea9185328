"""Starting, watching and stopping the sandbox's server processes."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from drlib.exceptions import SandboxError

UNPRIVILEGED_USERS = ("postgres", "nobody")
CREATE_TIME_TOLERANCE = 0.05  # seconds; psutil derives create times from clock ticks since boot


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free on 127.0.0.1, otherwise a free port the OS picks."""
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_is_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, *, what: str, timeout: float, log: Path | None = None) -> None:
    """Wait until something listens on ``port``; raise with the log's tail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_is_open(port):
            return
        time.sleep(0.05)
    raise SandboxError(f"{what} did not start listening on port {port} within {timeout:.0f}s{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.is_file():
        return ""
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(tail)


def server_user() -> pwd.struct_passwd | None:
    """The unprivileged account servers run as when drlib runs as root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise SandboxError(
        "running as root and no unprivileged user (postgres or nobody) exists to run the "
        "database server: create one with `useradd --system postgres`"
    )


def chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    """Give ``path`` and everything below it to ``user`` (no-op when not root)."""
    if user is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for child in path.rglob("*"):
        os.chown(child, user.pw_uid, user.pw_gid, follow_symlinks=False)


def user_can_write(path: Path, user: pwd.struct_passwd | None) -> bool:
    """Whether ``user`` can reach and write ``path`` (checked by asking the OS as that user)."""
    if user is None:
        return os.access(path, os.W_OK | os.X_OK)
    result = subprocess.run(
        ["test", "-w", str(path), "-a", "-x", str(path)],
        user=user.pw_uid,
        group=user.pw_gid,
        check=False,
    )
    return result.returncode == 0


def run_as(
    argv: Sequence[str],
    *,
    user: pwd.struct_passwd | None,
    env: Mapping[str, str] | None = None,
    what: str,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (as ``user`` when given); raise with its output on failure."""
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=without_marker(env),
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
    except FileNotFoundError as exc:
        raise SandboxError(f"{what}: {argv[0]} is not installed or not on PATH") from exc
    if result.returncode != 0:
        raise SandboxError(
            f"{what} failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    user: pwd.struct_passwd | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start a long-running server detached from this process; return its record (pid, create time, exe)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            process = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=without_marker(env),
                cwd=cwd,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        except FileNotFoundError as exc:
            raise SandboxError(f"cannot start {argv[0]}: it is not installed or not on PATH") from exc
    # Popen returns after the exec, so the identity read here is the server's own
    record = record_of(process.pid)
    if record is None:
        raise SandboxError(f"{argv[0]} exited as soon as it started{log_tail(log)}")
    return record


def is_alive(pid: int | None) -> bool:
    """Whether *some* process with this pid lives (not whether it is ours: see :func:`is_ours`)."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True)
class ProcessRecord:
    """A process drlib started: its pid plus what tells it apart from a later process reusing the pid."""

    pid: int
    create_time: float
    exe: str = ""
    #: when it started (:func:`start_time`); None in an older drlib's record
    started: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time, "exe": self.exe, "started": self.started}

    @classmethod
    def from_dict(cls, data: Any) -> ProcessRecord | None:
        """The record in ``data``; None for anything else (a bare pid from an older drlib is not trusted)."""
        if not isinstance(data, dict):
            return None
        try:
            started = data.get("started")
            return cls(
                pid=int(data["pid"]),
                create_time=float(data["create_time"]),
                exe=str(data.get("exe", "")),
                started=None if started is None else float(started),
            )
        except (KeyError, TypeError, ValueError):
            return None


def record_of(pid: int) -> ProcessRecord | None:
    """The identity of the live process ``pid`` (None when it is gone)."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            create_time = process.create_time()
            started = start_time(process)
            try:
                exe = process.exe()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                exe = ""
    except psutil.NoSuchProcess:
        return None
    return ProcessRecord(pid=pid, create_time=create_time, exe=exe, started=started)


def start_time(process: psutil.Process) -> float:
    """When ``process`` started: seconds since boot (``starttime`` in ``/proc/PID/stat``), else (off Linux)
    psutil's wall-clock create time. That one is the time since boot plus the boot time, which moves by whole
    seconds when the system clock is adjusted, so two readings of one process can differ: identity is
    compared on this."""
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2 :].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float(process.create_time())


def is_ours(record: ProcessRecord | None) -> bool:
    """Whether the live process with ``record.pid`` is the very process recorded (same create time
    and executable), not a stranger that was given the pid after ours exited."""
    if record is None or not is_alive(record.pid):
        return False
    live = record_of(record.pid)
    if live is None:
        return False
    if live.started is not None and record.started is not None:
        if abs(live.started - record.started) > CREATE_TIME_TOLERANCE:
            return False
    elif abs(live.create_time - record.create_time) > CREATE_TIME_TOLERANCE:
        return False
    return not (record.exe and live.exe and live.exe != record.exe)


def read_record(path: Path) -> ProcessRecord | None:
    """The process record kept in ``path`` (None when missing, unreadable or in an old format)."""
    try:
        return ProcessRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def write_record(path: Path, record: ProcessRecord | None) -> None:
    """Keep ``record`` in ``path`` (remove the file for None)."""
    if record is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(record.to_dict()), encoding="utf-8")


def stop_process(record: ProcessRecord | None, *, timeout: float = 20, sig: int = signal.SIGTERM) -> bool:
    """Stop the recorded process and its children, only if it is still ours; True when signalled."""
    if not is_ours(record):
        return False
    assert record is not None
    kill_tree(record.pid, timeout=timeout, sig=sig)
    return True


stop_pid = stop_process  # the former name; it now takes the record :func:`spawn` returns


def kill_tree(pid: int, *, timeout: float = 10, sig: int = signal.SIGTERM) -> None:
    """Signal a process and all its descendants; SIGKILL whatever is left after ``timeout``."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = [*root.children(recursive=True), root]
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)
    alive = wait_gone(family, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_gone(alive, timeout=5)


def _gone(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)  # dead; its parent has yet to reap it
    except psutil.NoSuchProcess:
        return True


def wait_gone(family: list[psutil.Process], *, timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (a zombie counts: only its parent can reap it); those left."""
    deadline = time.monotonic() + timeout
    while True:
        psutil.wait_procs(family, timeout=0)  # reaps those that are our own children
        alive = [p for p in family if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


#: Environment variable every process of a drill carries (its run id); servers started during a
#: drill are spawned without it, so only the drill's own processes are ever stopped by it.
RUN_MARKER = "DRLIB_DRILL_RUN"


def marked_processes(run_id: str) -> list[psutil.Process]:
    """This machine's processes carrying ``run_id`` in their environment (not this one)."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if process.environ().get(RUN_MARKER) == run_id:
                found.append(process)
    return found


def kill_marked(run_id: str, *, timeout: float = 10) -> int:
    """Stop every process of the drill ``run_id`` (SIGTERM, then SIGKILL); how many there were."""
    family = marked_processes(run_id)
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    alive = wait_gone(family, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_gone(alive, timeout=5)
    return len(family)


def without_marker(env: Mapping[str, str] | None) -> dict[str, str]:
    """``env`` (default: this process's) without the drill marker: for long-running servers."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k != RUN_MARKER}
