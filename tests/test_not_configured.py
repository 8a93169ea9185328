"""Profiles without an application, Redis or storage (issue #7): a database-only profile on a database
that is not Content Crew. Steps that need a missing component say "not configured" and do not fail the
run; scenarios about a missing component are refused up front; drills measure RPO and the data lost
through drlib's own probe table."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import nbformat
import papermill
import pytest
from click.testing import CliRunner

from drlib.checks import Checks, check
from drlib.cli import main
from drlib.config import Profile, load_profile
from drlib.evidence import utcnow
from drlib.exceptions import NotConfigured
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget, database_exists, drop_database
from drlib.preflight import failure_scope
from drlib.redis.connection import ping
from drlib.report import verify_checksums
from drlib.results import DrillResults
from drlib.sandbox.stack import Sandbox
from drlib.scenarios.base import COMMON_PARAMS, Runbook
from drlib.scenarios.postgres_database_loss import PostgresDatabaseLoss
from drlib.scenarios.redis_loss import RedisLoss
from drlib.services import controller_for
from drlib.staging import PROBE_TABLE, DrillSetup, prepare_rows_after_backup, write_rows_after_backup
from drlib.steps import Outcome, step
from tests.test_drill import newest, report_folders

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
APP_STEPS = ("stop_application", "restart_application", "post_restore_verification")
SHOP_SQL = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id serial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE shop.orders (
    id serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES shop.customers(id),
    total numeric(10,2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO shop.customers (name) SELECT 'customer ' || g FROM generate_series(1, 20) g;
INSERT INTO shop.orders (customer_id, total) SELECT 1 + g % 20, g * 1.5 FROM generate_series(1, 200) g;
"""


@pytest.fixture(scope="module")
def shop(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A database that is not Content Crew on the sandbox's server, and a drlib.toml whose profile
    ``shop`` has only a database section (plus where its backups go): no [app], [redis] or [storage]."""
    server = PgTarget.from_profile(load_profile("sandbox"))
    name = f"shop_{secrets.token_hex(3)}"
    with server.maintenance.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with server.with_database(name).connect() as conn:
        conn.execute(SHOP_SQL)
    folder = tmp_path_factory.mktemp("shop")
    db = server.settings
    config = folder / "drlib.toml"
    config.write_text(
        f"""[profiles.shop]
drill_target = true
secrets_file = "{load_profile("sandbox").secrets_file}"
[profiles.shop.database]
host = "{db.host}"
port = {db.port}
user = "{db.user}"
name = "{name}"
password_secret = "{db.password_secret}"
[profiles.shop.backups]
postgres_dir = "{folder / "pg"}"
"""
    )
    yield config
    with server.maintenance.connect() as conn:
        left = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}%",))]
    for database in left:
        drop_database(server, database)


@pytest.fixture
def shop_profile(shop: Path, monkeypatch: pytest.MonkeyPatch) -> Profile:
    for variable in ("API_URL", "REDIS_URL", "S3_ENDPOINT_URL", "DATABASE_URL", "DRLIB_BACKUP_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DRLIB_CONFIG", str(shop))
    return load_profile("shop")


def drill(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["drill", "run", *args], catch_exceptions=False)
    return result.exit_code, result.output


# -- the profile ------------------------------------------------------------------------------
def test_a_database_only_profile_has_no_app_redis_or_storage(shop_profile: Profile) -> None:
    assert (shop_profile.app, shop_profile.redis, shop_profile.storage) == (None, None, None)
    assert not shop_profile.content_crew_schema
    with pytest.raises(NotConfigured, match=r"^profile 'shop' has no \[app\] section: set API_URL or add") as raised:
        shop_profile.require_app()
    assert raised.value.detail == (
        "not configured: the profile has no [app] section (set API_URL or add [profiles.shop.app])"
    )
    with pytest.raises(NotConfigured, match=r"no \[redis\] section: set REDIS_URL"):
        controller_for(shop_profile, "redis")
    shown = load_profile("shop").to_dict()
    assert shown["storage"].startswith("not configured: the profile has no [storage] section")


def test_the_environment_and_the_built_in_profiles_configure_the_components(
    shop_profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_URL", "http://api.example:8000")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example:6380/0")
    configured = load_profile("shop")
    assert configured.require_app().base_url == "http://api.example:8000"
    assert configured.require_redis().port == 6380 and configured.storage is None
    content_crew = load_profile("content_crew")
    assert all(content_crew.configured(c) for c in ("app", "redis", "storage"))
    assert all(load_profile("sandbox").configured(c) for c in ("app", "redis", "storage"))


def test_the_failure_scope_says_not_configured_and_does_not_count_it_as_down(shop_profile: Profile) -> None:
    result = failure_scope(shop_profile, PgTarget.from_profile(shop_profile))
    assert result.observed == {
        "database": "up",
        "redis": "not configured",
        "storage": "not configured",
        "api": "not configured",
    }
    assert result.status == "warn" and "no failed component" in result.detail


def test_a_runbook_about_a_missing_component_is_refused_when_built(shop_profile: Profile) -> None:
    with pytest.raises(NotConfigured, match=r"the redis_loss runbook needs Redis, but profile 'shop' has no \[redis\]"):
        RedisLoss(profile="shop")


class Probe(Runbook):
    """A runbook with one step of each kind: a declared need, an undeclared one, and the end of the outage."""

    scenario = "probe"
    title = "Probe"
    params = COMMON_PARAMS
    TEXT: ClassVar[dict[str, str]] = {"what": "w", "why": "w", "if_fails": "f", "roll_back": "r"}
    ok = True  # False: the fault, a failing check before the restart

    @step("declared", title="Declared", needs=("redis",), **TEXT)
    def declared(self) -> Outcome:
        raise AssertionError("a step whose component is not configured is not run")

    @step("undeclared", title="Undeclared", **TEXT)
    def undeclared(self) -> Outcome:
        ping(self.profile)
        return Outcome("Undeclared")

    @step("a_check", title="A check", **TEXT)
    def a_check(self) -> Outcome:
        return Outcome("A check", checks=Checks([check("probe_check", self.ok, expected=True, observed=self.ok)]))

    @step("restart", title="Restart", needs=("app",), ends_outage=True, **TEXT)
    def restart(self) -> Outcome:
        raise AssertionError("not run")


def test_a_step_needing_a_missing_component_is_not_configured_declared_or_not(shop_profile: Profile) -> None:
    probe = Probe(profile="shop", confirm=True)
    assert probe.declared().facts == {"not configured": shop_profile.not_configured("redis")}
    probe.undeclared()
    statuses = {s.name: (s.status, s.detail) for s in probe.evidence.steps}
    assert statuses["declared"] == statuses["undeclared"] == ("not_configured", shop_profile.not_configured("redis"))
    assert "not configured (not run)" in repr(probe.summary())


@pytest.mark.parametrize("confirm", [True, False])
def test_without_an_application_the_outage_ends_when_every_check_passed(shop_profile: Profile, confirm: bool) -> None:
    clean = Probe(profile="shop", confirm=confirm)
    clean.a_check()
    clean.restart()
    assert ("service_restored_at" in clean.evidence.facts) is confirm  # a dry run restored nothing
    failing = Probe(profile="shop", confirm=confirm)
    failing.ok = False
    failing.a_check()
    failing.restart()
    assert "service_restored_at" not in failing.evidence.facts


# -- the drill's probe table --------------------------------------------------------------------
def test_rows_written_after_the_backup_go_to_drlibs_probe_table_and_count_as_present(
    shop_profile: Profile, healthy_sandbox: Sandbox
) -> None:
    target = PgTarget.from_profile(shop_profile)
    prepare_rows_after_backup(target)
    prepare_rows_after_backup(target)  # idempotent: every drill prepares it
    written = write_rows_after_backup(target, token="cleancase", jobs=7)
    assert written == {PROBE_TABLE: 7}
    setup = DrillSetup(fault="none", failure_time=utcnow(), written_after_backup=written, marker="cleancase")
    assert setup.data_loss(shop_profile) == {PROBE_TABLE: {"written_after_backup": 7, "lost": 0}}
    with target.connect() as conn:
        conn.execute(f"DELETE FROM {PROBE_TABLE} WHERE token LIKE 'drill-cleancase%'")
        assert conn.execute("SELECT count(*) FROM shop.orders").fetchone() == (200,)  # the user's data untouched
    assert setup.data_loss(shop_profile) == {PROBE_TABLE: {"written_after_backup": 7, "lost": 7}}


# -- notebooks and drills --------------------------------------------------------------------------
def test_the_notebook_runs_as_a_dry_run_with_the_app_steps_not_configured(
    shop_profile: Profile, healthy_sandbox: Sandbox, tmp_path: Path
) -> None:
    target = PgTarget.from_profile(shop_profile)
    backup_database(target=target, backup_dir=shop_profile.backups.postgres_dir, prefix=shop_profile.backups.prefix)
    output, evidence = tmp_path / "out.ipynb", tmp_path / "evidence.json"
    papermill.execute_notebook(
        str(NOTEBOOKS / "postgres_database_loss.ipynb"),
        str(output),
        parameters={"profile": "shop", "confirm": False, "evidence_path": str(evidence)},
        progress_bar=False,
        cwd=str(NOTEBOOKS.parent),
    )
    summary = "".join(str(o) for o in nbformat.read(output, as_version=4).cells[-1].outputs)
    assert "DRY RUN — nothing changed" in summary and "not configured (not run)" in summary
    steps = {s["name"]: s for s in json.loads(evidence.read_text())["steps"]}
    for name in APP_STEPS:
        assert steps[name]["status"] == "not_configured"
        assert steps[name]["detail"] == (
            "not configured: the profile has no [app] section (set API_URL or add [profiles.shop.app])"
        )
    assert steps["restore_database"]["status"] == "skipped" and steps["pre_restore_checklist"]["status"] == "passed"
    assert database_exists(target, target.name)


@pytest.mark.slow
def test_a_drill_on_a_database_only_profile_passes_and_measures_rpo_and_data_lost(
    shop_profile: Profile, healthy_sandbox: Sandbox
) -> None:
    target = PgTarget.from_profile(shop_profile)
    before = report_folders()
    code, out = drill("postgres_database_loss", "--env", "shop", "--yes")
    assert code == 0, out
    assert "PASSED: postgres_database_loss" in out and "NOT CONFIGURED stop_application" in out
    folder = newest(report_folders() - before)
    results = DrillResults.load(folder / "results.json")
    assert results.status == "passed" and results.failing_checks == []
    statuses = {s.name: s.status for s in results.steps}
    for name in (*APP_STEPS, "verify_restore/storage_verification", "verify_restore/application_verification"):
        assert statuses[name] == "not_configured", statuses
    assert statuses["restore_database"] == "passed" and statuses["verify_restore/database_verification"] == "passed"
    assert results.rto_seconds is not None and 0 < results.rto_seconds < (results.rto_target_seconds or 0)
    assert results.rpo_seconds is not None and 0 < results.rpo_seconds < (results.rpo_target_seconds or 0)
    assert results.data_loss[PROBE_TABLE].written_after_backup == 25
    assert results.data_loss[PROBE_TABLE].lost == 25
    assert {"report.html", "notebook.ipynb", "verify_restore.ipynb", "results.json", "run.json", "SHA256SUMS"} <= {
        p.name for p in folder.iterdir()
    }
    assert verify_checksums(folder) == []
    assert "not configured" in (folder / "report.html").read_text()
    with target.connect() as conn:  # the restored database is the backup's: the user's rows, no drill rows
        assert conn.execute("SELECT count(*) FROM shop.orders").fetchone() == (200,)
        assert conn.execute(f"SELECT count(*) FROM {PROBE_TABLE}").fetchone() == (0,)


@pytest.mark.parametrize(("scenario", "component"), [("redis_loss", "redis"), ("storage_loss", "storage")])
def test_a_scenario_about_a_missing_component_is_refused_with_a_complete_report(
    shop_profile: Profile, healthy_sandbox: Sandbox, scenario: str, component: str
) -> None:
    before = report_folders()
    code, out = drill(scenario, "--env", "shop", "--yes")
    assert code == 3, out
    assert f"error [not-configured]: the {scenario} drill needs" in out
    assert f"has no [{component}] section" in out and f"[profiles.shop.{component}]" in out
    folder = newest(report_folders() - before)
    results = DrillResults.load(folder / "results.json")
    assert results.status == "refused" and results.error is not None and results.error.code == "not-configured"
    assert results.fault == "none (stopped before the fault)"
    assert {"report.html", "results.json", "SHA256SUMS"} <= {p.name for p in folder.iterdir()}
    assert verify_checksums(folder) == []


def test_postgres_database_loss_builds_on_a_profile_without_an_application(shop_profile: Profile) -> None:
    runbook = PostgresDatabaseLoss(profile="shop")
    assert runbook.app is None
