"""Database corruption: a damaged index or table found by name (amcheck, or reads without it) and no
false alarm on a clean database; a damaged index rebuilt; the drill, which repairs an index, restores a
damaged table from the backup, and fails when the recovery does not recover."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from drlib.cli import main
from drlib.config import Profile
from drlib.exceptions import DrillRefused
from drlib.faults_corruption import damage_relations
from drlib.plans import RestorePlan
from drlib.postgres.connection import PgTarget
from drlib.postgres.corruption import AMCHECK_SCHEMA, ReindexResult, RepairFailed, reindex_indexes, scan_database
from drlib.processes import free_port
from drlib.sandbox.stack import Sandbox
from drlib.scenarios import database_corruption
from drlib.scenarios.database_corruption import DatabaseCorruption

INDEX = "public.content_jobs_pkey"
TABLE = "public.content_artifacts"


def drill(*args: str) -> Result:
    return CliRunner().invoke(main, ["drill", "run", "database_corruption", *args], catch_exceptions=False)


def newest_results(before: set[Path]) -> dict[str, object]:
    folders = set(Path(os.environ["DRLIB_REPORTS"]).glob("*/*-*")) - before
    assert len(folders) == 1, folders
    return dict(json.loads((next(iter(folders)) / "results.json").read_text()))


def report_folders() -> set[Path]:
    return set(Path(os.environ["DRLIB_REPORTS"]).glob("*/*-*"))


def extensions(db: PgTarget) -> set[str]:
    with db.connect() as conn:
        names = {str(r[0]) for r in conn.execute("SELECT extname FROM pg_extension")}
        schemas = {str(r[0]) for r in conn.execute("SELECT nspname FROM pg_namespace")}
    return names | ({f"schema:{AMCHECK_SCHEMA}"} if AMCHECK_SCHEMA in schemas else set())


def old_databases(target: PgTarget) -> set[str]:
    with target.maintenance.connect() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{target.name}_old_%",))
        return {str(r[0]) for r in rows}


@pytest.fixture
def repaired_live(healthy_sandbox: Sandbox, target: PgTarget) -> Iterator[PgTarget]:
    """The live database, with whatever a test left damaged in it rebuilt afterwards (indexes only)."""
    yield target
    left = scan_database(target)
    if left.damaged_indexes:
        reindex_indexes(target, left.damaged_indexes, confirm=True)
    assert scan_database(target).clean, "a test left the live database damaged"
    healthy_sandbox.up()


# -- detection --------------------------------------------------------------------------------
@pytest.mark.parametrize("use_amcheck", [True, False], ids=["amcheck", "reads"])
def test_a_clean_database_raises_no_alarm_and_amcheck_is_removed_again(target: PgTarget, use_amcheck: bool) -> None:
    before = extensions(target)
    scan = scan_database(target, use_amcheck=use_amcheck)
    assert scan.clean and not scan.damaged and not scan.unchecked, scan.describe()
    assert scan.tables > 3 and scan.indexes > 3
    checks = scan.checks()
    assert checks.passed and all(c.status == "pass" for c in checks if c.name not in ("amcheck", "data_checksums"))
    assert {c.name: c.status for c in checks}["amcheck"] == ("pass" if use_amcheck else "warn")
    assert extensions(target) == before  # amcheck installed for the scan only


def test_a_damaged_index_is_named_rebuilt_under_confirm_and_then_checks_clean(
    profile: Profile, db_copy: PgTarget
) -> None:
    damage_relations(profile, db_copy, {INDEX: "page"})
    scan = scan_database(db_copy)
    assert scan.damaged_indexes == (INDEX,) and not scan.damaged_tables
    assert scan.repairable_indexes == (INDEX,) and not scan.needs_restore
    assert "invalid page in block 1" in scan.damaged[0].error and scan.damaged[0].table == "public.content_jobs"
    failing = {c.name for c in scan.checks().failures}
    assert failing == {f"corruption:index:{INDEX}", "no_corruption"}
    assert scan.checks(warn_only=True).passed  # detection reports it as a finding, not a failed check

    plan = reindex_indexes(db_copy, scan.repairable_indexes)
    assert isinstance(plan, RestorePlan) and plan.steps == (f"REINDEX INDEX {INDEX}",)
    assert scan_database(db_copy).damaged_indexes == (INDEX,)  # a dry run changes nothing
    done = reindex_indexes(db_copy, scan.repairable_indexes, confirm=True)
    assert isinstance(done, ReindexResult) and list(done.rebuilt) == [INDEX]
    assert scan_database(db_copy).clean


def test_a_damaged_table_is_named_and_needs_a_restore(profile: Profile, db_copy: PgTarget) -> None:
    damage_relations(profile, db_copy, {TABLE: "page"})
    for use_amcheck, found_by in ((True, "amcheck verify_heapam"), (False, "a full read")):
        scan = scan_database(db_copy, use_amcheck=use_amcheck)
        assert scan.damaged_tables == (TABLE,), scan.describe()
        assert scan.damaged[0].found_by == found_by and "invalid page in block 0" in scan.damaged[0].error
        assert scan.needs_restore and not scan.repairable_indexes


def test_without_amcheck_a_damaged_index_is_found_by_reading_it_and_a_warning_says_so(
    profile: Profile, db_copy: PgTarget
) -> None:
    damage_relations(profile, db_copy, {INDEX: "page"})
    scan = scan_database(db_copy, use_amcheck=False)
    assert scan.damaged_indexes == (INDEX,) and scan.damaged[0].found_by == "an index scan"
    assert {c.name: c.status for c in scan.checks()}["amcheck"] == "warn"


def test_index_entries_overwritten_behind_an_intact_page_header_are_found_by_amcheck(
    profile: Profile, db_copy: PgTarget
) -> None:
    damage_relations(profile, db_copy, {"public.users_email_key": "tuples"})
    scan = scan_database(db_copy)
    assert scan.damaged_indexes == ("public.users_email_key",), scan.describe()
    assert scan.damaged[0].found_by == "amcheck bt_index_check"
    reindex_indexes(db_copy, scan.repairable_indexes, confirm=True)
    assert scan_database(db_copy).clean


def test_a_database_that_cannot_be_reached_is_reported_not_raised(target: PgTarget) -> None:
    nowhere = dataclasses.replace(target, settings=dataclasses.replace(target.settings, port=free_port()))
    scan = scan_database(nowhere)
    assert not scan.reachable and scan.needs_restore
    assert [c.name for c in scan.checks().failures] == ["database_reachable"]


def test_only_an_index_is_rebuilt(target: PgTarget) -> None:
    with pytest.raises(RepairFailed, match="not an index"):
        reindex_indexes(target, (TABLE,), confirm=True)
    with pytest.raises(RepairFailed, match="no index"):
        reindex_indexes(target, ("public.no_such_index; DROP TABLE users",), confirm=True)


def test_the_fault_runs_only_on_the_sandbox(profile: Profile, target: PgTarget) -> None:
    staging = dataclasses.replace(profile, name="staging")
    with pytest.raises(DrillRefused, match="only on the sandbox"):
        damage_relations(staging, target, {INDEX: "page"})


# -- the runbook and its drill -------------------------------------------------------------------
def test_a_repair_that_repairs_nothing_fails_the_verification_and_keeps_the_application_stopped(
    profile: Profile, repaired_live: PgTarget, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    damage_relations(profile, repaired_live, {INDEX: "page"})
    monkeypatch.setattr(
        database_corruption,
        "reindex_indexes",
        lambda target, indexes, **_: ReindexResult(
            database=target.name, rebuilt=dict.fromkeys(indexes, 0.0), concurrently=False
        ),
    )
    runbook = DatabaseCorruption(confirm=True, restore=False, evidence_path=str(tmp_path / "e.json"))
    for spec in runbook.steps():
        getattr(runbook, spec.method)()
    failed = {c.name for c in runbook.evidence.checks if c.status == "fail"}
    assert {"verify:no_corruption", f"verify:corruption:index:{INDEX}", "database_clean_at_restart"} <= failed
    assert "service_restored_at" not in runbook.evidence.facts
    assert "still damaged" in runbook.state_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "lost", "restored"),
    [("index", {"users": 0, "content_jobs": 0}, False), ("table", {"users": 2, "content_jobs": 25}, True)],
)
def test_the_drill_repairs_an_index_or_restores_a_table_and_leaves_no_damage(
    healthy_sandbox: Sandbox, target: PgTarget, damage: str, lost: dict[str, int], restored: bool
) -> None:
    before, old = report_folders(), old_databases(target)
    result = drill("-p", "drill_damage", damage)
    assert result.exit_code == 0, result.output
    results = newest_results(before)
    assert results["status"] == "passed"
    assert {k: v["lost"] for k, v in results["data_loss"].items()} == lost  # type: ignore[attr-defined]
    steps = [s["name"] for s in results["steps"]]  # type: ignore[attr-defined]
    assert ("restore_database" in steps) is restored
    checks = {c["name"]: c["status"] for c in results["checks"]}  # type: ignore[attr-defined]
    assert checks["verify:no_corruption"] == "pass" and checks["no_corruption"] == "warn"
    assert scan_database(target).clean
    assert old_databases(target) == old  # the replaced, damaged database was dropped


@pytest.mark.slow
def test_the_drill_fails_when_the_recovery_does_not_recover(healthy_sandbox: Sandbox, repaired_live: PgTarget) -> None:
    result = drill("-p", "repair", "false", "-p", "restore", "false")
    assert result.exit_code == 1, result.output
    assert "FAIL verify:no_corruption" in result.output
    assert f"FAIL verify:corruption:index:{INDEX}" in result.output
