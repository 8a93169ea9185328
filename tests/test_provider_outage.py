"""Provider outage: an unreachable database host or S3 endpoint is named within a bounded time (refused, a
blackhole that accepts and never answers), with no false alarm on the healthy sandbox; backups kept in one
place only are found and replicated; the profile switches to its alternative provider and back (refused
while the target does not answer); the drill fails over and back, and fails when it does not switch."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from drlib.cli import main
from drlib.config import Profile, load_profile, project_root, state_dir
from drlib.config_failover import history_file, state_file
from drlib.exceptions import ConfigError, ConnectionFailed
from drlib.failover import switch_history, switch_provider
from drlib.faults import truncate_file
from drlib.lock import acquire, stack_key
from drlib.plans import RestorePlan
from drlib.postgres.connection import PgTarget
from drlib.processes import free_port
from drlib.reachability import probe_database, probe_profile, probe_s3, wait_until_up
from drlib.replication import replicate_backups, second_location_checks
from drlib.sandbox.alternative import AlternativeProvider
from drlib.sandbox.stack import BUCKETS, Sandbox
from drlib.scenarios.provider_outage import end_outage


def drill(*args: str) -> Result:
    return CliRunner().invoke(main, ["drill", "run", "provider_outage", *args], catch_exceptions=False)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def switchable(profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A profile ``x`` on the sandbox's database server whose "alternative provider" is another database on
    the same server: switching is tested without starting a second provider (the drill does that)."""
    db = profile.database
    config = tmp_path / "drlib.toml"
    config.write_text(
        f'[profiles.x]\nsecrets_file = "{profile.secrets_file}"\n'
        f'[profiles.x.database]\nhost = "{db.host}"\nport = {db.port}\nuser = "{db.user}"\nname = "{db.name}"\n'
        f'password_secret = "{db.password_secret}"\n'
        '[profiles.x.failover.database]\nname = "postgres"\n'
    )
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    return "x"


def elsewhere(target: PgTarget, port: int) -> PgTarget:
    return dataclasses.replace(target, settings=dataclasses.replace(target.settings, port=port))


# -- detection: timeouts, not hangs --------------------------------------------------------------
def test_a_closed_port_is_reported_refused_at_once(target: PgTarget) -> None:
    port = free_port()
    found = probe_database(elsewhere(target, port), provider="primary", timeout=2)
    bucket = probe_s3(
        endpoint_url=f"http://127.0.0.1:{port}", bucket="b", access_key="a", secret_key="s", provider="primary"
    )
    for probe in (found, bucket):
        assert probe.state == "refused" and probe.seconds < 1 and probe.address == f"127.0.0.1:{port}"
        assert probe.check().status == "fail" and "connection refused" in probe.describe()


def test_a_blackhole_that_accepts_and_never_answers_is_reported_within_the_timeout(
    target: PgTarget, blackhole: int
) -> None:
    started = time.monotonic()
    found = probe_database(elsewhere(target, blackhole), provider="primary", timeout=1)
    bucket = probe_s3(
        endpoint_url=f"http://127.0.0.1:{blackhole}",
        bucket="b",
        access_key="a",
        secret_key="s",
        provider="primary",
        timeout=1,
    )
    assert time.monotonic() - started < 6  # psycopg waits at least 2 s; boto3 its read timeout
    for probe, component in ((found, "database"), (bucket, "s3")):
        assert probe.state == "no_answer", probe.describe()
        assert probe.component == component and probe.address == f"127.0.0.1:{blackhole}"
        assert "connection accepted, but no answer" in probe.describe()


def test_the_healthy_sandbox_raises_no_alarm(profile: Profile) -> None:
    found = probe_profile(profile)
    assert [(p.component, p.state) for p in found] == [("database", "up"), ("s3", "up")]
    assert all(p.check().status == "pass" for p in found)


def test_waiting_for_a_provider_re_probes_until_the_wait_is_over_and_not_when_it_answers(
    profile: Profile, target: PgTarget
) -> None:
    down = elsewhere(target, free_port())
    found, waited = wait_until_up(lambda: [probe_database(down, provider="primary")], wait_seconds=1, interval=0.3)
    assert found[0].state == "refused" and 1 <= waited < 2
    found, waited = wait_until_up(lambda: probe_profile(profile), wait_seconds=30, interval=1)
    assert all(p.up for p in found) and waited < 5


# -- the profile's alternative provider ----------------------------------------------------------
def test_an_unknown_key_in_the_failover_section_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "drlib.toml"
    config.write_text('[profiles.x.database]\nname = "x"\n[profiles.x.failover.database]\nhots = "standby"\n')
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    with pytest.raises(ConfigError, match=r"unknown key 'hots' in \[profiles\.x\.failover\.database\].*'host'"):
        load_profile("x")


def test_switching_to_a_provider_that_does_not_answer_is_refused_and_nothing_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "drlib.toml"
    config.write_text(f'[profiles.x.database]\nname = "x"\n[profiles.x.failover.database]\nport = {free_port()}\n')
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    plan = switch_provider("x", to="alternative")
    assert isinstance(plan, RestorePlan) and any("REFUSED" in s for s in plan.steps)
    with pytest.raises(ConnectionFailed, match="nothing was switched"):
        switch_provider("x", to="alternative", confirm=True)
    assert not state_file(state_dir(project_root()), "x").exists() and load_profile("x").provider == "primary"


def test_the_profile_switches_to_its_alternative_and_back_explicitly_and_recorded(
    switchable: str, profile: Profile
) -> None:
    plan = switch_provider(switchable, to="alternative")
    assert isinstance(plan, RestorePlan) and load_profile(switchable).provider == "primary"  # a dry run
    switched = CliRunner().invoke(main, ["failover", "switch", "--env", switchable, "--confirm", "--reason", "test"])
    assert switched.exit_code == 0, switched.output
    active = load_profile(switchable)
    assert active.provider == "alternative" and active.database.name == "postgres"
    assert f"database: {profile.database.address} -> {active.database.address}" in switched.output
    status = CliRunner().invoke(main, ["failover", "status", "--env", switchable])
    assert "on its alternative provider (switched" in status.output and "by " in status.output
    back = CliRunner().invoke(main, ["failover", "back", "--env", switchable, "--confirm"])
    assert back.exit_code == 0, back.output
    assert load_profile(switchable).database.address == profile.database.address
    history = switch_history(switchable)
    assert [(h["from"], h["active"], h["reason"]) for h in history] == [
        ("primary", "alternative", "test"),
        ("alternative", "primary", ""),
    ]
    assert history_file(state_dir(project_root()), switchable).is_file()


def test_an_unreadable_switch_record_is_repaired_by_the_failover_back_its_error_names(switchable: str) -> None:
    record = state_file(state_dir(project_root()), switchable)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text('{"active": "moon"}')
    status = CliRunner().invoke(main, ["failover", "status", "--env", switchable])
    assert status.exit_code == 3 and f"`drlib failover back --env {switchable} --confirm`" in status.output
    back = CliRunner().invoke(main, ["failover", "back", "--env", switchable, "--confirm"])
    assert back.exit_code == 0, back.output
    assert load_profile(switchable).provider == "primary" and json.loads(record.read_text())["active"] == "primary"


def test_a_confirmed_switch_back_or_replication_is_refused_while_a_drill_runs_and_changes_nothing(
    healthy_sandbox: Sandbox, switchable: str
) -> None:
    def recorded(name: str) -> list[str]:
        state = state_dir(project_root())
        return [p.read_text() if p.exists() else "" for p in (state_file(state, name), history_file(state, name))]

    for name in ("sandbox", switchable):
        before = recorded(name)
        held = acquire(stack_key(None if name == "sandbox" else load_profile(name)), scenario="provider_outage")
        try:
            for command in ("switch", "back", "replicate"):
                done = CliRunner().invoke(main, ["failover", command, "--env", name, "--confirm"])
                assert done.exit_code == 3 and "error [locked]" in done.output, done.output
                assert "provider_outage" in done.output and "Traceback" not in done.output
            dry_run = CliRunner().invoke(main, ["failover", "switch", "--env", switchable])
            assert dry_run.exit_code == 0 and "dry run" in dry_run.output  # changes nothing: no lock needed
        finally:
            held.release()
        assert recorded(name) == before and load_profile(name).provider == "primary"
    assert healthy_sandbox.status().healthy


# -- prevention: backups in more than one place --------------------------------------------------
def test_backups_kept_in_one_place_only_fail_the_check_and_replicating_them_passes_it(
    healthy_sandbox: Sandbox, profile: Profile, tmp_path: Path
) -> None:
    assert profile.storage is not None
    local = dataclasses.replace(profile, storage=dataclasses.replace(profile.storage, endpoint_url=None))
    other = dataclasses.replace(  # the bucket snapshots' copy is the drill's to test
        local, backups=dataclasses.replace(profile.backups, postgres_dir=tmp_path / "pg", storage_dir=tmp_path / "st")
    )
    checks, _ = second_location_checks(local, other)
    assert {c.name: c.status for c in checks} == {
        "database_backup_on_second_provider": "fail",
        "storage_backup_on_second_provider": "fail",
    }
    assert all("in one place only" in c.detail for c in checks)

    plan = replicate_backups(local, other)
    assert isinstance(plan, RestorePlan) and not (tmp_path / "pg").exists()  # a dry run copies nothing
    replicas = replicate_backups(local, other, confirm=True)
    assert not isinstance(replicas, RestorePlan) and all(all(c.passed for c in r.checks) for r in replicas)
    checks, rows = second_location_checks(local, other)
    assert [c.status for c in checks] == ["pass", "pass"] and [r["kind"] for r in rows] == ["database", "storage"]

    truncate_file(next((tmp_path / "pg").glob("*.dump")))
    checks, _ = second_location_checks(local, other)
    assert {c.name: c.status for c in checks}["database_backup_on_second_provider"] == "fail"


# -- the drill -------------------------------------------------------------------------------
def newest_results() -> dict[str, object]:
    folder = max(Path(os.environ["DRLIB_REPORTS"]).glob("*/*-provider_outage*"), key=lambda p: p.stat().st_mtime)
    return dict(json.loads((folder / "results.json").read_text()))


def back_on_the_primary_and_healthy(sandbox: Sandbox) -> None:
    status = sandbox.status()
    assert status.healthy, status.describe()
    assert load_profile("sandbox").provider == "primary"
    assert all(s.state == "STOPPED" for s in status.alternative)  # the drill stopped what it started


def test_a_drill_cut_short_after_its_switch_leaves_the_sandbox_on_its_primary_and_the_next_one_a_new_provider(
    healthy_sandbox: Sandbox, profile: Profile
) -> None:
    alternative = AlternativeProvider(healthy_sandbox)
    alternative.provision()
    try:
        client = alternative._s3_client(alternative._secrets())
        client.put_object(
            Bucket=BUCKETS[1], Key="storage/2026-01-01.manifest.json", Body=b"{}", ChecksumAlgorithm="CRC32"
        )
        alternative.reset()  # the next drill's: a locked backup version cannot be deleted, a new endpoint has none
        assert "Versions" not in alternative._s3_client(alternative._secrets()).list_object_versions(Bucket=BUCKETS[1])
        done = switch_provider("sandbox", to="alternative", confirm=True, reason="a drill, then SIGINT")
        assert not isinstance(done, RestorePlan) and load_profile("sandbox").provider == "alternative"
        end_outage(profile)  # the drill's cleanup, run whatever the notebook came to
        assert load_profile("sandbox").provider == "primary"
        back_on_the_primary_and_healthy(healthy_sandbox)
    finally:
        if load_profile("sandbox").provider != "primary":
            alternative.forget_switch()
            healthy_sandbox.stop_api()
            healthy_sandbox.up()
        alternative.stop()


@pytest.mark.slow
def test_the_drill_fails_over_to_the_alternative_and_back(healthy_sandbox: Sandbox) -> None:
    result = drill()
    assert result.exit_code == 0, result.output
    results = newest_results()
    assert results["status"] == "passed"
    checks = {c["name"]: c["status"] for c in results["checks"]}  # type: ignore[attr-defined]
    assert checks["primary_database_reachable"] == "warn" and checks["primary_s3_reachable"] == "warn"
    assert checks["database_backup_on_second_provider"] == "pass" and checks["health"] == "pass"
    assert checks["create_content_job"] == "pass" and checks["failed_back"] == "pass"
    assert checks["back:primary_database_reachable"] == "pass"
    steps = [s["name"] for s in results["steps"]]  # type: ignore[attr-defined]
    assert {"restore_database", "restore_storage", "switch_provider", "fail_back"} <= set(steps)
    # the report's last word on the stack is what the cleanup left, written after every notebook's
    assert "the alternative provider stopped" in results["stack_state"]["after the drill"]  # type: ignore[index]
    back_on_the_primary_and_healthy(healthy_sandbox)


@pytest.mark.slow
def test_the_drill_fails_when_the_profile_is_not_switched(healthy_sandbox: Sandbox) -> None:
    result = drill("-p", "switch", "false", "-p", "health_timeout", "2")
    assert result.exit_code == 1, result.output
    assert "FAIL health" in result.output and "database: down" in result.output
    back_on_the_primary_and_healthy(healthy_sandbox)
