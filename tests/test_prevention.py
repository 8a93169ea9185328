"""Prevention checks (the runbook's Monitoring / Automated Alerts) and ``drlib monitor``: every check passes
on a freshly backed-up sandbox, and each breach is injected for real (a small filesystem filled up, a backup
made old or damaged, connections opened, files deleted, the API stopped or answering 5xx) and seen."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from drlib.app.health import http_request
from drlib.cli import main
from drlib.config import MonitoringSettings, Profile, load_profile
from drlib.evidence import utcnow
from drlib.exceptions import ConfigError
from drlib.metrics import write_prometheus
from drlib.monitoring import (
    app_checks,
    backup_checks,
    backup_status,
    connection_checks,
    disk_checks,
    error_counts,
    run_checks,
    storage_checks,
)
from drlib.postgres.backup import Backup
from drlib.postgres.connection import PgTarget
from drlib.postgres.manifest import manifest_path
from drlib.redis.backup import backup_redis
from drlib.sandbox.stack import Sandbox
from drlib.scenarios.prevention_checks import PreventionChecks
from drlib.storage.backup import archive_local
from tests.test_drill import newest, report_folders

ROOT = Path(__file__).resolve().parent.parent
#: checks whose outcome depends on the machine (its disk) or on what earlier tests logged (5xx answers)
MACHINE_DEPENDENT = re.compile(r"^(disk_|app_error_rate$)")


def statuses(checks: object) -> dict[str, str]:
    return {c.name: c.status for c in checks}  # type: ignore[attr-defined]


def with_monitoring(profile: Profile, **settings: object) -> Profile:
    return dataclasses.replace(profile, monitoring=dataclasses.replace(profile.monitoring, **settings))


@pytest.fixture
def backed_up(healthy_sandbox: Sandbox, backup: Backup, profile: Profile) -> Profile:
    """The sandbox just backed up, every component: what a clean daily check sees."""
    archive_local(root=healthy_sandbox.storage_root, backup_dir=profile.backups.storage_dir)
    backup_redis(profile)
    return profile


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A drlib.toml (``DRLIB_CONFIG``) a test writes [profiles.sandbox.*] overrides into."""
    path = tmp_path / "drlib.toml"
    path.write_text("")
    monkeypatch.setenv("DRLIB_CONFIG", str(path))
    yield path


# -- the clean sandbox ---------------------------------------------------------------------------------
def test_a_freshly_backed_up_sandbox_passes_every_prevention_check(backed_up: Profile) -> None:
    report = run_checks(backed_up)
    found = statuses(report.checks)
    assert report.passed, report.checks
    assert {"disk_postgres_data", "disk_storage", "disk_backups_postgres", "disk_backups_redis"} <= set(found)
    for name in ("postgres", "storage", "redis"):
        assert found[f"backup_{name}_fresh"] == found[f"backup_{name}_verifies"] == "pass"
    assert {n: s for n, s in found.items() if not MACHINE_DEPENDENT.match(n)} == dict.fromkeys(
        [n for n in found if not MACHINE_DEPENDENT.match(n)], "pass"
    )
    assert report.connections is not None and report.connections.max_connections == 100
    assert report.files is not None and report.files.live == report.files.in_backup
    assert report.app is not None and report.app.healthy and report.notes == ()


def test_the_notebooks_steps_are_the_checks_and_only_read(backed_up: Profile, target: PgTarget) -> None:
    with target.connect() as conn:
        before = conn.execute("SELECT count(*) FROM content_jobs").fetchone()
    runbook = PreventionChecks(profile="sandbox", confirm=True)
    for spec in PreventionChecks.steps():
        getattr(runbook, spec.method)()
    summary = runbook.summary()
    assert summary.passed and "all checks passed" in summary.title
    assert {s.name: s.status for s in runbook.evidence.steps} == dict.fromkeys(
        [s.name for s in PreventionChecks.steps()], "passed"
    )
    assert all(spec.dry_run == "run" for spec in PreventionChecks.steps())
    with target.connect() as conn:
        assert conn.execute("SELECT count(*) FROM content_jobs").fetchone() == before


# -- disk --------------------------------------------------------------------------------------------------
@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real, separate filesystem to fill up (needs root, as CI and the dev machines are)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(volume: Path, percent: float) -> None:
    total = shutil.disk_usage(volume).total
    used = shutil.disk_usage(volume).used
    with (volume / "filler").open("ab") as handle:
        handle.write(b"\0" * max(0, int(total * percent / 100) - used))


def test_a_volume_filling_up_warns_over_60_and_fails_over_80_percent(
    healthy_sandbox: Sandbox, profile: Profile, small_volume: Path
) -> None:
    watched = with_monitoring(profile, volumes={"uploads": small_volume})
    assert statuses(disk_checks(watched)[1])["disk_uploads"] == "pass"
    fill(small_volume, 70)
    usages, results, _ = disk_checks(watched)
    result = next(r for r in results if r.name == "disk_uploads")
    assert result.status == "warn" and "70" in result.observed
    assert next(u for u in usages if u.volume == "uploads").used_ratio == pytest.approx(0.70, abs=0.02)
    fill(small_volume, 90)
    result = next(r for r in disk_checks(watched)[1] if r.name == "disk_uploads")
    assert result.status == "fail" and "fail over 80 %" in result.expected
    (small_volume / "filler").unlink()
    assert statuses(disk_checks(watched)[1])["disk_uploads"] == "pass"


def test_thresholds_come_from_the_profile(healthy_sandbox: Sandbox, profile: Profile) -> None:
    used = shutil.disk_usage(profile.backups.postgres_dir).used / sum(
        shutil.disk_usage(profile.backups.postgres_dir)[1:]
    )
    below = max(0.1, round(100 * used) - 5)
    assert (
        statuses(disk_checks(with_monitoring(profile, disk_warn_percent=below, disk_critical_percent=99))[1])[
            "disk_backups_postgres"
        ]
        == "warn"
    )
    low = with_monitoring(profile, disk_warn_percent=below / 2, disk_critical_percent=below)
    assert statuses(disk_checks(low)[1])["disk_backups_postgres"] == "fail"


def test_monitoring_thresholds_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "drlib.toml"
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    base = "[profiles.x.database]\nname = 'app'\n[profiles.x.monitoring]\n"
    config.write_text(base + "disk_warn_percent = 85\n")
    with pytest.raises(ConfigError, match=r"disk_warn_percent \(85\) must be below disk_critical_percent \(80\)"):
        load_profile("x")
    config.write_text(base + "disk_critical_percent = 120\n")
    with pytest.raises(ConfigError, match=r"disk_critical_percent: Input should be less than or equal to 100"):
        load_profile("x")
    config.write_text(base + "disk_warn_pct = 50\n")
    with pytest.raises(ConfigError, match="did you mean 'disk_warn_percent'"):
        load_profile("x")
    config.write_text(base + "disk_warn_percent = 50\nlog_window = '1h'\nvolumes = { uploads = 'up' }\n")
    settings = load_profile("x").monitoring
    assert settings.disk_warn_percent == 50 and settings.log_window == 3600
    assert settings.volumes == {"uploads": tmp_path / "up"} and settings.disk_critical_percent == 80
    assert MonitoringSettings().disk_warn_percent == 60


# -- backups -----------------------------------------------------------------------------------------------
def copy_backup(backup: Backup, folder: Path) -> Path:
    """``backup`` with its manifest and roles file copied into ``folder``; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in backup.path.parent.glob(backup.name + "*"):
        shutil.copy2(path, folder / path.name)
    return manifest_path(folder / backup.name)  # not the roles file beside it (.roles.json)


def test_a_backup_older_than_its_rpo_fails_and_a_missing_one_too(
    backup: Backup, profile: Profile, tmp_path: Path
) -> None:
    manifest = copy_backup(backup, tmp_path / "pg")
    data = json.loads(manifest.read_text())
    data["created_at"] = (utcnow() - timedelta(hours=25)).isoformat()
    manifest.write_text(json.dumps(data))
    old = dataclasses.replace(profile, backups=dataclasses.replace(profile.backups, postgres_dir=tmp_path / "pg"))
    status = backup_status(old, "postgres")
    assert status.verified and status.age_seconds is not None and status.age_seconds > 24 * 3600
    fresh, verifies = backup_checks(status)
    assert (fresh.name, fresh.status, verifies.status) == ("backup_postgres_fresh", "fail", "pass")
    assert fresh.observed.startswith("25h 00m") and "drlib backup create" in fresh.detail

    (tmp_path / "empty").mkdir()
    none = dataclasses.replace(profile, backups=dataclasses.replace(profile.backups, postgres_dir=tmp_path / "empty"))
    [missing] = backup_checks(backup_status(none, "postgres"))
    assert missing.status == "fail" and missing.observed == "no backup"


def test_a_tighter_rpo_in_the_profile_makes_the_same_backup_stale(backed_up: Profile) -> None:
    tight = dataclasses.replace(
        backed_up,
        targets=dataclasses.replace(backed_up.targets, rpo_seconds={**backed_up.targets.rpo_seconds, "redis": 0.001}),
    )
    assert statuses(backup_checks(backup_status(tight, "redis")))["backup_redis_fresh"] == "fail"
    assert statuses(backup_checks(backup_status(backed_up, "redis")))["backup_redis_fresh"] == "pass"


def test_a_newest_backup_that_does_not_verify_is_a_backup_failure(
    backup: Backup, profile: Profile, tmp_path: Path
) -> None:
    copy_backup(backup, tmp_path / "pg")
    damaged = tmp_path / "pg" / backup.name
    with damaged.open("r+b") as handle:
        handle.seek(damaged.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    broken = dataclasses.replace(profile, backups=dataclasses.replace(profile.backups, postgres_dir=tmp_path / "pg"))
    fresh, verifies = backup_checks(backup_status(broken, "postgres"))
    assert fresh.status == "pass" and verifies.status == "fail" and "checksum" in verifies.detail


# -- database connections ---------------------------------------------------------------------------------
def test_connections_over_80_percent_of_max_connections_warn(
    healthy_sandbox: Sandbox, profile: Profile, target: PgTarget
) -> None:
    usage, results = connection_checks(profile)
    assert usage is not None and statuses(results) == {
        "database_connection": "pass",
        "database_connections_used": "pass",
    }
    wanted = int(usage.max_connections * 0.8) + 1 - usage.connections
    opened: list[psycopg.Connection] = []
    try:
        for _ in range(wanted):
            opened.append(target.connect())
        usage, results = connection_checks(profile)
        assert usage is not None and usage.connections > 0.8 * usage.max_connections
        assert statuses(results)["database_connections_used"] == "warn"
    finally:
        for conn in opened:
            conn.close()
    assert statuses(connection_checks(profile)[1])["database_connections_used"] == "pass"


def test_a_database_that_does_not_answer_is_a_failed_check_not_an_error(profile: Profile) -> None:
    gone = dataclasses.replace(profile, database=dataclasses.replace(profile.database, port=1))
    usage, results = connection_checks(gone)
    assert usage is None and statuses(results) == {"database_connection": "fail"}


# -- storage -------------------------------------------------------------------------------------------------
@pytest.fixture
def storage_copy(healthy_sandbox: Sandbox, profile: Profile, tmp_path: Path) -> Profile:
    """The sandbox's storage copied to a folder of its own, with a backup of it: files can be deleted."""
    shutil.copytree(healthy_sandbox.storage_root, tmp_path / "storage")
    archive_local(root=tmp_path / "storage", backup_dir=tmp_path / "storage-backups")
    return dataclasses.replace(
        profile,
        storage=dataclasses.replace(profile.storage, path=tmp_path / "storage"),  # type: ignore[arg-type]
        backups=dataclasses.replace(profile.backups, storage_dir=tmp_path / "storage-backups"),
    )


def test_files_deleted_since_the_backup_warn_and_over_10_percent_fail(storage_copy: Profile) -> None:
    root = Path(storage_copy.require_storage().path)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    status = backup_status(storage_copy, "storage")
    assert status.files == len(files)
    assert statuses(storage_checks(storage_copy, status)[1]) == {
        "storage_writable": "pass",
        "storage_file_count": "pass",
    }
    files[0].unlink()
    counts, results = storage_checks(storage_copy, status)
    assert counts.live == len(files) - 1 and statuses(results)["storage_file_count"] == "warn"
    for path in files[1 : len(files) // 5]:
        path.unlink()
    result = next(r for r in storage_checks(storage_copy, status)[1] if r.name == "storage_file_count")
    assert result.status == "fail" and "drlib undo files" in result.detail
    (root / "new.txt").write_text("written since")  # new files do not hide a drop


def test_a_missing_storage_folder_cannot_be_written(storage_copy: Profile) -> None:
    shutil.rmtree(storage_copy.require_storage().path)
    results = statuses(storage_checks(storage_copy, backup_status(storage_copy, "storage"))[1])
    assert results == {"storage_writable": "fail", "storage_file_count": "fail"}


# -- the application ----------------------------------------------------------------------------------------
def test_a_stopped_application_fails_its_health_check(healthy_sandbox: Sandbox, profile: Profile) -> None:
    healthy_sandbox.stop_api()
    try:
        status, results = app_checks(with_monitoring(profile, health_timeout=1))
        assert not status.healthy and statuses(results)["app_health"] == "fail"
    finally:
        healthy_sandbox.up()
    assert statuses(app_checks(profile)[1])["app_health"] == "pass"


def test_5xx_answers_in_the_log_raise_the_error_rate(healthy_sandbox: Sandbox, profile: Profile) -> None:
    started = utcnow()
    app = profile.require_app()
    root = healthy_sandbox.storage_root
    aside = root.with_name("storage-aside")
    root.rename(aside)  # /health answers 503 (storage down) and logs it
    try:
        answers = [http_request("GET", app.base_url + "/health").status for _ in range(3)]
    finally:
        aside.rename(root)
    assert answers == [503, 503, 503]
    window = (utcnow() - started).total_seconds() + 2
    status, results = app_checks(with_monitoring(profile, log_window=window))
    assert status.errors >= 3 and status.error_ratio > 0.05 and statuses(results)["app_error_rate"] == "warn"


def test_the_error_rate_reads_access_logs_and_falls_back_to_error_lines() -> None:
    access = ['1.2.3.4 "GET /a HTTP/1.1" 200 -', '1.2.3.4 "POST /b HTTP/1.1" 503 -', "ERROR not a request"]
    assert error_counts(access) == (2, 1)
    assert error_counts(["INFO started", "ERROR boom", "Traceback (most recent call last):"]) == (0, 2)


# -- not configured -------------------------------------------------------------------------------------------
def test_a_database_only_profile_reports_the_other_checks_not_configured(backed_up: Profile, config: Path) -> None:
    db = backed_up.database
    config.write_text(
        f"""[profiles.dbonly]
secrets_file = "{backed_up.secrets_file}"
[profiles.dbonly.database]
host = "{db.host}"
port = {db.port}
user = "{db.user}"
name = "{db.name}"
password_secret = "{db.password_secret}"
[profiles.dbonly.backups]
postgres_dir = "{backed_up.backups.postgres_dir}"
"""
    )
    profile = load_profile("dbonly")
    report = run_checks(profile)
    assert {b.component for b in report.backups} == {"postgres"} and report.files is None and report.app is None
    assert len(report.notes) == 3 and all("not configured" in n for n in report.notes)
    assert not [n for n in statuses(report.checks) if n.startswith(("storage", "app", "backup_redis"))]
    runbook = PreventionChecks(profile="dbonly", confirm=True)
    for spec in PreventionChecks.steps():
        getattr(runbook, spec.method)()
    steps = {s.name: s.status for s in runbook.evidence.steps}
    assert {n for n, s in steps.items() if s == "not_configured"} == {
        "storage_backups",
        "redis_backups",
        "storage_files",
        "application",
    }
    assert runbook.summary().passed


# -- metrics and drlib monitor ----------------------------------------------------------------------------------
def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_metrics_file_holds_every_measurement_and_no_temporary_file_is_left(
    backed_up: Profile, tmp_path: Path
) -> None:
    report = run_checks(backed_up)
    path = tmp_path / "drlib.prom"
    write_prometheus(report, path)
    values = samples(path)
    assert [p.name for p in tmp_path.iterdir()] == ["drlib.prom"]
    assert values[("drlib_backup_rpo_seconds", (("component", "redis"),))] == 3600
    assert values[("drlib_backup_last_success", (("component", "postgres"),))] == 1
    assert 0 <= values[("drlib_backup_age_seconds", (("component", "storage"),))] < 3600
    assert 0 < values[("drlib_disk_used_ratio", (("volume", "storage"),))] < 1
    assert values[("drlib_db_max_connections", ())] == 100 and values[("drlib_app_up", ())] == 1
    assert values[("drlib_check_status", (("check", "backup_redis_fresh"),))] == 0
    assert values[("drlib_monitor_last_run_timestamp_seconds", (("profile", "sandbox"),))] == pytest.approx(
        report.taken_at.timestamp()
    )

    empty = tmp_path / "none"
    empty.mkdir()
    missing = dataclasses.replace(backed_up, backups=dataclasses.replace(backed_up.backups, postgres_dir=empty))
    write_prometheus(run_checks(missing), path)
    values = samples(path)
    assert math.isinf(values[("drlib_backup_age_seconds", (("component", "postgres"),))])
    assert values[("drlib_backup_last_success", (("component", "postgres"),))] == 0
    assert values[("drlib_check_status", (("check", "backup_postgres_fresh"),))] == 2


def test_the_readmes_alert_rules_use_only_metrics_drlib_writes(backed_up: Profile, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Monitoring and alerts", 1)[1].split("\n## ", 1)[0]
    rules = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"drlib_\w+", rule["expr"])}
    write_prometheus(run_checks(backed_up), tmp_path / "drlib.prom")
    written = {name for name, _ in samples(tmp_path / "drlib.prom")}
    assert used and used <= written
    exprs = {rule["alert"]: rule["expr"] for rule in rules}
    assert exprs["DiskSpaceWarning"] == "drlib_disk_used_ratio > 0.60"
    assert exprs["DiskSpaceCritical"] == "drlib_disk_used_ratio > 0.80"
    assert "drlib_backup_rpo_seconds" in exprs["BackupOlderThanRPO"]


def test_drlib_monitor_exits_0_on_a_clean_sandbox_and_1_with_a_breach(
    backed_up: Profile, tmp_path: Path, config: Path
) -> None:
    path = tmp_path / "drlib.prom"
    result = CliRunner().invoke(main, ["monitor", "--prometheus", str(path)])
    assert result.exit_code == 0, result.output
    assert "backup_redis_fresh" in result.output and f"metrics: {path}" in result.output
    assert samples(path)[("drlib_check_status", (("check", "database_connection"),))] == 0

    config.write_text("[profiles.sandbox.monitoring]\ndisk_warn_percent = 0.01\ndisk_critical_percent = 0.02\n")
    result = CliRunner().invoke(main, ["monitor", "--prometheus", str(path), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "FAIL  disk_backups_postgres" in result.output and "PASS" not in result.output
    assert samples(path)[("drlib_check_status", (("check", "disk_backups_postgres"),))] == 2


def test_drlib_monitor_refuses_a_metrics_folder_that_does_not_exist(backed_up: Profile, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["monitor", "--prometheus", str(tmp_path / "nope" / "drlib.prom")])
    assert result.exit_code == 3 and "error [config]: cannot write metrics" in result.output


# -- the drill ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_drill_passes_on_a_clean_sandbox_and_fails_on_a_breach(
    backed_up: Profile, config: Path, sandbox: Sandbox
) -> None:
    before = report_folders()
    result = CliRunner().invoke(main, ["drill", "run", "prevention_checks"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = newest(report_folders() - before)
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "passed" and results["fault"].startswith("none")
    assert results["notebooks"] == ["notebook.ipynb"]  # no verify_restore after it: nothing was restored

    config.write_text('[profiles.sandbox.targets.rpo]\nredis = "0.001s"\n')
    before = report_folders()
    result = CliRunner().invoke(main, ["drill", "run", "prevention_checks"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "FAIL backup_redis_fresh" in result.output
    folder = newest(report_folders() - before)
    assert json.loads((folder / "results.json").read_text())["status"] == "failed"
    assert sandbox.status().healthy


def test_the_prevention_checks_run_in_the_monthly_and_annual_plans_after_the_drills() -> None:
    from drlib.scenarios import PLANS, SCENARIOS

    assert SCENARIOS["prevention_checks"].rto_kind is None and not SCENARIOS["prevention_checks"].verify_after
    assert PLANS["monthly"][-1][0] == PLANS["annually"][-1][0] == "prevention_checks"
