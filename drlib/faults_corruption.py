"""Failure injection for the database-corruption drill (sandbox only): the server is stopped, bytes of a
table's or an index's file are overwritten, and the server is started again, as a disk or a controller
that wrote garbage would leave it.

Two kinds of damage:

- ``page``: a page header overwritten (a table's block 0, an index's block 1: its root or first leaf page).
  Every read of that page fails with ``invalid page in block N``; amcheck reports it too.
- ``tuples``: index entries overwritten, the page header left intact. Reads may return wrong rows (or
  crash the server process reading them); only amcheck (``bt_index_check``) reports it. Indexes only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from drlib.config import Profile
from drlib.exceptions import DrillRefused, DrlibError
from drlib.postgres.connection import PgTarget

Damage = Literal["page", "tuples"]

#: 0xdeadbeef: pd_flags get bits PostgreSQL never sets, so the page header is refused on every read
GARBAGE = b"\xde\xad\xbe\xef" * 16
BLOCK_SIZE = 8192
#: a btree page ends with its 16-byte special space; index entries are stored just before it
BTREE_SPECIAL = 16


@dataclass(frozen=True)
class DamagedFile:
    """Where the fault wrote: the relation, its file and the bytes overwritten."""

    relation: str
    path: Path
    offset: int
    length: int
    damage: Damage

    def describe(self) -> str:
        block = self.offset // BLOCK_SIZE
        return f"{self.relation}: {self.length} bytes of block {block} overwritten ({self.damage})"


def damage_relations(profile: Profile, target: PgTarget, relations: dict[str, Damage]) -> list[DamagedFile]:
    """Overwrite bytes of each relation's file (``{"public.users": "page", ...}``) in ``target``'s database
    of the sandbox cluster, with the server stopped; the server is started again whatever happens."""
    if not profile.is_sandbox:
        raise DrillRefused(
            f"the corruption fault overwrites a database's files with the server stopped and runs only on the "
            f"sandbox, not on profile {profile.name!r}"
        )
    from drlib.sandbox.stack import sandbox_for

    server = sandbox_for(profile).postgres()
    with target.connect() as conn:
        files: dict[str, tuple[str, str, int]] = {}
        for relation in relations:
            row = conn.execute(
                "SELECT pg_relation_filepath(c.oid), c.relkind, pg_relation_size(c.oid) "
                "FROM pg_class c WHERE c.oid = %s::regclass",
                (relation,),
            ).fetchone()
            if row is None or row[0] is None:
                raise DrlibError(f"{relation} has no file in {target.name} to damage")
            files[relation] = (str(row[0]), str(row[1]), int(row[2]))
        conn.execute("CHECKPOINT")  # what the file holds is what the server has: the damage is not overwritten
    damaged = [
        _where(relation, server.datadir / path, kind, size, relations[relation])
        for relation, (path, kind, size) in files.items()
    ]
    server.stop()
    try:
        for done in damaged:
            with done.path.open("r+b") as handle:
                handle.seek(done.offset)
                handle.write(_bytes(done))
    finally:
        server.start()
        _wait_accepting(target)
    return damaged


def _where(relation: str, path: Path, kind: str, size: int, damage: Damage) -> DamagedFile:
    if kind == "i":
        if size < 2 * BLOCK_SIZE:
            raise DrlibError(f"index {relation} has no page beyond its metapage to damage")
        if damage == "tuples":
            return DamagedFile(relation, path, 2 * BLOCK_SIZE - BTREE_SPECIAL - 200, 40, damage)
        return DamagedFile(relation, path, BLOCK_SIZE, len(GARBAGE), damage)
    if damage != "page":
        raise DrlibError(f"{relation} is a table: only its page header can be damaged (damage 'page')")
    if size < BLOCK_SIZE:
        raise DrlibError(f"table {relation} is empty: nothing to damage")
    return DamagedFile(relation, path, 0, len(GARBAGE), damage)


def _bytes(done: DamagedFile) -> bytes:
    return b"\xff" * done.length if done.damage == "tuples" else GARBAGE[: done.length]


def _wait_accepting(target: PgTarget, timeout: float = 30) -> None:
    """The port opens before the server accepts connections (recovery): wait for a query to answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with target.maintenance.connect(connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except DrlibError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
