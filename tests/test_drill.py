"""Whole drills on the sandbox: the report folder contract, failing checks, raising steps,
timeouts, refusals, and no secret anywhere in what a drill writes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner, Result

from drlib.cli import main
from drlib.drill import run_scenario
from drlib.exceptions import DrillLocked
from drlib.lock import acquire, lock_path, stack_key
from drlib.postgres.connection import PgTarget, database_exists
from drlib.processes import RUN_MARKER
from drlib.report import verify_checksums
from drlib.results import DrillResults
from drlib.secrets import read_secrets_file

REPO = Path(__file__).resolve().parent.parent

RESULT_KEYS = {
    "scenario",
    "environment",
    "started_at",
    "finished_at",
    "status",
    "rto_seconds",
    "rto_target_seconds",
    "rpo_seconds",
    "rpo_target_seconds",
    "steps",
    "checks",
    "parameters",
    "drlib_version",
    "run_by",
    "data_loss",
}


def drill(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["drill", "run", *args], env=env, catch_exceptions=False)


def report_folders() -> set[Path]:
    return set(Path(os.environ["DRLIB_REPORTS"]).glob("*/*-*"))


def newest(folders: set[Path]) -> Path:
    assert len(folders) == 1, folders
    return next(iter(folders))


def drill_processes() -> list[int]:
    """Processes of any drill of this test run (they carry the drill marker and this run's DRLIB_HOME):
    never another user's, nor another checkout's test run on the same machine."""
    found = []
    for process in psutil.process_iter():
        try:
            environ = process.environ()
            if RUN_MARKER in environ and environ.get("DRLIB_HOME") == os.environ.get("DRLIB_HOME"):
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def results_of(folder: Path) -> DrillResults:
    return DrillResults.load(folder / "results.json")


@pytest.mark.slow
def test_a_drill_on_the_sandbox_passes_and_archives_a_dated_report(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = drill("postgres_database_loss")
    assert result.exit_code == 0, result.output
    assert "PASSED: postgres_database_loss" in result.output
    folder = newest(report_folders() - before)
    assert folder.parent.name.count("-") == 2 and folder.name.endswith("-postgres_database_loss")
    assert {"report.html", "notebook.ipynb", "results.json", "SHA256SUMS"} <= {p.name for p in folder.iterdir()}
    results = json.loads((folder / "results.json").read_text())
    assert set(results) >= RESULT_KEYS
    assert results["status"] == "passed" and results["environment"] == "sandbox"
    assert 0 < results["rto_seconds"] < results["rto_target_seconds"] == 4 * 3600
    assert 0 < results["rpo_seconds"] < results["rpo_target_seconds"] == 24 * 3600
    assert results["data_loss"]["content_jobs"] == {"written_after_backup": 25, "lost": 25}
    assert [s["name"] for s in results["steps"]] == [
        "pre_restore_checklist",
        "stop_application",
        "identify_backup",
        "restore_database",
        "verify_restore",
        "restart_application",
        "post_restore_verification",
        "verify_restore/database_verification",
        "verify_restore/storage_verification",
        "verify_restore/application_verification",
    ]
    assert all({"name", "started_at", "seconds", "status"} <= set(s) for s in results["steps"])
    assert all({"name", "status", "expected", "observed", "detail"} <= set(c) for c in results["checks"])
    assert results["run_by"]["user"] and results["drlib_version"]
    page = (folder / "report.html").read_text()
    for text in (
        "PASSED",
        "Measured RTO",
        "Achieved RPO",
        "Data lost by this drill",
        "Steps",
        "Checks",
        "Executed notebook: notebook.ipynb",
        "Executed notebook: verify_restore.ipynb",
    ):
        assert text in page
    assert verify_checksums(folder) == []
    index = json.loads((folder.parent.parent / "index.json").read_text())
    assert index[0]["folder"].endswith(folder.name) and index[0]["intact"] == "yes"


@pytest.mark.slow
def test_no_secret_appears_in_anything_a_drill_writes(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    assert drill("postgres_database_loss").exit_code == 0
    folder = newest(report_folders() - before)
    secrets = read_secrets_file(healthy_sandbox.secrets_file).values()
    assert secrets
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path


@pytest.mark.slow
def test_a_drill_with_a_failing_check_exits_non_zero_and_reports_it(healthy_sandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "drlib.toml"
    config.write_text('[profiles.sandbox.targets.rto]\ndatabase_loss = "0.001s"\n')
    before = report_folders()
    result = drill("postgres_database_loss", env={"DRLIB_CONFIG": str(config)})
    assert result.exit_code == 1
    assert "FAILED: postgres_database_loss" in result.output and "FAIL rto:database_loss" in result.output
    folder = newest(report_folders() - before)
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "failed"
    assert [c["name"] for c in results["checks"] if c["status"] == "fail"] == ["rto:database_loss"]
    assert "failing check" in (folder / "report.html").read_text()


def test_a_mistyped_backup_is_refused_before_the_database_is_dropped(healthy_sandbox, target) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = drill("postgres_database_loss", "-p", "backup", "content_crew_1999-01-01_000000.dump")
    assert result.exit_code == 3, result.output
    assert "REFUSED: postgres_database_loss" in result.output
    assert "error [backup-not-found]: no backup named 'content_crew_1999-01-01_000000.dump'" in result.output
    folder = newest(report_folders() - before)
    results = results_of(folder)
    assert results.status == "refused" and results.error is not None and results.error.step == "preflight"
    assert results.fault == "none (stopped before the fault)"
    assert {"report.html", "results.json", "SHA256SUMS"} <= {p.name for p in folder.iterdir()}
    assert verify_checksums(folder) == []
    assert database_exists(target, target.name)


@pytest.mark.slow
def test_a_hung_drill_is_stopped_by_the_whole_run_timeout(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = drill("postgres_database_loss", "--timeout", "1")
    assert result.exit_code == 1
    results = json.loads((newest(report_folders() - before) / "results.json").read_text())
    assert results["status"] == "error" and results["execution"]["timed_out"]
    assert "timed out" in results["error"]["message"]
    assert drill_processes() == []


def test_an_unknown_parameter_is_refused_before_anything_runs(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = CliRunner().invoke(main, ["drill", "run", "postgres_database_loss", "-p", "jbos", "3"])
    assert result.exit_code == 3
    assert "unknown parameter 'jbos'" in result.output
    assert report_folders() == before


def test_failure_injection_is_refused_outside_drill_targets_and_reported(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    refused = run_scenario("postgres_database_loss", environment="content_crew")
    assert refused.status == "refused" and refused.results.error is not None
    assert "not a drill target" in refused.results.error.message and refused.results.error.code == "drill-refused"
    unconfirmed = run_scenario("postgres_database_loss", environment="staging")
    assert unconfirmed.status == "refused" and "confirmation" in unconfirmed.results.error.message  # type: ignore[union-attr]
    assert len(report_folders() - before) == 2
    index = json.loads((Path(os.environ["DRLIB_REPORTS"]) / "index.json").read_text())
    assert [e["status"] for e in index[:2]] == ["refused", "refused"]


def sandbox_twin(tmp_path: Path, healthy_sandbox, *, name: str = "twin") -> Path:  # type: ignore[no-untyped-def]
    """A drill-target profile that is not the sandbox by name but points at the sandbox's servers."""
    connection = json.loads(healthy_sandbox.connection_file.read_text())["profile"]
    db, storage, redis = connection["database"], connection["storage"], connection["redis"]
    config = tmp_path / "drlib.toml"
    config.write_text(
        f"""[profiles.{name}]
drill_target = true
secrets_file = "{connection["secrets_file"]}"
[profiles.{name}.database]
host = "{db["host"]}"
port = {db["port"]}
user = "{db["user"]}"
name = "{db["name"]}"
password_secret = "{db["password_secret"]}"
[profiles.{name}.backups]
postgres_dir = "{tmp_path / "pg"}"
storage_dir = "{tmp_path / "st"}"
redis_dir = "{tmp_path / "rd"}"
[profiles.{name}.storage]
path = "{storage["path"]}"
[profiles.{name}.redis]
host = "{redis["host"]}"
port = {redis["port"]}
password_secret = "{redis["password_secret"]}"
"""
    )
    return config


def counts(target: PgTarget) -> tuple[int, int]:
    with target.connect() as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM content_jobs)").fetchone()
    assert row is not None
    return row[0], row[1]


def test_full_system_loss_on_a_drill_target_is_refused_before_anything_is_written(
    healthy_sandbox, target, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DRLIB_CONFIG", str(sandbox_twin(tmp_path, healthy_sandbox)))
    before, files = counts(target), sorted(p.name for p in healthy_sandbox.storage_root.rglob("*"))
    result = drill("full_system_loss", "--env", "twin", "--yes")
    assert result.exit_code == 3, result.output
    assert "runs only on the sandbox" in result.output
    assert counts(target) == before
    assert sorted(p.name for p in healthy_sandbox.storage_root.rglob("*")) == files
    assert not (tmp_path / "pg").exists()


def test_drill_controlled_and_malformed_parameters_are_refused(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = drill("postgres_database_loss", "-p", "failure_time", "yesterday")
    assert result.exit_code == 3 and "set by the drill itself" in result.output
    result = drill("redis_loss", "-p", "health_timeout", "soon")
    assert result.exit_code == 3 and "whole number" in result.output
    assert report_folders() == before


def test_a_second_drill_on_the_same_stack_is_refused_naming_the_holder(healthy_sandbox, target) -> None:  # type: ignore[no-untyped-def]
    held = acquire(stack_key(None), scenario="redis_loss")
    try:
        before = report_folders()
        result = drill("postgres_database_loss")
        assert result.exit_code == 3, result.output
        assert f"pid {os.getpid()} on host" in result.output and "scenario redis_loss" in result.output
        assert results_of(newest(report_folders() - before)).status == "refused"
        assert database_exists(target, target.name)
    finally:
        held.release()


@pytest.mark.slow
def test_a_stale_lock_of_a_dead_drill_is_taken_over_and_reported(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    path = lock_path(stack_key(None))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": 999999, "host": "gone", "started_at": "2026-01-01T00:00:00+00:00"}))
    before = report_folders()
    result = drill("redis_loss")
    assert result.exit_code == 0, result.output
    results = results_of(newest(report_folders() - before))
    assert results.lock is not None and results.lock["took_over_stale"]["pid"] == 999999
    assert (
        "taken over from a run that no longer held it"
        in (newest(report_folders() - before) / "report.html").read_text()
    )


@pytest.mark.slow
def test_a_dry_run_drill_changes_nothing_and_says_so(healthy_sandbox, target) -> None:  # type: ignore[no-untyped-def]
    before, folders = counts(target), report_folders()
    result = drill("postgres_database_loss", "-p", "confirm", "false")
    assert result.exit_code == 0, result.output
    assert "DRY RUN (nothing changed): postgres_database_loss" in result.output
    results = results_of(newest(report_folders() - folders))
    assert results.status == "dry_run" and results.rto_seconds is None
    assert {s.status for s in results.steps} <= {"passed", "skipped"}
    assert "restore_database" in [s.name for s in results.steps if s.status == "skipped"]
    assert counts(target) == before and healthy_sandbox.api_running()
    assert "DRY RUN" in (newest(report_folders() - folders) / "report.html").read_text()


@pytest.mark.slow
def test_an_older_backup_named_by_the_operator_is_the_one_restored_and_reported(
    healthy_sandbox, profile, target
) -> None:  # type: ignore[no-untyped-def]
    from drlib.postgres.backup import backup_database
    from drlib.postgres.catalogue import list_backups

    older = list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix)[0]
    before = report_folders()
    result = drill("postgres_database_loss", "-p", "backup", older.name)
    assert result.exit_code == 0, result.output
    results = results_of(newest(report_folders() - before))
    assert results.backup is not None and results.backup["name"] == older.name
    assert results.parameters["backup"] == older.name
    # the live database is now the older one: make it the newest backup again for the tests after this
    backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)


@pytest.mark.slow
def test_the_terminal_shows_each_step_and_the_objectives_and_json_is_for_scripts(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    result = drill("redis_loss")
    assert result.exit_code == 0, result.output
    for text in (
        "PASSED  restore_redis (",
        "RTO ",
        "RPO ",
        "data lost (written after the backup): redis_keys 5/5",
        "warnings: ",
    ):
        assert text in result.output, text
    scripted = CliRunner().invoke(main, ["drill", "run", "redis_loss", "--json"], catch_exceptions=False)
    assert scripted.exit_code == 0
    documents = json.loads(scripted.stdout)
    assert documents[0]["scenario"] == "redis_loss" and documents[0]["status"] == "passed"
    assert "PASSED  restore_redis (" in scripted.stderr


@pytest.mark.slow
def test_a_crash_in_the_drill_itself_still_leaves_a_complete_report(healthy_sandbox, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from drlib.scenarios import SCENARIOS

    def explode(profile, params):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom in staging")

    monkeypatch.setitem(SCENARIOS, "redis_loss", dataclasses.replace(SCENARIOS["redis_loss"], stage=explode))
    before = report_folders()
    result = drill("redis_loss")
    assert result.exit_code == 1
    folder = newest(report_folders() - before)
    results = results_of(folder)
    assert results.status == "error" and results.error is not None
    assert results.error.step == "staging" and "boom in staging" in results.error.message
    assert verify_checksums(folder) == [] and (folder / "report.html").is_file()
    assert results.next_steps and "drlib sandbox up" in results.next_steps[0]


def start_drill_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "drlib.cli", "drill", "run", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != RUN_MARKER}, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_line(process: subprocess.Popen[str], text: str, timeout: float = 120) -> list[str]:
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


def wait_until(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_restore_stops_every_child_and_reports_the_step(healthy_sandbox, sig: signal.Signals) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    process = start_drill_process("postgres_database_loss")
    wait_for_line(process, "... restore_database")
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, output
    assert "drlib sandbox up" in output
    results = results_of(newest(report_folders() - before))
    assert results.status == "error" and results.execution.interrupted == sig.name
    assert results.error is not None and results.error.step == "restore_database"
    assert f"interrupted by {sig.name}" in results.error.message
    assert drill_processes() == []


@pytest.mark.slow
def test_kill_9_of_the_drill_command_leaves_no_process_and_a_report(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    process = start_drill_process("postgres_database_loss")
    wait_for_line(process, "... restore_database")
    process.kill()
    process.wait()
    wait_until(
        lambda: len(report_folders() - before) == 1 and (newest(report_folders() - before) / "SHA256SUMS").is_file()
    )
    folder = newest(report_folders() - before)
    results = results_of(folder)
    assert results.status == "error" and "was killed" in results.error.message  # type: ignore[union-attr]
    # the step it was in (or, the watchdog reacting within a fraction of a second, the one after it)
    assert results.error.step in {s.name for s in results.steps}  # type: ignore[union-attr]
    wait_until(lambda: drill_processes() == [], timeout=30)

    def lock_is_free() -> bool:  # once the watchdog has finished, the lock is free again
        try:
            acquire(stack_key(None), scenario="check").release()
            return True
        except DrillLocked:
            return False

    wait_until(lock_is_free, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "params", "lost"),
    [
        ("storage_loss", [], {"storage_files": 3}),
        ("storage_loss", ["-p", "storage_kind", "s3", "-p", "delete_extra", "true"], {"s3_objects": 3}),
        ("redis_loss", [], {"redis_keys": 5}),
        ("full_system_loss", [], {"users": 2, "content_jobs": 25, "storage_files": 3, "redis_keys": 5}),
        ("accidental_deletion", [], {"users": 0, "content_jobs": 0}),  # selective: what was written since stays
    ],
    ids=["storage-local", "storage-s3", "redis", "full-system", "accidental-deletion"],
)
def test_every_scenario_drill_restores_and_verifies(
    healthy_sandbox,
    scenario: str,
    params: list[str],  # type: ignore[no-untyped-def]
    lost: dict[str, int],
) -> None:
    before = report_folders()
    result = drill(scenario, *params)
    assert result.exit_code == 0, result.output
    folder = newest(report_folders() - before)
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "passed"
    assert results["rto_seconds"] is not None and results["rto_seconds"] < results["rto_target_seconds"]
    assert results["rpo_seconds"] is not None and results["rpo_seconds"] < results["rpo_target_seconds"]
    assert {k: v["lost"] for k, v in results["data_loss"].items()} == lost
    assert results["notebooks"] == ["notebook.ipynb", "verify_restore.ipynb"]
    assert any(c["name"].startswith("verify_restore:") for c in results["checks"])
    assert (folder / "verify_restore.ipynb").is_file()


@pytest.mark.slow
def test_verify_restore_runs_on_its_own_and_a_plan_runs_its_scenarios(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = drill("verify_restore")
    assert result.exit_code == 0, result.output
    results = json.loads((newest(report_folders() - before) / "results.json").read_text())
    assert results["rto_seconds"] is None and results["fault"].startswith("none")
    names = {c["name"] for c in results["checks"]}
    assert {"row_count:public.users", "checksums", "storage_keys_exist", "health", "log_errors"} <= names
    listing = CliRunner().invoke(main, ["drill", "list"]).output
    assert "plan quarterly: postgres_database_loss, storage_loss, redis_loss, full_system_loss" in listing
