"""A real PostgreSQL server for the sandbox: initdb, start, stop.

When drlib runs as root the server runs as an unprivileged user (``postgres``), since
``initdb`` and ``postgres`` refuse to run as root. Authentication is scram-sha-256 over
TCP on 127.0.0.1 only, so the sandbox exercises password handling for real.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from drlib.postgres.tools import pg_program
from drlib.processes import (
    ProcessRecord,
    chown_tree,
    record_of,
    run_as,
    server_user,
    spawn,
    stop_process,
    user_can_write,
    wait_for_port,
)

# postmaster.pid's start time is written a moment after the process is created; a process that
# was created later than this after it cannot be the postmaster (it got the pid afterwards)
START_TIME_SLACK = 2.0


def data_parent(state: Path) -> Path:
    """Where the cluster lives: under ``state`` when the server user can reach it, otherwise a
    private folder under the system temp dir (e.g. when the project sits under /root)."""
    user = server_user()
    state.mkdir(parents=True, exist_ok=True)
    if _server_user_can_write_below(state):
        return state
    digest = hashlib.sha1(str(state).encode()).hexdigest()[:12]
    fallback = Path(tempfile.gettempdir()) / f"drlib-pg-{digest}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    chown_tree(fallback, user)
    return fallback


def _server_user_can_write_below(state: Path) -> bool:
    probe = state / ".pg-probe"
    probe.mkdir(exist_ok=True)
    chown_tree(probe, server_user())
    try:
        return user_can_write(probe, server_user())
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@dataclass
class PostgresServer:
    datadir: Path
    port: int
    superuser: str
    log: Path

    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").is_file()

    def init(self, password: str) -> None:
        """``initdb`` a fresh cluster owned by the server user, with password auth."""
        user = server_user()
        self.datadir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.datadir, 0o700)
        pwfile = self.datadir.parent / f".pw-{os.getpid()}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        chown_tree(self.datadir, user)
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            run_as(
                [
                    pg_program("initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.superuser,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                user=user,
                what="initdb",
                env={**os.environ, "LC_ALL": "C"},
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def pid(self) -> int | None:
        """The postmaster's pid, only when ``postmaster.pid`` names a live server of *this* cluster."""
        record = self.record()
        return record.pid if record else None

    def record(self) -> ProcessRecord | None:
        """The live postmaster named by ``postmaster.pid``, verified: a PostgreSQL server with this
        data directory on its command line, created no later than the file's start time. A pid the
        system has since given to another process is stale and never reported (or signalled)."""
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
            pid, start_time = int(lines[0]), float(lines[2])
        except (OSError, ValueError, IndexError):
            return None
        live = record_of(pid)
        if live is None or live.create_time > start_time + START_TIME_SLACK:
            return None
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return None
        if not cmdline or not Path(cmdline[0]).name.startswith("postgres") or str(self.datadir) not in cmdline:
            return None
        return live

    def running(self) -> bool:
        return self.record() is not None

    def start(self, *, timeout: float = 60) -> ProcessRecord:
        user = server_user()
        if user is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.touch()
            os.chown(self.log, user.pw_uid, user.pw_gid)
        record = spawn(
            [
                pg_program("postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "maintenance_work_mem=256MB",
                "-c",
                "max_wal_size=4GB",
            ],
            log=self.log,
            user=user,
        )
        wait_for_port(self.port, what="PostgreSQL", timeout=timeout, log=self.log)
        return record

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": roll back clients, checkpoint, exit.
        stop_process(self.record(), sig=signal.SIGINT, timeout=30)
