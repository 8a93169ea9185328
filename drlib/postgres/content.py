"""Row counts, newest rows and the content fingerprint of every table, read in parallel (as the
manifest's :class:`~drlib.postgres.manifest.TableStats`).

The content fingerprint of a table is ``sum(hashtextextended(row::text, 0))`` over its rows: an
order-independent 64-bit hash sum that changes when any row changes in place, not only when rows
are added or deleted. It is read in one pass with ``count(*)`` and the newest-row ``max()``, with the
session settings that fix how values print (time zone, date style, float digits), so a restored
database prints its rows exactly as the original did. At backup time every worker joins the
snapshot ``pg_dump`` dumps (``SET TRANSACTION SNAPSHOT``), so the fingerprint describes the dump.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psycopg
from psycopg import sql

from drlib.config import DatabaseSettings
from drlib.postgres.catalog import Table, matches
from drlib.postgres.connection import PgTarget, sql_errors
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


def table_query(table: Table, *, content: bool) -> sql.Composed:
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
    fingerprint = sql.SQL("coalesce(sum(hashtextextended({}::text, 0)), 0)").format(row) if content else sql.SQL("NULL")
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
) -> dict[str, TableStats]:
    """Rows, newest row and (with ``content``) the content fingerprint of each table, ``jobs`` at a time.

    ``snapshot``: an exported snapshot every worker joins (the backup's); without it each worker
    reads in its own repeatable-read transaction. ``everything``: fingerprint tables over the limit too."""
    ordered = sorted(tables, key=lambda t: t.size_bytes, reverse=True)

    def reader(table: Table) -> Callable[[psycopg.Connection], TableStats]:
        skipped = wants_content(table, settings, everything=everything) if content else "not asked for"

        def read(conn: psycopg.Connection) -> TableStats:
            started = time.monotonic()
            why_not = skipped
            try:
                with conn.transaction():  # a savepoint: a row too big to print fails this table only
                    row = conn.execute(table_query(table, content=not why_not)).fetchone()
            except (psycopg.errors.OutOfMemory, psycopg.errors.ProgramLimitExceeded) as exc:
                why_not = f"a row is too large to fingerprint as text ({type(exc).__name__}): rows counted only"
                row = conn.execute(table_query(table, content=False)).fetchone()
            assert row is not None
            return TableStats(
                rows=int(row[0]),
                newest_created_at=row[1],
                newest_column=table.newest_row_column,
                content=None if why_not else str(row[2]),
                content_skipped=why_not,
                size_bytes=table.size_bytes,
                seconds=round(time.monotonic() - started, 4),
            )

        return read

    results = parallel_reads(target, [reader(t) for t in ordered], jobs=jobs, snapshot=snapshot)
    return {t.name: r for t, r in sorted(zip(ordered, results, strict=True), key=lambda pair: pair[0].name)}
