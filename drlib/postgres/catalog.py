"""Discovering what a database holds, from its own catalogue: tables in every non-system schema,
their foreign keys (multi-column ones included) and each table's newest-row column.

Read with plain SQL on ``pg_catalog`` rather than SQLAlchemy's inspector: the same queries must run
inside the backup's exported snapshot (one transaction shared with ``pg_dump``), and the schema
fingerprint (:mod:`drlib.postgres.fingerprint`) needs catalogue facts the inspector does not expose
(partition bounds, triggers, policies, grants, function bodies). One reader keeps one truth.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import psycopg

from drlib.config import DatabaseSettings

#: drlib's own schema in a drill target (the rows a drill writes after its backup): not the user's data
DRILL_SCHEMA = "drlib_drill"
#: schemas that belong to PostgreSQL itself, and drlib's drill schema
SYSTEM_SCHEMA_FILTER = (
    f"n.nspname NOT IN ('pg_catalog', 'information_schema', '{DRILL_SCHEMA}') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)
#: objects created by an extension are the extension's, not the database's
NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.classid = {catalog}::regclass "
    "AND d.deptype = 'e')"
)
TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
#: looked for, in this order, when the profile names no newest-row column for a table
NEWEST_ROW_NAMES = ("created_at", "inserted_at", "created", "creation_date", "created_on", "updated_at", "modified_at")


@dataclass(frozen=True)
class Table:
    """A table (or a partition) holding rows; ``name`` is schema-qualified and quoted (``public."Album"``)."""

    name: str
    schema: str
    relname: str
    size_bytes: int
    newest_row_column: str | None
    #: the partitioned table this partition belongs to, if any
    partition_of: str | None = None
    #: column names in the table's order
    columns: tuple[str, ...] = ()

    @property
    def plain_name(self) -> str:
        """``schema.table`` unquoted, as include/exclude patterns see it."""
        return f"{self.schema}.{self.relname}"


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key from ``child(columns)`` to ``parent(parent_columns)``."""

    name: str
    child: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    #: PostgreSQL checked every existing row when the key was made (not ``NOT VALID``), and the key covers
    #: every row the orphan query reads (False on a table with plain-inheritance children: not inherited)
    validated: bool = True

    @property
    def label(self) -> str:
        return f"{self.child}.{self.name}"

    @property
    def shape(self) -> tuple[str, tuple[str, ...], str, tuple[str, ...]]:
        """What the key constrains, whatever it is called."""
        return self.child, self.columns, self.parent, self.parent_columns


def matches(plain_name: str, patterns: tuple[str, ...]) -> bool:
    """``schema.table`` against ``fnmatch`` patterns; a pattern without a dot means ``public.<pattern>``."""
    for pattern in patterns:
        full = pattern if "." in pattern or pattern == "*" else f"public.{pattern}"
        if fnmatch.fnmatchcase(plain_name, full) or fnmatch.fnmatchcase(plain_name, full.replace('"', "")):
            return True
    return False


def in_scope(plain_name: str, settings: DatabaseSettings) -> bool:
    """A ``schema.name`` the profile's include/exclude patterns keep."""
    return matches(plain_name, settings.include) and not matches(plain_name, settings.exclude)


def discover_tables(conn: psycopg.Connection, settings: DatabaseSettings) -> list[Table]:
    """Every table holding rows (plain tables and partitions) the profile keeps, by qualified name."""
    rows = conn.execute(
        f"""
        SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, pg_table_size(c.oid),
               (SELECT format('%I.%I', pn.nspname, p.relname) FROM pg_inherits i
                  JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
                 WHERE i.inhrelid = c.oid AND c.relispartition),
               ARRAY(SELECT a.attname || ':' || format_type(a.atttypid, NULL) FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND {SYSTEM_SCHEMA_FILTER}
           AND {NOT_EXTENSION_MEMBER.format(oid="c.oid", catalog="'pg_class'")}
         ORDER BY 1
        """
    ).fetchall()
    tables = []
    for name, schema, relname, size, parent, columns in rows:
        if not in_scope(f"{schema}.{relname}", settings):
            continue
        typed = dict(column.rsplit(":", 1) for column in columns)
        tables.append(
            Table(
                name=name,
                schema=schema,
                relname=relname,
                size_bytes=int(size or 0),
                newest_row_column=newest_row_column(name, f"{schema}.{relname}", typed, settings),
                partition_of=parent,
                columns=tuple(typed),
            )
        )
    return tables


def newest_row_column(name: str, plain: str, columns: dict[str, str], settings: DatabaseSettings) -> str | None:
    """The column whose maximum says how recent a table's data is, or None (the check is then not run).

    The profile's ``newest_row_columns`` entry for the table wins ("" turns it off); otherwise
    ``created_at_column``, then the usual names, then the table's only timestamp column."""
    overrides = settings.newest_row_columns
    for key in (name, plain, plain.removeprefix("public.")):
        if key in overrides:
            chosen = overrides[key]
            return chosen if chosen in columns else None
    stamped = [column for column, kind in columns.items() if kind in TIMESTAMP_TYPES]
    for preferred in (settings.created_at_column, *NEWEST_ROW_NAMES):
        if preferred in stamped:
            return preferred
    return stamped[0] if len(stamped) == 1 else None


def discover_foreign_keys(conn: psycopg.Connection, settings: DatabaseSettings) -> list[ForeignKey]:
    """Every foreign key of ``pg_constraint`` between tables the profile keeps (multi-column included).

    A key declared on a partitioned table is listed once, on that table (its partitions inherit it)."""
    rows = conn.execute(
        f"""
        SELECT con.conname, format('%I.%I', n.nspname, c.relname), n.nspname || '.' || c.relname,
               format('%I.%I', pn.nspname, p.relname), pn.nspname || '.' || p.relname,
               ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, i)
                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.i),
               ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, i)
                      JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.i),
               con.convalidated AND (c.relkind = 'p' OR NOT c.relhassubclass)
          FROM pg_constraint con
          JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_class p ON p.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
         WHERE con.contype = 'f' AND con.conparentid = 0 AND {SYSTEM_SCHEMA_FILTER}
         ORDER BY 2, 1
        """
    ).fetchall()
    return [
        ForeignKey(
            name=conname,
            child=child,
            columns=tuple(columns),
            parent=parent,
            parent_columns=tuple(pcols),
            validated=validated,
        )
        for conname, child, child_plain, parent, parent_plain, columns, pcols, validated in rows
        if in_scope(child_plain, settings) and in_scope(parent_plain, settings)
    ]
