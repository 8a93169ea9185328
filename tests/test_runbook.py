"""The database-loss runbook object (what each notebook cell calls): refusals before anything is
touched, and Option B never swapping in a copy that fails verification."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from drlib.exceptions import ConnectionFailed, CredentialsRejected, ParameterError, VerificationFailed
from drlib.postgres.backup import Backup, backup_database
from drlib.postgres.connection import PgTarget, database_exists, drop_database
from drlib.postgres.manifest import manifest_path
from drlib.processes import free_port
from drlib.sandbox.stack import SECRET_NAMES
from drlib.scenarios.postgres_database_loss import PostgresDatabaseLoss


def counts(target: PgTarget) -> tuple[int, int]:
    with target.connect() as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM content_jobs)").fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_wrong_password_stops_the_checklist_before_anything_is_touched(
    backup: Backup, target: PgTarget, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    before = counts(target)
    monkeypatch.setenv(SECRET_NAMES["database"], "not-the-sandbox-password-42")
    runbook = PostgresDatabaseLoss(profile="sandbox", confirm=True, evidence_path=str(tmp_path / "e.json"))
    with pytest.raises(CredentialsRejected, match="rejected the credentials") as info:
        runbook.pre_restore_checklist()
    assert "not-the-sandbox-password-42" not in str(info.value)
    evidence = json.loads((tmp_path / "e.json").read_text())
    assert evidence["steps"][0]["status"] == "error"
    assert "not-the-sandbox-password-42" not in (tmp_path / "e.json").read_text()
    monkeypatch.undo()
    assert counts(target) == before


def test_an_unreachable_database_server_is_one_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from drlib.config import DatabaseSettings

    nowhere = PgTarget(settings=replace(DatabaseSettings(), host="127.0.0.1", port=free_port()), password="x1y2z3w4")
    with pytest.raises(ConnectionFailed, match=r"cannot reach PostgreSQL at .*: .*Check the host and port"):
        backup_database(target=nowhere, backup_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


def test_mistyped_parameters_are_refused_before_the_first_step(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError, match="allowed: 'A', 'B'"):
        PostgresDatabaseLoss(profile="sandbox", option="C")
    with pytest.raises(ParameterError, match="whole number"):
        PostgresDatabaseLoss(profile="sandbox", jobs="four")
    with pytest.raises(ParameterError, match="ISO 8601"):
        PostgresDatabaseLoss(profile="sandbox", failure_time="yesterday-ish")


def test_option_b_never_swaps_in_a_copy_that_fails_verification(backup: Backup, target: PgTarget, profile) -> None:  # type: ignore[no-untyped-def]
    tampered = backup.path.parent / "content_crew_2000-01-01_000000.dump"
    shutil.copy2(backup.path, tampered)
    manifest = json.loads(manifest_path(backup.path).read_text())
    manifest["file"] = tampered.name
    manifest["tables"]["public.users"]["rows"] += 1  # the copy will hold one user fewer than promised
    manifest_path(tampered).write_text(json.dumps(manifest))
    before = counts(target)
    runbook = PostgresDatabaseLoss(profile="sandbox", confirm=True, backup=tampered.name, option="B")
    try:
        runbook.pre_restore_checklist()
        with pytest.raises(VerificationFailed, match="NOT swapped in") as info:
            runbook.restore_database()
        assert counts(target) == before
        copy = str(info.value).split("restored copy ")[1].split(" ")[0]
        assert database_exists(target, copy)
        drop_database(target, copy)
    finally:
        tampered.unlink()
        manifest_path(tampered).unlink()


def test_a_failed_restore_says_the_application_was_left_stopped_and_how_to_start_it(
    backup: Backup, target: PgTarget, healthy_sandbox, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    tampered = backup.path.parent / "content_crew_2000-01-02_000000.dump"
    shutil.copy2(backup.path, tampered)
    manifest = json.loads(manifest_path(backup.path).read_text())
    manifest["file"] = tampered.name
    manifest["tables"]["public.users"]["rows"] += 1
    manifest_path(tampered).write_text(json.dumps(manifest))
    evidence = tmp_path / "e.json"
    runbook = PostgresDatabaseLoss(
        profile="sandbox", confirm=True, backup=tampered.name, option="B", evidence_path=str(evidence)
    )
    try:
        runbook.pre_restore_checklist()
        runbook.stop_application()
        with pytest.raises(VerificationFailed) as info:
            runbook.restore_database()
        assert "State now: application: stopped (sandbox API); Step 5 starts it again" in str(info.value)
        recorded = json.loads(evidence.read_text())
        assert recorded["facts"]["stack_state"]["application"].startswith("stopped")
        assert "State now: application: stopped" in recorded["facts"]["error"]["message"]
        drop_database(target, str(info.value).split("restored copy ")[1].split(" ")[0])
    finally:
        tampered.unlink()
        manifest_path(tampered).unlink()
        healthy_sandbox.up()


def test_option_b_reads_every_row_once_and_says_so_when_told_not_to(backup: Backup, healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    for verify_rows in (True, False):
        runbook = PostgresDatabaseLoss(profile="sandbox", confirm=True, backup=backup.name, verify_rows=verify_rows)
        runbook.pre_restore_checklist()
        copy = {c.name: c.status for c in runbook.restore_database().checks}
        step4 = {c.name: c.status for c in runbook.verify_restore().checks}
        assert ("restored_copy:content:public.users" in copy) is verify_rows  # rows read on the copy…
        assert "content:public.users" not in step4  # …and not again after the swap
        assert step4["schema:table"] == "pass" and step4["database_properties"] == "pass"
        assert ("rows_verified" in step4) is not verify_rows
        runbook.restart_application()
