"""The runbook's database verification, as checks with expected and observed values.

Connection (``SELECT version()``), expected tables, row counts equal to the backup manifest,
foreign keys present (the runbook's ``pg_constraint`` query), no orphaned rows, and the
newest ``created_at`` equal to the manifest's ("data matches backup timestamp").
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

from drlib.checks import CheckResult, Checks, check
from drlib.config import OrphanCheck
from drlib.exceptions import ConnectionFailed
from drlib.postgres.backup import foreign_keys, table_stats
from drlib.postgres.check_sets import hand_written_orphan_checks, required_tables
from drlib.postgres.connection import PgTarget
from drlib.postgres.manifest import BackupManifest
from drlib.secrets import redact


def orphan_query(spec: OrphanCheck) -> sql.Composed:
    """The runbook's orphan query, generalised: child rows whose parent row is missing."""
    return sql.SQL(
        "SELECT count(*) FROM {child} c LEFT JOIN {parent} p ON c.{ccol} = p.{pcol} "
        "WHERE c.{ccol} IS NOT NULL AND p.{pcol} IS NULL"
    ).format(
        child=sql.Identifier(spec.child_table),
        parent=sql.Identifier(spec.parent_table),
        ccol=sql.Identifier(spec.child_column),
        pcol=sql.Identifier(spec.parent_column),
    )


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def existing_tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    ).fetchall()
    return {r[0] for r in rows}


def verify_database(*, target: PgTarget, manifest: BackupManifest | None, exact: bool = True) -> Checks:
    """Run every database check against ``target`` (compared with ``manifest`` when given).

    ``exact``: row counts and newest rows equal the backup's (right after a restore). Otherwise
    at least the backup's (once the application has written again)."""
    results: list[CheckResult] = []
    try:
        conn = target.connect()
    except ConnectionFailed as exc:
        return Checks(
            [
                check(
                    "database_connection",
                    False,
                    expected="SELECT version() succeeds",
                    observed="connection failed",
                    detail=exc.message,
                )
            ]
        )
    with conn:
        try:
            _run_checks(conn, target=target, manifest=manifest, exact=exact, results=results)
        except psycopg.Error as exc:
            reason = redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            results.append(
                check(
                    "database_queries",
                    False,
                    expected="every verification query runs",
                    observed=type(exc).__name__,
                    detail=f"{reason}: check the database user's privileges and that the server is up",
                )
            )
    return Checks(results)


def _run_checks(
    conn: psycopg.Connection,
    *,
    target: PgTarget,
    manifest: BackupManifest | None,
    exact: bool,
    results: list[CheckResult],
) -> None:
    settings = target.settings
    version_row = conn.execute("SELECT version()").fetchone()
    results.append(
        check(
            "database_connection",
            True,
            expected="SELECT version() succeeds",
            observed=str(version_row[0]).split(",")[0] if version_row else "?",
        )
    )
    present = existing_tables(conn)
    tables = required_tables(settings)
    missing = [t for t in tables if t not in present]
    results.append(
        check(
            "expected_tables",
            not missing,
            expected=sorted(tables),
            observed=sorted(t for t in tables if t in present),
            detail=f"missing: {', '.join(missing)}" if missing else "",
        )
    )
    stats = table_stats(conn, tables, settings.created_at_column)
    if manifest is not None:
        for table, expected in manifest.tables.items():
            observed = stats.get(table)
            rows = observed.rows if observed else -1
            results.append(
                check(
                    f"row_count:{table}",
                    rows == expected.rows if exact else rows >= expected.rows,
                    expected=expected.rows if exact else f">= {expected.rows}",
                    observed=rows if observed else "table missing",
                    detail="equals the backup manifest" if exact else "at least the backup's rows",
                )
            )
        fks = set(foreign_keys(conn))
        missing_fks = sorted(set(manifest.foreign_keys) - fks)
        results.append(
            check(
                "foreign_keys",
                not missing_fks,
                expected=len(manifest.foreign_keys),
                observed=len(fks & set(manifest.foreign_keys)),
                detail=f"missing: {', '.join(missing_fks)}"
                if missing_fks
                else "every foreign key of the backup is present",
            )
        )
    else:
        fks = set(foreign_keys(conn))
        results.append(check("foreign_keys", bool(fks), expected="at least one", observed=len(fks)))
    for spec in hand_written_orphan_checks(settings):
        if spec.child_table not in present or spec.parent_table not in present:
            results.append(check(spec.name, False, expected=0, observed="table missing"))
            continue
        row = conn.execute(orphan_query(spec)).fetchone()
        orphans = int(row[0]) if row else -1
        results.append(
            check(
                spec.name,
                orphans == 0,
                expected=0,
                observed=orphans,
                detail=f"{spec.child_table}.{spec.child_column} → {spec.parent_table}.{spec.parent_column}",
            )
        )
    if manifest is not None:
        for table, expected in manifest.tables.items():
            if expected.newest_created_at is None:
                continue
            observed = stats.get(table)
            got = observed.newest_created_at if observed else None
            newest = expected.newest_created_at
            results.append(
                check(
                    f"newest_created_at:{table}",
                    got == newest if exact else got is not None and _ts(got) >= _ts(newest),
                    expected=newest if exact else f">= {newest}",
                    observed=got,
                    detail="data matches the backup timestamp",
                )
            )
