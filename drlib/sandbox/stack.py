"""The embedded sandbox: real PostgreSQL, real Redis, an S3-compatible endpoint, the sample API
and seed data, on free ports under the project's state folder.

``up`` is idempotent and restarts whatever died (a second ``up`` after a crash recovers);
``down`` stops every process it started and keeps ``connection.json`` (where the stack lives is
configuration); ``down(purge=True)`` also deletes the data and the connection details.
``up`` and ``down`` serialise on a lock file, so two operators cannot start two stacks at once.

Every process the sandbox starts is recorded with its pid *and* its create time and executable;
a recorded pid that now belongs to another process is stale: never reported running, never signalled.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psutil
import psycopg
import redis

from drlib.config import Profile, project_root, state_dir
from drlib.exceptions import SandboxError
from drlib.faults_disk_full import release_volume_at, volume_left_at
from drlib.faults_ransomware import left_in
from drlib.lock import FileLock, take_waiting
from drlib.processes import (
    ProcessRecord,
    free_port,
    is_ours,
    port_is_open,
    record_of,
    spawn,
    stop_process,
    wait_for_port,
)
from drlib.sandbox import seed
from drlib.sandbox.alternative import AlternativeProvider, api_settings
from drlib.sandbox.health import probe_api, probe_postgres, probe_redis, probe_s3
from drlib.sandbox.pgserver import PostgresServer, data_parent
from drlib.sandbox.redisserver import RedisServer
from drlib.secrets import read_secrets_file, register_secret, write_secrets_file
from drlib.storage.writeblock import unblock_writes

DB_USER = "contentcrew"
DB_NAME = "content_crew"
BUCKETS = ("content-crew-storage", "backups-bucket")
SECRET_NAMES = {
    "database": "DRLIB_SANDBOX_PGPASSWORD",
    "redis": "DRLIB_SANDBOX_REDIS_PASSWORD",
    "s3_access_key": "DRLIB_SANDBOX_AWS_ACCESS_KEY_ID",
    "s3_secret_key": "DRLIB_SANDBOX_AWS_SECRET_ACCESS_KEY",
    "test_account": "DRLIB_SANDBOX_TEST_ACCOUNT_PASSWORD",
    "webhook_signing": "DRLIB_SANDBOX_WEBHOOK_SIGNING_SECRET",
}
#: in the sandbox folder while the API runs with its webhook protection switched off (a drill's fault)
PROTECTION_OFF_MARKER = "webhook-protection-off"
PORT_RELEASE_SECONDS = 3.0  # how long a port a stopped server held may take to close
LOCK_TIMEOUT = 600.0  # seconds a second ``up``/``down`` waits for the first (seeding can take minutes)


@dataclass(frozen=True)
class ServiceStatus:
    """One service: whether our process runs, whether it answers (``detail`` says how or why not)."""

    name: str
    running: bool
    address: str
    pid: int | None
    healthy: bool = False
    detail: str = ""

    @property
    def state(self) -> str:
        return "healthy" if self.healthy else ("UNHEALTHY" if self.running else "STOPPED")


@dataclass(frozen=True)
class SandboxStatus:
    folder: Path
    services: tuple[ServiceStatus, ...]
    #: the alternative provider (provider-outage failover), once provisioned; not part of :attr:`healthy`
    alternative: tuple[ServiceStatus, ...] = ()
    #: what a killed drill left behind (a full volume over the backups, encrypted storage): ``up`` repairs it
    leftovers: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        """Every service runs and answers its probe, and no killed drill left its fault behind."""
        return bool(self.services) and all(s.running and s.healthy for s in self.services) and not self.leftovers

    @property
    def running(self) -> bool:
        """Up and usable: the same as :attr:`healthy` (a process that does not answer is not "running")."""
        return self.healthy

    def describe(self) -> str:
        lines = [f"sandbox folder: {self.folder}"]
        for svc in self.services:
            pid = f"pid {svc.pid}" if svc.pid else ""
            lines.append(f"  {svc.name:<10} {svc.state:<9} {svc.address:<24} {pid:<11} {svc.detail}".rstrip())
        lines += [f"  left by a killed drill: {leftover} (drlib sandbox up repairs it)" for leftover in self.leftovers]
        lines.append(f"overall: {'healthy' if self.healthy else 'NOT HEALTHY'}")
        if self.alternative:
            lines.append("alternative provider (started on demand for a failover; `drlib failover status`):")
            lines += [f"  {s.name:<12} {s.state:<9} {s.address:<24} {s.detail}".rstrip() for s in self.alternative]
        lines.append("profile: sandbox (connection details in connection.json; secrets in secrets.env, mode 0600)")
        return "\n".join(lines)


class Sandbox:
    """One embedded stack rooted at ``folder`` (default ``<state dir>/sandbox``)."""

    def __init__(self, folder: Path | None = None, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.folder = folder or state_dir(project_root()) / "sandbox"
        self.lock_timeout = lock_timeout
        self._thread_lock = threading.RLock()
        self._lock: FileLock | None = None

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

    @property
    def lock_file(self) -> Path:
        return self.folder / "sandbox.lock"

    def _pids_file(self) -> Path:
        return self.folder / "pids.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the sandbox lock (re-entrant within this object, so ``up`` may call ``start_api``)."""
        with self._thread_lock:
            if self._lock is not None:
                yield
                return
            self._lock = take_waiting(self.lock_file, timeout=self.lock_timeout, what="sandbox")
            try:
                yield
            finally:
                held, self._lock = self._lock, None
                held.release()

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
        except (OSError, ValueError):
            return {}

    def _pids(self) -> dict[str, ProcessRecord]:
        """The recorded processes. A bare pid (written by drlib before records existed) is kept only
        when the live process's command line shows it is this sandbox's service; otherwise it is stale."""
        records: dict[str, ProcessRecord] = {}
        for name, value in self._read_json(self._pids_file()).items():
            record = ProcessRecord.from_dict(value)
            if record is None and isinstance(value, int):
                record = self._legacy_record(name, value)
            if record is not None:
                records[name] = record
        return records

    def _legacy_record(self, name: str, pid: int) -> ProcessRecord | None:
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return None
        if name == "api":
            ours = "drlib.sandbox.api" in cmdline and str(self.connection_file) in cmdline
        elif name == "s3":
            port = str(self._ports().get("s3", ""))
            ours = "drlib.sandbox.s3server" in cmdline and port in cmdline
        else:
            ours = False
        return record_of(pid) if ours else None

    def _unrecorded_apis(self) -> list[ProcessRecord]:
        """This sandbox's API processes (their config is in this sandbox's folder) that no record names."""
        recorded = self._pids().get("api")
        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            cmdline = process.info["cmdline"] or []
            config = cmdline[cmdline.index("--config") + 1] if "--config" in cmdline[:-1] else ""
            if "drlib.sandbox.api" in cmdline and Path(config).parent == self.folder:
                record = record_of(process.info["pid"])
                if record is not None and (recorded is None or record.pid != recorded.pid):
                    found.append(record)
        return found

    def _save_pid(self, name: str, record: ProcessRecord | None) -> None:
        pids = self._pids()
        if record is None:
            pids.pop(name, None)
        else:
            pids[name] = record
        self._pids_file().write_text(json.dumps({k: v.to_dict() for k, v in pids.items()}), encoding="utf-8")

    def _ours(self, name: str) -> ProcessRecord | None:
        """The recorded process ``name`` when it is still the one we started."""
        record = self._pids().get(name)
        return record if is_ours(record) else None

    def _ports(self) -> dict[str, int]:
        ports = self._read_json(self.folder / "ports.json")
        return {k: int(v) for k, v in ports.items() if k != "pgdata"}

    def _secrets(self) -> dict[str, str]:
        values = read_secrets_file(self.secrets_file)
        missing = [name for name in SECRET_NAMES.values() if name not in values]
        if missing:  # a new sandbox, or one made before a secret was added: the existing ones are kept
            values |= {name: secrets.token_urlsafe(18) for name in missing}
            if SECRET_NAMES["s3_access_key"] in missing:
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
        with self._locked():
            self._up(size=size, seed_data=seed_data, start_api=start_api)
        return self.status()

    def _up(self, *, size: str, seed_data: bool, start_api: bool) -> None:
        self.logs.mkdir(exist_ok=True)
        release_volume_at(self.backups_root)  # a killed disk_full drill's volume
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

    def destroy_data(self) -> None:
        """The full-system-loss fault: every process stopped and all live data gone (database
        cluster, Redis data, storage, logs). Backups and secrets survive, as off-site copies would."""
        pgdata = self.postgres().datadir if self._ports() else None
        self.down()  # keeps connection.json: where the stack lives is configuration, not data
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
        return {
            "postgres": self.postgres().running(),
            "redis": self.redis().running(),
            "s3": self._ours("s3") is not None,
            "api": self._ours("api") is not None,
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
        if not (self._ours("s3") and port_is_open(port)):
            stop_process(self._ours("s3"), timeout=10)  # ours but not listening: hung
            self._refuse_taken_port(port, "S3 endpoint")
            if importlib.util.find_spec("moto") is None:
                raise SandboxError(
                    "the sandbox's S3 endpoint needs moto, which a production install leaves out: "
                    "pip install 'drlib[sandbox]' (make drill and make test install it)"
                )
            record = spawn(
                [sys.executable, "-m", "drlib.sandbox.s3server", "--port", str(port)], log=self.logs / "s3.log"
            )
            self._save_pid("s3", record)
            wait_for_port(port, what="S3 endpoint", timeout=60, log=self.logs / "s3.log")
        ensure_buckets(self._s3_client(port, values))

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
        seed_size = seed.SIZES[size]
        with psycopg.connect(
            host="127.0.0.1", port=port, user=DB_USER, dbname="postgres", password=password, autocommit=True
        ) as conn:
            for (leftover,) in conn.execute(  # copies a cut-short restore left behind
                "SELECT datname FROM pg_database WHERE datname ~ %s", (f"^{DB_NAME}_(restored|restoring)_[0-9]+$",)
            ).fetchall():
                conn.execute(f'DROP DATABASE IF EXISTS "{leftover}" WITH (FORCE)')
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
            if exists and self._seeded(port, password):
                with psycopg.connect(
                    host="127.0.0.1", port=port, user=DB_USER, dbname=DB_NAME, password=password
                ) as db:
                    if left_in(self.storage_root):  # a ransomware drill killed before its restore
                        unblock_writes(self.storage_root)
                        shutil.rmtree(self.storage_root)
                    if not self.storage_root.is_dir():  # a storage drill cut short: rebuild the tree from the rows
                        seed.write_artifact_files(db, self.storage_root, size=seed_size)
                    billing = db.execute("SELECT to_regclass('public.billing_events')").fetchone()
                    if not (billing and billing[0]):  # seeded before the table existed
                        seed.seed_billing(db)
                return
            if exists:  # there, but without the application's tables: start it again
                conn.execute(f'DROP DATABASE "{DB_NAME}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DB_NAME}" TEMPLATE template0')
        with psycopg.connect(host="127.0.0.1", port=port, user=DB_USER, dbname=DB_NAME, password=password) as conn:
            seed.seed_database(conn, size=seed_size, test_password=values[SECRET_NAMES["test_account"]])
            if self.storage_root.exists():
                shutil.rmtree(self.storage_root)
            seed.write_artifact_files(conn, self.storage_root, size=seed_size)

    def _seeded(self, port: int, password: str) -> bool:
        with psycopg.connect(host="127.0.0.1", port=port, user=DB_USER, dbname=DB_NAME, password=password) as db:
            row = db.execute("SELECT to_regclass('public.content_artifacts') IS NOT NULL").fetchone()
        return bool(row and row[0])

    def _ensure_api(self, port: int) -> None:
        if self._ours("api") and port_is_open(port) and self.webhook_protection_on():
            return
        self.start_api()

    @property
    def _protection_off_marker(self) -> Path:
        return self.folder / PROTECTION_OFF_MARKER

    def webhook_protection_on(self) -> bool:
        """Whether the API was started with its billing webhook's protection (the default)."""
        return not self._protection_off_marker.exists()

    def start_api(self, *, webhook_protection: bool = True) -> int:
        """Start the sample API (the sandbox's ``docker compose start api``) unless ours already
        listens with the webhook protection asked for; return its pid. Never starts a second API.
        ``webhook_protection=False`` (a drill's fault) restarts it without signature, timestamp and
        replay checks; any later start without it (``sandbox up`` included) switches them on again."""
        with self._locked():
            port = self._ports()["api"]
            current = self._ours("api")
            if current and port_is_open(port) and self.webhook_protection_on() == webhook_protection:
                return current.pid
            self._stop_apis()  # hung, or running with the other protection
            self._refuse_taken_port(port, "sample API")
            values = self._secrets()
            config, password = api_settings(self, values)  # the alternative's database while failed over
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
                "PGPASSWORD": password,
                "REDIS_PASSWORD": values[SECRET_NAMES["redis"]],
                "WEBHOOK_SIGNING_SECRET": values[SECRET_NAMES["webhook_signing"]],
            }
            argv = [sys.executable, "-m", "drlib.sandbox.api", "--config", str(config)]
            if webhook_protection:
                self._protection_off_marker.unlink(missing_ok=True)
            else:
                self._protection_off_marker.write_text("the API runs without webhook protection\n", encoding="utf-8")
                argv.append("--no-webhook-protection")
            record = spawn(argv, log=self.api_log, env=env)
            self._save_pid("api", record)
            wait_for_port(port, what="sample API", timeout=30, log=self.api_log)
            return record.pid

    def _refuse_taken_port(self, port: int, what: str) -> None:
        deadline = time.monotonic() + PORT_RELEASE_SECONDS  # a server just stopped may still be closing it
        while port_is_open(port):
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"port {port} for the sandbox's {what} is held by a process drlib did not start"
                    f"{_holder(port)}; stop that process, or run `drlib sandbox down` then `drlib sandbox up` "
                    "to move to free ports"
                )
            time.sleep(0.05)

    def start_redis(self) -> None:
        """Start Redis (loading the RDB file in its folder, if any) unless it runs."""
        with self._locked():
            server = self.redis()
            if not server.running():
                server.write_config(self._secrets()[SECRET_NAMES["redis"]])
                server.start()

    def stop_api(self) -> None:
        """Stop the sample API (the sandbox's ``docker compose stop api``); a stale pid is not signalled."""
        with self._locked():
            self._stop_apis()

    def _stop_apis(self) -> None:
        """Stop the recorded API and any other API of this sandbox (one a run killed before it recorded the
        pid started: it would hold the port), and forget the record."""
        for api in (self._pids().get("api"), *self._unrecorded_apis()):
            stop_process(api, timeout=10)
        self._save_pid("api", None)

    def stop_s3(self) -> None:
        """Stop the S3 endpoint (its objects are in memory: ``up`` starts it again with the live bucket re-seeded)."""
        with self._locked():
            stop_process(self._pids().get("s3"), timeout=10)
            self._save_pid("s3", None)

    def api_running(self) -> bool:
        return self._ours("api") is not None

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
            "billing": {"signing_secret": SECRET_NAMES["webhook_signing"]},
            # the services' logs, and the backup jobs' (rotated ones there are what disk_full drills free)
            "logs": {"folders": [str(self.logs), str(self.backups_root / "logs")]},
            "secrets_file": str(self.secrets_file),
            **AlternativeProvider(self).failover_section(),
        }
        connection = {
            "profile": profile,
            "services": {"api": {"host": "127.0.0.1", "port": ports["api"]}, "s3": {"port": ports["s3"]}},
            "folder": str(self.folder),
        }
        self.connection_file.write_text(json.dumps(connection, indent=2), encoding="utf-8")

    def status(self) -> SandboxStatus:
        """Per service: is our process running (verified pid) and does it answer (a real probe)."""
        ports = self._ports()
        if not ports:
            return SandboxStatus(folder=self.folder, services=())
        values = read_secrets_file(self.secrets_file)
        for value in values.values():
            register_secret(value)
        pg, rd = self.postgres(), self.redis()
        s3, api = self._ours("s3"), self._ours("api")
        s3_url, api_url = f"http://127.0.0.1:{ports['s3']}", f"http://127.0.0.1:{ports['api']}"
        services = (
            _service(
                "postgres",
                pg.pid(),
                f"127.0.0.1:{ports['postgres']}",
                lambda: probe_postgres(pg.port, user=DB_USER, password=values.get(SECRET_NAMES["database"], "")),
            ),
            _service(
                "redis",
                rd.pid(),
                f"127.0.0.1:{ports['redis']}",
                lambda: probe_redis(rd.port, password=values.get(SECRET_NAMES["redis"], "")),
            ),
            _service(
                "s3",
                s3.pid if s3 else None,
                s3_url,
                lambda: probe_s3(
                    s3_url,
                    bucket=BUCKETS[0],
                    access_key=values.get(SECRET_NAMES["s3_access_key"], ""),
                    secret_key=values.get(SECRET_NAMES["s3_secret_key"], ""),
                ),
            ),
            _service("api", api.pid if api else None, api_url, lambda: self._probe_api(api_url)),
        )
        return SandboxStatus(
            folder=self.folder,
            services=services,
            alternative=AlternativeProvider(self).status(),
            leftovers=self._leftovers(),
        )

    def _leftovers(self) -> tuple[str, ...]:
        """Faults a killed drill left (a drill that ends, or is interrupted, takes its own away)."""
        left = []
        if volume_left_at(self.backups_root):
            left.append(f"{self.backups_root} is on the disk_full drill's full volume")
        if left_in(self.storage_root):
            left.append(f"{self.storage_root} holds the ransomware drill's encrypted files or write block")
        return tuple(left)

    def _probe_api(self, url: str) -> tuple[bool, str]:
        """``/health``, and the billing webhook's protection: an API running without it is not healthy."""
        healthy, detail = probe_api(url)
        if self.webhook_protection_on():
            return healthy, detail
        return False, f"{detail}; billing webhook protection OFF (drlib sandbox up restarts the API with it)"

    def down(self, *, purge: bool = False) -> None:
        """Stop every process the sandbox started (never one that merely reuses a recorded pid).
        ``connection.json`` stays, so read-only commands still find the stack's configuration;
        ``purge`` also deletes all sandbox data, secrets and connection details."""
        if not self.folder.exists():
            return
        with self._locked():
            pgdata = None
            AlternativeProvider(self).stop()
            if purge:
                AlternativeProvider(self).forget_switch()
            if self._ports():
                self._stop_apis()
                stop_process(self._pids().get("s3"), timeout=10)
                self._save_pid("s3", None)
                self.redis().stop()
                pg = self.postgres()
                pg.stop()
                pgdata = pg.datadir
            if purge:
                shutil.rmtree(self.folder, ignore_errors=True)
                if pgdata is not None:  # the cluster lives in a private temp folder when not below ours
                    outside = pgdata.parent
                    shutil.rmtree(outside if outside.name.startswith("drlib-pg-") else pgdata, ignore_errors=True)


#: every backup written to the sandbox's backups bucket is locked this long (COMPLIANCE: no credentials can
#: delete or overwrite a locked version before then), as an immutable backup bucket is configured
BACKUP_RETENTION = {"Mode": "COMPLIANCE", "Days": 1}


def ensure_buckets(client: Any) -> None:
    """The sandbox's buckets on an S3 endpoint: the live bucket and the backups bucket (object lock with a
    default retention), versioned."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket in existing:
            continue
        if bucket == "backups-bucket":
            client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        else:
            client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    _ensure_default_retention(client, "backups-bucket")


def _ensure_default_retention(client: Any, bucket: str) -> None:
    """Give the backups bucket its default retention, unless it has one (a bucket made before it did)."""
    rule = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"].get("Rule")
    if not rule:
        client.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": BACKUP_RETENTION}},
        )


def _service(name: str, pid: int | None, address: str, probe: Callable[[], tuple[bool, str]]) -> ServiceStatus:
    if pid is None:
        return ServiceStatus(name, False, address, None, healthy=False, detail="not running")
    healthy, detail = probe()
    return ServiceStatus(name, True, address, pid, healthy=healthy, detail=detail)


def sandbox_for(profile: Profile) -> Sandbox:
    """The sandbox a ``sandbox`` profile points at (its secrets file lives in the sandbox folder)."""
    return Sandbox(profile.secrets_file.parent if profile.secrets_file else None)


def _holder(port: int) -> str:
    """`` (pid N: its command line)`` of the process listening on ``port``, when this user may see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f" (pid {conn.pid}: {' '.join(psutil.Process(conn.pid).cmdline())[:200]})"
    except (psutil.Error, OSError):
        pass
    return ""
