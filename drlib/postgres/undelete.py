"""Bringing back deleted rows without rolling the database back: compare the live database with a
scratch copy restored from the backup, find the rows the backup has and the live database lost (for a
chosen table, by primary key, and the rows of every table that depends on them through foreign keys),
show them, and re-insert them in foreign-key order in one transaction. Rows written since the backup
are never touched: only rows whose key is missing are inserted, so a conflict (a key or a unique value
taken since) rolls everything back and says which.

The live database's keys are copied into temporary tables of the scratch session (``COPY`` out of one
connection, into the other), and the comparison runs there: nothing is written to the live database
before :func:`reinsert` with ``confirm``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from drlib.exceptions import ConfirmationRequired, DrlibError, ParameterError
from drlib.postgres.catalog import ForeignKey, discover_foreign_keys, discover_tables
from drlib.postgres.connection import PgTarget, sql_errors
from drlib.secrets import looks_like_secret_name

#: rows shown per table in a plan (the count is always exact)
SAMPLE_ROWS = 20
MASK = "•••"


class UndeleteFailed(DrlibError):
    """The deleted rows could not be found or put back."""

    code = "undelete-failed"


@dataclass(frozen=True)
class TableRef:
    """A table by schema and name, with its primary key and the columns an INSERT may set."""

    schema: str
    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    #: as PostgreSQL prints it (``public.users``, ``sales."Invoice"``), as the catalogue's foreign keys name it
    qualified: str

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass(frozen=True)
class DeletedRows:
    """The rows of one table that the backup has and the live database lost."""

    table: TableRef
    count: int
    #: their primary keys (as text), at most SAMPLE_ROWS of them
    keys: tuple[str, ...]
    #: up to SAMPLE_ROWS rows as column -> value (columns that look secret masked)
    sample: tuple[dict[str, object], ...]
    #: how it was reached: "" for the chosen table, else the foreign key followed
    via: str = ""
    #: the files these rows point at (their ``storage_key`` column, when the table has one)
    storage_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeletionPlan:
    """What :func:`reinsert` would put back, parents before children."""

    scratch: str
    tables: tuple[DeletedRows, ...]
    #: keys asked for that were not missing: key -> "still in the live database" / "not in the backup"
    not_missing: dict[str, str] = field(default_factory=dict)
    #: every missing key of the chosen table (as text, ``a,b`` for two columns): what a verification
    #: looks for again, with every row below it
    root_keys: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(t.count for t in self.tables)

    def describe(self) -> str:
        parts = [f"{t.count} row(s) of {t.table.qualified}" + (f" (via {t.via})" if t.via else "") for t in self.tables]
        return "; ".join(parts) if parts else "no deleted rows"


@dataclass(frozen=True)
class ReinsertResult:
    inserted: dict[str, int]
    live_rows_before: dict[str, int]
    live_rows_after: dict[str, int]


def _table(conn: psycopg.Connection, name: str) -> TableRef:
    """Resolve ``name`` (``users``, ``public.users``, ``sales."Invoice"``) in ``conn``'s database."""
    try:
        row = conn.execute(
            "SELECT n.nspname, c.relname, c.oid, pg_catalog.format('%%I.%%I', n.nspname, c.relname) "
            "FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = pg_catalog.to_regclass(%s) AND c.relkind IN ('r', 'p')",
            (name,),
        ).fetchone()
    except psycopg.errors.InvalidName:
        row = None
    if row is None:
        raise ParameterError(f"table {name!r} is not in the backup: give a table as schema.name (e.g. public.users)")
    schema, relname, oid, qualified = row
    key = [
        r[0]
        for r in conn.execute(
            "SELECT a.attname FROM pg_catalog.pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n) "
            "JOIN pg_catalog.pg_attribute a ON a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary AND a.attrelid = i.indrelid ORDER BY k.n",
            (oid,),
        )
    ]
    if not key:
        raise UndeleteFailed(
            f"table {schema}.{relname} has no primary key, so its deleted rows cannot be told apart from the "
            "rest: restore it with Option B, or compare it by hand in the scratch database"
        )
    columns = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (oid,),
        )
    ]
    return TableRef(schema=schema, name=relname, key=tuple(key), columns=tuple(columns), qualified=qualified)


def _key_list(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def _key_match(left: str, right: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(left), sql.Identifier(c), sql.Identifier(right), sql.Identifier(c)
        )
        for c in columns
    )


def _copy_live_keys(live: psycopg.Connection, scratch: psycopg.Connection, table: TableRef, temp: str) -> None:
    """The live table's primary keys into the scratch session's temporary table ``temp``."""
    keys = _key_list(table.key)
    scratch.execute(
        sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(temp), keys, table.ident
        )
    )
    source = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(keys, table.ident)
    with (
        live.cursor().copy(source) as out,
        scratch.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(temp))) as into,
    ):
        for data in out:
            into.write(data)


def _sample(
    scratch: psycopg.Connection, table: TableRef, missing: str
) -> tuple[tuple[str, ...], tuple[dict[str, object], ...]]:
    rows = scratch.execute(
        sql.SQL(
            "SELECT pg_catalog.row_to_json(s)::text FROM {} s WHERE EXISTS (SELECT 1 FROM {} m WHERE {}) LIMIT {}"
        ).format(table.ident, sql.Identifier(missing), _key_match("m", "s", table.key), sql.Literal(SAMPLE_ROWS))
    ).fetchall()
    sample = []
    keys = []
    for (text,) in rows:
        values = json.loads(text)
        keys.append(",".join(str(values.get(c)) for c in table.key))
        sample.append({c: MASK if looks_like_secret_name(c) and v is not None else v for c, v in values.items()})
    return tuple(keys), tuple(sample)


def _children(fks: list[ForeignKey], parent: TableRef) -> list[ForeignKey]:
    return [fk for fk in fks if fk.parent == parent.qualified and fk.child != parent.qualified]


@dataclass(frozen=True)
class _Found:
    rows: DeletedRows
    #: the scratch session's temporary table holding their keys
    missing: str


def _discover(
    sconn: psycopg.Connection,
    lconn: psycopg.Connection,
    scratch: PgTarget,
    table: str,
    keys: Sequence[str],
    dependants: bool,
) -> tuple[list[_Found], dict[str, str]]:
    """The deleted rows, parents first, their keys left in temporary tables of ``sconn``'s session.

    Each table has a scope in the backup: for the chosen table the rows of ``keys`` (whether the live
    database still has them or not), or without keys the rows it lost; for a table below it the rows
    that reference its parent's scope. What the live database lacks of each scope is what was deleted,
    so a job deleted under a user who is still there is found too."""
    root = _table(sconn, table)
    _table(lconn, root.qualified)  # the live database has it too (else a dropped table, not deleted rows)
    fks = discover_foreign_keys(sconn, scratch.settings) if dependants else []
    found: list[_Found] = []
    not_missing: dict[str, str] = {}
    #: (table, the key followed to it, its parent and the parent's scope table)
    queue: list[tuple[TableRef, ForeignKey | None, TableRef | None, str]] = [(root, None, None, "")]
    seen = {root.qualified}
    for index, (current, via, parent, parent_scope) in enumerate(queue):
        live_keys, scope, missing = f"drlib_live_{index}", f"drlib_scope_{index}", f"drlib_missing_{index}"
        _copy_live_keys(lconn, sconn, current, live_keys)
        absent = sql.SQL("NOT EXISTS (SELECT 1 FROM {} l WHERE {})").format(
            sql.Identifier(live_keys), _key_match("l", "s", current.key)
        )
        if parent is None:
            in_scope = _chosen_keys(current, keys) or absent
        else:
            assert via is not None
            links = sql.SQL(" AND ").join(
                sql.SQL("p.{} = s.{}").format(sql.Identifier(pc), sql.Identifier(cc))
                for cc, pc in zip(via.columns, via.parent_columns, strict=True)
            )
            in_scope = sql.SQL("EXISTS (SELECT 1 FROM {} p JOIN {} m ON {} WHERE {})").format(
                parent.ident, sql.Identifier(parent_scope), _key_match("m", "p", parent.key), links
            )
        key_columns = sql.SQL(", ").join(sql.Identifier("s", c) for c in current.key)
        sconn.execute(
            sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {} s WHERE {}").format(
                sql.Identifier(scope), key_columns, current.ident, in_scope
            )
        )
        sconn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} AS SELECT {} FROM {} s WHERE EXISTS (SELECT 1 FROM {} c WHERE {}) AND {}"
            ).format(
                sql.Identifier(missing),
                key_columns,
                current.ident,
                sql.Identifier(scope),
                _key_match("c", "s", current.key),
                absent,
            )
        )
        count = _rows_in(sconn, missing)
        if parent is None and keys:
            not_missing = _not_missing(sconn, current, keys, missing)
        if count or parent is None:
            sample_keys, sample = _sample(sconn, current, missing)
            rows = DeletedRows(
                table=current,
                count=count,
                keys=sample_keys,
                sample=sample,
                via=via.label if via else "",
                storage_keys=_storage_keys(sconn, current, missing),
            )
            found.append(_Found(rows=rows, missing=missing))
        if not _rows_in(sconn, scope):
            continue
        for fk in _children(fks, current):
            if fk.child not in seen:
                seen.add(fk.child)
                queue.append((_table(sconn, fk.child), fk, current, scope))
    return found, not_missing


def _rows_in(conn: psycopg.Connection, temp: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(temp))).fetchone()
    return int(row[0]) if row else 0


#: the column that names a row's file in storage (the runbook's schema calls it so)
STORAGE_KEY_COLUMN = "storage_key"


def _storage_keys(conn: psycopg.Connection, table: TableRef, missing: str) -> tuple[str, ...]:
    if STORAGE_KEY_COLUMN not in table.columns:
        return ()
    rows = conn.execute(
        sql.SQL("SELECT s.{} FROM {} s WHERE EXISTS (SELECT 1 FROM {} m WHERE {}) ORDER BY 1").format(
            sql.Identifier(STORAGE_KEY_COLUMN), table.ident, sql.Identifier(missing), _key_match("m", "s", table.key)
        )
    ).fetchall()
    return tuple(str(r[0]) for r in rows if r[0])


def find_deleted(
    *, live: PgTarget, scratch: PgTarget, table: str, keys: Sequence[str] = (), dependants: bool = True
) -> DeletionPlan:
    """The rows of ``table`` (those of ``keys`` only, when given: primary key values as text, ``a,b`` for
    a two-column key) that ``scratch`` has and ``live`` lost, then, with ``dependants``, the lost rows of
    every table that references them through a foreign key, recursively. Reads only."""
    with sql_errors(live, doing="finding the deleted rows"), scratch.connect() as sconn, live.connect() as lconn:
        found, not_missing = _discover(sconn, lconn, scratch, table, keys, dependants)
        root = found[0]
        root_keys = _keys_in(sconn, root.rows.table, root.missing)
    return DeletionPlan(
        scratch=scratch.name,
        tables=tuple(f.rows for f in found if f.rows.count),
        not_missing=not_missing,
        root_keys=root_keys,
    )


def reinsert(
    plan: DeletionPlan,
    *,
    live: PgTarget,
    scratch: PgTarget,
    table: str,
    keys: Sequence[str] = (),
    dependants: bool = True,
    confirm: bool = False,
) -> ReinsertResult:
    """Put the rows of ``plan`` back into ``live``, parents first, in one transaction: found again right
    before inserting (refused if that differs from ``plan``), copied row for row from ``scratch``; any
    error (a key or unique value taken since the deletion, a missing parent) rolls all of it back."""
    if not confirm:
        raise ConfirmationRequired(f"re-inserting {plan.describe()} needs confirm=True")
    with (
        sql_errors(live, doing="re-inserting the deleted rows", advice="Nothing was inserted (rolled back)."),
        scratch.connect() as sconn,
        live.connect() as lconn,
    ):
        found, _ = _discover(sconn, lconn, scratch, table, keys, dependants)
        found = [f for f in found if f.rows.count]
        now = tuple((f.rows.table.qualified, f.rows.count) for f in found)
        if now != tuple((t.table.qualified, t.count) for t in plan.tables):
            raise UndeleteFailed(
                f"the live database changed since the plan ({plan.describe()}; now "
                f"{'; '.join(f'{n} row(s) of {t}' for t, n in now) or 'nothing missing'}): nothing was inserted; "
                "look at the rows again, then confirm"
            )
        before: dict[str, int] = {}
        after: dict[str, int] = {}
        inserted: dict[str, int] = {}
        with lconn.transaction():
            for f in found:
                ref = f.rows.table
                before[ref.qualified] = _count(lconn, ref)
                inserted[ref.qualified] = _copy_rows(sconn, lconn, ref, f.missing)
            # counted after every insert: a trigger or rule that removed rows of another table shows too
            after = {f.rows.table.qualified: _count(lconn, f.rows.table) for f in found}
    return ReinsertResult(inserted=inserted, live_rows_before=before, live_rows_after=after)


def _count(conn: psycopg.Connection, table: TableRef) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()
    return int(row[0]) if row else 0


def _copy_rows(sconn: psycopg.Connection, lconn: psycopg.Connection, table: TableRef, missing: str) -> int:
    """The rows of ``missing`` from the scratch table into the live one (``COPY`` writes identity columns
    as given, like ``OVERRIDING SYSTEM VALUE``; generated columns are computed again); how many went in."""
    columns = _key_list(table.columns)
    source = sql.SQL("COPY (SELECT {} FROM {} s WHERE EXISTS (SELECT 1 FROM {} m WHERE {})) TO STDOUT").format(
        sql.SQL(", ").join(sql.Identifier("s", c) for c in table.columns),
        table.ident,
        sql.Identifier(missing),
        _key_match("m", "s", table.key),
    )
    target = sql.SQL("COPY {} ({}) FROM STDIN").format(table.ident, columns)
    into_cursor = lconn.cursor()
    with sconn.cursor().copy(source) as out, into_cursor.copy(target) as into:
        for data in out:
            into.write(data)
    return into_cursor.rowcount


def _chosen_keys(table: TableRef, keys: Sequence[str]) -> sql.Composed | None:
    """``s.key = ANY(keys)`` (compared as text; ``a,b`` for a two-column key), or None for every key."""
    if not keys:
        return None
    if len(table.key) == 1:
        return sql.SQL("s.{}::text = ANY({})").format(sql.Identifier(table.key[0]), sql.Literal(list(keys)))
    parts = [k.split(",") for k in keys]
    if any(len(p) != len(table.key) for p in parts):
        raise ParameterError(
            f"{table.qualified} has a {len(table.key)}-column key ({', '.join(table.key)}): give each key as "
            f"{len(table.key)} comma-separated values"
        )
    row = sql.SQL("ROW({})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("s", c)) for c in table.key)
    )
    wanted = sql.SQL(", ").join(sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Literal(v) for v in p)) for p in parts)
    return sql.SQL("{} IN ({})").format(row, wanted)


def _key_text(table: TableRef) -> sql.Composed:
    """A row's primary key as the text a user gives it: ``7``, or ``7,2`` for a two-column key."""
    return sql.SQL("concat_ws(',', {})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in table.key)
    )


def _keys_in(conn: psycopg.Connection, table: TableRef, temp: str) -> tuple[str, ...]:
    """Every key held in the session's temporary table ``temp``, as text, sorted."""
    rows = conn.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY 1").format(_key_text(table), sql.Identifier(temp))
    ).fetchall()
    return tuple(str(r[0]) for r in rows)


def _not_missing(conn: psycopg.Connection, table: TableRef, keys: Sequence[str], missing: str) -> dict[str, str]:
    """Why asked-for keys are not in the plan: still live, or never in the backup."""
    in_backup = {
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT {} FROM {} s WHERE {}").format(
                _key_text(table), table.ident, _chosen_keys(table, keys) or sql.SQL("true")
            )
        )
    }
    missing_keys = set(_keys_in(conn, table, missing))
    return {
        key: "not in the backup" if key not in in_backup else "still in the live database"
        for key in keys
        if key not in missing_keys
    }


def survey_deleted(*, live: PgTarget, scratch: PgTarget) -> dict[str, int]:
    """Per table of the backup (with a primary key, present in the live database): how many of its rows
    the live database lost. Tables without a key, or gone from the live database, are left out."""
    counts: dict[str, int] = {}
    with (
        sql_errors(live, doing="comparing every table with the backup"),
        scratch.connect() as sconn,
        live.connect() as lconn,
    ):
        for table in discover_tables(sconn, scratch.settings):
            try:
                ref = _table(sconn, table.name)
                _table(lconn, table.name)
            except (UndeleteFailed, ParameterError):
                continue
            temp = f"drlib_survey_{len(counts)}"
            _copy_live_keys(lconn, sconn, ref, temp)
            row = sconn.execute(
                sql.SQL("SELECT count(*) FROM {} s WHERE NOT EXISTS (SELECT 1 FROM {} l WHERE {})").format(
                    ref.ident, sql.Identifier(temp), _key_match("l", "s", ref.key)
                )
            ).fetchone()
            counts[ref.qualified] = int(row[0]) if row else 0
    return counts
