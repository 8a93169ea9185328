"""Cases a hostile review found: each one refused before anything changes, repaired by the command
the report names, or reported truthfully."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from drlib.cli import main
from drlib.drill_record import RUN_FILE, RunRecord, write_abandoned_report
from drlib.lock import acquire, stack_key
from drlib.postgres.connection import PgTarget, database_exists, drop_database
from drlib.report import MANIFEST_NAME, verify_checksums
from drlib.results import DrillResults
from drlib.sandbox.stack import SECRET_NAMES
from tests.test_drill import counts, newest, report_folders, results_of, sandbox_twin


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_a_wrong_password_is_refused_before_the_fault_and_says_nothing_was_injected(
    healthy_sandbox, target: PgTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DRLIB_CONFIG", str(sandbox_twin(tmp_path, healthy_sandbox)))
    before, folders = counts(target), report_folders()
    monkeypatch.setenv(SECRET_NAMES["database"], "not-the-password-at-all")
    code, out = run("drill", "run", "postgres_database_loss", "--env", "twin", "--yes")
    monkeypatch.delenv(SECRET_NAMES["database"])
    assert code == 3, out
    assert "REFUSED" in out and "fault was injected" not in out and "not-the-password-at-all" not in out
    results = results_of(newest(report_folders() - folders))
    assert results.status == "refused" and results.fault == "none (stopped before the fault)"
    assert results.next_steps == []
    assert counts(target) == before


def test_two_profiles_for_one_database_share_one_drill_lock(healthy_sandbox, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DRLIB_CONFIG", str(sandbox_twin(tmp_path, healthy_sandbox)))
    held = acquire(stack_key(None), scenario="postgres_database_loss")
    try:
        code, out = run("drill", "run", "postgres_database_loss", "--env", "twin", "--yes")
        assert code == 3 and "another drill is running" in out, out
    finally:
        held.release()


def test_sandbox_up_and_down_are_refused_while_a_drill_holds_the_sandbox(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    held = acquire(stack_key(None), scenario="postgres_database_loss")
    try:
        for command in ("up", "down"):
            code, out = run("sandbox", command)
            assert code == 3 and "error [locked]" in out and "postgres_database_loss" in out, out
    finally:
        held.release()
    assert healthy_sandbox.status().healthy


def test_the_sandbox_repair_drops_cut_short_restore_copies_and_rebuilds_a_lost_storage_tree(
    healthy_sandbox, target: PgTarget
) -> None:  # type: ignore[no-untyped-def]
    leftover = f"{target.name}_restoring_20260101000000"
    with target.maintenance.connect() as conn:
        conn.execute(f'CREATE DATABASE "{leftover}"')
    moved = healthy_sandbox.storage_root.with_name("storage.moved-away")
    healthy_sandbox.storage_root.rename(moved)
    try:
        assert not healthy_sandbox.status().healthy
        assert healthy_sandbox.up().healthy
        assert not database_exists(target, leftover)
        assert any(healthy_sandbox.storage_root.rglob("*.wav"))
    finally:
        shutil.rmtree(moved, ignore_errors=True)
        drop_database(target, leftover)


def test_the_sandbox_repair_reseeds_a_live_database_left_without_its_tables(healthy_sandbox, target) -> None:  # type: ignore[no-untyped-def]
    drop_database(target, target.name)
    with target.maintenance.connect() as conn:
        conn.execute(f'CREATE DATABASE "{target.name}"')  # what an old Option A cut short used to leave
    assert healthy_sandbox.up().healthy
    with target.connect() as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] > 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0"], "0 is not in the range x>=1"),
        (["--timeout", "-5"], "is not in the range x>=1"),
        (["-p", "jobs", "99999"], "must be at most 32"),
    ],
)
def test_values_that_would_break_the_stack_are_refused_before_anything_runs(
    healthy_sandbox, target, args: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    code, out = run("drill", "run", "postgres_database_loss", *args)
    assert code in (2, 3) and message in out, out
    assert report_folders() == before and database_exists(target, target.name)


def test_a_reports_path_that_is_a_file_is_one_clear_error(healthy_sandbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "somefile").write_text("x")
    code, out = run("drill", "run", "verify_restore", "--reports", str(tmp_path / "somefile"))
    assert code == 3 and "error [config]: cannot create the report folder" in out and "Traceback" not in out


def test_credentials_inside_urls_are_masked_by_the_profile_command(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("API_URL", "http://admin:ApiS3cretValue@api.example:8000")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://AKIAX:S3keyValue99@s3.example")
    code, out = run("profile", "--env", "content_crew")
    assert code == 0, out
    assert "ApiS3cretValue" not in out and "S3keyValue99" not in out and "api.example" in out


def test_a_drill_killed_while_writing_its_report_gets_the_report_finished(tmp_path: Path) -> None:
    folder = tmp_path / "2026-11-27" / "120000-redis_loss"
    folder.mkdir(parents=True)
    record = RunRecord(
        run_id="x",
        scenario="redis_loss",
        title="Redis loss",
        environment="sandbox",
        started_at="2026-11-27T12:00:00+00:00",
        staged=True,
        fault="flushed Redis",
    )
    (folder / RUN_FILE).write_text(record.model_dump_json())
    old = DrillResults.load(Path(__file__).parent / "data" / "results-schema1.json")
    (folder / "results.json").write_text(old.model_copy(update={"scenario": "redis_loss", "notebooks": []}).to_json())
    assert not (folder / MANIFEST_NAME).exists()  # what a kill between results.json and SHA256SUMS leaves
    finished = write_abandoned_report(folder, reason="killed")
    assert finished.status == old.status and finished.execution.interrupted == "killed while writing the report"
    assert verify_checksums(folder) == [] and (folder / "report.html").is_file()
    assert json.loads((tmp_path / "index.json").read_text())[0]["intact"] == "yes"


def test_stopping_a_process_whose_parent_never_reaps_it_does_not_wait_out_the_timeout() -> None:
    """The sandbox API restarted by a drill is the drill's child: stopped from the notebook's kernel it
    stays a zombie until the drill reaps it. A zombie has exited; waiting for it only inflated RTO."""
    import subprocess
    import sys
    import time

    from drlib.processes import kill_tree

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, time; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        started = time.monotonic()
        kill_tree(child, timeout=30)
        assert time.monotonic() - started < 10
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["-p", "delete_extra", "true"], "'delete_extra' applies to storage_kind 's3' only"),
        (["-p", "storage_kind", "s3", "-p", "backup_form", "archive"], "'backup_form' applies to storage_kind 'local'"),
    ],
)
def test_an_option_for_the_other_kind_of_storage_is_refused_not_ignored(
    healthy_sandbox, params: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    files = sorted(p.name for p in healthy_sandbox.storage_root.rglob("*"))
    code, out = run("drill", "run", "storage_loss", *params)
    assert code == 3 and message in out, out
    assert sorted(p.name for p in healthy_sandbox.storage_root.rglob("*")) == files


def test_a_dry_run_of_verify_restore_does_not_log_in(healthy_sandbox, profile) -> None:  # type: ignore[no-untyped-def]
    from drlib.redis.connection import redis_client
    from drlib.scenarios.verify_restore import VerifyRestore

    client = redis_client(profile)
    try:
        before = sorted(client.scan_iter(match="session:*"))
        outcome = VerifyRestore(profile="sandbox", confirm=False).application_verification()
        assert sorted(client.scan_iter(match="session:*")) == before
    finally:
        client.close()
    assert "login_test_account" not in {c.name for c in outcome.checks}
