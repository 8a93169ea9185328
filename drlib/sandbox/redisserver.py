"""A real Redis server for the sandbox, configured from a private (0600) config file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from drlib.processes import ProcessRecord, is_ours, read_record, spawn, stop_process, wait_for_port, write_record
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

    def pid(self) -> int | None:
        """The server's pid, only while the recorded process is still ours (see ``is_ours``)."""
        record = read_record(self.pidfile)
        return record.pid if record is not None and is_ours(record) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, *, timeout: float = 30) -> ProcessRecord:
        record = spawn([redis_server_program(), str(self.config_file)], log=self.log)
        write_record(self.pidfile, record)
        wait_for_port(self.port, what="Redis", timeout=timeout, log=self.log)
        return record

    def stop(self) -> None:
        stop_process(read_record(self.pidfile), timeout=15)  # a stale record is never signalled
        write_record(self.pidfile, None)
