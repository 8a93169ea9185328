"""Does the database look hit by ransomware? What the attacks on exposed PostgreSQL servers leave, checked
against the newest database backup's manifest:

- a **ransom-note table**: a table the backup does not have, named like a note (``readme_to_recover``) or
  whose first rows read like one (:mod:`drlib.ransom_notes`);
- **dropped tables**: tables the backup has and the live database no longer has;
- **emptied tables**: tables with rows in the backup and none now;
- a database that no longer answers (its files encrypted): it cannot be checked, so it is restored.

Rows rewritten in place are not checked: content fingerprints change with every ordinary write, so they
cannot tell encryption from use without a list of tables that must not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from drlib.checks import CheckResult, Checks, check
from drlib.exceptions import ConnectionFailed
from drlib.postgres.catalog import Table, discover_tables
from drlib.postgres.connection import PgTarget
from drlib.postgres.content import read_contents
from drlib.postgres.manifest import BackupManifest
from drlib.ransom_notes import reads_like_note

#: rows of a new table read to see whether it is a note
NOTE_ROWS = 5
NOT_CHECKED = "rows rewritten in place: not checked (ordinary writes change content fingerprints too)"


@dataclass(frozen=True)
class DatabaseRansomScan:
    """What the database shows against the backup ``baseline`` (None: no backup manifest to compare with)."""

    database: str
    baseline: str | None
    note_tables: tuple[str, ...] = ()
    dropped_tables: tuple[str, ...] = ()
    emptied_tables: tuple[str, ...] = ()
    #: why the database could not be checked at all (it does not answer)
    unreachable: str = ""

    @property
    def affected(self) -> bool:
        return bool(self.unreachable or self.note_tables or self.dropped_tables or self.emptied_tables)

    def describe(self) -> str:
        if self.unreachable:
            return f"does not answer ({self.unreachable})"
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("ransom-note tables", self.note_tables),
                ("dropped", self.dropped_tables),
                ("emptied", self.emptied_tables),
            )
            if names
        ]
        return "; ".join(parts) or "no ransom-note table, no table dropped or emptied"

    def checks(self, *, prefix: str = "", warn_only: bool = False) -> Checks:
        compared = f"against {self.baseline}" if self.baseline else "no backup manifest: dropped/emptied not checked"

        def none_of(name: str, found: tuple[str, ...], expected: str) -> CheckResult:
            return check(
                f"{prefix}{name}",
                not found and not self.unreachable,
                expected=expected,
                observed="database does not answer" if self.unreachable else (", ".join(found) or "none"),
                detail=compared,
                warn_only=warn_only,
            )

        return Checks(
            [
                none_of("database_ransom_note_tables", self.note_tables, "no table left as a ransom note"),
                none_of("database_tables_dropped_or_emptied", self.dropped_tables + self.emptied_tables, "none"),
            ]
        )


def scan_database_for_ransom(
    target: PgTarget, manifest: BackupManifest | None, *, baseline: str | None
) -> DatabaseRansomScan:
    """Look for a ransom-note table and tables dropped or emptied since the backup ``manifest``."""
    try:
        with target.connect() as conn:
            tables = discover_tables(conn, target.settings)
            known = set(manifest.tables) if manifest else set()
            notes = tuple(t.name for t in tables if t.name not in known and _is_note(conn, t))
    except ConnectionFailed as exc:
        return DatabaseRansomScan(database=target.name, baseline=baseline, unreachable=exc.message)
    if manifest is None:
        return DatabaseRansomScan(database=target.name, baseline=None, note_tables=notes)
    live = {t.name for t in tables}
    counts = read_contents(target, [t for t in tables if t.name in manifest.tables], target.settings, content=False)
    return DatabaseRansomScan(
        database=target.name,
        baseline=baseline,
        note_tables=notes,
        dropped_tables=tuple(sorted(set(manifest.tables) - live)),
        emptied_tables=tuple(
            sorted(name for name, stats in counts.items() if stats.rows == 0 and manifest.tables[name].rows > 0)
        ),
    )


def _is_note(conn: psycopg.Connection, table: Table) -> bool:
    """Its first rows read like a note. A name alone is not enough: an application's own new table may be
    called ``restore_data_log``, and calling it a note would restore the database over its writes."""
    query = sql.SQL("SELECT t::text FROM {}.{} t LIMIT {}").format(
        sql.Identifier(table.schema), sql.Identifier(table.relname), sql.Literal(NOTE_ROWS)
    )
    rows = conn.execute(query).fetchall()
    return reads_like_note("\n".join(str(r[0]) for r in rows).encode())
