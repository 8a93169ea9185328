"""Option A and Option B restores, dry runs, and what a failed or interrupted restore leaves behind."""

from __future__ import annotations

import psutil
import pytest

from drlib import faults
from drlib.exceptions import ConfirmationRequired, RestoreFailed
from drlib.plans import RestorePlan
from drlib.postgres.backup import Backup
from drlib.postgres.connection import PgTarget, database_exists, drop_database
from drlib.postgres.integrity import VerifiedBackup, verify_backup
from drlib.postgres.restore import (
    RestoreResult,
    SwapResult,
    drop_old_database,
    restore_in_place,
    restore_to_new_database,
    swap_databases,
)
from drlib.postgres.verify import verify_database


def job_count(target: PgTarget) -> int:
    with target.connect() as conn:
        row = conn.execute("SELECT count(*) FROM content_jobs").fetchone()
    assert row is not None
    return int(row[0])


def databases(target: PgTarget) -> set[str]:
    with target.maintenance.connect() as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def no_pg_restore_running() -> bool:
    return not any(p.info["name"] == "pg_restore" for p in psutil.process_iter(["name"]))


def test_without_confirm_a_restore_only_shows_its_plan(backup: Backup, db_copy: PgTarget) -> None:
    faults.delete_rows(db_copy, "content_artifacts", 5)
    before = databases(db_copy)
    plan = restore_in_place(verify_backup(backup), target=db_copy, confirm=False)
    assert isinstance(plan, RestorePlan) and "pg_restore" in str(plan) and "--clean" in str(plan)
    plan_b = restore_to_new_database(verify_backup(backup), target=db_copy, confirm=False)
    assert isinstance(plan_b, RestorePlan)
    assert databases(db_copy) == before
    assert not verify_database(target=db_copy, manifest=backup.manifest).passed


def test_option_a_restores_into_the_existing_database(backup: Backup, db_copy: PgTarget) -> None:
    faults.delete_rows(db_copy, "content_artifacts", 5)
    faults.age_newest_row(db_copy, "content_jobs")
    result = restore_in_place(verify_backup(backup), target=db_copy, jobs=2, confirm=True)
    assert isinstance(result, RestoreResult) and result.option == "A"
    assert verify_database(target=db_copy, manifest=backup.manifest).passed


def test_option_a_recreates_a_dropped_database(backup: Backup, db_copy: PgTarget) -> None:
    drop_database(db_copy, db_copy.name)
    restore_in_place(verify_backup(backup), target=db_copy, jobs=2, confirm=True)
    assert verify_database(target=db_copy, manifest=backup.manifest).passed


def test_option_b_swaps_in_the_restored_copy_and_keeps_the_old_database(backup: Backup, db_copy: PgTarget) -> None:
    faults.delete_rows(db_copy, "content_jobs", 0)
    with db_copy.connect() as conn:
        conn.execute("INSERT INTO organizations (name) VALUES ('written after the backup')")
    restored = restore_to_new_database(verify_backup(backup), target=db_copy, jobs=2, confirm=True)
    assert isinstance(restored, RestoreResult) and database_exists(db_copy, restored.database)
    swap = swap_databases(target=db_copy, restored=restored.database, confirm=True)
    assert isinstance(swap, SwapResult) and swap.old_database is not None
    assert verify_database(target=db_copy, manifest=backup.manifest).passed
    old = db_copy.with_database(swap.old_database)
    with old.connect() as conn:
        kept = conn.execute("SELECT count(*) FROM organizations WHERE name = 'written after the backup'").fetchone()
    assert kept == (1,)
    with pytest.raises(ConfirmationRequired):
        drop_old_database(target=db_copy, name=db_copy.name, confirm=True)
    assert isinstance(drop_old_database(target=db_copy, name=swap.old_database), RestorePlan)
    assert database_exists(db_copy, swap.old_database)
    drop_old_database(target=db_copy, name=swap.old_database, confirm=True)
    assert not database_exists(db_copy, swap.old_database)


def test_a_failed_option_b_restore_leaves_the_live_database_as_it_was(
    backup: Backup, db_copy: PgTarget, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from tests.test_backup import copy_backup

    damaged = copy_backup(backup, tmp_path)
    verified = verify_backup(damaged)
    faults.flip_byte(damaged.path, offset=damaged.path.stat().st_size - 200)
    before = job_count(db_copy)
    with pytest.raises(RestoreFailed, match="was not touched") as info:
        restore_to_new_database(verified, target=db_copy, jobs=1, confirm=True, new_name=f"{db_copy.name}_r")
    assert "dropped" in str(info.value)
    assert job_count(db_copy) == before
    assert f"{db_copy.name}_r" not in databases(db_copy)


def test_an_interrupted_restore_stops_pg_restore_and_cleans_up(backup: Backup, db_copy: PgTarget) -> None:
    verified: VerifiedBackup = verify_backup(backup)
    with pytest.raises(RestoreFailed, match="timed out"):
        restore_to_new_database(
            verified, target=db_copy, jobs=2, confirm=True, timeout=0.001, new_name=f"{db_copy.name}_i"
        )
    assert no_pg_restore_running()
    assert f"{db_copy.name}_i" not in databases(db_copy)
    assert verify_database(target=db_copy, manifest=backup.manifest).passed
