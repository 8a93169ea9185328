"""Maintenance connections reused within a command: given back only by a ``with`` block that ended
cleanly, with their session settings reset; never across threads, databases, or outside the block."""

from __future__ import annotations

import threading

import psycopg
import pytest

from drlib.postgres.connection import PgTarget, reusing_maintenance_connections


def backend(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]


def test_a_clean_block_gives_its_connection_back_with_its_settings_reset(target: PgTarget) -> None:
    with reusing_maintenance_connections():
        with target.maintenance.connect() as conn:
            first = backend(conn)
            default = conn.execute("SHOW search_path").fetchone()
            conn.execute("SET search_path = pg_catalog")
        with target.maintenance.connect() as conn:
            assert backend(conn) == first
            assert conn.execute("SHOW search_path").fetchone() == default != ("pg_catalog",)
    assert conn.closed  # the block's end closes what it kept


def test_an_error_other_databases_threads_and_outside_the_block_get_new_logins(target: PgTarget) -> None:
    with target.maintenance.connect() as conn:
        outside = backend(conn)
    with target.maintenance.connect() as conn:
        assert backend(conn) != outside  # no block: nothing kept

    with reusing_maintenance_connections():
        with pytest.raises(ZeroDivisionError), target.maintenance.connect() as conn:
            broken = backend(conn)
            raise ZeroDivisionError
        assert conn.closed
        with target.maintenance.connect() as conn:
            kept = backend(conn)
            assert kept != broken
        with target.connect() as live:  # the live database: an idle session would block RENAME / DROP
            backend(live)
        assert live.closed
        seen: list[int] = []

        def in_a_thread() -> None:
            with target.maintenance.connect() as other:
                seen.append(backend(other))

        worker = threading.Thread(target=in_a_thread)
        worker.start()
        worker.join()
        assert seen and seen[0] != kept
