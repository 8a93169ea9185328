"""The restore benchmark's generated database (benchmarks/bench_database.py), built small: the shapes
the benchmark relies on (several tables, a partitioned one, indexes and foreign keys) are really there."""

from __future__ import annotations

import secrets

import pytest

from benchmarks.bench_database import SHAPES, database_size, generate_database, row_counts, table_sizes
from drlib.postgres.connection import PgTarget, drop_database


def test_the_generated_database_has_every_table_shape_with_its_keys(target: PgTarget) -> None:
    bench = target.with_database(f"bench_test_{secrets.token_hex(3)}")
    try:
        counts = generate_database(bench, size_mb=4, say=lambda _: None)
        with bench.connect() as conn:
            rows = {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in counts}
            partitions = conn.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'measurements'::regclass"
            ).fetchone()
            foreign_keys = conn.execute(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
            ).fetchone()
            primary_keys = conn.execute(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND connamespace = 'public'::regnamespace"
            ).fetchone()
            orphans = conn.execute(
                "SELECT count(*) FROM events e LEFT JOIN documents d ON d.id = e.document_id WHERE d.id IS NULL"
            ).fetchone()
        sizes = table_sizes(bench)
        total = database_size(bench)
    finally:
        drop_database(target, bench.name)
    assert rows == counts == row_counts(4)
    assert partitions == (13,)  # twelve months and a default
    assert foreign_keys == (3,) and primary_keys == (4,) and orphans == (0,)
    assert set(sizes) == {shape.name for shape in SHAPES}  # partitions counted in their parent
    assert sum(sizes.values()) < total


def test_row_counts_grow_with_the_size_asked_for() -> None:
    small, large = row_counts(100), row_counts(1000)
    assert all(9 <= large[name] / small[name] <= 11 for name in small)
    assert sum(shape.share for shape in SHAPES) == pytest.approx(1.0)
