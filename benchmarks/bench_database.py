"""The restore benchmark's database: several large tables of different shapes, generated in SQL.

Five tables sized so each is a real share of the restore (so ``pg_restore -j`` has work to spread):

- ``customers``: narrow parent rows (primary key, a unique index on ``email``);
- ``documents``: wide text rows (1-1.9 kB bodies, stored inline), a foreign key to ``customers``;
- ``events``: narrow numeric rows (bigint, smallint, numeric, float8), a foreign key to ``documents``;
- ``orders``: medium rows with a ``jsonb`` payload, a foreign key to ``customers``;
- ``measurements``: a table partitioned by month (12 partitions) with a partitioned index.

Rows are made by ``generate_series`` (deterministic: the same size gives the same data), loaded by
two sessions at once, then the keys and indexes are built (also two at a time) and the tables
vacuumed, so ``size_mb`` is reached in about a minute per GB on two cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from drlib.postgres.connection import PgTarget, create_database, drop_database


@dataclass(frozen=True)
class TableShape:
    """One table: its share of the database's size and what a row costs on disk (indexes included)."""

    name: str
    share: float
    bytes_per_row: int


#: shares add up to 1; bytes per row measured on PostgreSQL 15 (heap + indexes, after VACUUM)
SHAPES: tuple[TableShape, ...] = (
    TableShape("customers", 0.03, 166),
    TableShape("documents", 0.30, 1665),
    TableShape("events", 0.25, 109),
    TableShape("orders", 0.20, 349),
    TableShape("measurements", 0.22, 93),
)

SCHEMA_SQL = """
CREATE TABLE customers (
    id bigint NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    country char(2) NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE documents (
    id bigint NOT NULL,
    customer_id bigint NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL
);
ALTER TABLE documents ALTER COLUMN body SET STORAGE MAIN;
CREATE TABLE events (
    id bigint NOT NULL,
    document_id bigint NOT NULL,
    kind smallint NOT NULL,
    amount numeric(12, 2) NOT NULL,
    score double precision NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE orders (
    id bigint NOT NULL,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    total numeric(12, 2) NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE measurements (
    sensor_id integer NOT NULL,
    created_at timestamptz NOT NULL,
    reading double precision NOT NULL,
    quality smallint NOT NULL
) PARTITION BY RANGE (created_at);
"""

#: the rows of each table, for ``n`` rows (``{customers}``/``{documents}``: the parents' row counts)
LOAD_SQL: dict[str, str] = {
    "customers": """
        INSERT INTO customers
        SELECT i, 'Customer ' || i, 'customer' || i || '@example.com',
               (ARRAY['DE','FR','GB','US','JP','BR','IN','NG'])[1 + i % 8],
               timestamptz '2024-01-01 00:00:00+00' + i * interval '7 seconds'
        FROM generate_series(1, {n}) AS i""",
    "documents": """
        INSERT INTO documents
        SELECT i, 1 + (i * 7) % {customers}, 'Document ' || i || ' ' || left(md5(i::text), 12),
               substr(pool.text, 1 + ((i::bigint * 7919) % 60000)::int, 1000 + i % 900),
               timestamptz '2024-06-01 00:00:00+00' + i * interval '3 seconds'
        FROM generate_series(1, {n}) AS i,
             (SELECT string_agg(md5(g::text), ' ') AS text FROM generate_series(1, 2000) AS g) AS pool""",
    "events": """
        INSERT INTO events
        SELECT i, 1 + (i * 13) % {documents}, (i % 17)::smallint, ((i * 37) % 100000) / 100.0,
               sqrt(i::double precision), timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second'
        FROM generate_series(1, {n}) AS i""",
    "orders": """
        INSERT INTO orders
        SELECT i, 1 + (i * 11) % {customers}, (ARRAY['new','paid','shipped','returned'])[1 + i % 4],
               ((i * 53) % 500000) / 100.0,
               jsonb_build_object('lines', jsonb_build_array(
                   jsonb_build_object('sku', 'SKU-' || (i % 9973), 'qty', 1 + i % 5, 'price', (i % 997) / 10.0),
                   jsonb_build_object('sku', 'SKU-' || (i % 7919), 'qty', 1 + i % 3, 'price', (i % 499) / 10.0)),
                   'channel', (ARRAY['web','app','shop'])[1 + i % 3], 'note', md5(i::text)),
               timestamptz '2025-03-01 00:00:00+00' + i * interval '2 seconds'
        FROM generate_series(1, {n}) AS i""",
    "measurements": """
        INSERT INTO measurements
        SELECT 1 + i % 5000, timestamptz '2025-01-01 00:00:00+00' + (i - 1) * (interval '365 days' / {n}),
               sin(i::double precision) * 100, (i % 4)::smallint
        FROM generate_series(1, {n}) AS i""",
}

#: built after the load, two at a time; the foreign keys last (they need the primary keys)
INDEX_SQL: tuple[str, ...] = (
    "ALTER TABLE documents ADD PRIMARY KEY (id)",
    "ALTER TABLE events ADD PRIMARY KEY (id)",
    "ALTER TABLE orders ADD PRIMARY KEY (id)",
    "CREATE INDEX measurements_sensor_time ON measurements (sensor_id, created_at)",
    "ALTER TABLE customers ADD PRIMARY KEY (id)",
    "CREATE UNIQUE INDEX customers_email ON customers (email)",
    "CREATE INDEX events_document ON events (document_id)",
    "CREATE INDEX orders_created_at ON orders (created_at)",
)
FOREIGN_KEY_SQL: tuple[str, ...] = (
    "ALTER TABLE documents ADD CONSTRAINT documents_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id)",
    "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id)",
    "ALTER TABLE events ADD CONSTRAINT events_document_fk FOREIGN KEY (document_id) REFERENCES documents (id)",
)
PARTITIONS = 12


def row_counts(size_mb: float) -> dict[str, int]:
    """Rows per table for a database of about ``size_mb`` MiB on disk."""
    return {s.name: max(100, int(size_mb * 1024 * 1024 * s.share / s.bytes_per_row)) for s in SHAPES}


def partition_sql() -> list[str]:
    """Twelve monthly partitions of ``measurements`` covering 2025 (and a default one)."""
    statements = []
    for month in range(1, PARTITIONS + 1):
        start = f"2025-{month:02d}-01"
        end = f"2025-{month + 1:02d}-01" if month < 12 else "2026-01-01"
        statements.append(
            f"CREATE TABLE measurements_2025_{month:02d} PARTITION OF measurements "
            f"FOR VALUES FROM ('{start} 00:00:00+00') TO ('{end} 00:00:00+00')"
        )
    statements.append("CREATE TABLE measurements_default PARTITION OF measurements DEFAULT")
    return statements


def _execute(conn: psycopg.Connection, statement: str) -> None:
    """Run our own SQL text (built from the literals above, never from input)."""
    conn.execute(statement)  # type: ignore[arg-type,unused-ignore]  # a LiteralString to type checkers that enforce it


def _in_parallel(target: PgTarget, statements: Sequence[str], *, sessions: int) -> None:
    """Run ``statements`` over ``sessions`` connections at once (each statement on its own)."""

    def run(statement: str) -> None:
        with target.connect(connect_timeout=10) as conn:
            _execute(conn, statement)

    with ThreadPoolExecutor(max_workers=sessions) as pool:
        for future in [pool.submit(run, statement) for statement in statements]:
            future.result()


def generate_database(
    target: PgTarget,
    *,
    size_mb: float,
    sessions: int = 2,
    say: Callable[[str], None] = print,
) -> dict[str, int]:
    """(Re)create ``target.name`` with the benchmark's tables at about ``size_mb`` MiB; returns the row counts."""
    drop_database(target, target.name)
    create_database(target, target.name)
    counts = row_counts(size_mb)
    with target.connect() as conn:
        for statement in [SCHEMA_SQL, *partition_sql()]:
            _execute(conn, statement)
    say(f"  loading {', '.join(f'{name} {rows:,}' for name, rows in counts.items())} rows")
    parents = {"customers": counts["customers"], "documents": counts["documents"]}
    loads = [LOAD_SQL[name].format(n=rows, **parents) for name, rows in counts.items()]
    # the biggest first, so the two sessions finish close together
    order = sorted(range(len(loads)), key=lambda i: -SHAPES[i].share)
    _in_parallel(target, [loads[i] for i in order], sessions=sessions)
    say("  building keys and indexes")
    _in_parallel(target, INDEX_SQL, sessions=sessions)
    _in_parallel(target, FOREIGN_KEY_SQL, sessions=sessions)
    _in_parallel(target, [f"VACUUM (ANALYZE) {s.name}" for s in SHAPES], sessions=sessions)
    return counts


def table_sizes(target: PgTarget) -> dict[str, int]:
    """Bytes on disk per table (partitions summed into their parent, indexes included)."""
    with target.connect() as conn:
        rows = conn.execute(
            """
            SELECT coalesce(parent.relname, c.relname), sum(pg_total_relation_size(c.oid))::bigint
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
            LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
            LEFT JOIN pg_class parent ON parent.oid = i.inhparent
            WHERE c.relkind = 'r'
            GROUP BY 1 ORDER BY 2 DESC
            """
        ).fetchall()
    return {str(name): int(size) for name, size in rows}


def database_size(target: PgTarget) -> int:
    with target.connect() as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0
