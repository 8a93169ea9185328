"""The scenario model beyond the database: each scenario's drill preflight refuses a named backup
that is missing or damaged and an unreachable S3 bucket before anything is written; staging plus
the runbook restores for real; a composite step records its sub-steps once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from drlib import faults
from drlib.checks import CheckResult
from drlib.config import Profile
from drlib.exceptions import BackupCorrupt, BackupNotFound, ConnectionFailed
from drlib.processes import free_port
from drlib.redis.backup import list_redis_backups
from drlib.redis.backup import manifest_path as rdb_manifest_path
from drlib.sandbox.stack import Sandbox
from drlib.scenarios import SCENARIOS, full_system_loss, redis_loss, storage_loss
from drlib.scenarios.full_system_loss import FullSystemLoss
from drlib.scenarios.redis_loss import RedisLoss
from drlib.scenarios.storage_loss import StorageLoss
from drlib.selection import select_backup
from drlib.storage.catalogue import list_storage_backups, select_storage_backup
from drlib.storage.manifest import manifest_path_for


def defaults(scenario_id: str, **overrides: object) -> dict[str, object]:
    """The scenario's parameters as a drill validates them: defaults plus ``overrides``."""
    return {**{p.name: p.default for p in SCENARIOS[scenario_id].params}, **overrides}


def damaged_storage_backup(profile: Profile, folder: Path) -> tuple[Profile, str]:
    """A copy of the newest storage archive, truncated, in a backup folder of its own."""
    archive = select_storage_backup(list_storage_backups(backup_dir=profile.backups.storage_dir), kind="archive")
    folder.mkdir()
    copy = folder / archive.path.name
    shutil.copy(archive.path, copy)
    shutil.copy(manifest_path_for(archive.path), manifest_path_for(copy))
    faults.truncate_file(copy)
    return replace(profile, backups=replace(profile.backups, storage_dir=folder)), archive.name


def damaged_redis_backup(profile: Profile, folder: Path) -> tuple[Profile, str]:
    """A copy of the newest RDB, truncated, in a backup folder of its own."""
    rdb = select_backup(list_redis_backups(profile.backups.redis_dir), what="Redis backup")
    folder.mkdir()
    copy = folder / rdb.path.name
    shutil.copy(rdb.path, copy)
    shutil.copy(rdb_manifest_path(rdb.path), rdb_manifest_path(copy))
    faults.truncate_file(copy)
    return replace(profile, backups=replace(profile.backups, redis_dir=folder)), rdb.name


# -- preflight ------------------------------------------------------------------------------
STACK_CHECKS = {"credentials_and_connectivity", "live_database_exists", "redis_reachable"}


def backup_checks(checks: list[CheckResult]) -> list[CheckResult]:
    return [c for c in checks if c.name not in STACK_CHECKS]


def test_latest_backups_need_no_preflight_check_the_drill_takes_fresh_ones(profile: Profile) -> None:
    assert backup_checks(storage_loss.preflight(profile, defaults("storage_loss"))) == []
    assert backup_checks(redis_loss.preflight(profile, defaults("redis_loss"))) == []
    assert backup_checks(full_system_loss.preflight(profile, defaults("full_system_loss"))) == []


def test_every_drill_preflight_first_checks_the_stack_answers(profile: Profile) -> None:
    assert {c.name for c in redis_loss.preflight(profile, defaults("redis_loss"))} == STACK_CHECKS
    assert {c.name for c in full_system_loss.preflight(profile, defaults("full_system_loss"))} == STACK_CHECKS


def test_a_named_storage_backup_that_does_not_exist_is_refused_by_the_preflight(profile: Profile) -> None:
    with pytest.raises(BackupNotFound, match=r"storage_2001-01-01\.tar\.gz"):
        storage_loss.preflight(profile, defaults("storage_loss", storage_backup="storage_2001-01-01.tar.gz"))


def test_a_named_storage_backup_that_is_truncated_is_refused_by_the_preflight(profile: Profile, tmp_path: Path) -> None:
    damaged, name = damaged_storage_backup(profile, tmp_path / "storage")
    with pytest.raises(BackupCorrupt):
        storage_loss.preflight(damaged, defaults("storage_loss", storage_backup=name))


def test_a_named_storage_backup_that_verifies_passes_the_preflight(profile: Profile) -> None:
    archive = select_storage_backup(list_storage_backups(backup_dir=profile.backups.storage_dir), kind="archive")
    results = storage_loss.preflight(profile, defaults("storage_loss", storage_backup=archive.name))
    assert results and all(r.status == "pass" for r in results)


def test_an_unreachable_s3_endpoint_is_refused_by_the_storage_preflight(profile: Profile) -> None:
    nowhere = replace(profile, storage=replace(profile.storage, endpoint_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(ConnectionFailed, match="cannot reach the S3 endpoint"):
        storage_loss.preflight(nowhere, defaults("storage_loss", storage_kind="s3"))


def test_a_missing_backups_bucket_is_refused_by_the_storage_preflight(profile: Profile) -> None:
    missing = replace(profile, storage=replace(profile.storage, backups_bucket="no-such-backups-bucket"))
    with pytest.raises(ConnectionFailed, match="no-such-backups-bucket"):
        storage_loss.preflight(missing, defaults("storage_loss", storage_kind="s3"))


def test_reachable_buckets_pass_the_storage_preflight(profile: Profile) -> None:
    checks = backup_checks(storage_loss.preflight(profile, defaults("storage_loss", storage_kind="s3")))
    assert [r.name for r in checks] == ["s3_live_bucket_reachable", "s3_backups_bucket_reachable"]


def test_a_named_redis_backup_that_is_truncated_is_refused_by_the_preflight(profile: Profile, tmp_path: Path) -> None:
    damaged, name = damaged_redis_backup(profile, tmp_path / "redis")
    with pytest.raises(BackupCorrupt, match="truncated or altered"):
        redis_loss.preflight(damaged, defaults("redis_loss", redis_backup=name))


def test_a_named_redis_backup_that_does_not_exist_is_refused_by_the_preflight(profile: Profile) -> None:
    with pytest.raises(BackupNotFound):
        redis_loss.preflight(profile, defaults("redis_loss", redis_backup="dump_2001-01-01_000000.rdb"))


@pytest.mark.parametrize(
    ("parameter", "name"),
    [
        ("backup", "content_crew_2001-01-01_000000.dump"),
        ("storage_backup", "storage_2001-01-01.tar.gz"),
        ("redis_backup", "dump_2001-01-01_000000.rdb"),
    ],
)
def test_full_system_loss_refuses_any_named_backup_that_does_not_exist(
    profile: Profile, parameter: str, name: str
) -> None:
    with pytest.raises(BackupNotFound):
        full_system_loss.preflight(profile, defaults("full_system_loss", **{parameter: name}))


def test_full_system_loss_refuses_a_damaged_redis_backup_before_destroying_the_stack(
    profile: Profile, tmp_path: Path
) -> None:
    damaged, name = damaged_redis_backup(profile, tmp_path / "redis")
    with pytest.raises(BackupCorrupt):
        full_system_loss.preflight(damaged, defaults("full_system_loss", redis_backup=name))


def test_the_scenarios_declare_their_drill_objectives() -> None:
    assert SCENARIOS["full_system_loss"].sandbox_only
    verify = SCENARIOS["verify_restore"]
    assert (verify.verify_after, verify.rto_kind, verify.rpo_component) == (False, None, None)
    assert SCENARIOS["database_corruption"].sandbox_only  # it overwrites the cluster's files, server stopped
    assert SCENARIOS["disk_full"].sandbox_only  # it mounts a filesystem over the backups folder
    assert SCENARIOS["provider_outage"].sandbox_only  # it stops the provider's servers
    assert SCENARIOS["webhook_replay"].sandbox_only  # it restarts the sandbox's API without webhook protection
    only = ("full_system_loss", "database_corruption", "disk_full", "provider_outage", "webhook_replay")
    assert not any(s.sandbox_only for s in SCENARIOS.values() if s.id not in only)


def test_each_scenario_is_its_module_and_a_command_imports_only_its_own() -> None:
    assert all(scenario.id == scenario_id for scenario_id, scenario in SCENARIOS.items())
    probe = (
        "import sys; from drlib.operate import get_operation; get_operation('restore', 'database').scenario; "
        "print(sorted(m for m in sys.modules if m.startswith('drlib.scenarios.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['drlib.scenarios.base', 'drlib.scenarios.postgres_database_loss']"


# -- composite steps -----------------------------------------------------------------------
def test_a_composite_step_records_only_its_sub_steps(healthy_sandbox: Sandbox, tmp_path: Path) -> None:
    runbook = FullSystemLoss(profile="sandbox", evidence_path=str(tmp_path / "e.json"))
    outcome = runbook.restore_redis()
    assert outcome.dry_run
    names = [s.name for s in runbook.evidence.steps]
    assert names == ["redis_pre_restore_checklist", "restore_redis", "verify_redis"]
    assert [s.status for s in runbook.evidence.steps][1:] == ["skipped", "skipped"]


# -- staging and the runbooks, for real ----------------------------------------------------
def test_a_staged_storage_loss_is_restored_and_the_runbook_records_the_storage_state(
    healthy_sandbox: Sandbox, profile: Profile, tmp_path: Path
) -> None:
    setup = storage_loss.stage(profile, defaults("storage_loss"))
    assert not healthy_sandbox.storage_root.exists()
    runbook = StorageLoss(
        profile="sandbox",
        confirm=True,
        failure_time=setup.failure_time.isoformat(),
        evidence_path=str(tmp_path / "e.json"),
    )
    for run in (runbook.identify_affected_storage, runbook.locate_backup, runbook.restore_storage):
        run()
    verified = runbook.verify_restore()
    assert verified.passed, repr(verified.checks)
    assert runbook.test_application().passed
    assert "restored from" in runbook.state_text()
    assert setup.data_loss(profile)["storage_files"] == {"written_after_backup": 3, "lost": 3}
    evidence = json.loads((tmp_path / "e.json").read_text())
    assert [s["name"] for s in evidence["steps"]] == [
        "identify_affected_storage",
        "locate_backup",
        "restore_storage",
        "verify_storage",
        "test_application",
    ]


def test_a_staged_redis_loss_is_restored_and_the_runbook_records_the_redis_state(
    healthy_sandbox: Sandbox, profile: Profile, tmp_path: Path
) -> None:
    setup = redis_loss.stage(profile, defaults("redis_loss"))
    runbook = RedisLoss(profile="sandbox", confirm=True, failure_time=setup.failure_time.isoformat())
    checklist = runbook.pre_restore_checklist()
    assert checklist.passed
    runbook.restore()
    assert runbook.verify_restore().passed
    assert runbook.test_application().passed
    assert "redis: restarted with" in runbook.state_text()
    assert setup.data_loss(profile)["redis_keys"] == {"written_after_backup": 5, "lost": 5}
