"""Every database verification of the runbook fails when its fault is injected."""

from __future__ import annotations

from datetime import timedelta

import pytest

from drlib import faults
from drlib.checks import Checks
from drlib.exceptions import InsufficientDiskSpace
from drlib.objectives import rpo_check
from drlib.postgres.backup import Backup
from drlib.postgres.connection import PgTarget
from drlib.postgres.verify import verify_database
from drlib.preflight import disk_space, failure_scope


def by_name(checks: Checks) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def test_an_intact_copy_passes_every_check(backup: Backup, db_copy: PgTarget) -> None:
    checks = verify_database(target=db_copy, manifest=backup.manifest)
    assert checks.passed, repr(checks)
    names = by_name(checks)
    assert {
        "database_connection",
        "expected_tables",
        "row_count:public.users",
        "foreign_keys",
        "orphaned_jobs",
        "newest_row:public.content_jobs",
    } <= set(names)


def test_a_missing_table_fails_expected_tables(backup: Backup, db_copy: PgTarget) -> None:
    faults.drop_table(db_copy, "content_artifacts")
    checks = by_name(verify_database(target=db_copy, manifest=backup.manifest))
    assert checks["expected_tables"] == "fail"
    assert checks["row_count:public.content_artifacts"] == "fail"


def test_a_wrong_row_count_fails_row_count(backup: Backup, db_copy: PgTarget) -> None:
    faults.delete_rows(db_copy, "content_artifacts", 3)
    checks = by_name(verify_database(target=db_copy, manifest=backup.manifest))
    assert checks["row_count:public.content_artifacts"] == "fail"
    assert checks["row_count:public.users"] == "pass"


def test_a_missing_foreign_key_fails_foreign_keys(backup: Backup, db_copy: PgTarget) -> None:
    faults.drop_foreign_key(db_copy, "content_jobs", "content_jobs_user_id_fkey")
    result = {c.name: c for c in verify_database(target=db_copy, manifest=backup.manifest)}
    assert result["foreign_keys"].status == "fail"
    assert "content_jobs_user_id_fkey" in result["foreign_keys"].detail


def test_an_orphaned_job_fails_the_orphan_check(backup: Backup, db_copy: PgTarget) -> None:
    faults.insert_orphan_job(db_copy)
    result = {c.name: c for c in verify_database(target=db_copy, manifest=backup.manifest)}
    assert result["orphaned_jobs"].status == "fail"
    assert result["orphaned_jobs"].observed == 1


def test_a_stale_newest_row_fails_newest_row(backup: Backup, db_copy: PgTarget) -> None:
    faults.age_newest_row(db_copy, "content_jobs")
    checks = by_name(verify_database(target=db_copy, manifest=backup.manifest))
    assert checks["newest_row:public.content_jobs"] == "fail"
    assert checks["row_count:public.content_jobs"] == "pass"


def test_an_unreachable_database_fails_the_connection_check(backup: Backup, target: PgTarget) -> None:
    gone = target.with_database("no_such_database")
    checks = by_name(verify_database(target=gone, manifest=backup.manifest))
    assert checks == {"database_connection": "fail"}


def test_rpo_over_target_fails(backup: Backup) -> None:
    late = backup.created_at + timedelta(hours=25)
    assert (
        rpo_check(
            component="postgres", backup_time=backup.created_at, failure_time=late, target_seconds=24 * 3600
        ).status
        == "fail"
    )
    assert (
        rpo_check(
            component="postgres",
            backup_time=backup.created_at,
            failure_time=backup.created_at,
            target_seconds=24 * 3600,
        ).status
        == "pass"
    )


def test_not_enough_disk_space_is_refused_with_a_clear_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InsufficientDiskSpace, match=r"not enough free disk space.*needed"):
        disk_space(path=tmp_path, required_bytes=10**18)
    assert disk_space(path=tmp_path, required_bytes=1).status == "pass"


def test_failure_scope_warns_when_nothing_is_down(healthy_sandbox, profile, target) -> None:  # type: ignore[no-untyped-def]
    assert failure_scope(profile, target).status == "warn"


def test_failure_scope_names_the_component_that_is_down(healthy_sandbox, profile, target) -> None:  # type: ignore[no-untyped-def]
    result = failure_scope(profile, target.with_database("no_such_database"))
    assert result.status == "pass"
    assert "database" in result.detail
