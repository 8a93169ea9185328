"""A real Redis server for the sandbox, configured from a private (0600) config file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from drlib.processes import (
    ProcessRecord,
    is_ours,
    read_record,
    record_of,
    spawn,
    stop_process,
    wait_for_port,
    write_record,
)
from drlib.redis.connection import redis_server_program


@dataclass
class RedisServer:
    workdir: Path
    port: int
    log: Path

    @property
    def config_file(self) -> Path:
        return self.workdir / "redis.conf"

    @property
    def pidfile(self) -> Path:
        """The server's process record (pid, create time, executable), written by :meth:`start`."""
        return self.workdir / "redis.process.json"

    def write_config(self, password: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(
                f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\n"
                f'dir {self.workdir}\ndbfilename dump.rdb\nsave ""\nappendonly no\n'
                f"requirepass {password}\n"
            )

    @property
    def legacy_pidfile(self) -> Path:
        """The bare pid file drlib wrote before process records (read only to stop such a server)."""
        return self.workdir / "redis.pid"

    def record(self) -> ProcessRecord | None:
        """The running server when it is the one we started (see ``is_ours``); None otherwise."""
        record = read_record(self.pidfile)
        if record is None and not self.pidfile.exists():
            record = self._legacy_record()
        return record if record is not None and is_ours(record) else None

    def pid(self) -> int | None:
        record = self.record()
        return record.pid if record else None

    def _legacy_record(self) -> ProcessRecord | None:
        """A bare pid counts only if that process is a redis-server on our port (its title shows it)."""
        try:
            pid = int(self.legacy_pidfile.read_text().strip())
            process = psutil.Process(pid)
            title = " ".join(process.cmdline())
            exe = Path(process.exe()).name
        except (OSError, ValueError, psutil.Error):
            return None
        ours = exe.startswith("redis-server") and f":{self.port}" in title
        return record_of(pid) if ours else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, *, timeout: float = 30) -> ProcessRecord:
        record = spawn([redis_server_program(), str(self.config_file)], log=self.log)
        write_record(self.pidfile, record)
        wait_for_port(self.port, what="Redis", timeout=timeout, log=self.log)
        return record

    def stop(self) -> None:
        stop_process(self.record(), timeout=15)  # a stale record is never signalled
        write_record(self.pidfile, None)
        self.legacy_pidfile.unlink(missing_ok=True)
