"""Application controllers and the post-restore application checks.

The docker compose and systemd controllers are tested against stand-in ``docker`` and
``systemctl`` executables: there is no Docker engine or systemd here, so that boundary is
the one place a fake is used. The sandbox and shell controllers run for real.
"""

from __future__ import annotations

import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from drlib.app.health import check_create_job, check_login, wait_healthy
from drlib.config import AppSettings, Profile
from drlib.exceptions import ApplicationControlError, ConfigError
from drlib.processes import free_port
from drlib.services import (
    ComposeController,
    ServiceState,
    ShellController,
    SystemdController,
    controller_for,
    provision,
    stopped_check,
)

FAKE_DOCKER = r"""#!/usr/bin/env bash
# Stand-in for the docker CLI (no Docker engine here): records calls, keeps one service's state.
echo "$*" >> "$FAKE_STATE.calls"
case "$*" in
  *" stop api") echo exited > "$FAKE_STATE" ;;
  *" start api") echo running > "$FAKE_STATE" ;;
  *" ps --format json api") printf '{"Service":"api","State":"%s"}\n' "$(cat "$FAKE_STATE")" ;;
  *" stop missing"|*" start missing") echo "no such service: missing" >&2; exit 1 ;;
esac
"""

FAKE_SYSTEMCTL = r"""#!/usr/bin/env bash
# Stand-in for systemctl (no systemd here).
echo "$*" >> "$FAKE_STATE.calls"
case "$1" in
  stop) echo inactive > "$FAKE_STATE" ;;
  start) echo active > "$FAKE_STATE" ;;
  is-active) [ "$(cat "$FAKE_STATE")" = active ] ;;
esac
"""


def fake_tool(tmp_path: Path, name: str, script: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    tool = tmp_path / name
    tool.write_text(script)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / f"{name}.state"
    state.write_text("running\n" if name == "docker" else "active\n")
    monkeypatch.setenv("FAKE_STATE", str(state))
    return tool


def profile_with(**app: Any) -> Profile:
    return Profile(name="test", app=AppSettings(**app))


def test_compose_controller_runs_the_runbooks_docker_compose_commands(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DRLIB_DOCKER", str(fake_tool(tmp_path, "docker", FAKE_DOCKER, monkeypatch)))
    controller = controller_for(profile_with(controller="compose", compose_file="compose.yml"))
    assert isinstance(controller, ComposeController)
    controller.stop()
    assert not controller.is_running()
    controller.start()
    assert controller.is_running()
    calls = (tmp_path / "docker.state.calls").read_text().splitlines()
    assert calls[0] == "compose -f compose.yml stop api"
    assert "compose -f compose.yml start api" in calls


def test_compose_controller_reports_a_failing_command(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DRLIB_DOCKER", str(fake_tool(tmp_path, "docker", FAKE_DOCKER, monkeypatch)))
    controller = controller_for(profile_with(controller="compose", compose_service="missing"))
    with pytest.raises(ApplicationControlError, match="no such service"):
        controller.stop()


def test_compose_controller_without_docker_is_a_clear_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DRLIB_DOCKER", "/nonexistent/docker")
    controller = controller_for(profile_with(controller="compose"))
    with pytest.raises(ApplicationControlError, match="not installed"):
        controller.stop()


def test_systemd_controller_stops_and_starts_the_unit(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DRLIB_SYSTEMCTL", str(fake_tool(tmp_path, "systemctl", FAKE_SYSTEMCTL, monkeypatch)))
    controller = controller_for(profile_with(controller="systemd", systemd_unit="api.service"))
    assert isinstance(controller, SystemdController)
    controller.stop()
    assert not controller.is_running()
    controller.start()
    assert controller.is_running()
    calls = (tmp_path / "systemctl.state.calls").read_text().splitlines()
    assert [c for c in calls if not c.startswith("is-active")] == ["stop api.service", "start api.service"]


def test_shell_controller_runs_real_commands(tmp_path: Path) -> None:
    flag = tmp_path / "running"
    controller = controller_for(
        profile_with(
            controller="shell",
            start_command=f"touch {flag}",
            stop_command=f"rm -f {flag}",
            status_command=f"test -f {flag}",
        )
    )
    assert isinstance(controller, ShellController)
    controller.start()
    assert controller.is_running()
    controller.stop()
    assert not controller.is_running()


def test_shell_controller_without_a_status_command_reports_an_unknown_state(tmp_path: Path) -> None:
    flag = tmp_path / "running"
    controller = controller_for(profile_with(controller="shell", start_command=f"touch {flag}", stop_command="true"))
    controller.start()
    assert controller.state() is ServiceState.UNKNOWN
    assert not controller.is_running()  # not known to run
    result = stopped_check(controller)
    assert result.status == "warn" and result.observed == "unknown"
    assert "confirm by hand" in result.detail


def test_the_stopped_check_fails_while_the_service_still_runs(tmp_path: Path) -> None:
    flag = tmp_path / "running"
    controller = controller_for(
        profile_with(
            controller="shell",
            start_command=f"touch {flag}",
            stop_command="true",  # a stop command that does not stop anything
            status_command=f"test -f {flag}",
        )
    )
    controller.start()
    controller.stop()
    assert controller.state() is ServiceState.RUNNING
    assert stopped_check(controller).status == "fail"
    flag.unlink()
    assert stopped_check(controller).status == "pass"


def test_provision_runs_docker_compose_up_through_drlib_docker(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No Docker engine exists here: a stand-in ``docker`` named by DRLIB_DOCKER records its argv."""
    monkeypatch.setenv("DRLIB_DOCKER", str(fake_tool(tmp_path, "docker", FAKE_DOCKER, monkeypatch)))
    profile = profile_with(controller="compose", compose_file="compose.yml", project_dir=tmp_path)
    how = provision(profile, ["db", "redis"])
    calls = (tmp_path / "docker.state.calls").read_text().splitlines()
    assert calls == [f"compose -f compose.yml --project-directory {tmp_path} up -d db redis"]
    assert how.endswith(f"compose -f compose.yml --project-directory {tmp_path} up -d db redis")


def test_provision_refuses_an_option_in_place_of_a_service_name(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No Docker engine exists here: a stand-in ``docker`` records whether it was called at all."""
    monkeypatch.setenv("DRLIB_DOCKER", str(fake_tool(tmp_path, "docker", FAKE_DOCKER, monkeypatch)))
    compose = controller_for(profile_with(controller="compose"))
    assert isinstance(compose, ComposeController)
    with pytest.raises(ConfigError, match="service names"):
        compose.provision(["--remove-orphans"])
    with pytest.raises(ConfigError, match="service names"):
        compose.provision([])
    assert not (tmp_path / "docker.state.calls").exists()


def test_provision_leaves_other_controllers_to_the_operator() -> None:
    assert "operator" in provision(profile_with(controller="systemd"), ["db", "redis"])


def test_an_unknown_component_is_refused() -> None:
    with pytest.raises(ConfigError, match="app, redis"):
        controller_for(profile_with(controller="compose"), "worker")


def test_shell_controller_needs_its_commands() -> None:
    with pytest.raises(ConfigError, match="start_command"):
        controller_for(profile_with(controller="shell"))


def test_an_unknown_controller_is_refused() -> None:
    # the profile itself refuses it (drlib.toml: ConfigError, see test_config); in code: pydantic's ValueError
    with pytest.raises(ValueError, match="'sandbox', 'compose', 'systemd' or 'shell'"):
        controller_for(profile_with(controller="kubernetes"))


class _SlowToStart(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        status = 200 if type(self).calls >= 3 else 503
        body = json.dumps({"status": "ok" if status == 200 else "starting"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_health_check_retries_until_healthy() -> None:
    server = HTTPServer(("127.0.0.1", 0), _SlowToStart)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = wait_healthy(f"http://127.0.0.1:{server.server_port}", timeout=10, interval=0.05)
    finally:
        server.shutdown()
    assert result.status == "pass"
    assert "after 3 attempt(s)" in str(result.observed)


def test_health_check_fails_on_an_unreachable_endpoint() -> None:
    result = wait_healthy(f"http://127.0.0.1:{free_port()}", timeout=0.5, interval=0.1)
    assert result.status == "fail"
    assert "unreachable" in result.detail


def test_sandbox_controller_stops_and_starts_the_api(healthy_sandbox, profile) -> None:  # type: ignore[no-untyped-def]
    controller = controller_for(profile)
    controller.stop()
    assert controller.state() is ServiceState.STOPPED
    assert stopped_check(controller).status == "pass"
    assert wait_healthy(profile.app.base_url, timeout=0.3).status == "fail"
    controller.start()
    assert controller.state() is ServiceState.RUNNING
    assert wait_healthy(profile.app.base_url, timeout=10).status == "pass"


def test_login_and_job_creation_checks_pass_with_the_test_account(healthy_sandbox, profile) -> None:  # type: ignore[no-untyped-def]
    password = profile.secret(profile.app.test_account_password_secret)
    login, token = check_login(profile.app.base_url, email=profile.app.test_account_email, password=password)
    assert login.status == "pass" and token
    assert check_create_job(profile.app.base_url, token=token).status == "pass"


def test_login_check_fails_with_a_wrong_password(healthy_sandbox, profile) -> None:  # type: ignore[no-untyped-def]
    login, token = check_login(profile.app.base_url, email=profile.app.test_account_email, password="wrong-one")
    assert login.status == "fail" and token is None
    assert check_create_job(profile.app.base_url, token=token).status == "fail"
    assert check_create_job(profile.app.base_url, token="forged-token").status == "fail"


def test_health_reports_a_missing_database(healthy_sandbox, profile, target) -> None:  # type: ignore[no-untyped-def]
    from drlib.postgres.connection import drop_database

    drop_database(target, target.name)
    result = wait_healthy(profile.app.base_url, timeout=0.5, interval=0.1)
    assert result.status == "fail"
    assert "database: down" in result.detail
