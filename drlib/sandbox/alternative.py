"""The sandbox's alternative provider, for the provider-outage scenario: a second PostgreSQL cluster and
a second S3-compatible endpoint (another moto server with its own buckets), on their own ports, under
``<sandbox>/alternative/``. It is started on demand (:meth:`AlternativeProvider.provision`: by the
provider-outage drill, its notebook, or ``drlib failover replicate``), never by ``drlib sandbox up``, so
the sandbox's start-up costs nothing more; ``down`` stops it and ``status`` shows it.

Once provisioned, the sandbox's ``connection.json`` carries a ``failover`` section pointing at it, so the
``sandbox`` profile has an alternative provider to switch to. While the profile is switched to it, the
sample API is started against the alternative database (:func:`api_settings`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import psycopg

from drlib.config_failover import alternative_table, history_file, read_state, state_file
from drlib.exceptions import SandboxError
from drlib.processes import (
    free_port,
    is_ours,
    port_is_open,
    read_record,
    spawn,
    stop_process,
    wait_for_port,
    write_record,
)
from drlib.sandbox.health import probe_postgres, probe_s3
from drlib.sandbox.pgserver import PostgresServer, data_parent
from drlib.secrets import read_secrets_file, register_secret, write_secrets_file

if TYPE_CHECKING:
    from drlib.sandbox.stack import Sandbox, ServiceStatus

SANDBOX = "sandbox"
ALT_SECRETS = {
    "database": "DRLIB_SANDBOX_ALT_PGPASSWORD",
    "s3_access_key": "DRLIB_SANDBOX_ALT_AWS_ACCESS_KEY_ID",
    "s3_secret_key": "DRLIB_SANDBOX_ALT_AWS_SECRET_ACCESS_KEY",
}


class AlternativeProvider:
    """The second PostgreSQL and S3 endpoint of one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.folder = sandbox.folder / "alternative"

    # -- layout -------------------------------------------------------------------------
    @property
    def layout_file(self) -> Path:
        return self.folder / "layout.json"

    @property
    def backups_root(self) -> Path:
        return self.folder / "backups"

    def layout(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.layout_file.read_text(encoding="utf-8"))
            return data
        except (OSError, ValueError):
            return {}

    @property
    def provisioned(self) -> bool:
        return bool(self.layout())

    def postgres(self) -> PostgresServer:
        from drlib.sandbox.stack import DB_USER

        layout = self.layout()
        pgdata = Path(layout["pgdata"]) if layout.get("pgdata") else data_parent(self.sandbox.folder) / "alt-pgdata"
        return PostgresServer(
            datadir=pgdata, port=int(layout.get("postgres", 0)), superuser=DB_USER, log=self.folder / "postgres.log"
        )

    def _s3_record_file(self) -> Path:
        return self.folder / "s3.pid.json"

    def _secrets(self) -> dict[str, str]:
        """The alternative's secrets, added to the sandbox's secrets file when missing (the cluster of a
        lost password is started again empty: the alternative holds nothing until a failover)."""
        values = read_secrets_file(self.sandbox.secrets_file)
        missing = [name for name in ALT_SECRETS.values() if name not in values]
        if missing:
            for name in missing:
                values[name] = secrets.token_urlsafe(18)
            write_secrets_file(self.sandbox.secrets_file, values)
            if ALT_SECRETS["database"] in missing:
                server = self.postgres()
                server.stop()
                shutil.rmtree(server.datadir, ignore_errors=True)
        for value in values.values():
            register_secret(value)
        return values

    # -- lifecycle ----------------------------------------------------------------------
    def provision(self) -> None:
        """Start (or repair) the alternative PostgreSQL and S3 endpoint with their buckets, and write
        the ``failover`` section of the sandbox's connection details."""
        from drlib.sandbox.stack import ensure_buckets

        if not self.sandbox.connection_file.is_file():
            raise SandboxError("the sandbox is not set up: start it with `drlib sandbox up` first")
        with self.sandbox._locked():
            self.folder.mkdir(parents=True, exist_ok=True)
            values = self._secrets()
            pg = self.postgres()
            s3_record = read_record(self._s3_record_file())
            previous = self.layout()
            pg.port = int(previous["postgres"]) if pg.running() else free_port(previous.get("postgres"))
            s3_port = int(previous["s3"]) if is_ours(s3_record) else free_port(previous.get("s3"))
            self.layout_file.write_text(json.dumps({"postgres": pg.port, "s3": s3_port, "pgdata": str(pg.datadir)}))
            if not pg.initialised():
                pg.init(values[ALT_SECRETS["database"]])
            if not pg.running():
                pg.start()
            self.sandbox._wait_for_database(pg.port, values[ALT_SECRETS["database"]])
            if not (is_ours(s3_record) and port_is_open(s3_port)):
                stop_process(s3_record, timeout=10)
                log = self.folder / "s3.log"
                record = spawn([sys.executable, "-m", "drlib.sandbox.s3server", "--port", str(s3_port)], log=log)
                write_record(self._s3_record_file(), record)
                wait_for_port(s3_port, what="alternative S3 endpoint", timeout=60, log=log)
            ensure_buckets(self._s3_client(values))
            for kind in ("postgres", "storage"):
                (self.backups_root / kind).mkdir(parents=True, exist_ok=True)
            self.sandbox._write_connection(self.sandbox._ports())

    def reset(self) -> None:
        """Empty the alternative, as a provider never used before (for a drill): its application database
        dropped, its S3 endpoint started again (it keeps its objects in memory: the backups bucket's locked
        versions cannot be deleted, as on S3) with empty buckets, and its backup folders emptied too."""
        from drlib.sandbox.stack import DB_NAME, DB_USER

        values = self._secrets()
        with psycopg.connect(
            host="127.0.0.1",
            port=self.postgres().port,
            user=DB_USER,
            dbname="postgres",
            password=values[ALT_SECRETS["database"]],
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            names = conn.execute(
                "SELECT datname FROM pg_database WHERE datname = %s OR datname ~ %s", (DB_NAME, f"^{DB_NAME}_")
            ).fetchall()
            for (name,) in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with self.sandbox._locked():
            stop_process(read_record(self._s3_record_file()), timeout=10)
            write_record(self._s3_record_file(), None)
        self.provision()
        shutil.rmtree(self.backups_root, ignore_errors=True)
        for kind in ("postgres", "storage"):
            (self.backups_root / kind).mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        """Stop both servers (their data stays, for the next ``provision``)."""
        if not self.provisioned:
            return
        stop_process(read_record(self._s3_record_file()), timeout=10)
        write_record(self._s3_record_file(), None)
        self.postgres().stop()

    def forget_switch(self) -> None:
        """Drop the sandbox profile's record of a switch (its stack is purged: a new one starts on the primary)."""
        for path in (
            state_file(self.sandbox.folder.parent, SANDBOX),
            history_file(self.sandbox.folder.parent, SANDBOX),
        ):
            path.unlink(missing_ok=True)

    def status(self) -> tuple[ServiceStatus, ...]:
        """``alt-postgres`` and ``alt-s3``, once provisioned."""
        from drlib.sandbox.stack import BUCKETS, DB_USER, _service

        layout = self.layout()
        if not layout:
            return ()
        values = read_secrets_file(self.sandbox.secrets_file)
        pg = self.postgres()
        s3 = read_record(self._s3_record_file())
        url = f"http://127.0.0.1:{layout['s3']}"
        return (
            _service(
                "alt-postgres",
                pg.pid(),
                f"127.0.0.1:{pg.port}",
                lambda: probe_postgres(pg.port, user=DB_USER, password=values.get(ALT_SECRETS["database"], "")),
            ),
            _service(
                "alt-s3",
                s3.pid if s3 and is_ours(s3) else None,
                url,
                lambda: probe_s3(
                    url,
                    bucket=BUCKETS[0],
                    access_key=values.get(ALT_SECRETS["s3_access_key"], ""),
                    secret_key=values.get(ALT_SECRETS["s3_secret_key"], ""),
                ),
            ),
        )

    def failover_section(self) -> dict[str, Any]:
        """The sandbox profile's ``failover`` table (empty until provisioned)."""
        layout = self.layout()
        if not layout:
            return {}
        return {
            "failover": {
                "description": "the sandbox's alternative provider: a second PostgreSQL and S3 endpoint",
                "database": {
                    "host": "127.0.0.1",
                    "port": layout["postgres"],
                    "password_secret": ALT_SECRETS["database"],
                },
                "storage": {
                    "endpoint_url": f"http://127.0.0.1:{layout['s3']}",
                    "access_key_secret": ALT_SECRETS["s3_access_key"],
                    "secret_key_secret": ALT_SECRETS["s3_secret_key"],
                },
                "backups": {
                    "postgres_dir": str(self.backups_root / "postgres"),
                    "storage_dir": str(self.backups_root / "storage"),
                },
            }
        }

    def _s3_client(self, values: dict[str, str]) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.layout()['s3']}",
            region_name="us-east-1",
            aws_access_key_id=values[ALT_SECRETS["s3_access_key"]],
            aws_secret_access_key=values[ALT_SECRETS["s3_secret_key"]],
        )


def api_settings(sandbox: Sandbox, values: dict[str, str]) -> tuple[Path, str]:
    """The config file and database password the sample API starts with: the sandbox's connection details,
    or, while the sandbox profile is switched to its alternative provider, the same on the alternative."""
    from drlib.sandbox.stack import SECRET_NAMES

    if read_state(sandbox.folder.parent, SANDBOX).get("active") != "alternative":
        return sandbox.connection_file, values[SECRET_NAMES["database"]]
    connection = json.loads(sandbox.connection_file.read_text(encoding="utf-8"))
    connection["profile"] = alternative_table(connection["profile"], profile=SANDBOX)
    config = sandbox.folder / "api-alternative.json"
    config.write_text(json.dumps(connection, indent=2), encoding="utf-8")
    password = read_secrets_file(sandbox.secrets_file).get(ALT_SECRETS["database"])
    if password is None:
        raise SandboxError(
            "the sandbox profile is switched to its alternative provider, which has no password: "
            "`drlib failover back --confirm`, or `drlib failover replicate --confirm` to provision it"
        )
    with contextlib.suppress(OSError):
        config.chmod(0o600)
    return config, password
