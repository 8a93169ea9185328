"""Database corruption: find damaged tables and indexes, and repair the indexes that can be rebuilt.

A scan connects (a failure to is the first symptom), reads ``data_checksums`` and the server's count of
checksum failures, and checks every relation of the database's own schemas:

- with ``amcheck`` (installed for the scan in a schema of its own and removed again, when it was not
  there and the role may create it): ``bt_index_check`` on every btree index and ``verify_heapam`` on
  every table, materialized view and TOAST table;
- then a full read of every table (every column of every row, TOAST included): a read that errors is
  damage whatever amcheck said;
- without amcheck (not installable here: said as a warning), every btree index over plain columns is
  read by an index scan over its key columns instead. amcheck is the safe way: an index scan over
  damaged tuples can crash the server process reading it (the server then restarts every session).

Each damaged object is reported by name with the server's message. Only an index is repaired here
(``REINDEX`` rebuilds it from its table, which must read cleanly); a damaged table is not: its rows are
restored from a backup (the database-loss path).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

from drlib.checks import CheckResult, Checks, check
from drlib.exceptions import DrlibError
from drlib.plans import RestorePlan
from drlib.postgres.connection import PgTarget
from drlib.secrets import redact

#: where a scan installs amcheck when the database does not have it (dropped again afterwards)
AMCHECK_SCHEMA = "drlib_amcheck"
#: schemas never scanned (the catalogues); pg_toast is, for the TOAST tables and indexes of user tables
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
#: how long a check waits for a lock another session holds before it reports the object unchecked
LOCK_TIMEOUT = "10s"
#: how long a scan waits for the server to accept connections again after a check crashed a server process
RECOVERY_WAIT = 60.0
#: how the fallback reads an index: the planner may use nothing else
INDEX_SCAN_ONLY = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off"

DamageKind = Literal["database", "index", "table"]


class RepairFailed(DrlibError):
    """A damaged index could not be rebuilt."""

    code = "repair-failed"


@dataclass(frozen=True)
class Damaged:
    """One damaged object: ``name`` (schema.relation), the table it belongs to, what found it, the server's words."""

    kind: DamageKind
    name: str
    table: str
    found_by: str
    error: str

    def row(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "object": self.name,
            "table": self.table,
            "found by": self.found_by,
            "error": self.error,
        }


@dataclass(frozen=True)
class CorruptionScan:
    """What one scan of a database found."""

    database: str
    reachable: bool
    amcheck: str
    amcheck_used: bool
    data_checksums: bool | None
    checksum_failures: int | None
    tables: int
    indexes: int
    damaged: tuple[Damaged, ...]
    #: objects a check could not look at (a lock held too long, no privilege): name -> why
    unchecked: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """Reachable and nothing damaged (a checksum failure counted earlier is reported, not counted here)."""
        return self.reachable and not self.damaged

    @property
    def damaged_tables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.name for d in self.damaged if d.kind == "table"))

    @property
    def damaged_indexes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.name for d in self.damaged if d.kind == "index"))

    @property
    def repairable_indexes(self) -> tuple[str, ...]:
        """Damaged indexes whose table read cleanly: ``REINDEX`` can rebuild them from it."""
        bad_tables = set(self.damaged_tables)
        return tuple(dict.fromkeys(d.name for d in self.damaged if d.kind == "index" and d.table not in bad_tables))

    @property
    def needs_restore(self) -> bool:
        """Damage a REINDEX cannot fix: the database unreachable, a table, or an index on a damaged table."""
        return (
            not self.reachable
            or bool(self.damaged_tables)
            or bool(set(self.damaged_indexes) - set(self.repairable_indexes))
        )

    def describe(self) -> str:
        if not self.reachable:
            return f"{self.database} unreachable"
        if not self.damaged:
            return f"none: {self.tables} table(s) and {self.indexes} index(es) checked"
        return ", ".join(f"{d.kind} {d.name}" for d in self.damaged)

    def checks(self, *, warn_only: bool = False, prefix: str = "") -> Checks:
        """The scan as checks; ``warn_only``: damage is a finding to act on (detection), not a failure."""
        results: list[CheckResult] = [
            check(
                f"{prefix}database_reachable",
                self.reachable,
                expected="connect and query",
                observed="answers" if self.reachable else self._connect_error(),
                warn_only=warn_only,
            )
        ]
        if not self.reachable:
            return Checks(results)
        results.append(
            check(
                f"{prefix}amcheck",
                self.amcheck_used,
                expected="amcheck verifies every btree index and table",
                observed=self.amcheck,
                detail=""
                if self.amcheck_used
                else "tables and indexes were read instead; install amcheck "
                "(postgresql-contrib) and grant the role CREATE to check without reading through every index",
                warn_only=True,
            )
        )
        results.append(
            check(
                f"{prefix}data_checksums",
                bool(self.data_checksums),
                expected="on (initdb --data-checksums): every page read is verified",
                observed="on" if self.data_checksums else "off",
                detail="" if self.data_checksums else "damaged pages are found only by the checks that read them",
                warn_only=True,
            )
        )
        if self.checksum_failures is not None:
            results.append(
                check(
                    f"{prefix}checksum_failures",
                    self.checksum_failures == 0,
                    expected=0,
                    observed=self.checksum_failures,
                    detail="pg_stat_database.checksum_failures of this database since its statistics were reset "
                    "(the damaged pages are named by the checks below; pg_stat_reset() clears the count)",
                    warn_only=True,
                )
            )
        for name, why in self.unchecked.items():
            results.append(check(f"{prefix}checked:{name}", False, expected="checked", observed=why, warn_only=True))
        for damaged in self.damaged:
            results.append(
                check(
                    f"{prefix}corruption:{damaged.kind}:{damaged.name}",
                    False,
                    expected="intact",
                    observed=damaged.error,
                    detail=f"found by {damaged.found_by}"
                    + (f"; table {damaged.table}" if damaged.kind == "index" else ""),
                    warn_only=warn_only,
                )
            )
        results.append(
            check(
                f"{prefix}no_corruption",
                not self.damaged,
                expected="no damaged table or index",
                observed=self.describe(),
                warn_only=warn_only,
            )
        )
        return Checks(results)

    def rows(self) -> list[dict[str, str]]:
        return [d.row() for d in self.damaged]

    def _connect_error(self) -> str:
        return next((d.error for d in self.damaged if d.kind == "database"), "no connection")


@dataclass(frozen=True)
class Relation:
    oid: int
    name: str
    table: str
    kind: str
    #: an index: its key columns when they are plain columns (read by an index scan without amcheck)
    columns: tuple[str, ...] = ()


# -- the scan ------------------------------------------------------------------------------------
def scan_database(target: PgTarget, *, use_amcheck: bool = True, read_tables: bool = True) -> CorruptionScan:
    """Check ``target``'s database for damage (see the module docstring). Never raises for damage it finds;
    a database that cannot be reached is reported as such."""
    started = time.monotonic()
    try:
        conn = _connect(target)
    except (DrlibError, psycopg.Error) as exc:
        error = exc.message if isinstance(exc, DrlibError) else redact(str(exc)).strip()
        return CorruptionScan(
            database=target.name,
            reachable=False,
            amcheck="not run: no connection",
            amcheck_used=False,
            data_checksums=None,
            checksum_failures=None,
            tables=0,
            indexes=0,
            damaged=(Damaged("database", target.name, "", "connect", error),),
            seconds=time.monotonic() - started,
        )
    scanner = _Scanner(target, conn)
    try:
        return scanner.run(use_amcheck=use_amcheck, read_tables=read_tables, started=started)
    finally:
        scanner.close()


def _connect(target: PgTarget) -> psycopg.Connection:
    conn = target.connect(autocommit=True)
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    conn.execute("SELECT 1")
    return conn


class _Scanner:
    """One scan's connection: reconnects when a check took the server process down with it."""

    def __init__(self, target: PgTarget, conn: psycopg.Connection) -> None:
        self.target = target
        self.conn = conn
        self.damaged: list[Damaged] = []
        self.unchecked: dict[str, str] = {}
        self.amcheck_schema: str | None = None
        self.installed = False

    def close(self) -> None:
        if self.installed:
            with suppress(psycopg.Error, DrlibError):
                self._live().execute(f"DROP EXTENSION IF EXISTS amcheck; DROP SCHEMA IF EXISTS {AMCHECK_SCHEMA}")
        with suppress(psycopg.Error):
            self.conn.close()

    def _live(self) -> psycopg.Connection:
        """The scan's connection; a new one when the last went down with its server process (the server
        then restarts every session and recovers: waited for up to ``RECOVERY_WAIT`` seconds)."""
        if not (self.conn.closed or self.conn.broken):
            return self.conn
        deadline = time.monotonic() + RECOVERY_WAIT
        while True:
            try:
                self.conn = _connect(self.target)
                return self.conn
            except DrlibError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def run(self, *, use_amcheck: bool, read_tables: bool, started: float) -> CorruptionScan:
        conn = self.conn
        checksums_row = conn.execute("SELECT current_setting('data_checksums') = 'on'").fetchone()
        failures_row = conn.execute(
            "SELECT checksum_failures FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        amcheck = self._amcheck() if use_amcheck else "not used (use_amcheck = False)"
        tables, indexes = _relations(conn)
        if self.amcheck_schema is not None:
            for index in indexes:
                self._probe(index, "amcheck bt_index_check", self._bt_index_check(index))
            for table in tables:
                self._verify_heap(table)
        if read_tables:
            for table in tables:
                if table.kind != "t" and table.name not in {d.name for d in self.damaged}:
                    self._probe(table, "a full read", _full_read(table))
        if self.amcheck_schema is None:
            for index in indexes:
                if index.name.startswith("pg_toast."):
                    continue  # read through by the full read of its table (detoasting uses it)
                if index.columns:
                    self._probe(index, "an index scan", _index_read(index), index_scan=True)
                else:
                    self.unchecked[index.name] = "an expression index: checked only by amcheck"
        return CorruptionScan(
            database=self.target.name,
            reachable=True,
            amcheck=amcheck,
            amcheck_used=self.amcheck_schema is not None,
            data_checksums=bool(checksums_row and checksums_row[0]),
            checksum_failures=int(failures_row[0]) if failures_row and failures_row[0] is not None else None,
            tables=len(tables),
            indexes=len(indexes),
            damaged=tuple(self.damaged),
            unchecked=dict(self.unchecked),
            seconds=round(time.monotonic() - started, 3),
        )

    def _amcheck(self) -> str:
        """Find amcheck, or install it in a schema of its own; what happened, for the report."""
        conn = self.conn
        row = conn.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'amcheck'"
        ).fetchone()
        if row:
            self.amcheck_schema = str(row[0])
            return f"used (installed in schema {row[0]})"
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone()
        if not available:
            return "unavailable: not installed on the server (package postgresql-contrib)"
        try:
            with conn.transaction():
                conn.execute(f"CREATE SCHEMA {AMCHECK_SCHEMA}")
                conn.execute(f"CREATE EXTENSION amcheck SCHEMA {AMCHECK_SCHEMA}")
        except psycopg.Error as exc:
            return f"unavailable: cannot be installed here ({_message(exc)})"
        self.amcheck_schema, self.installed = AMCHECK_SCHEMA, True
        return "used (installed for this check, removed afterwards)"

    def _bt_index_check(self, index: Relation) -> sql.Composed:
        return sql.SQL("SELECT {}.bt_index_check(index => {}::regclass, heapallindexed => false)").format(
            sql.Identifier(self.amcheck_schema or AMCHECK_SCHEMA), sql.Literal(index.oid)
        )

    def _verify_heap(self, table: Relation) -> None:
        query = sql.SQL(
            "SELECT blkno, offnum, attnum, msg FROM {}.verify_heapam(relation => {}::regclass, "
            "on_error_stop => false, check_toast => true) LIMIT 3"
        ).format(sql.Identifier(self.amcheck_schema or AMCHECK_SCHEMA), sql.Literal(table.oid))
        rows = self._probe(table, "amcheck verify_heapam", query)
        if rows:
            problems = "; ".join(f"block {r[0]} item {r[1]}: {r[3]}" for r in rows)
            self.damaged.append(Damaged("table", table.name, table.table, "amcheck verify_heapam", problems))

    def _probe(
        self, relation: Relation, found_by: str, query: sql.Composed, *, index_scan: bool = False
    ) -> list[tuple[Any, ...]]:
        """Run ``query``; an error (or the server process lost while running it) records the damage; a lock
        held too long or a missing privilege leaves the object unchecked."""
        conn = self._live()
        try:
            with conn.transaction():
                if index_scan:
                    conn.execute(INDEX_SCAN_ONLY)
                return list(conn.execute(query).fetchall())
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            self.unchecked[relation.name] = f"not checked: {_message(exc)}"
        except psycopg.errors.InsufficientPrivilege as exc:
            self.unchecked[relation.name] = f"not checked: {_message(exc)}"
        except psycopg.Error as exc:
            error = _message(exc)
            if self.conn.closed or self.conn.broken:
                error = f"the server process ended while reading it ({error})"
            self.damaged.append(Damaged(_kind(relation), relation.name, relation.table, found_by, error))
        return []


def _kind(relation: Relation) -> DamageKind:
    return "index" if relation.kind == "i" else "table"


def _message(exc: BaseException) -> str:
    lines = redact(str(exc)).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _relations(conn: psycopg.Connection) -> tuple[list[Relation], list[Relation]]:
    """The tables (with TOAST tables and materialized views) and btree indexes outside the catalogues."""
    rows = conn.execute(
        """
        SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relkind,
               CASE WHEN t.oid IS NULL THEN format('%I.%I', n.nspname, c.relname)
                    ELSE format('%I.%I', tn.nspname, t.relname) END,
               CASE WHEN c.relkind = 'i' AND NOT (0 = ANY (i.indkey::int2[])) THEN
                 (SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord)
                    FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE k.ord <= i.indnkeyatts)
               END,
               i.indpred IS NOT NULL
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_index i ON i.indexrelid = c.oid
          LEFT JOIN pg_class t ON t.oid = i.indrelid
          LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
          LEFT JOIN pg_am am ON am.oid = c.relam
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
           AND c.relpersistence <> 't'
           AND (c.relkind IN ('r', 'm', 't')
                OR (c.relkind = 'i' AND am.amname = 'btree' AND i.indisvalid AND i.indisready))
           AND (n.nspname <> 'pg_toast' OR EXISTS (
                 SELECT 1 FROM pg_class o JOIN pg_namespace onsp ON onsp.oid = o.relnamespace
                  WHERE onsp.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND o.reltoastrelid IN (c.oid, coalesce(i.indrelid, 0))))
         ORDER BY c.relkind DESC, 2
        """
    ).fetchall()
    tables, indexes = [], []
    for oid, name, kind, table, columns, partial in rows:
        if kind == "i":
            plain = tuple(columns) if columns and not partial else ()
            indexes.append(Relation(int(oid), str(name), str(table), "i", plain))
        else:
            tables.append(Relation(int(oid), str(name), str(name), str(kind)))
    return tables, indexes


def _full_read(table: Relation) -> sql.Composed:
    """Every column of every row, TOAST included: a sequential scan that errors is damage."""
    return sql.SQL("SELECT count(*), sum(length(r::text)) FROM ONLY {} r").format(_qualified(table.name))


def _index_read(index: Relation) -> sql.Composed:
    """An index scan over the index's key columns (sequential scans, bitmaps and sorts switched off)."""
    columns = sql.SQL(", ").join(sql.SQL(c) for c in index.columns)  # already quote_ident-ed by the server
    return sql.SQL("SELECT count(*) FROM (SELECT {c} FROM ONLY {t} ORDER BY {c}) s").format(
        c=columns, t=_qualified(index.table)
    )


def _qualified(name: str) -> sql.Composable:
    return sql.SQL(name)  # format('%I.%I') by the server: quoted where needed


# -- the repair -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReindexResult:
    """Indexes rebuilt, with how long each took."""

    database: str
    rebuilt: dict[str, float]
    concurrently: bool


def reindex_statement(index: str, *, concurrently: bool) -> str:
    return f"REINDEX INDEX {'CONCURRENTLY ' if concurrently else ''}{index}"


def reindex_indexes(
    target: PgTarget, indexes: tuple[str, ...], *, concurrently: bool = False, confirm: bool = False
) -> ReindexResult | RestorePlan:
    """Rebuild each of ``indexes`` (names as a scan reports them) from its table; a plan unless ``confirm``.
    ``concurrently``: writes go on meanwhile (slower; a failure leaves an invalid ``*_ccnew`` index to drop)."""
    statements = tuple(reindex_statement(i, concurrently=concurrently) for i in indexes)
    if not confirm:
        return RestorePlan(action=f"rebuilding {len(indexes)} damaged index(es) of {target.name}", steps=statements)
    rebuilt: dict[str, float] = {}
    with _repair_connection(target) as conn:
        for index in indexes:
            statement = sql.SQL("REINDEX INDEX {}{}").format(
                sql.SQL("CONCURRENTLY ") if concurrently else sql.SQL(""), sql.SQL(_index_name(conn, index))
            )
            started = time.monotonic()
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                done = f" ({', '.join(rebuilt)} rebuilt before it)" if rebuilt else ""
                raise RepairFailed(
                    f"{reindex_statement(index, concurrently=concurrently)} failed on {target.settings.address}: "
                    f"{_message(exc)}{done}. If its table reads with errors too, the index cannot be rebuilt from "
                    "it: restore the database from a backup"
                    + (". A failed CONCURRENTLY leaves an invalid *_ccnew index: drop it" if concurrently else "")
                ) from exc
            rebuilt[index] = round(time.monotonic() - started, 3)
    return ReindexResult(database=target.name, rebuilt=rebuilt, concurrently=concurrently)


def _index_name(conn: psycopg.Connection, index: str) -> str:
    """``index`` as the server quotes it, refused unless it names an index."""
    try:
        row = conn.execute(
            "SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s::regclass",
            (index,),
        ).fetchone()
    except psycopg.Error as exc:
        raise RepairFailed(f"no index {index!r} in {conn.info.dbname}: {_message(exc)}") from exc
    if row is None or row[1] != "i":
        raise RepairFailed(f"{index!r} is not an index of {conn.info.dbname}: only indexes are rebuilt")
    return str(row[0])


@contextmanager
def _repair_connection(target: PgTarget) -> Iterator[psycopg.Connection]:
    conn = target.connect(autocommit=True)
    try:
        yield conn
    finally:
        conn.close()
