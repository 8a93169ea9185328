"""The runbook's database verification, generalised to any database and made exact.

Against a backup's manifest: the connection (``SELECT version()``); the schema object by object
(tables, columns, constraints, indexes, triggers, functions, views, sequences, partitions, types,
extensions, policies, grants, comments, rules, inheritance, default privileges, publications and the
other kinds of :mod:`drlib.postgres.fingerprint`); sequences not behind the backup;
the database's own properties and roles (:mod:`drlib.postgres.globals`); per table the row count,
the content fingerprint and the newest row (:mod:`drlib.postgres.content`); no orphaned rows for any
foreign key, the backup's included (a dropped key is exactly when orphans appear); and the
profile's hand-written checks (``check_set``, ``orphan_checks``).

``exact``: right after a restore everything must equal the backup. Otherwise (the application has
written since) rows and newest rows must be at least the backup's, content is not compared, and
objects the backup did not have are warnings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from drlib.checks import CheckResult, Checks, check
from drlib.config import DatabaseSettings, OrphanCheck
from drlib.exceptions import DrlibError
from drlib.postgres.catalog import ForeignKey, Table, discover_foreign_keys, discover_tables
from drlib.postgres.check_sets import hand_written_orphan_checks, required_tables
from drlib.postgres.connection import PgTarget
from drlib.postgres.content import parallel_reads, read_contents
from drlib.postgres.fingerprint import compare, read_schema, read_sequence_values
from drlib.postgres.globals import DatabaseProperties, describe_roles, read_database_properties
from drlib.postgres.manifest import BackupManifest, TableStats
from drlib.secrets import redact
from drlib.units import format_bytes

#: full: everything; schema: no table scans (rows and content were verified before, e.g. on the copy)
Depth = Literal["full", "schema"]
#: at most this many differences are named in one check's detail (the count is always exact)
SHOWN_DIFFERENCES = 20


def verify_database(
    *,
    target: PgTarget,
    manifest: BackupManifest | None,
    exact: bool = True,
    depth: Depth = "full",
    jobs: int = 2,
    fresh_restore: bool = False,
) -> Checks:
    """Run every database check against ``target`` (compared with ``manifest`` when given).

    ``fresh_restore``: ``target`` was just made by ``pg_restore`` and nothing else has written to it, so a
    foreign key it has, validated, proves its rows have no orphans (PostgreSQL checked every row when the
    restore added it): that key's orphan query is not run again. Never for a database in use, where
    disabled triggers or ``session_replication_role = replica`` can leave orphans behind a valid key."""
    try:
        conn = target.connect()
    except DrlibError as exc:
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
    results: list[CheckResult] = []
    with conn:
        try:
            _run_checks(
                conn,
                target=target,
                manifest=manifest,
                exact=exact,
                depth=depth,
                jobs=jobs,
                results=results,
                enforced=fresh_restore,
            )
        except (psycopg.Error, DrlibError) as exc:
            text = exc.message if isinstance(exc, DrlibError) else redact(str(exc)).strip()
            reason = text.splitlines()[0] if text else type(exc).__name__
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
    depth: Depth,
    jobs: int,
    results: list[CheckResult],
    enforced: bool = False,
) -> None:
    settings = target.settings
    version = conn.execute("SELECT version()").fetchone()
    results.append(
        check(
            "database_connection",
            True,
            expected="SELECT version() succeeds",
            observed=str(version[0]).split(",")[0] if version else "?",
        )
    )
    tables = discover_tables(conn, settings)
    results.append(_required_tables(settings, tables))
    live_fks = discover_foreign_keys(conn, settings)
    if manifest is not None:
        results.extend(_schema_checks(conn, settings, manifest, exact=exact))
        results.append(_foreign_keys_check(manifest, live_fks))
    if depth == "full":
        compare_content = exact and manifest is not None
        started = time.monotonic()
        methods = {name: stats.content_method for name, stats in manifest.tables.items()} if manifest else None
        contents = read_contents(
            target,
            tables,
            settings,
            jobs=jobs,
            content=compare_content,
            methods=methods,
        )
        if manifest is not None:
            results.extend(_table_checks(manifest, contents, exact=exact))
        if compare_content:
            results.append(_content_cost(contents, seconds=time.monotonic() - started, jobs=jobs))
        proven = [fk for fk in live_fks if fk.validated] if enforced else []
        results.extend(
            orphan_checks(
                target,
                _all_foreign_keys(manifest, live_fks),
                jobs=jobs,
                proven=proven,
                hand_written=hand_written_orphan_checks(settings),
            )
        )


# -- tables --------------------------------------------------------------------------------------


def _required_tables(settings: DatabaseSettings, tables: list[Table]) -> CheckResult:
    present = {name for t in tables for name in (t.name, t.plain_name, t.plain_name.removeprefix("public."))}
    required = required_tables(settings)
    missing = [t for t in required if t not in present]
    return (
        check(
            "expected_tables",
            not missing,
            expected=list(required) if required else f"at least one table (found {len(tables)})",
            observed=[t for t in required if t in present] if required else len(tables),
            detail=f"missing: {', '.join(missing)}" if missing else f"{len(tables)} tables found by discovery",
        )
        if required or tables
        else check(
            "expected_tables",
            False,
            expected="at least one table",
            observed=0,
            detail="no table found: check database.name, include and exclude in the profile",
        )
    )


def _table_checks(manifest: BackupManifest, contents: dict[str, TableStats], *, exact: bool) -> list[CheckResult]:
    results = []
    for table, expected in manifest.tables.items():
        observed = contents.get(table)
        results.append(_row_count(table, expected, observed, exact=exact))
        if exact:
            results.append(_content(table, expected, observed))
        results.append(_newest_row(table, expected, observed, exact=exact))
    return results


def _content_cost(contents: dict[str, TableStats], *, seconds: float, jobs: int) -> CheckResult:
    """What reading every table cost (rows, newest rows and content fingerprints in one pass)."""
    done = [c for c in contents.values() if c.content is not None]
    size = sum(c.size_bytes for c in done)
    skipped = len(contents) - len(done)
    return check(
        "content_fingerprint",
        True,
        expected="every table up to content_fingerprint_limit",
        observed=f"{len(done)} tables, {format_bytes(size)} in {seconds:.1f}s on {jobs} connections",
        detail=f"{skipped} table(s) over the limit not fingerprinted" if skipped else "",
    )


def _row_count(table: str, expected: TableStats, observed: TableStats | None, *, exact: bool) -> CheckResult:
    rows = observed.rows if observed else -1
    return check(
        f"row_count:{table}",
        rows == expected.rows if exact else rows >= expected.rows,
        expected=expected.rows if exact else f">= {expected.rows}",
        observed=rows if observed else "table missing",
        detail="equals the backup manifest" if exact else "at least the backup's rows",
    )


def _content(table: str, expected: TableStats, observed: TableStats | None) -> CheckResult:
    name = f"content:{table}"
    if expected.content is None:
        why = expected.content_skipped or "the backup has no content fingerprint (taken by an older drlib)"
        return check(name, False, expected="fingerprinted", observed="not checked", detail=why, warn_only=True)
    if observed is None:
        return check(name, False, expected=expected.content, observed="table missing")
    same = observed.content == expected.content
    detail = f"order-independent checksum of every row, {observed.seconds:.2f}s"
    if not same and observed.rows == expected.rows:
        detail = "same row count but rows changed in place: " + detail
    return check(name, same, expected=expected.content, observed=observed.content, detail=detail)


def _moment(value: str) -> tuple[int, datetime | str]:
    """A sortable form of a newest-row value: -infinity < any time < infinity; a time without a zone
    is taken as UTC (a column changed from timestamp to timestamptz still compares); anything else
    (BC dates, text) compares as text."""
    if value in ("infinity", "-infinity"):
        return (1 if value == "infinity" else -1, "")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return (0, value)
    return (0, parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def _newest_matches(got: str, newest: str, *, exact: bool) -> bool:
    have, want = _moment(got), _moment(newest)
    if type(have[1]) is not type(want[1]):  # a time against text: only equal text matches
        return got == newest if exact else have[0] >= want[0] and got >= newest
    return have == want if exact else have >= want


def _newest_row(table: str, expected: TableStats, observed: TableStats | None, *, exact: bool) -> CheckResult:
    name = f"newest_row:{table}"
    column = expected.newest_column if expected.newest_column or expected.newest_created_at is None else "created_at"
    if column is None:
        return check(
            name,
            False,
            expected="a timestamp column",
            observed="not checked",
            detail=f"no timestamp column found: set database.newest_row_columns.'{table}' in the profile to check it",
            warn_only=True,
        )
    got = observed.newest_created_at if observed else None
    newest = expected.newest_created_at
    if newest is None:
        ok = got is None if exact else True
    elif got is None:
        ok = False
    else:
        ok = _newest_matches(got, newest, exact=exact)
    return check(
        name,
        ok,
        expected=newest if exact else f">= {newest}",
        observed=got if observed else "table missing",
        detail=f"max({column}): data matches the backup timestamp",
    )


# -- schema, sequences, database properties, roles ----------------------------------------------


def _differences_check(
    name: str, differences: list[str], *, total: int, what: str, warnings: list[str] | None = None
) -> CheckResult:
    warnings = warnings or []
    shown = differences[:SHOWN_DIFFERENCES]
    more = f"; and {len(differences) - len(shown)} more" if len(differences) > len(shown) else ""
    if differences:
        return check(
            name,
            False,
            expected=f"{total} {what} as in the backup",
            observed=f"{len(differences)} differ",
            detail="; ".join(shown) + more,
        )
    if warnings:
        return check(
            name,
            False,
            expected=f"{total} {what} as in the backup",
            observed=f"{len(warnings)} extra",
            detail="; ".join(warnings[:SHOWN_DIFFERENCES]),
            warn_only=True,
        )
    return check(name, True, expected=f"{total} {what} as in the backup", observed="identical")


def _schema_checks(
    conn: psycopg.Connection, settings: DatabaseSettings, manifest: BackupManifest, *, exact: bool
) -> list[CheckResult]:
    if not manifest.schema:
        return [
            check(
                "schema",
                False,
                expected="a schema fingerprint in the manifest",
                observed="none",
                detail="the backup was taken by an older drlib: its schema cannot be compared object by object",
                warn_only=True,
            )
        ]
    live = read_schema(conn, settings)
    results = []
    for kind, objects in manifest.schema.items():
        found = compare({kind: objects}, {kind: live.get(kind, {})})
        failing = [d.describe() for d in found if exact or d.change != "unexpected"]
        extra = [d.describe() for d in found if not exact and d.change == "unexpected"]
        results.append(
            _differences_check(f"schema:{kind}", failing, total=len(objects), what=f"{kind} objects", warnings=extra)
        )
    results.append(_sequences_check(manifest.sequences, read_sequence_values(conn, settings)))
    if manifest.database_properties:
        results.append(_properties_check(manifest.database_properties, read_database_properties(conn)))
    if manifest.roles or manifest.manifest_version >= 2:
        live_roles = describe_roles(conn, list(manifest.roles))
        results.append(_roles_check(manifest.roles, {r.name: r.described() for r in live_roles}))
    return results


def _sequences_check(expected: dict[str, int | None], observed: dict[str, int | None]) -> CheckResult:
    behind = []
    for name, value in expected.items():
        if name not in observed:
            behind.append(f"missing sequence {name}")
        elif value is not None and (observed[name] is None or observed[name] < value):  # type: ignore[operator]
            behind.append(
                f"sequence {name} is at {observed[name]}, behind the backup's {value}: new rows would reuse ids"
            )
    return _differences_check("sequences", behind, total=len(expected), what="sequences at or after their value")


def _properties_check(expected: dict[str, Any], live: DatabaseProperties) -> CheckResult:
    was = DatabaseProperties.from_dict(expected).described()
    now = live.described()
    changed = [f"database {key}: was {was[key]!r}, now {now.get(key)!r}" for key in was if was[key] != now.get(key)]
    return _differences_check("database_properties", changed, total=len(was), what="database properties")


def _roles_check(expected: dict[str, str], live: dict[str, str]) -> CheckResult:
    problems = []
    for name, attributes in expected.items():
        if name not in live:
            problems.append(f"missing role {name}")
        elif live[name] != attributes:
            problems.append(f"changed role {name}: was {attributes!r}, now {live[name]!r}")
    return _differences_check("roles", problems, total=len(expected), what="roles")


def _foreign_keys_check(manifest: BackupManifest, live: list[ForeignKey]) -> CheckResult:
    labels = {fk.label for fk in live} | {_legacy_label(fk) for fk in live}
    missing = sorted(set(manifest.foreign_keys) - labels)
    return check(
        "foreign_keys",
        not missing,
        expected=len(manifest.foreign_keys),
        observed=len(manifest.foreign_keys) - len(missing),
        detail=f"missing: {', '.join(missing)}" if missing else "every foreign key of the backup is present",
    )


def _legacy_label(fk: ForeignKey) -> str:
    """How manifest version 1 named a key: ``table.constraint``, unqualified for ``public``."""
    return f"{fk.child.removeprefix('public.')}.{fk.name}"


# -- orphans -------------------------------------------------------------------------------------


def _all_foreign_keys(manifest: BackupManifest | None, live: list[ForeignKey]) -> list[ForeignKey]:
    """The live keys and the backup's (by label): a key dropped since is where orphans appear."""
    keys = {fk.label: fk for fk in live}
    for spec in manifest.foreign_key_specs if manifest else []:
        fk = ForeignKey(**{**spec, "columns": tuple(spec["columns"]), "parent_columns": tuple(spec["parent_columns"])})
        keys.setdefault(fk.label, fk)
    return [keys[label] for label in sorted(keys)]


def _as_key(spec: OrphanCheck) -> ForeignKey:
    """A profile's hand-written orphan check as the key it checks (``users`` means ``public.users``)."""

    def qualified(table: str) -> str:
        schema, _, name = table.rpartition(".")
        return sql.Identifier(schema or "public", name).as_string()

    return ForeignKey(
        name=spec.name,
        child=qualified(spec.child_table),
        columns=(spec.child_column,),
        parent=qualified(spec.parent_table),
        parent_columns=(spec.parent_column,),
    )


def orphan_query(key: ForeignKey) -> sql.Composed:
    """Child rows whose parent row is missing (the runbook's orphan query, for any key)."""
    pairs = list(zip(key.columns, key.parent_columns, strict=True))
    not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c, _ in pairs)
    joined = sql.SQL(" AND ").join(
        sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(c)) for c, p in pairs
    )
    return sql.SQL(
        "SELECT count(*) FROM {child} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {joined})"
    ).format(child=sql.SQL(key.child), parent=sql.SQL(key.parent), not_null=not_null, joined=joined)


def orphan_checks(
    target: PgTarget,
    keys: Sequence[ForeignKey],
    *,
    jobs: int = 2,
    proven: Sequence[ForeignKey] = (),
    hand_written: Sequence[OrphanCheck] = (),
) -> list[CheckResult]:
    """One check per key (``orphans:<label>``) and per profile-written check: its orphan count, or, for a
    key of the same shape as one in ``proven`` (valid constraints of a fresh restore), the constraint
    that already proved it 0."""
    specs: list[tuple[str, ForeignKey, str]] = [
        (s.name, _as_key(s), f"{s.child_table}.{s.child_column} → {s.parent_table}.{s.parent_column}")
        for s in hand_written
    ]
    specs += [
        (
            f"orphans:{fk.label}",
            fk,
            f"{fk.child}({', '.join(fk.columns)}) → {fk.parent}({', '.join(fk.parent_columns)})",
        )
        for fk in keys
    ]

    def count(spec: ForeignKey) -> Callable[[psycopg.Connection], int | str]:
        def run(conn: psycopg.Connection) -> int | str:
            try:
                with conn.transaction():
                    row = conn.execute(orphan_query(spec)).fetchone()
            except psycopg.errors.UndefinedTable:
                return "table missing"
            except psycopg.DatabaseError as exc:  # e.g. a renamed column: the check fails, the others run
                return f"query failed: {type(exc).__name__}"
            return int(row[0]) if row else -1

        return run

    enforcing = {fk.shape: fk for fk in proven}
    queried = [spec for spec in specs if spec[1].shape not in enforcing]
    counts = dict(
        zip(
            (name for name, _, _ in queried),
            parallel_reads(target, [count(spec) for _, spec, _ in queried], jobs=jobs),
            strict=True,
        )
    )
    return [
        check(name, orphans == 0, expected=0, observed=orphans, detail=detail)
        if (orphans := counts.get(name)) is not None
        else check(
            name,
            True,
            expected=0,
            observed=0,
            detail=f"{detail}: proven by the constraint {enforcing[spec.shape].name}, which the restore validated "
            "against every row",
        )
        for name, spec, detail in specs
    ]
