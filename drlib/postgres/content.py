"""Row counts, newest rows and the content fingerprint of every table, read in parallel (as the
manifest's :class:`~drlib.postgres.manifest.TableStats`).

The content fingerprint of a table is an order-independent 64-bit hash sum over its rows that
changes when any row changes in place, not only when rows are added or deleted, read in one pass
with ``count(*)`` and the newest-row ``max()``. Two ways to hash a row (the manifest records which):

- ``record``: ``sum(hash_record_extended(ROW(columns), 0))``, each value hashed by its type's own hash
  function, without printing it (two to three times faster). Used when every column is of a built-in
  type whose equality is its value (:data:`RECORD_SAFE_TYPES`) with a deterministic collation; a change
  between values the type calls equal (``1.0`` → ``1.00``) is not seen. Not enums (their hash is the
  label's OID, which a restore assigns anew), ``bit``/``varbit`` (no 64-bit hash), arrays (their hash
  skips the dimensions and bounds: ``{1,2,3,4}`` = ``{{1,2},{3,4}}``) nor ``interval`` (``1 mon`` =
  ``30 days``).
- ``text``: ``sum(hashtextextended(ROW(columns)::text, 0))`` for every other table (``json``, ``citext``,
  geometric types, case-insensitive collations…), with the session settings that fix how values print
  (time zone, date style, float digits), so a restored database prints its rows as the original did.

At backup time every worker joins the snapshot ``pg_dump`` dumps (``SET TRANSACTION SNAPSHOT``), so the
fingerprint describes the dump.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psycopg
from psycopg import sql

from drlib.config import DatabaseSettings
from drlib.postgres.catalog import Table, matches
from drlib.postgres.connection import PgTarget, sql_errors
from drlib.postgres.manifest import HashMethod as Method
from drlib.postgres.manifest import TableStats
from drlib.units import format_bytes

T = TypeVar("T")

#: how values print while fingerprinting: the same everywhere, whatever the server's defaults
STABLE_OUTPUT = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
    "SET lc_monetary = 'C'",
    "SELECT set_config('search_path', '', false)",
)


#: built-in types whose 64-bit hash function sees every change a dump and restore could make to a value (not
#: enums: they hash their label's OID, which differs in a restored database)
RECORD_SAFE_TYPES = (
    "bool",
    "bytea",
    "char",
    "name",
    "int2",
    "int4",
    "int8",
    "oid",
    "text",
    "varchar",
    "bpchar",
    "float4",
    "float8",
    "numeric",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "uuid",
    "jsonb",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "pg_lsn",
)

#: per table: can its rows be hashed as records? (domains are looked through two levels deep; anything
#: else, arrays included, falls back to text)
RECORD_SAFE_SQL = """
SELECT a.attrelid, bool_and(
         (a.attcollation = 0 OR coalesce((SELECT co.collisdeterministic FROM pg_catalog.pg_collation co
                                          WHERE co.oid = a.attcollation), false))
         AND t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
         AND t.typname OPERATOR(pg_catalog.=) ANY (%(safe)s::pg_catalog.text[]))
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t0 ON t0.oid = a.atttypid
  JOIN pg_catalog.pg_type t1 ON t1.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END
  JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN t1.typtype = 'd' THEN t1.typbasetype ELSE t1.oid END
 WHERE a.attrelid = ANY (%(tables)s::pg_catalog.regclass[]) AND a.attnum > 0 AND NOT a.attisdropped
 GROUP BY a.attrelid
"""


def hashing_methods(conn: psycopg.Connection, tables: Sequence[Table]) -> dict[str, Method]:
    """How each table's rows are hashed: ``record`` when every column allows it, else ``text``."""
    if not tables:
        return {}
    rows = conn.execute(
        "SELECT t.name, coalesce(s.safe, false) FROM unnest(%(tables)s::pg_catalog.text[]) AS t(name) "
        f"LEFT JOIN ({RECORD_SAFE_SQL}) AS s(relid, safe) ON s.relid = t.name::pg_catalog.regclass",
        {"tables": [t.name for t in tables], "safe": list(RECORD_SAFE_TYPES)},
    ).fetchall()
    return {name: "record" if safe else "text" for name, safe in rows}


def wants_content(table: Table, settings: DatabaseSettings, *, everything: bool = False) -> str:
    """Why a table gets no content fingerprint ("" when it gets one)."""
    if everything or matches(table.plain_name, settings.content_fingerprint_tables):
        return ""
    if table.size_bytes > settings.content_fingerprint_limit:
        return (
            f"{format_bytes(table.size_bytes)} > content_fingerprint_limit "
            f"{format_bytes(settings.content_fingerprint_limit)}: add it to content_fingerprint_tables to check it"
        )
    return ""


def table_query(table: Table, *, content: bool, method: Method = "text") -> sql.Composed:
    """count(*), the newest row (as text: 'infinity' and BC dates too) and the content fingerprint.

    The row is hashed with its columns in name order: a restore may put inherited columns in
    another order (pg_dump recreates a child's columns after its parent's)."""
    newest = (
        sql.SQL("max({})::text").format(sql.Identifier(table.newest_row_column))
        if table.newest_row_column
        else sql.SQL("NULL")
    )
    row = (
        sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier("_r", c) for c in sorted(table.columns)))
        if len(table.columns) > 1
        else sql.SQL("ROW(_r.*)")
    )
    hashed = "hash_record_extended({}, 0)" if method == "record" else "hashtextextended({}::text, 0)"
    fingerprint = sql.SQL(f"coalesce(sum(pg_catalog.{hashed}), 0)").format(row) if content else sql.SQL("NULL")
    return sql.SQL("SELECT count(*), {}, {} FROM ONLY {}.{} AS _r").format(
        newest, fingerprint, sql.Identifier(table.schema), sql.Identifier(table.relname)
    )


def parallel_reads(
    target: PgTarget,
    tasks: Sequence[Callable[[psycopg.Connection], T]],
    *,
    jobs: int = 2,
    snapshot: str | None = None,
) -> list[T]:
    """Run read-only ``tasks`` on ``jobs`` connections at once; results in the order of ``tasks``.

    Each connection reads in one repeatable-read transaction with :data:`STABLE_OUTPUT`, joining
    ``snapshot`` when given. Interrupted or failed, the queries still running are cancelled."""
    local = threading.local()
    opened: list[psycopg.Connection] = []
    lock = threading.Lock()

    def connection() -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = target.connect(autocommit=False)
            with lock:
                opened.append(conn)
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if snapshot:
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            for statement in STABLE_OUTPUT:
                conn.execute(statement)
            local.conn = conn
        return conn

    def run(task: Callable[[psycopg.Connection], T]) -> T:
        with sql_errors(target, doing="reading the database"):
            return task(connection())

    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks) or 1)), thread_name_prefix="drlib-read")
    try:
        return list(pool.map(run, tasks))
    except BaseException:  # interrupted or failed: stop the queries still running, not wait for them
        pool.shutdown(wait=False, cancel_futures=True)
        for conn in list(opened):
            conn.cancel_safe()
        raise
    finally:
        pool.shutdown(wait=True)
        for conn in opened:
            conn.close()


def read_contents(
    target: PgTarget,
    tables: Iterable[Table],
    settings: DatabaseSettings,
    *,
    jobs: int = 2,
    snapshot: str | None = None,
    content: bool = True,
    everything: bool = False,
    methods: Mapping[str, Method] | None = None,
) -> dict[str, TableStats]:
    """Rows, newest row and (with ``content``) the content fingerprint of each table, ``jobs`` at a time.

    ``snapshot``: an exported snapshot every worker joins (the backup's); without it each worker
    reads in its own repeatable-read transaction. ``everything``: fingerprint tables over the limit too.
    ``methods``: how to hash each table's rows (a manifest's, to compare with it); a table not in it
    gets what :func:`hashing_methods` says."""
    ordered = sorted(tables, key=lambda t: t.size_bytes, reverse=True)
    chosen = dict(methods or {})
    if content and (unknown := [t for t in ordered if t.name not in chosen]):
        with sql_errors(target, doing="reading the column types"), target.connect() as conn:
            chosen.update(hashing_methods(conn, unknown))

    def reader(table: Table) -> Callable[[psycopg.Connection], TableStats]:
        skipped = wants_content(table, settings, everything=everything) if content else "not asked for"
        method = chosen.get(table.name, "text")

        def read(conn: psycopg.Connection) -> TableStats:
            started = time.monotonic()
            why_not = skipped
            try:
                with conn.transaction():  # a savepoint: a row too big to print fails this table only
                    row = conn.execute(table_query(table, content=not why_not, method=method)).fetchone()
            except (psycopg.errors.OutOfMemory, psycopg.errors.ProgramLimitExceeded) as exc:
                why_not = f"a row is too large to fingerprint as text ({type(exc).__name__}): rows counted only"
                row = conn.execute(table_query(table, content=False)).fetchone()
            except psycopg.errors.DatabaseError as exc:  # a column type without a hash function: what changed
                if method != "record":
                    raise
                why_not = (
                    f"its rows cannot be hashed as the backup hashed them ({type(exc).__name__}): rows counted only"
                )
                row = conn.execute(table_query(table, content=False)).fetchone()
            assert row is not None
            return TableStats(
                rows=int(row[0]),
                newest_created_at=row[1],
                newest_column=table.newest_row_column,
                content=None if why_not else str(row[2]),
                content_skipped=why_not,
                content_method=method if not why_not else "text",
                size_bytes=table.size_bytes,
                seconds=round(time.monotonic() - started, 4),
            )

        return read

    results = parallel_reads(target, [reader(t) for t in ordered], jobs=jobs, snapshot=snapshot)
    return {t.name: r for t, r in sorted(zip(ordered, results, strict=True), key=lambda pair: pair[0].name)}
