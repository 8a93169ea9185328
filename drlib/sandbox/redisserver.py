"""A real Redis server for the sandbox, configured from a private (0600) config file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from drlib.processes import is_alive, spawn, stop_pid, wait_for_port
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
        return self.workdir / "redis.pid"

    def write_config(self, password: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(
                f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\n"
                f'dir {self.workdir}\ndbfilename dump.rdb\nsave ""\nappendonly no\n'
                f"pidfile {self.pidfile}\nrequirepass {password}\n"
            )

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return is_alive(self.pid())

    def start(self, *, timeout: float = 30) -> int:
        pid = spawn([redis_server_program(), str(self.config_file)], log=self.log)
        self.pidfile.write_text(str(pid))
        wait_for_port(self.port, what="Redis", timeout=timeout, log=self.log)
        return pid

    def stop(self) -> None:
        stop_pid(self.pid(), timeout=15)
        self.pidfile.unlink(missing_ok=True)
