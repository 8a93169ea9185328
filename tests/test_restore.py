"""Option A and Option B restores, dry runs, and what a failed or interrupted restore leaves behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from drlib import faults
from drlib.exceptions import BackupCorrupt, ConfirmationRequired, RestoreFailed
from drlib.plans import RestorePlan
from drlib.postgres.backup import Backup, backup_database
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


def no_pg_restore_running(database: str) -> bool:
    """No pg_restore into ``database`` is left (other people's pg_restore on this machine do not count)."""
    return not any(
        p.info["name"] == "pg_restore" and database in (p.info["cmdline"] or [])
        for p in psutil.process_iter(["name", "cmdline"])
    )


def state(target: PgTarget) -> tuple[dict[str, int], list[str]]:
    """Every table's row count and every foreign key: what a half-done restore would change."""
    with target.connect() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
            ).fetchall()
        ]
        counts = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}  # type: ignore[index]
        keys = conn.execute("SELECT conname FROM pg_constraint WHERE contype = 'f' ORDER BY 1").fetchall()
        return counts, [k[0] for k in keys]


def restore_sessions(target: PgTarget) -> int:
    with target.maintenance.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'drlib-restore-%'"
        ).fetchone()
    return int(row[0]) if row else -1


def dump_that_fails_late(db: PgTarget, folder: Path) -> VerifiedBackup:
    """A sound archive whose restore fails at the very end: an orphaned row (inserted bypassing the
    foreign key) makes re-adding the foreign key, after every table was dropped and reloaded, fail."""
    faults.insert_orphan_job(db)
    made = backup_database(target=db, backup_dir=folder, prefix="late_failure")
    return verify_backup(made, deep=True)


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
    assert no_pg_restore_running(f"{db_copy.name}_i")
    assert f"{db_copy.name}_i" not in databases(db_copy)
    assert verify_database(target=db_copy, manifest=backup.manifest).passed


@pytest.mark.parametrize("fault", ["flip", "truncate"])
def test_option_a_refuses_a_damaged_dump_whose_manifest_matches_before_touching_anything(
    backup: Backup, db_copy: PgTarget, tmp_path: Path, fault: str
) -> None:
    from tests.test_backup import damage_and_rewrite_manifest

    verified = verify_backup(damage_and_rewrite_manifest(backup, tmp_path, fault))
    faults.delete_rows(db_copy, "content_artifacts", 5)  # the live data differs from the backup
    before = state(db_copy)
    with pytest.raises(BackupCorrupt, match="Nothing was changed"):
        restore_in_place(verified, target=db_copy, jobs=2, confirm=True)
    assert state(db_copy) == before


def test_a_failing_option_a_rolls_back_and_says_nothing_was_changed(db_copy: PgTarget, tmp_path: Path) -> None:
    verified = dump_that_fails_late(db_copy, tmp_path)
    faults.delete_rows(db_copy, "content_artifacts", 5)  # so a half-done restore would show in the counts
    before = state(db_copy)
    assert before[1], "the live database has foreign keys a half-done restore would lose"
    with pytest.raises(RestoreFailed, match="nothing was changed") as info:
        restore_in_place(verified, target=db_copy, confirm=True)
    assert "rolled back" in str(info.value)
    assert state(db_copy) == before
    assert restore_sessions(db_copy) == 0


def test_a_failing_option_a_into_a_missing_database_drops_the_database_it_created(
    db_copy: PgTarget, tmp_path: Path
) -> None:
    verified = dump_that_fails_late(db_copy, tmp_path)
    drop_database(db_copy, db_copy.name)
    with pytest.raises(RestoreFailed, match="dropped again"):
        restore_in_place(verified, target=db_copy, confirm=True)
    assert not database_exists(db_copy, db_copy.name)


def test_option_a_runs_as_one_transaction_with_one_job(backup: Backup, db_copy: PgTarget) -> None:
    verified = verify_backup(backup)
    plan = restore_in_place(verified, target=db_copy, jobs=4)
    assert isinstance(plan, RestorePlan)
    assert "--single-transaction" in str(plan) and "-j" not in str(plan).split("pg_restore", 1)[1].split()
    assert "read every data block" in str(plan)
    result = restore_in_place(verified, target=db_copy, jobs=4, confirm=True)
    assert isinstance(result, RestoreResult) and result.jobs == 1 and result.single_transaction


def test_an_option_a_interrupted_before_it_starts_leaves_the_database_as_it_was(
    backup: Backup, db_copy: PgTarget
) -> None:
    verified = verify_backup(backup, deep=True)
    faults.delete_rows(db_copy, "content_artifacts", 5)
    before = state(db_copy)
    with pytest.raises(RestoreFailed, match="timed out") as info:
        restore_in_place(verified, target=db_copy, confirm=True, timeout=0.001)
    assert "nothing was changed" in str(info.value)
    assert state(db_copy) == before
    assert no_pg_restore_running(db_copy.name)
    assert restore_sessions(db_copy) == 0


def test_an_option_a_interrupted_midway_leaves_the_database_as_it_was(backup: Backup, db_copy: PgTarget) -> None:
    verified = verify_backup(backup, deep=True)
    faults.delete_rows(db_copy, "content_artifacts", 5)
    with db_copy.connect() as conn:  # the reset drops other schemas before public: two tables changed first
        conn.execute("CREATE SCHEMA extra; CREATE TABLE extra.a (id int); CREATE TABLE extra.b (id int)")
    before = state(db_copy)
    seen: list[tuple[str, int]] = []

    def watch() -> None:  # where the restore is stuck, and how many tables it has already altered
        with db_copy.maintenance.connect() as conn:
            for _ in range(100):
                row = conn.execute(
                    "SELECT a.query, (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND l.granted "
                    "AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock') "
                    "FROM pg_stat_activity a WHERE a.application_name LIKE 'drlib-restore-%' "
                    "AND a.wait_event_type = 'Lock'"
                ).fetchone()
                if row:
                    seen.append((str(row[0]), int(row[1])))
                    return
                time.sleep(0.05)

    blocker = db_copy.connect(autocommit=False)  # holds a lock the restore's DROP TABLE waits for
    blocker.execute("LOCK TABLE content_artifacts IN ACCESS SHARE MODE")
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(RestoreFailed, match="timed out") as info:
            restore_in_place(verified, target=db_copy, confirm=True, timeout=3)
    finally:
        watcher.join()
        blocker.rollback()
        blocker.close()
    assert seen, "the restore never waited on the lock"
    statement, altered = seen[0]
    # midway: other tables already changed (Option A waits in its reset, dropping the schema that holds the table)
    assert ("content_artifacts" in statement or "DROP SCHEMA" in statement) and altered >= 2, seen
    assert "nothing was changed" in str(info.value)
    assert state(db_copy) == before
    assert verify_database(target=db_copy, manifest=None).passed
    assert no_pg_restore_running(db_copy.name)
    assert restore_sessions(db_copy) == 0


def test_option_b_refuses_a_name_in_use_and_says_nothing_was_touched(backup: Backup, db_copy: PgTarget) -> None:
    with pytest.raises(RestoreFailed, match="was not touched; nothing was created") as info:
        restore_to_new_database(verify_backup(backup), target=db_copy, confirm=True, new_name=db_copy.name)
    assert f"DROP DATABASE {db_copy.name}" in str(info.value)


def test_a_failed_swap_says_nothing_was_renamed_and_the_live_database_accepts_connections(db_copy: PgTarget) -> None:
    before = state(db_copy)
    with pytest.raises(RestoreFailed, match="Nothing was renamed") as info:
        swap_databases(target=db_copy, restored=f"{db_copy.name}_missing", confirm=True)
    assert f"the live database is still {db_copy.name}" in str(info.value)
    assert "accepts connections again" in str(info.value)
    assert state(db_copy) == before


def test_the_undo_command_of_a_swap_puts_the_old_database_back() -> None:
    from drlib.postgres.restore import undo_swap_command

    swap = SwapResult(database="live", restored_from="live_restored_1", old_database="live_old_1")
    assert (
        swap.undo
        == undo_swap_command(swap)
        == ("ALTER DATABASE live RENAME TO live_restored_1; ALTER DATABASE live_old_1 RENAME TO live;")
    )


def test_a_verification_query_that_errors_is_a_failed_check_not_a_traceback(db_copy: PgTarget) -> None:
    with db_copy.connect() as conn:
        conn.execute("ALTER TABLE content_jobs RENAME COLUMN user_id TO owner_id")
    checks = {c.name: c for c in verify_database(target=db_copy, manifest=None)}
    assert checks["orphaned_jobs"].status == "fail"
    assert checks["orphaned_jobs"].observed == "query failed: UndefinedColumn"
