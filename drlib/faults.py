"""Failure injection for drills and for the tests that prove each check can fail.

Every fault refuses to run unless the profile is the sandbox, or is marked
``drill_target = true`` *and* the operator confirmed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg import sql

from drlib.config import Profile
from drlib.exceptions import DrillRefused
from drlib.lazy import lazy_module
from drlib.postgres.connection import PgTarget, drop_database
from drlib.redis.connection import redis_client
from drlib.storage.backends import S3Storage

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")


def ensure_drill_target(profile: Profile, *, confirm: bool) -> None:
    """Refuse failure injection outside the sandbox unless the profile allows it and it is confirmed."""
    if profile.is_sandbox:
        return
    if not profile.drill_target:
        raise DrillRefused(
            f"profile {profile.name!r} is not a drill target: failure injection runs only against the "
            "sandbox or a profile marked drill_target = true in drlib.toml"
        )
    if not confirm:
        raise DrillRefused(
            f"profile {profile.name!r} is a drill target, but injecting failures there needs the "
            "operator's confirmation: pass --yes (drlib drill run) or confirm=True"
        )


def drop_live_database(target: PgTarget) -> None:
    """The database-loss fault: the live database is gone."""
    drop_database(target, target.name)


def drop_table(target: PgTarget, table: str) -> None:
    with target.connect() as conn:
        conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(table)))


def delete_rows(target: PgTarget, table: str, count: int) -> None:
    with target.connect() as conn:
        conn.execute(
            sql.SQL("DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY id LIMIT %s)").format(
                t=sql.Identifier(table)
            ),
            (count,),
        )


def drop_foreign_key(target: PgTarget, table: str, constraint: str) -> None:
    with target.connect() as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(constraint))
        )


def insert_orphan_job(target: PgTarget) -> None:
    """A content job whose user does not exist (bypassing the foreign key, as a bad import would)."""
    with target.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO content_jobs (user_id, organization_id, status, prompt, created_at) "
            "SELECT max(id) + 1000000, 1, 'queued', 'orphan', "
            "(SELECT min(created_at) FROM content_jobs) FROM users"
        )
        conn.execute("DELETE FROM content_jobs WHERE id = (SELECT max(id) FROM content_jobs WHERE prompt <> 'orphan')")


def age_newest_row(target: PgTarget, table: str) -> None:
    """Make the newest row look older: row counts stay, but the data is stale."""
    with target.connect() as conn:
        conn.execute(
            sql.SQL(
                "UPDATE {t} SET created_at = created_at - interval '1 day' "
                "WHERE id = (SELECT id FROM {t} ORDER BY created_at DESC LIMIT 1)"
            ).format(t=sql.Identifier(table))
        )


def truncate_file(path: Path, *, keep_fraction: float = 0.5) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(int(size * keep_fraction))


def empty_file(path: Path) -> None:
    path.write_bytes(b"")


def flip_byte(path: Path, *, offset: int | None = None) -> None:
    """Change one byte (default: the middle one) — bit rot."""
    size = path.stat().st_size
    position = size // 2 if offset is None else offset
    with path.open("r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)
        handle.seek(position)
        handle.write(bytes([byte[0] ^ 0xFF]))


def empty_bucket(live: S3Storage) -> int:
    """Delete every object of the live bucket (a versioned bucket keeps the old versions)."""
    keys = [f.key for f in live.files()]
    live.delete(keys)
    return len(keys)


def kill_redis(profile: Profile) -> None:
    """FLUSHALL, then SHUTDOWN NOSAVE: the dataset is gone and Redis is down."""
    client = redis_client(profile)
    try:
        client.flushall()
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
    finally:
        client.close()


def destroy_sandbox(profile: Profile) -> None:
    """The full-system-loss fault (sandbox only): every process and all live data gone."""
    if not profile.is_sandbox:
        raise DrillRefused("the full-system-loss fault destroys a whole stack and runs only on the sandbox")
    from drlib.sandbox.stack import sandbox_for

    sandbox_for(profile).destroy_data()
