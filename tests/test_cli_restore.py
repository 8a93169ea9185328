"""``drlib restore …`` and ``drlib verify …`` through the real command, against the sandbox: dry runs
change nothing, confirmed restores restore (Option B and A, storage, Redis), verifications fail on
the damage they exist for, bad input is refused in one line, the lock is shared with drills, and a
signal mid-restore leaves the live database as it was and a report that names the step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner, Result

from drlib import faults
from drlib.cli import main
from drlib.exceptions import DrillLocked
from drlib.lock import acquire, stack_key
from drlib.postgres.backup import backup_database
from drlib.postgres.catalogue import list_backups
from drlib.postgres.connection import PgTarget
from drlib.postgres.manifest import manifest_path
from drlib.postgres.tools import pg_bindir
from drlib.processes import RUN_MARKER
from drlib.redis.backup import backup_redis
from drlib.redis.connection import redis_client
from drlib.report import verify_checksums
from drlib.results import SCHEMA_FILE, DrillResults
from drlib.secrets import read_secrets_file
from drlib.storage.backup import archive_local
from tests import test_not_configured
from tests.test_not_configured import shop, shop_profile  # noqa: F401 (fixtures: a database-only profile)

REPO = Path(__file__).resolve().parent.parent


def drlib(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def report_folders() -> set[Path]:
    return set(Path(os.environ["DRLIB_REPORTS"]).glob("*/*-*"))


def new_report(before: set[Path]) -> Path:
    made = report_folders() - before
    assert len(made) == 1, made
    return next(iter(made))


def results_of(folder: Path) -> DrillResults:
    return DrillResults.load(folder / "results.json")


def counts(target: PgTarget) -> dict[str, int]:
    with target.connect() as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("organizations", "users", "content_jobs", "content_artifacts")
        }


def databases(target: PgTarget) -> set[str]:
    with target.maintenance.connect() as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")}


def delete_artifacts(target: PgTarget, how_many: int = 3) -> None:
    with target.connect() as conn:
        conn.execute(
            "DELETE FROM content_artifacts WHERE id IN (SELECT id FROM content_artifacts ORDER BY id LIMIT %s)",
            (how_many,),
        )


def drop_old_copies(target: PgTarget) -> None:
    with target.maintenance.connect() as conn:
        for name in databases(target):
            if name.startswith(f"{target.name}_old_"):
                conn.execute(f'DROP DATABASE "{name}"')


# -- database --------------------------------------------------------------------------------------
def test_a_dry_run_restore_changes_nothing_and_shows_what_each_step_would_do(healthy_sandbox, target) -> None:  # type: ignore[no-untyped-def]
    before, dbs, folders = counts(target), databases(target), report_folders()
    result = drlib("restore", "database")
    assert result.exit_code == 0, result.output
    for text in (
        "DRY RUN, nothing will be changed",
        "PASSED  pre_restore_checklist (",
        "SKIPPED restore_database (",
        "would: stop sandbox API",
        f"CREATE DATABASE {target.name}_restored_",
        "DRY RUN (nothing changed): restore_database",
        "drlib restore database --confirm",
    ):
        assert text in result.output, text
    assert counts(target) == before and databases(target) == dbs and healthy_sandbox.api_running()
    folder = new_report(folders)
    results = results_of(folder)
    assert results.status == "dry_run" and results.kind == "restore" and results.scenario == "restore_database"
    assert {s.status for s in results.steps} <= {"passed", "skipped"} and results.rto_seconds is None
    assert {"report.html", "results.json", "SHA256SUMS"} <= {p.name for p in folder.iterdir()}
    assert verify_checksums(folder) == [] and "DR restore" in (folder / "report.html").read_text()
    index = drlib("reports", "index")
    assert index.exit_code == 0
    entries = json.loads((folder.parent.parent / "index.json").read_text())
    assert entries[0]["scenario"] == "restore_database" and entries[0]["status"] == "dry_run"


def test_verify_database_fails_after_rows_are_deleted_and_a_confirmed_restore_brings_them_back(
    healthy_sandbox, backup, target
) -> None:  # type: ignore[no-untyped-def]
    clean = drlib("verify", "database", "-p", "exact", "true")  # nothing written since the backup: all equal
    assert clean.exit_code == 0, clean.output
    assert "PASSED: verify_database" in clean.output
    before = counts(target)
    delete_artifacts(target)
    damaged = drlib("verify", "database", "--json")
    assert damaged.exit_code == 1, damaged.output
    document = json.loads(damaged.stdout)
    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text()))
    failing = [c["name"] for c in document["checks"] if c["status"] == "fail"]
    assert document["status"] == "failed" and any("content_artifacts" in name for name in failing), failing
    assert "FAIL " in damaged.stderr and "content_artifacts" in damaged.stderr

    folders = report_folders()
    restored = drlib("restore", "database", "--confirm", "-p", "drop_old_database", "true")
    assert restored.exit_code == 0, restored.output
    assert "PASSED: restore_database" in restored.output and "PASSED  restart_application (" in restored.output
    assert counts(target) == {**before, "content_jobs": before["content_jobs"] + 1}  # + the post-restore test job
    folder = new_report(folders)
    results = results_of(folder)
    assert results.status == "passed" and results.parameters["option"] == "B"
    assert results.backup is not None and results.backup["name"] == backup.path.name
    assert results.rto_seconds is not None and results.rpo_seconds is not None
    assert [s.name for s in results.steps] == [
        "pre_restore_checklist",
        "stop_application",
        "identify_backup",
        "restore_database",
        "verify_restore",
        "restart_application",
        "post_restore_verification",
    ]
    assert drlib("verify", "database").exit_code == 0
    secrets = read_secrets_file(healthy_sandbox.secrets_file).values()
    for path in folder.rglob("*"):
        assert not [s for s in secrets if s.encode() in path.read_bytes()], path


def test_a_dropped_live_database_is_restored_from_the_newest_backup(backup, target) -> None:  # type: ignore[no-untyped-def]
    before = counts(target)
    faults.drop_live_database(target)
    result = drlib("restore", "database", "--confirm")
    assert result.exit_code == 0, result.output
    assert counts(target) == {**before, "content_jobs": before["content_jobs"] + 1}  # + the post-restore test job
    assert f"database: {target.name} restored from {backup.path.name}" in result.output


def test_option_a_restores_into_the_live_database(backup, target) -> None:  # type: ignore[no-untyped-def]
    before, dbs = counts(target), databases(target)
    delete_artifacts(target)
    result = drlib("restore", "database", "--confirm", "--option", "A", "--backup", backup.path.name)
    assert result.exit_code == 0, result.output
    assert counts(target)["content_artifacts"] == before["content_artifacts"]
    assert databases(target) == dbs  # in place: no copy, nothing kept aside
    assert "restored in place" in result.output


def test_a_missing_or_corrupt_backup_is_refused_in_one_line_before_anything_is_touched(backup, profile, target) -> None:  # type: ignore[no-untyped-def]
    before, folders = counts(target), report_folders()
    missing = drlib("restore", "database", "--confirm", "--backup", "content_crew_1999-01-01_000000.dump")
    assert missing.exit_code == 3, missing.output
    errors = [line for line in missing.output.splitlines() if line.startswith("error [")]
    assert len(errors) == 1 and errors[0].startswith("error [backup-not-found]: no backup named")
    assert "Traceback" not in missing.output
    results = results_of(new_report(folders))
    assert results.status == "refused" and results.error is not None and results.error.code == "backup-not-found"

    corrupt = Path(profile.backups.postgres_dir) / "content_crew_2000-01-01_000000.dump"
    shutil.copy2(backup.path, corrupt)
    shutil.copy2(manifest_path(backup.path), manifest_path(corrupt))
    faults.flip_byte(corrupt)
    try:
        result = drlib("restore", "database", "--confirm", "--backup", corrupt.name)
        assert result.exit_code == 3, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error [")]
        assert len(errors) == 1 and errors[0].startswith("error [backup-corrupt]"), result.output
        verified = drlib("verify", "database", "--backup", "nope.dump")
        assert verified.exit_code == 3 and "error [backup-not-found]" in verified.output
    finally:
        corrupt.unlink()
        manifest_path(corrupt).unlink()
    assert counts(target) == before and healthy_api(profile)
    assert corrupt.name not in {b.name for b in list_backups(profile.backups.postgres_dir, prefix="content_crew")}


def healthy_api(profile) -> bool:  # type: ignore[no-untyped-def]
    from drlib.app.health import http_request

    return http_request("GET", profile.app.base_url + profile.app.health_path, timeout=3).status == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", "database", "-p", "jbos", "3"], "valid: failure_time, backup, option, jobs, require_manifest"),
        (["verify", "redis", "-p", "backup", "x"], "unknown parameter 'backup' for drlib verify redis; valid: "),
        (["restore", "redis", "-p", "confirm", "true"], "'confirm' is not set with -p: it is --confirm"),
        (["verify", "database", "-p", "profile", "sandbox"], "'profile' is not set with -p: it is --env"),
        (["restore", "database", "--backup", "a.dump", "-p", "backup", "b.dump"], "given twice"),
        (["restore", "database", "--jobs", "0"], "'jobs' must be at least 1"),
        (["restore", "storage", "-p", "storage_kind", "ftp"], "allowed: 'local', 's3'"),
        (["restore", "database", "-p", "db_password", "x"], "looks like a secret"),
    ],
)
def test_a_bad_parameter_is_refused_before_any_run_naming_what_is_valid(
    healthy_sandbox, args: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    folders = report_folders()
    result = drlib(*args)
    assert result.exit_code == 3, result.output
    assert result.output.startswith("error [parameter]: ") and message in result.output, result.output
    assert report_folders() == folders


def test_an_option_click_does_not_know_is_bad_usage(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    assert drlib("restore", "database", "--option", "C").exit_code == 2
    assert drlib("verify", "database", "--confirm").exit_code == 2  # a verification only reads


def test_a_restore_is_refused_while_a_drill_holds_the_stack(healthy_sandbox, target) -> None:  # type: ignore[no-untyped-def]
    before, folders = counts(target), report_folders()
    held = acquire(stack_key(None), scenario="redis_loss")
    try:
        result = drlib("restore", "database", "--confirm")
    finally:
        held.release()
    assert result.exit_code == 3, result.output
    assert "error [locked]" in result.output and f"pid {os.getpid()} on host" in result.output
    assert "scenario redis_loss" in result.output
    assert results_of(new_report(folders)).status == "refused"
    assert counts(target) == before and healthy_sandbox.api_running()


def test_two_runs_in_one_second_are_indexed_in_the_order_they_started(tmp_path: Path) -> None:
    from drlib.report import write_index

    template = DrillResults.load(REPO / "tests" / "data" / "results-schema1.json")
    for name, started in (("zz_first", "2026-11-26T16:32:39.1+00:00"), ("aa_second", "2026-11-26T16:32:39.9+00:00")):
        folder = tmp_path / "2026-11-26" / f"163239-{name}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(template.model_copy(update={"started_at": started}).to_json())
    write_index(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["folder"] for e in index] == ["2026-11-26/163239-aa_second", "2026-11-26/163239-zz_first"]


# -- signals ---------------------------------------------------------------------------------------
def slow_pg_restore(tmp_path: Path) -> tuple[Path, Path]:
    """A PostgreSQL bin folder whose pg_restore, when it restores into a database, runs the real one and
    then waits: the signal then reliably lands mid-restore. Returns (bin folder, file touched when waiting)."""
    real = pg_bindir()
    assert real is not None
    folder, waiting = tmp_path / "bin", tmp_path / "pg_restore-waiting"
    folder.mkdir()
    for program in real.iterdir():
        if program.name != "pg_restore":
            (folder / program.name).symlink_to(program)
    script = folder / "pg_restore"
    script.write_text(
        f'#!/bin/sh\n"{real / "pg_restore"}" "$@" || exit $?\n'
        f'case " $* " in *" -d "*) touch "{waiting}"; sleep 120;; esac\n'
    )
    script.chmod(0o755)
    return folder, waiting


def start_restore(*args: str, bindir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != RUN_MARKER}
    return subprocess.Popen(
        [sys.executable, "-m", "drlib.cli", "restore", "database", "--confirm", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1", "DRLIB_PG_BINDIR": str(bindir)},
    )


def wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_restore_leaves_the_live_database_as_it_was_and_reports_the_step(
    healthy_sandbox, target, tmp_path, sig: signal.Signals
) -> None:  # type: ignore[no-untyped-def]
    bindir, waiting = slow_pg_restore(tmp_path)
    before, dbs, folders = counts(target), databases(target), report_folders()
    process = start_restore(bindir=bindir)
    try:
        wait_for(waiting.exists)
        assert any(name.startswith(f"{target.name}_restored_") for name in databases(target))
        process.send_signal(sig)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + sig, output
    assert f"error [interrupted]: interrupted by {sig.name} during step restore_database" in output
    assert "Traceback" not in output
    assert counts(target) == before and databases(target) == dbs  # the copy was dropped
    folder = new_report(folders)
    results = results_of(folder)
    assert results.status == "error" and results.execution.interrupted == sig.name
    assert results.error is not None and results.error.step == "restore_database"
    assert "was dropped" in results.error.message
    assert "stopped" in results.stack_state["application"] and verify_checksums(folder) == []
    healthy_sandbox.up()  # the runbook stopped the application in step 1


@pytest.mark.slow
def test_a_killed_restore_is_reported_by_its_watchdog_which_then_frees_the_lock(
    healthy_sandbox, target, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    bindir, waiting = slow_pg_restore(tmp_path)
    folders = report_folders()
    process = start_restore(bindir=bindir)
    wait_for(waiting.exists)
    process.kill()
    process.wait()
    wait_for(lambda: len(report_folders() - folders) == 1 and (new_report(folders) / "SHA256SUMS").is_file())
    results = results_of(new_report(folders))
    assert results.status == "error" and results.error is not None and "was killed" in results.error.message
    assert any("DROP DATABASE" in line for line in results.next_steps), results.next_steps

    def lock_is_free() -> bool:
        try:
            acquire(stack_key(None), scenario="check").release()
            return True
        except DrillLocked:
            return False

    wait_for(lock_is_free, timeout=30)
    healthy_sandbox.up()  # drops the copy the killed restore left, starts the application


# -- storage and Redis -------------------------------------------------------------------------------
def test_verify_storage_fails_after_a_file_is_deleted_and_restore_storage_brings_it_back(
    healthy_sandbox, profile
) -> None:  # type: ignore[no-untyped-def]
    root = healthy_sandbox.storage_root
    archive_local(root=root, backup_dir=profile.backups.storage_dir)
    assert drlib("verify", "storage").exit_code == 0
    victim = sorted(p for p in (root / "voiceovers").rglob("*") if p.is_file())[0]
    victim.unlink()
    failed = drlib("verify", "storage")
    assert failed.exit_code == 1, failed.output
    assert "FAILED: verify_storage" in failed.output and victim.relative_to(root).as_posix() in failed.output

    dry = drlib("restore", "storage")
    assert dry.exit_code == 0, dry.output
    assert "DRY RUN (nothing changed): restore_storage" in dry.output and not victim.exists()
    restored = drlib("restore", "storage", "--confirm", "-p", "drop_old_tree", "true")
    assert restored.exit_code == 0, restored.output
    assert "PASSED: restore_storage" in restored.output and victim.is_file()
    assert drlib("verify", "storage").exit_code == 0


def test_verify_redis_fails_after_keys_are_deleted_and_restore_redis_brings_them_back(healthy_sandbox, profile) -> None:  # type: ignore[no-untyped-def]
    backup_redis(profile)
    clean = drlib("verify", "redis")
    assert clean.exit_code == 0, clean.output
    client = redis_client(profile)
    sessions = sorted(client.scan_iter("session:*"))
    assert sessions
    client.delete(*sessions[:3])
    failed = drlib("verify", "redis", "--json")
    assert failed.exit_code == 1
    failing = [c["name"] for c in json.loads(failed.stdout)["checks"] if c["status"] == "fail"]
    assert "redis_keys:session" in failing, failing

    dry = drlib("restore", "redis")
    assert dry.exit_code == 0, dry.output
    assert "DRY RUN (nothing changed): restore_redis" in dry.output and not client.exists(sessions[0])
    restored = drlib("restore", "redis", "--confirm")
    assert restored.exit_code == 0, restored.output
    assert "PASSED  verify_redis (" in restored.output
    assert redis_client(profile).exists(*sessions[:3]) == 3


# -- a profile without an application, Redis or storage ---------------------------------------------
def test_a_database_only_profile_restores_its_database_and_refuses_what_it_lacks(shop_profile) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    target = PgTarget.from_profile(shop_profile)
    backup_database(target=target, backup_dir=shop_profile.backups.postgres_dir, prefix=shop_profile.backups.prefix)
    folders = report_folders()
    restored = drlib("restore", "database", "--env", "shop", "--confirm", "-p", "drop_old_database", "true")
    assert restored.exit_code == 0, restored.output
    assert "NOT CONFIGURED stop_application (" in restored.output and "PASSED: restore_database" in restored.output
    steps = {s.name: s.status for s in results_of(new_report(folders)).steps}
    assert {steps[name] for name in test_not_configured.APP_STEPS} == {"not_configured"} and steps[
        "restore_database"
    ] == "passed"
    assert drlib("verify", "database", "--env", "shop").exit_code == 0
    for args in (["restore", "redis"], ["restore", "storage", "--confirm"], ["verify", "storage"], ["verify", "redis"]):
        refused = drlib(*args, "--env", "shop")
        assert refused.exit_code == 3, refused.output
        assert "error [not-configured]: " in refused.output and "no [" in refused.output, refused.output
