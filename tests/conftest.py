"""Test fixtures: one real sandbox (PostgreSQL, Redis, S3 endpoint, sample API) per test session,
started on free ports in a temporary folder, and helpers to copy its database for fault tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drlib.config import Profile, load_profile
from drlib.exceptions import DrlibError
from drlib.postgres.backup import Backup, backup_database, backup_name
from drlib.postgres.catalogue import list_backups, select_backup
from drlib.postgres.connection import PgTarget, database_exists, drop_database
from drlib.postgres.integrity import verify_backup
from drlib.postgres.restore import restore_in_place
from drlib.redis.backup import backup_redis
from drlib.sandbox.stack import Sandbox
from drlib.storage.backup import archive_local
from drlib.storage.catalogue import list_storage_backups, select_storage_backup
from drlib.storage.restore import restore_local, verify_storage_backup
from tests.scratchdb import PREFIX, Made, on

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    home = tmp_path_factory.mktemp("drlib-home")
    reports = tmp_path_factory.mktemp("reports")
    os.environ["DRLIB_HOME"] = str(home)
    os.environ["DRLIB_REPORTS"] = str(reports)
    os.environ.pop("DRLIB_CONFIG", None)
    os.environ.pop("DRLIB_PROFILE", None)
    os.chdir(REPO)
    box = Sandbox(home / "sandbox")
    box.up(size="small")
    profile = load_profile("sandbox")
    # baselines: healthy_sandbox repairs from them, and every notebook finds a backup to work with
    target = PgTarget.from_profile(profile)
    backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    archive_local(root=box.storage_root, backup_dir=profile.backups.storage_dir)
    backup_redis(profile)
    yield box
    box.down(purge=True)


@pytest.fixture
def profile(sandbox: Sandbox) -> Profile:
    return load_profile("sandbox")


@pytest.fixture
def target(profile: Profile) -> PgTarget:
    return PgTarget.from_profile(profile)


@pytest.fixture
def healthy_sandbox(sandbox: Sandbox, profile: Profile, target: PgTarget) -> Sandbox:
    """The sandbox with its live database and API back in place (repairs what a test broke)."""
    if not database_exists(target, target.name):
        latest = select_backup(list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix))
        restore_in_place(verify_backup(latest), target=target, jobs=2, confirm=True)
    if not sandbox.storage_root.is_dir():
        storage = select_storage_backup(list_storage_backups(backup_dir=profile.backups.storage_dir), kind="archive")
        restore_local(verify_storage_backup(storage), live_root=sandbox.storage_root, confirm=True)
    sandbox.up()  # restarts whatever a test stopped or killed (Redis, the API, …)
    return sandbox


@pytest.fixture
def backup(healthy_sandbox: Sandbox, profile: Profile, target: PgTarget) -> Backup:
    """A fresh backup of the live sandbox database, named after its own second (a backup taken in the
    same second as an earlier one gets the next free name, which tests of the naming must not see)."""
    taken = {b.name for b in list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix)}
    while backup_name(profile.backups.prefix, datetime.now(UTC), "custom") in taken:
        time.sleep(0.05)
    return backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)


@pytest.fixture
def db_copy(healthy_sandbox: Sandbox, target: PgTarget) -> Iterator[PgTarget]:
    """A throw-away copy of the live database (CREATE DATABASE … TEMPLATE) to inject faults into."""
    name = f"copy_{secrets.token_hex(4)}"
    with target.maintenance.connect() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (target.name,),
        )
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{target.name}"')
    yield target.with_database(name)
    drop_database(target, name)


@pytest.fixture
def make_db(healthy_sandbox: object, target: PgTarget) -> Iterator[Made]:
    """make_db(*sql, name=None, options="") -> a new database (``CREATE DATABASE name options``) with
    ``sql`` run in it; every database whose name starts with ``rfix_`` is dropped afterwards."""

    def make(*statements: str, name: str | None = None, options: str = "") -> PgTarget:
        name = name or f"{PREFIX}{secrets.token_hex(4)}"
        with target.maintenance.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" {options}')  # type: ignore[arg-type]
        db = on(target, name)
        with db.connect() as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]
        return db

    yield make
    with target.maintenance.connect() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'rfix\\_%'").fetchall()
    for (name,) in rows:
        with contextlib.suppress(DrlibError):
            drop_database(target, name)
