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

EVERY_ROW = sql.SQL("true")
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
    #: their primary keys (as text; masked when a key column looks secret), at most SAMPLE_ROWS of them
    keys: tuple[str, ...]
    #: up to SAMPLE_ROWS rows as column -> value (columns that look secret masked)
    sample: tuple[dict[str, object], ...]
    #: how it was reached: "" for the chosen table, else the foreign key followed
    via: str = ""
    #: the files these rows point at (their ``storage_key`` column, when the table has one)
    storage_keys: tuple[str, ...] = ()
    #: md5 of every key, sorted: the rows found again before inserting must be these very rows
    digest: str = ""


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
    #: per ``ON DELETE SET NULL`` foreign key: rows still there whose link the deletion set to NULL
    relinks: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(t.count for t in self.tables)

    def describe(self) -> str:
        parts = [f"{t.count} row(s) of {t.table.qualified}" + (f" (via {t.via})" if t.via else "") for t in self.tables]
        parts += [f"{n} link(s) of {label} set to NULL by the deletion" for label, n in self.relinks.items()]
        return "; ".join(parts) if parts else "no deleted rows"


@dataclass(frozen=True)
class ReinsertResult:
    inserted: dict[str, int]
    #: per ``ON DELETE SET NULL`` foreign key: links set back
    relinked: dict[str, int]
    live_rows_before: dict[str, int]
    live_rows_after: dict[str, int]


def _table(conn: psycopg.Connection, name: str, *, where: str = "the backup") -> TableRef:
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
        raise ParameterError(
            f"table {name!r} is not in {where} (or is not a table): give a table as schema.name (e.g. public.users)"
        )
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


def _copy_live_keys(
    live: psycopg.Connection,
    scratch: psycopg.Connection,
    table: TableRef,
    temp: str,
    where: sql.Composable = EVERY_ROW,
) -> None:
    """The live table's primary keys (of the rows ``where`` keeps) into the scratch session's temporary table."""
    keys = _key_list(table.key)
    scratch.execute(
        sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(temp), keys, table.ident
        )
    )
    source = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT").format(keys, table.ident, where)
    with (
        live.cursor().copy(source) as out,
        scratch.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(temp))) as into,
    ):
        for data in out:
            into.write(data)


def _secret_columns(table: TableRef, fks: list[ForeignKey]) -> set[str]:
    """The columns of ``table`` to mask: those named like a secret, and those holding a secret-named
    column of another table through a foreign key (``last_session`` -> ``sessions.token``)."""
    named = {c for c in table.columns if looks_like_secret_name(c)}
    return named | {
        column
        for fk in fks
        if fk.child == table.qualified
        for column, parent_column in zip(fk.columns, fk.parent_columns, strict=True)
        if looks_like_secret_name(parent_column)
    }


def _sample(
    scratch: psycopg.Connection, table: TableRef, missing: str, secret: set[str]
) -> tuple[tuple[str, ...], tuple[dict[str, object], ...]]:
    """The first rows and their keys as :func:`_key_text` writes them (what ``keys`` takes back), the
    ``secret`` columns masked."""
    rows = scratch.execute(
        sql.SQL(
            "SELECT {}, pg_catalog.row_to_json(s)::text FROM {} s WHERE EXISTS (SELECT 1 FROM {} m WHERE {}) "
            "ORDER BY 1 LIMIT {}"
        ).format(
            _key_text(table, "s"),
            table.ident,
            sql.Identifier(missing),
            _key_match("m", "s", table.key),
            sql.Literal(SAMPLE_ROWS),
        )
    ).fetchall()
    secret_key = bool(secret & set(table.key))
    keys = tuple(MASK if secret_key else str(key) for key, _ in rows)
    sample = tuple(
        {c: MASK if c in secret and v is not None else v for c, v in json.loads(text).items()} for _, text in rows
    )
    return keys, sample


def _digest(conn: psycopg.Connection, table: TableRef, temp: str) -> str:
    row = conn.execute(
        sql.SQL("SELECT md5(coalesce(string_agg(k, E'\\n' ORDER BY k), '')) FROM (SELECT {} AS k FROM {}) t").format(
            _key_text(table), sql.Identifier(temp)
        )
    ).fetchone()
    return str(row[0]) if row else ""


def _children(fks: list[ForeignKey], parent: TableRef) -> list[ForeignKey]:
    return [fk for fk in fks if fk.parent == parent.qualified and fk.child != parent.qualified]


@dataclass(frozen=True)
class _Found:
    rows: DeletedRows
    #: the scratch session's temporary table holding their keys
    missing: str


@dataclass(frozen=True)
class _Nulled:
    """Rows still in the live database whose ``ON DELETE SET NULL`` key the deletion emptied."""

    table: TableRef
    fk: ForeignKey
    count: int
    #: the scratch session's temporary table holding their keys
    keys: str


def _keys_where(conn: psycopg.Connection, condition: str) -> set[tuple[str, str]]:
    """(child table, constraint name) of every foreign key whose ``pg_constraint`` row meets ``condition``."""
    rows = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname), con.conname FROM pg_catalog.pg_constraint con "
        "JOIN pg_catalog.pg_class c ON c.oid = con.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE con.contype = 'f' AND {condition}"
    ).fetchall()
    return {(child, name) for child, name in rows}


def _find_nulled(
    sconn: psycopg.Connection, lconn: psycopg.Connection, table: TableRef, fk: ForeignKey, scope: str, index: str
) -> _Nulled:
    """The rows of ``scope`` that the backup links through ``fk`` and the live database has with NULL there."""
    live_nulled, nulled = f"drlib_live_null_{index}", f"drlib_nulled_{index}"
    all_null = sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(sql.Identifier(c)) for c in fk.columns)
    _copy_live_keys(lconn, sconn, table, live_nulled, where=all_null)
    linked = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("s", c)) for c in fk.columns)
    sconn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} AS SELECT {} FROM {} s WHERE {} AND EXISTS (SELECT 1 FROM {} c WHERE {}) "
            "AND EXISTS (SELECT 1 FROM {} l WHERE {})"
        ).format(
            sql.Identifier(nulled),
            sql.SQL(", ").join(sql.Identifier("s", c) for c in table.key),
            table.ident,
            linked,
            sql.Identifier(scope),
            _key_match("c", "s", table.key),
            sql.Identifier(live_nulled),
            _key_match("l", "s", table.key),
        )
    )
    return _Nulled(table=table, fk=fk, count=_rows_in(sconn, nulled), keys=nulled)


def _discover(
    sconn: psycopg.Connection,
    lconn: psycopg.Connection,
    scratch: PgTarget,
    table: str,
    keys: Sequence[str],
    dependants: bool,
) -> tuple[list[_Found], dict[str, str], list[_Nulled]]:
    """The deleted rows, parents first, their keys left in temporary tables of ``sconn``'s session.

    Each table has a scope in the backup: for the chosen table the rows of ``keys`` (whether the live
    database still has them or not), or without keys the rows it lost; for a table below it every row
    that references a row in the scope of any of its parents (through every foreign key, grown until
    nothing is added, so a table reached along two paths gets the rows of both). What the live database
    lacks of each scope is what was deleted, so a job deleted under a user who is still there is found too."""
    root = _table(sconn, table)
    # the live database has it too (else a dropped table, not deleted rows)
    _table(lconn, root.qualified, where="the live database")
    every_fk = discover_foreign_keys(sconn, scratch.settings)
    fks = every_fk if dependants else []
    tables, via = _reachable(sconn, root, fks)
    scopes = {t.qualified: f"drlib_scope_{i}" for i, t in enumerate(tables)}
    live_keys = {t.qualified: f"drlib_live_{i}" for i, t in enumerate(tables)}
    _copy_live_keys(lconn, sconn, root, live_keys[root.qualified])
    for current in tables:
        in_scope = (
            (_chosen_keys(current, keys) or _absent(current, live_keys[current.qualified]))
            if current is root
            else sql.SQL("false")
        )
        sconn.execute(
            sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {} s WHERE {}").format(
                sql.Identifier(scopes[current.qualified]), _key_columns(current), current.ident, in_scope
            )
        )
    _grow_scopes(sconn, tables, scopes, fks)
    set_null = _keys_where(sconn, "con.confdeltype = 'n'") if dependants else set()
    nulled: list[_Nulled] = []
    found: list[_Found] = []
    not_missing: dict[str, str] = {}
    for index, current in enumerate(tables):
        scope = scopes[current.qualified]
        if current is not root and not _rows_in(sconn, scope):
            continue
        if current is not root:
            _copy_live_keys(lconn, sconn, current, live_keys[current.qualified])
        for n, fk in enumerate(_into(fks, current, scopes)):
            if (fk.child, fk.name) in set_null:
                nulled.append(_find_nulled(sconn, lconn, current, fk, scope, f"{index}_{n}"))
        missing = f"drlib_missing_{index}"
        sconn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} AS SELECT {} FROM {} s WHERE EXISTS (SELECT 1 FROM {} c WHERE {}) AND {}"
            ).format(
                sql.Identifier(missing),
                _key_columns(current),
                current.ident,
                sql.Identifier(scope),
                _key_match("c", "s", current.key),
                _absent(current, live_keys[current.qualified]),
            )
        )
        count = _rows_in(sconn, missing)
        if current is root and keys:
            not_missing = _not_missing(sconn, current, keys, missing)
        if count or current is root:
            sample_keys, sample = _sample(sconn, current, missing, _secret_columns(current, every_fk))
            rows = DeletedRows(
                table=current,
                count=count,
                keys=sample_keys,
                sample=sample,
                via=via[current.qualified].label if current.qualified in via else "",
                storage_keys=_storage_keys(sconn, current, missing),
                digest=_digest(sconn, current, missing),
            )
            found.append(_Found(rows=rows, missing=missing))
    deferrable = _keys_where(sconn, "con.condeferrable") if dependants else set()
    ordering = [fk for fk in fks if (fk.child, fk.name) not in deferrable]  # those are checked at commit
    return _parents_first(found, ordering), not_missing, [n for n in nulled if n.count]


def _reachable(
    conn: psycopg.Connection, root: TableRef, fks: list[ForeignKey]
) -> tuple[list[TableRef], dict[str, ForeignKey]]:
    """Every table below ``root`` through ``fks``, breadth first, and the key each was first reached by."""
    tables = [root]
    via: dict[str, ForeignKey] = {}
    for current in tables:
        for fk in _children(fks, current):
            if fk.child != root.qualified and fk.child not in via:
                via[fk.child] = fk
                tables.append(_table(conn, fk.child))
    return tables, via


def _into(fks: list[ForeignKey], table: TableRef, scopes: dict[str, str]) -> list[ForeignKey]:
    """The keys from ``table`` to another table with a scope (what brings rows into its scope)."""
    return [fk for fk in fks if fk.child == table.qualified and fk.parent != fk.child and fk.parent in scopes]


def _grow_scopes(
    conn: psycopg.Connection, tables: list[TableRef], scopes: dict[str, str], fks: list[ForeignKey]
) -> None:
    """Add to each table's scope the rows that reference a row in a parent's scope (every key, the
    self-referencing ones too), again and again until a whole pass adds nothing. The chosen table (the
    first) grows only through its self-referencing keys: a key back to it from below does not widen what
    the operator chose."""
    refs = {t.qualified: t for t in tables}
    while True:
        added = 0
        for table in tables:
            scope = scopes[table.qualified]
            self_keys = [fk for fk in fks if fk.child == fk.parent == table.qualified]
            for fk in [*(_into(fks, table, scopes) if table is not tables[0] else []), *self_keys]:
                parent = refs[fk.parent]
                added += conn.execute(
                    sql.SQL(
                        "INSERT INTO {scope} SELECT {cols} FROM {table} s WHERE EXISTS (SELECT 1 FROM {parent} p "
                        "JOIN {parent_scope} m ON {parent_in_scope} WHERE {links}) "
                        "AND NOT EXISTS (SELECT 1 FROM {scope} c WHERE {in_scope})"
                    ).format(
                        scope=sql.Identifier(scope),
                        cols=_key_columns(table),
                        table=table.ident,
                        parent=parent.ident,
                        parent_scope=sql.Identifier(scopes[parent.qualified]),
                        parent_in_scope=_key_match("m", "p", parent.key),
                        links=_links(fk, "p", "s"),
                        in_scope=_key_match("c", "s", table.key),
                    )
                ).rowcount
        if not added:
            return


def _key_columns(table: TableRef) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier("s", c) for c in table.key)


def _absent(table: TableRef, live_keys: str) -> sql.Composed:
    """``s`` (a row of the backup) is not among the live database's keys copied into ``live_keys``."""
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {} l WHERE {})").format(
        sql.Identifier(live_keys), _key_match("l", "s", table.key)
    )


def _links(fk: ForeignKey, parent: str, child: str) -> sql.Composed:
    """``parent.<referenced columns> = child.<referencing columns>`` for a foreign key."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(parent, pc), sql.Identifier(child, cc))
        for cc, pc in zip(fk.columns, fk.parent_columns, strict=True)
    )


def _parents_first(found: list[_Found], fks: list[ForeignKey]) -> list[_Found]:
    """``found`` reordered so that every table comes after the tables it references (the order rows can be
    inserted in); the discovery order otherwise, and as it is where keys form a cycle."""
    names = {f.rows.table.qualified for f in found}
    parents = {
        name: {fk.parent for fk in fks if fk.child == name and fk.parent != name and fk.parent in names}
        for name in names
    }
    ordered: list[_Found] = []
    left = list(found)
    while left:
        placed = {f.rows.table.qualified for f in ordered}
        ready = next((f for f in left if parents[f.rows.table.qualified] <= placed), left[0])
        ordered.append(ready)
        left.remove(ready)
    return ordered


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


def check_table(live: PgTarget, table: str, keys: Sequence[str] = ()) -> TableRef:
    """``table`` as the live database has it, with a primary key that ``keys`` fit: what an undo checks
    before it restores anything (a misspelt table is refused in seconds, not after a whole restore)."""
    with sql_errors(live, doing="looking up the table"), live.connect() as conn:
        ref = _table(conn, table, where="the live database")
    _chosen_keys(ref, keys)
    return ref


def find_deleted(
    *, live: PgTarget, scratch: PgTarget, table: str, keys: Sequence[str] = (), dependants: bool = True
) -> DeletionPlan:
    """The rows of ``table`` (those of ``keys`` only, when given: primary key values as text, ``a,b`` for
    a two-column key) that ``scratch`` has and ``live`` lost, then, with ``dependants``, the lost rows of
    every table that references them through a foreign key, recursively. Reads only."""
    with sql_errors(live, doing="finding the deleted rows"), scratch.connect() as sconn, live.connect() as lconn:
        found, not_missing, nulled = _discover(sconn, lconn, scratch, table, keys, dependants)
        root = found[0]
        root_keys = _keys_in(sconn, root.rows.table, root.missing)
    return DeletionPlan(
        scratch=scratch.name,
        tables=tuple(f.rows for f in found if f.rows.count),
        not_missing=not_missing,
        root_keys=root_keys,
        relinks={n.fk.label: n.count for n in nulled},
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
        found, _, nulled = _discover(sconn, lconn, scratch, table, keys, dependants)
        found = [f for f in found if f.rows.count]
        now = tuple((f.rows.table.qualified, f.rows.count) for f in found)
        same_rows = [(f.rows.table.qualified, f.rows.digest) for f in found] == [
            (t.table.qualified, t.digest) for t in plan.tables
        ]
        same_rows = same_rows and {n.fk.label: n.count for n in nulled} == plan.relinks
        if now != tuple((t.table.qualified, t.count) for t in plan.tables) or not same_rows:
            raise UndeleteFailed(
                f"the live database changed since the plan ({plan.describe()}; now "
                f"{'; '.join(f'{n} row(s) of {t}' for t, n in now) or 'nothing missing'}"
                f"{'' if same_rows else ', not the same rows'}): nothing was inserted; "
                "look at the rows again, then confirm"
            )
        before: dict[str, int] = {}
        after: dict[str, int] = {}
        inserted: dict[str, int] = {}
        with lconn.transaction():
            lconn.execute("SET CONSTRAINTS ALL DEFERRED")  # a cycle of deferrable keys is checked at commit
            for f in found:
                ref = f.rows.table
                before[ref.qualified] = _count(lconn, ref)
                inserted[ref.qualified] = _copy_rows(sconn, lconn, ref, f.missing)
            relinked = {n.fk.label: _relink(sconn, lconn, n) for n in nulled}
            # counted after every insert: a trigger or rule that removed rows of another table shows too
            after = {f.rows.table.qualified: _count(lconn, f.rows.table) for f in found}
    return ReinsertResult(inserted=inserted, relinked=relinked, live_rows_before=before, live_rows_after=after)


def _relink(sconn: psycopg.Connection, lconn: psycopg.Connection, nulled: _Nulled) -> int:
    """Set the emptied ``ON DELETE SET NULL`` key of ``nulled``'s rows back to the backup's values (only
    where it is still NULL); how many rows."""
    table, columns = nulled.table, (*nulled.table.key, *nulled.fk.columns)
    temp = f"drlib_relink_{nulled.keys}"
    lconn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(temp), _key_list(columns), table.ident
        )
    )
    source = sql.SQL("COPY (SELECT {} FROM {} s WHERE EXISTS (SELECT 1 FROM {} m WHERE {})) TO STDOUT").format(
        sql.SQL(", ").join(sql.Identifier("s", c) for c in columns),
        table.ident,
        sql.Identifier(nulled.keys),
        _key_match("m", "s", table.key),
    )
    with (
        sconn.cursor().copy(source) as out,
        lconn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(temp))) as into,
    ):
        for data in out:
            into.write(data)
    return lconn.execute(
        sql.SQL("UPDATE {} t SET {} FROM {} r WHERE {} AND {}").format(
            table.ident,
            sql.SQL(", ").join(
                sql.SQL("{} = r.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in nulled.fk.columns
            ),
            sql.Identifier(temp),
            _key_match("r", "t", table.key),
            sql.SQL(" AND ").join(sql.SQL("t.{} IS NULL").format(sql.Identifier(c)) for c in nulled.fk.columns),
        )
    ).rowcount


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


def _key_text(table: TableRef, alias: str = "") -> sql.Composed:
    """A row's primary key as the text a user gives it: ``7``, or ``7,2`` for a two-column key."""
    return sql.SQL("concat_ws(',', {})").format(
        sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(alias, c) if alias else sql.Identifier(c)) for c in table.key
        )
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
