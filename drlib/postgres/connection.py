"""Connecting to PostgreSQL and running its programs, with credentials kept out of argv and output."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from drlib.config import DatabaseSettings, Profile
from drlib.exceptions import ConnectionFailed, CredentialsRejected, DrlibError
from drlib.postgres.globals import DatabaseProperties
from drlib.postgres.tools import pg_program
from drlib.secrets import redact, register_secret

_AUTH_MARKERS = ("password authentication failed", "no password supplied", "authentication failed")


class DatabaseCommandFailed(DrlibError):
    """A statement or PostgreSQL program failed for a reason other than reaching the server."""

    code = "database"


@dataclass(frozen=True)
class PgTarget:
    """Where a database lives and how to authenticate (the password is never printed)."""

    settings: DatabaseSettings
    password: str | None = field(repr=False)
    #: where the password came from, for error messages (never the value)
    password_source: str = ""

    @classmethod
    def from_profile(cls, profile: Profile, *, database: str | None = None) -> PgTarget:
        settings = profile.database
        if database is not None:
            settings = replace(settings, name=database)
        password = profile.database_password()
        register_secret(password)
        from_url = profile.url_secrets.get(settings.password_secret) is not None
        source = "the password in DATABASE_URL" if from_url else ""
        return cls(settings=settings, password=password, password_source=source)

    def with_database(self, name: str) -> PgTarget:
        return replace(self, settings=replace(self.settings, name=name))

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def maintenance(self) -> PgTarget:
        return self.with_database(self.settings.maintenance_db)

    def conninfo(self, *, connect_timeout: int = 5) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.settings.host,
            port=self.settings.port,
            user=self.settings.user,
            dbname=self.settings.name,
            connect_timeout=connect_timeout,
            application_name="drlib",
        )

    def tool_env(self) -> dict[str, str]:
        """Environment for pg_dump/pg_restore/psql: the password travels in PGPASSWORD only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=self.settings.host,
            PGPORT=str(self.settings.port),
            PGUSER=self.settings.user,
            PGDATABASE=self.settings.name,
            PGCONNECT_TIMEOUT="10",
            PGAPPNAME="drlib",
        )
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self, *, autocommit: bool = True, connect_timeout: int = 5) -> psycopg.Connection:
        """A connection, or :class:`CredentialsRejected` / :class:`ConnectionFailed`.

        Inside :func:`reusing_maintenance_connections`, an autocommit connection to the maintenance
        database that a ``with`` block gave back cleanly is handed out again instead of logging in anew."""
        pool = _MAINTENANCE_POOL.get()
        reusable = pool is not None and autocommit and self.name == self.settings.maintenance_db
        key = (self.conninfo(connect_timeout=connect_timeout), self.password)
        if reusable and pool is not None:
            idle = pool.pop(key, None)
            if idle is not None and not idle.closed and idle.info.transaction_status == TransactionStatus.IDLE:
                return idle
        try:
            conn = (ReusableConnection if reusable else psycopg.Connection).connect(
                key[0], password=self.password or None, autocommit=autocommit
            )
        except psycopg.OperationalError as exc:
            raise connection_error(exc, self) from exc
        if isinstance(conn, ReusableConnection):
            conn.pool, conn.key = pool, key
        return conn


#: idle maintenance connections by (conninfo, password), while :func:`reusing_maintenance_connections` runs
#: (a context variable: a thread starts without one, so it never shares a connection)
_MAINTENANCE_POOL: ContextVar[dict[tuple[str, str | None], ReusableConnection] | None] = ContextVar(
    "drlib_maintenance_pool", default=None
)


class ReusableConnection(psycopg.Connection[Any]):
    """An autocommit maintenance connection that a ``with`` block ending cleanly gives back to the pool
    (its session settings reset) instead of closing; an error closes it as usual."""

    pool: dict[tuple[str, str | None], ReusableConnection] | None = None
    key: tuple[str, str | None] = ("", None)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        if self.pool is not None and exc_type is None and self._give_back():
            return
        super().__exit__(exc_type, exc_val, exc_tb)

    def _give_back(self) -> bool:
        if (
            self.closed
            or self.info.transaction_status != TransactionStatus.IDLE
            or _MAINTENANCE_POOL.get() is not self.pool
        ):
            return False
        try:
            self.execute("RESET ALL")
        except psycopg.Error:
            return False
        assert self.pool is not None
        previous = self.pool.pop(self.key, None)
        if previous is not None:
            previous.close()
        self.pool[self.key] = self
        return True


@contextmanager
def reusing_maintenance_connections() -> Iterator[None]:
    """Within the block, maintenance-database connections are logged into once and reused (a command
    that checks, creates, renames and drops databases would otherwise authenticate for each); every one
    is closed when the block ends. Connections to other databases are never kept: an idle one would stop
    that database from being renamed or dropped."""
    pool: dict[tuple[str, str | None], ReusableConnection] = {}
    token = _MAINTENANCE_POOL.set(pool)
    try:
        yield
    finally:
        _MAINTENANCE_POOL.reset(token)
        for conn in pool.values():
            conn.close()


def connection_error(exc: BaseException, target: PgTarget) -> DrlibError:
    """Turn a driver error into the right drlib error (without the password)."""
    text = redact(str(exc)).strip().splitlines()
    reason = text[-1] if text else type(exc).__name__
    address = target.settings.address
    if any(marker in str(exc) for marker in _AUTH_MARKERS):
        return CredentialsRejected(
            f"PostgreSQL at {address} rejected the credentials ({reason}). Check "
            + (
                target.password_source
                or f"the secret {target.settings.password_secret} in the environment or the profile's secrets file"
            )
            + "."
        )
    if "does not exist" in str(exc) and "database" in str(exc):
        return ConnectionFailed(f"database {target.name!r} does not exist on {address}: {reason}")
    return ConnectionFailed(
        f"cannot reach PostgreSQL at {address}: {reason}. Check the host and port in the "
        "profile, that the server is running, and the network/firewall in between."
    )


def _reason(exc: BaseException) -> str:
    lines = redact(str(exc)).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextmanager
def sql_errors(target: PgTarget, *, doing: str, advice: str = "") -> Iterator[None]:
    """Turn a driver error raised while ``doing`` something into one drlib error, said once."""
    try:
        yield
    except DrlibError:
        raise
    except psycopg.Error as exc:
        state = getattr(exc, "sqlstate", None)
        if state is None or state.startswith(("08", "28", "57P")):
            raise connection_error(exc, target) from exc
        raise DatabaseCommandFailed(
            f"{doing} on {target.settings.address} failed: {_reason(exc)}.{' ' + advice if advice else ''}"
        ) from exc


def database_exists(target: PgTarget, name: str) -> bool:
    with sql_errors(target, doing=f"looking up database {name}"), target.maintenance.connect() as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def terminate_connections(conn: psycopg.Connection, database: str) -> int:
    """End every other session on ``database`` (needed before DROP or RENAME)."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    return len(rows)


#: the server that first has ``LOCALE_PROVIDER`` and ``ICU_LOCALE`` in ``CREATE DATABASE``
LOCALE_PROVIDER_VERSION = 150000


def create_database(target: PgTarget, name: str, *, like: DatabaseProperties | None = None) -> list[str]:
    """``CREATE DATABASE name TEMPLATE template0``, with the encoding, collation, character classes,
    locale provider and tablespace of ``like`` (a backup's database) when given.

    Every value is quoted (the manifest it comes from is input). A tablespace the server lacks is left
    out (the server's default is used; verify reports the difference): the returned notes say so."""
    with sql_errors(target, doing=f"CREATE DATABASE {name}"), target.maintenance.connect() as conn:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if like is None:
            conn.execute(statement)
            return []
        options, notes = _layout(conn, like)
        try:
            conn.execute(sql.SQL(" ").join([statement, *options]))
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.UndefinedObject) as exc:
            locale = f"{like.collate} / {like.ctype}" + (f", ICU locale {like.icu_locale}" if like.icu_locale else "")
            raise DatabaseCommandFailed(
                f"CREATE DATABASE {name} like the backup's database failed: {_reason(exc)}. This server cannot "
                f"make a database with encoding {like.encoding}, locale provider {like.locale_provider} and "
                f"collation {locale}: install that locale on the server (locale -a lists them), then retry"
            ) from exc
    return notes


def _layout(conn: psycopg.Connection, like: DatabaseProperties) -> tuple[list[sql.Composable], list[str]]:
    """The ``CREATE DATABASE`` options that make a database like ``like``, and notes on what cannot."""
    values = (like.encoding, like.collate, like.ctype, like.locale_provider, like.icu_locale, like.tablespace)
    if not all(isinstance(v, str) for v in values if v is not None):
        raise DatabaseCommandFailed(
            "the database properties in the backup's manifest are not text (encoding, collation, locale, "
            "tablespace): the manifest is damaged; pick another backup"
        )
    options: list[sql.Composable] = [
        sql.SQL("ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(like.encoding), sql.Literal(like.collate), sql.Literal(like.ctype)
        )
    ]
    if conn.info.server_version >= LOCALE_PROVIDER_VERSION:
        options.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.Literal(like.locale_provider)))
        if like.icu_locale:
            options.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(like.icu_locale)))
    notes = []
    if like.tablespace and like.tablespace != "pg_default":
        found = conn.execute("SELECT 1 FROM pg_tablespace WHERE spcname = %s", (like.tablespace,)).fetchone()
        if found:
            options.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(like.tablespace)))
        else:
            notes.append(
                f"the backup's database was in tablespace {like.tablespace}, which this server lacks: the "
                "restored database is in the server's default tablespace"
            )
    return options, notes


def rename_database(target: PgTarget, name: str, new_name: str) -> None:
    """``ALTER DATABASE name RENAME TO new_name`` (sessions on ``name`` are ended first)."""
    with sql_errors(target, doing=f"renaming database {name} to {new_name}"), target.maintenance.connect() as conn:
        terminate_connections(conn, name)
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(new_name)))


def drop_database(target: PgTarget, name: str) -> None:
    """Drop ``name`` if it exists, ending its sessions first (PostgreSQL 13+ ``WITH (FORCE)``)."""
    with sql_errors(target, doing=f"DROP DATABASE {name}"), target.maintenance.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def start_pg_tool(program: str, args: Sequence[str], *, target: PgTarget) -> subprocess.Popen[str]:
    """Start a PostgreSQL client program against ``target`` (pipes for its output; read them redacted)."""
    argv = [pg_program(program), *args]
    try:
        return subprocess.Popen(argv, env=target.tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise DatabaseCommandFailed(
            f"cannot run {argv[0]} ({type(exc).__name__}): check the PostgreSQL installation or DRLIB_PG_BINDIR"
        ) from exc


def run_pg_tool(
    program: str,
    args: Sequence[str],
    *,
    target: PgTarget,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL client program against ``target``; output is returned redacted."""
    argv = [pg_program(program), *args]
    try:
        result = subprocess.run(
            argv, env=target.tool_env(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DatabaseCommandFailed(f"{program} did not finish within {timeout:g}s and was stopped") from exc
    except OSError as exc:
        raise DatabaseCommandFailed(
            f"cannot run {argv[0]} ({type(exc).__name__}): check the PostgreSQL installation or DRLIB_PG_BINDIR"
        ) from exc
    return subprocess.CompletedProcess(result.args, result.returncode, redact(result.stdout), redact(result.stderr))
