"""Whole drills on the sandbox: the report folder contract, failing checks, raising steps,
timeouts, refusals, and no secret anywhere in what a drill writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner, Result

from drlib.cli import main
from drlib.drill import run_scenario
from drlib.exceptions import DrillRefused
from drlib.report import verify_checksums
from drlib.secrets import read_secrets_file

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


def kernels_running() -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any("ipykernel_launcher" in part for part in (p.info["cmdline"] or []))
    ]


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


@pytest.mark.slow
def test_a_step_that_raises_is_recorded_as_an_error_naming_the_step(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = drill("postgres_database_loss", "-p", "backup", "content_crew_1999-01-01_000000.dump")
    assert result.exit_code == 1
    assert "ERROR: postgres_database_loss" in result.output and "pre_restore_checklist" in result.output
    results = json.loads((newest(report_folders() - before) / "results.json").read_text())
    assert results["status"] == "error"
    assert results["error"]["step"] == "pre_restore_checklist"
    assert "no backup named" in results["error"]["message"]
    assert results["steps"][0]["status"] == "error"


@pytest.mark.slow
def test_a_hung_drill_is_stopped_by_the_whole_run_timeout(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = drill("postgres_database_loss", "--timeout", "1")
    assert result.exit_code == 1
    results = json.loads((newest(report_folders() - before) / "results.json").read_text())
    assert results["status"] == "error" and results["execution"]["timed_out"]
    assert "timed out" in results["error"]["message"]
    assert kernels_running() == []


def test_an_unknown_parameter_is_refused_before_anything_runs(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    result = CliRunner().invoke(main, ["drill", "run", "postgres_database_loss", "-p", "jbos", "3"])
    assert result.exit_code == 3
    assert "unknown parameter 'jbos'" in result.output
    assert report_folders() == before


def test_failure_injection_is_refused_outside_drill_targets(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    before = report_folders()
    with pytest.raises(DrillRefused, match="not a drill target"):
        run_scenario("postgres_database_loss", environment="content_crew")
    with pytest.raises(DrillRefused, match="confirmation"):
        run_scenario("postgres_database_loss", environment="staging")
    assert report_folders() == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "params", "lost"),
    [
        ("storage_loss", [], {"storage_files": 3}),
        ("storage_loss", ["-p", "storage_kind", "s3", "-p", "delete_extra", "true"], {"s3_objects": 3}),
        ("redis_loss", [], {"redis_keys": 5}),
        ("full_system_loss", [], {"users": 2, "content_jobs": 25, "storage_files": 3, "redis_keys": 5}),
    ],
    ids=["storage-local", "storage-s3", "redis", "full-system"],
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
    assert {"row_count:users", "checksums", "storage_keys_exist", "health", "log_errors"} <= names
    listing = CliRunner().invoke(main, ["drill", "list"]).output
    assert "plan quarterly: postgres_database_loss, storage_loss, redis_loss, full_system_loss" in listing
