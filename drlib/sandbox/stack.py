"""The embedded sandbox: real PostgreSQL, real Redis, an S3-compatible endpoint, the sample API
and seed data, on free ports under the project's state folder.

``up`` is idempotent and restarts whatever died (a second ``up`` after a crash recovers);
``down`` stops every process it started; ``down(purge=True)`` also deletes the data.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import redis

from drlib.config import Profile, project_root, state_dir
from drlib.exceptions import SandboxError
from drlib.processes import free_port, is_alive, port_is_open, spawn, stop_pid, wait_for_port
from drlib.sandbox import seed
from drlib.sandbox.pgserver import PostgresServer, data_parent
from drlib.sandbox.redisserver import RedisServer
from drlib.secrets import read_secrets_file, register_secret, write_secrets_file

DB_USER = "contentcrew"
DB_NAME = "content_crew"
BUCKETS = ("content-crew-storage", "backups-bucket")
SECRET_NAMES = {
    "database": "DRLIB_SANDBOX_PGPASSWORD",
    "redis": "DRLIB_SANDBOX_REDIS_PASSWORD",
    "s3_access_key": "DRLIB_SANDBOX_AWS_ACCESS_KEY_ID",
    "s3_secret_key": "DRLIB_SANDBOX_AWS_SECRET_ACCESS_KEY",
    "test_account": "DRLIB_SANDBOX_TEST_ACCOUNT_PASSWORD",
}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    address: str
    pid: int | None


@dataclass(frozen=True)
class SandboxStatus:
    folder: Path
    services: tuple[ServiceStatus, ...]

    @property
    def running(self) -> bool:
        return bool(self.services) and all(s.running for s in self.services)

    def describe(self) -> str:
        lines = [f"sandbox folder: {self.folder}"]
        for svc in self.services:
            state = "running" if svc.running else "STOPPED"
            lines.append(f"  {svc.name:<10} {state:<8} {svc.address}" + (f"  pid {svc.pid}" if svc.pid else ""))
        lines.append("profile: sandbox (connection details in connection.json; secrets in secrets.env, mode 0600)")
        return "\n".join(lines)


class Sandbox:
    """One embedded stack rooted at ``folder`` (default ``<state dir>/sandbox``)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or state_dir(project_root()) / "sandbox"

    # -- layout -------------------------------------------------------------------------
    @property
    def connection_file(self) -> Path:
        return self.folder / "connection.json"

    @property
    def secrets_file(self) -> Path:
        return self.folder / "secrets.env"

    @property
    def storage_root(self) -> Path:
        return self.folder / "storage"

    @property
    def backups_root(self) -> Path:
        return self.folder / "backups"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def api_log(self) -> Path:
        return self.logs / "api.log"

    def _pids_file(self) -> Path:
        return self.folder / "pids.json"

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
        except (OSError, ValueError):
            return {}

    def _pids(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._read_json(self._pids_file()).items()}

    def _save_pid(self, name: str, pid: int | None) -> None:
        pids = self._pids()
        if pid is None:
            pids.pop(name, None)
        else:
            pids[name] = pid
        self._pids_file().write_text(json.dumps(pids), encoding="utf-8")

    def _ports(self) -> dict[str, int]:
        ports = self._read_json(self.folder / "ports.json")
        return {k: int(v) for k, v in ports.items() if k != "pgdata"}

    def _secrets(self) -> dict[str, str]:
        values = read_secrets_file(self.secrets_file)
        if not all(name in values for name in SECRET_NAMES.values()):
            values = {name: secrets.token_urlsafe(18) for name in SECRET_NAMES.values()}
            values[SECRET_NAMES["s3_access_key"]] = "DRLIB" + secrets.token_hex(8).upper()
            write_secrets_file(self.secrets_file, values)
        for value in values.values():
            register_secret(value)
        return values

    def postgres(self) -> PostgresServer:
        layout = self._read_json(self.folder / "ports.json")
        pgdata = Path(layout["pgdata"]) if layout.get("pgdata") else data_parent(self.folder) / "pgdata"
        return PostgresServer(
            datadir=pgdata, port=int(layout.get("postgres", 0)), superuser=DB_USER, log=self.logs / "postgres.log"
        )

    def redis(self) -> RedisServer:
        return RedisServer(
            workdir=self.folder / "redis", port=self._ports().get("redis", 0), log=self.logs / "redis.log"
        )

    # -- lifecycle ----------------------------------------------------------------------
    def up(self, *, size: str = "small", seed_data: bool = True, start_api: bool = True) -> SandboxStatus:
        """Start (or repair) every service and seed the database when it is new.

        ``seed_data=False, start_api=False`` provisions bare infrastructure, as the runbook's
        ``docker compose up -d db redis`` does after a full system loss."""
        if size not in seed.SIZES:
            raise SandboxError(f"unknown seed size {size!r}; choose one of {', '.join(seed.SIZES)}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        values = self._secrets()
        ports = self._choose_ports()
        pg = self.postgres()
        pg.port = ports["postgres"]
        (self.folder / "ports.json").write_text(json.dumps({**ports, "pgdata": str(pg.datadir)}))
        if not pg.initialised():
            pg.init(values[SECRET_NAMES["database"]])
        if not pg.running():
            pg.start()
        self._wait_for_database(pg.port, values[SECRET_NAMES["database"]])
        self.start_redis()
        self._ensure_s3(ports["s3"], values)
        self._write_connection(ports)
        if seed_data:
            self._ensure_database(size, values)
            self._ensure_bucket_seeded(ports["s3"], values)
            self._ensure_redis_seeded(ports["redis"], values)
        if start_api:
            self._ensure_api(ports["api"])
        return self.status()

    def destroy_data(self) -> None:
        """The full-system-loss fault: every process stopped and all live data gone (database
        cluster, Redis data, storage, logs). Backups and secrets survive, as off-site copies would."""
        pgdata = self.postgres().datadir if self._ports() else None
        connection = self.connection_file.read_text(encoding="utf-8") if self.connection_file.exists() else None
        self.down()
        if connection is not None:  # where the stack lives is configuration, not data: keep it
            self.connection_file.write_text(connection, encoding="utf-8")
        for path in (pgdata, self.folder / "redis", self.storage_root, self.logs):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)

    def _choose_ports(self) -> dict[str, int]:
        previous = self._ports()
        running = self._running()
        chosen: dict[str, int] = {}
        for name in ("postgres", "redis", "s3", "api"):
            port = previous.get(name)
            # keep a port our own live process holds; otherwise reuse it only if it is free
            chosen[name] = port if port and running[name] else free_port(port)
        return chosen

    def _running(self) -> dict[str, bool]:
        pids = self._pids()
        return {
            "postgres": self.postgres().running(),
            "redis": self.redis().running(),
            "s3": is_alive(pids.get("s3")),
            "api": is_alive(pids.get("api")),
        }

    def _wait_for_database(self, port: int, password: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=port, user=DB_USER, dbname="postgres", password=password, connect_timeout=3
                ):
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.2)
        raise SandboxError(f"PostgreSQL on port {port} did not accept connections: {last}")

    def _ensure_s3(self, port: int, values: dict[str, str]) -> None:
        if not (is_alive(self._pids().get("s3")) and port_is_open(port)):
            pid = spawn([sys.executable, "-m", "drlib.sandbox.s3server", "--port", str(port)], log=self.logs / "s3.log")
            self._save_pid("s3", pid)
            wait_for_port(port, what="S3 endpoint", timeout=60, log=self.logs / "s3.log")
        client = self._s3_client(port, values)
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in BUCKETS:
            if bucket in existing:
                continue
            if bucket == "backups-bucket":
                client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            else:
                client.create_bucket(Bucket=bucket)
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def _s3_client(self, port: int, values: dict[str, str]) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id=values[SECRET_NAMES["s3_access_key"]],
            aws_secret_access_key=values[SECRET_NAMES["s3_secret_key"]],
        )

    def _ensure_bucket_seeded(self, port: int, values: dict[str, str]) -> None:
        """Mirror the storage tree into the live bucket when the bucket is empty (new or restarted)."""
        client = self._s3_client(port, values)
        if client.list_objects_v2(Bucket=BUCKETS[0], MaxKeys=1).get("KeyCount", 0) or not self.storage_root.is_dir():
            return
        seed.upload_tree(client, BUCKETS[0], self.storage_root)

    def _ensure_redis_seeded(self, port: int, values: dict[str, str]) -> None:
        client = redis.Redis(host="127.0.0.1", port=port, password=values[SECRET_NAMES["redis"]])
        try:
            if not client.dbsize():
                seed.seed_redis(client)
        finally:
            client.close()

    def _ensure_database(self, size: str, values: dict[str, str]) -> None:
        password = values[SECRET_NAMES["database"]]
        port = self._ports()["postgres"]
        with psycopg.connect(
            host="127.0.0.1", port=port, user=DB_USER, dbname="postgres", password=password, autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
            if exists:
                return
            conn.execute(f'CREATE DATABASE "{DB_NAME}" TEMPLATE template0')
        seed_size = seed.SIZES[size]
        with psycopg.connect(host="127.0.0.1", port=port, user=DB_USER, dbname=DB_NAME, password=password) as conn:
            seed.seed_database(conn, size=seed_size, test_password=values[SECRET_NAMES["test_account"]])
            if self.storage_root.exists():
                shutil.rmtree(self.storage_root)
            seed.write_artifact_files(conn, self.storage_root, size=seed_size)

    def _ensure_api(self, port: int) -> None:
        if is_alive(self._pids().get("api")) and port_is_open(port):
            return
        self.start_api()

    def start_api(self) -> int:
        """Start the sample API (the sandbox's ``docker compose start api``)."""
        values = self._secrets()
        port = self._ports()["api"]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
            "PGPASSWORD": values[SECRET_NAMES["database"]],
            "REDIS_PASSWORD": values[SECRET_NAMES["redis"]],
        }
        pid = spawn(
            [sys.executable, "-m", "drlib.sandbox.api", "--config", str(self.connection_file)],
            log=self.api_log,
            env=env,
        )
        self._save_pid("api", pid)
        wait_for_port(port, what="sample API", timeout=30, log=self.api_log)
        return pid

    def start_redis(self) -> None:
        """Start Redis (loading the RDB file in its folder, if any) unless it runs."""
        server = self.redis()
        if not server.running():
            server.write_config(self._secrets()[SECRET_NAMES["redis"]])
            server.start()

    def stop_api(self) -> None:
        """Stop the sample API (the sandbox's ``docker compose stop api``)."""
        stop_pid(self._pids().get("api"), timeout=10)
        self._save_pid("api", None)

    def api_running(self) -> bool:
        return is_alive(self._pids().get("api"))

    def _write_connection(self, ports: dict[str, int]) -> None:
        profile = {
            "database": {
                "host": "127.0.0.1",
                "port": ports["postgres"],
                "user": DB_USER,
                "name": DB_NAME,
                "password_secret": SECRET_NAMES["database"],
            },
            "backups": {
                "postgres_dir": str(self.backups_root / "postgres"),
                "storage_dir": str(self.backups_root / "storage"),
                "redis_dir": str(self.backups_root / "redis"),
                "prefix": DB_NAME,
            },
            "redis": {
                "host": "127.0.0.1",
                "port": ports["redis"],
                "password_secret": SECRET_NAMES["redis"],
                "controller": "sandbox",
                "data_dir": str(self.folder / "redis"),
            },
            "storage": {
                "kind": "local",
                "path": str(self.storage_root),
                "endpoint_url": f"http://127.0.0.1:{ports['s3']}",
                "access_key_secret": SECRET_NAMES["s3_access_key"],
                "secret_key_secret": SECRET_NAMES["s3_secret_key"],
            },
            "app": {
                "controller": "sandbox",
                "base_url": f"http://127.0.0.1:{ports['api']}",
                "log_file": str(self.api_log),
                "test_account_email": seed.TEST_ACCOUNT_EMAIL,
                "test_account_password_secret": SECRET_NAMES["test_account"],
            },
            "secrets_file": str(self.secrets_file),
        }
        connection = {
            "profile": profile,
            "services": {"api": {"host": "127.0.0.1", "port": ports["api"]}, "s3": {"port": ports["s3"]}},
            "folder": str(self.folder),
        }
        self.connection_file.write_text(json.dumps(connection, indent=2), encoding="utf-8")

    def status(self) -> SandboxStatus:
        ports = self._ports()
        if not ports:
            return SandboxStatus(folder=self.folder, services=())
        pids = self._pids()
        pg, rd = self.postgres(), self.redis()
        services = (
            ServiceStatus("postgres", pg.running(), f"127.0.0.1:{ports['postgres']}", pg.pid()),
            ServiceStatus("redis", rd.running(), f"127.0.0.1:{ports['redis']}", rd.pid()),
            ServiceStatus("s3", is_alive(pids.get("s3")), f"http://127.0.0.1:{ports['s3']}", pids.get("s3")),
            ServiceStatus("api", is_alive(pids.get("api")), f"http://127.0.0.1:{ports['api']}", pids.get("api")),
        )
        return SandboxStatus(folder=self.folder, services=services)

    def down(self, *, purge: bool = False) -> None:
        """Stop every sandbox process; with ``purge`` also delete all sandbox data."""
        if not self._ports():
            return
        for name in ("api", "s3"):
            stop_pid(self._pids().get(name), timeout=10)
            self._save_pid(name, None)
        self.redis().stop()
        pg = self.postgres()
        pg.stop()
        self.connection_file.unlink(missing_ok=True)
        if purge:
            shutil.rmtree(self.folder, ignore_errors=True)
            outside = pg.datadir.parent  # the cluster lives in a private temp folder when not below ours
            shutil.rmtree(outside if outside.name.startswith("drlib-pg-") else pg.datadir, ignore_errors=True)


def sandbox_for(profile: Profile) -> Sandbox:
    """The sandbox a ``sandbox`` profile points at (its secrets file lives in the sandbox folder)."""
    return Sandbox(profile.secrets_file.parent if profile.secrets_file else None)
