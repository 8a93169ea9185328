"""Stopping, starting and checking a service — the application or Redis — side by side:
the embedded sandbox's process, docker compose, systemd, or the operator's shell commands.

A profile's ``[app]`` and ``[redis]`` sections each name their controller; :func:`controller_for`
builds it (:class:`~drlib.exceptions.NotConfigured` when the profile has no such section).
:func:`provision` brings up infrastructure after a full system loss (the runbook's
``docker compose up -d db redis``), honouring ``DRLIB_DOCKER`` and the profile's compose file.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from drlib.checks import CheckResult, check
from drlib.config import AppSettings, Profile, RedisSettings
from drlib.exceptions import ApplicationControlError, ConfigError
from drlib.processes import without_marker
from drlib.secrets import redact

COMPONENTS = ("app", "redis")
log = logging.getLogger(__name__)


class ServiceState(enum.Enum):
    """What a controller knows about its service; ``UNKNOWN`` when it has no way to tell."""

    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


class ServiceController(Protocol):
    """Stops and starts one service (the runbook's ``docker compose stop/start api``)."""

    description: str

    def stop(self) -> None: ...

    def start(self) -> None: ...

    def state(self) -> ServiceState: ...

    def is_running(self) -> bool:
        """True only when the service is known to run (``UNKNOWN`` is not running)."""
        ...


ControllerFactory = Callable[..., ServiceController]
_REGISTRY: dict[str, ControllerFactory] = {}


def register(kind: str) -> Callable[[ControllerFactory], ControllerFactory]:
    """Register a controller factory under ``kind`` (a profile section's ``controller``)."""

    def decorator(factory: ControllerFactory) -> ControllerFactory:
        _REGISTRY[kind] = factory
        return factory

    return decorator


def controller_for(profile: Profile, component: str = "app") -> ServiceController:
    """The controller the profile names for ``component`` (``app`` or ``redis``); raises
    :class:`NotConfigured` when the profile has no section for it."""
    if component not in COMPONENTS:
        raise ConfigError(f"unknown service {component!r}: choose one of {', '.join(COMPONENTS)}")
    control = service_control(profile, component)
    if control.controller not in _REGISTRY:
        raise ConfigError(
            f"profile {profile.name!r} names {component} controller {control.controller!r}; "
            f"known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[control.controller](profile, control)


def stopped_check(controller: ServiceController, *, name: str = "application_stopped") -> CheckResult:
    """``pass`` when the service is known stopped, ``warn`` when the controller cannot tell, else ``fail``."""
    state = controller.state()
    if state is ServiceState.UNKNOWN:
        return check(
            name,
            False,
            expected="stopped",
            observed="unknown",
            detail=f"{controller.description} has no status command: confirm by hand that it stopped",
            warn_only=True,
        )
    return check(
        name,
        state is ServiceState.STOPPED,
        expected="stopped",
        observed=state.value if state is ServiceState.STOPPED else "still running",
    )


def provision(profile: Profile, services: Sequence[str]) -> str:
    """Bring up bare infrastructure after a full system loss; return how it was done.

    Sandbox profiles get a fresh sandbox (no seed data, no API); profiles whose application runs
    under docker compose run ``docker compose up -d <services>``; anything else (a profile without an
    application included) is left to the operator."""
    if profile.is_sandbox:
        from drlib.sandbox.stack import sandbox_for

        sandbox_for(profile).up(seed_data=False, start_api=False)
        return "fresh sandbox: new PostgreSQL cluster, empty Redis, S3 endpoint"
    if profile.app is not None and profile.app.controller == "compose":
        compose = ComposeController(profile, service_control(profile, "app"))
        compose.provision(services)
        return compose.command_line("up", "-d", *services)
    return "provisioned by the operator (checked below)"


def run_command(
    argv: Sequence[str] | str, *, what: str, timeout: float = 120, shell: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a control command; raise :class:`ApplicationControlError` with its output on failure."""
    try:
        result = subprocess.run(
            argv,
            shell=shell,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=without_marker(None),  # a service started here must outlive the drill that started it
        )
    except FileNotFoundError as exc:
        raise ApplicationControlError(f"{what}: {exc.filename} is not installed or not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise ApplicationControlError(f"{what} did not finish within {timeout:.0f}s") from exc
    if result.returncode != 0:
        output = redact((result.stderr or result.stdout).strip())
        raise ApplicationControlError(f"{what} failed (exit {result.returncode}): {output}")
    return result


@dataclass(frozen=True)
class ServiceControl:
    """How to stop and start one service, read from a profile section."""

    component: str
    controller: str
    compose_service: str
    compose_file: str | None
    project_dir: Path | None
    systemd_unit: str
    start_command: str | None
    stop_command: str | None
    status_command: str | None


def service_control(profile: Profile, component: str) -> ServiceControl:
    """How the profile stops and starts ``component``; :class:`NotConfigured` without its section."""
    section: AppSettings | RedisSettings = profile.require_app() if component == "app" else profile.require_redis()
    return ServiceControl(
        component=component,
        controller=section.controller,
        compose_service=section.compose_service,
        compose_file=section.compose_file,
        project_dir=section.project_dir,
        systemd_unit=section.systemd_unit,
        start_command=section.start_command,
        stop_command=section.stop_command,
        status_command=section.status_command,
    )


class _Known:
    """``is_running`` derived from ``state``."""

    def state(self) -> ServiceState:
        raise NotImplementedError

    def is_running(self) -> bool:
        return self.state() is ServiceState.RUNNING


class SandboxController(_Known):
    """The embedded sandbox's API process or Redis server."""

    def __init__(self, profile: Profile, control: ServiceControl) -> None:
        from drlib.sandbox.stack import sandbox_for

        self.sandbox = sandbox_for(profile)
        self.component = control.component
        self.description = f"sandbox {'API' if self.component == 'app' else 'Redis'}"

    def stop(self) -> None:
        if self.component == "app":
            self.sandbox.stop_api()
        else:
            self.sandbox.redis().stop()

    def start(self) -> None:
        if self.component == "app":
            self.sandbox.start_api()  # a no-op when our API already listens
        else:
            self.sandbox.start_redis()

    def state(self) -> ServiceState:
        running = self.sandbox.api_running() if self.component == "app" else self.sandbox.redis().running()
        return ServiceState.RUNNING if running else ServiceState.STOPPED


class ComposeController(_Known):
    """``docker compose stop|start <service>``, as the runbook does it (``$DRLIB_DOCKER`` names docker)."""

    def __init__(self, profile: Profile, control: ServiceControl, *, docker: str | None = None) -> None:
        self.service = control.compose_service
        self.docker = docker or os.environ.get("DRLIB_DOCKER", "docker")
        base = [self.docker, "compose"]
        if control.compose_file:
            base += ["-f", control.compose_file]
        if control.project_dir:
            base += ["--project-directory", str(control.project_dir)]
        self.base = base
        self.description = f"docker compose service {self.service!r}"

    def command_line(self, *args: str) -> str:
        """The shell-quoted command this controller runs for ``args``."""
        return shlex.join([*self.base, *args])

    def stop(self) -> None:
        run_command([*self.base, "stop", self.service], what=f"docker compose stop {self.service}")

    def start(self) -> None:
        run_command([*self.base, "start", self.service], what=f"docker compose start {self.service}")

    def provision(self, services: Sequence[str], *, timeout: float = 600) -> None:
        """``docker compose up -d <services>`` (creates containers that a full system loss took)."""
        if not services or any(not s or s.startswith("-") for s in services):
            raise ConfigError(f"provision needs compose service names, got {list(services)!r}")
        run_command(
            [*self.base, "up", "-d", *services], what=f"docker compose up -d {' '.join(services)}", timeout=timeout
        )

    def state(self) -> ServiceState:
        result = run_command(
            [*self.base, "ps", "--format", "json", self.service], what=f"docker compose ps {self.service}"
        )
        states = []
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            data = json.loads(line)
            states += [str(item.get("State", "")).lower() for item in (data if isinstance(data, list) else [data])]
        return ServiceState.RUNNING if "running" in states else ServiceState.STOPPED


class SystemdController(_Known):
    """``systemctl stop|start <unit>`` (``$DRLIB_SYSTEMCTL`` names systemctl)."""

    def __init__(self, profile: Profile, control: ServiceControl, *, systemctl: str | None = None) -> None:
        self.unit = control.systemd_unit
        self.systemctl = systemctl or os.environ.get("DRLIB_SYSTEMCTL", "systemctl")
        self.description = f"systemd unit {self.unit}"

    def stop(self) -> None:
        run_command([self.systemctl, "stop", self.unit], what=f"systemctl stop {self.unit}")

    def start(self) -> None:
        run_command([self.systemctl, "start", self.unit], what=f"systemctl start {self.unit}")

    def state(self) -> ServiceState:
        active = subprocess.run([self.systemctl, "is-active", "--quiet", self.unit], check=False).returncode == 0
        return ServiceState.RUNNING if active else ServiceState.STOPPED


class ShellController(_Known):
    """Arbitrary start/stop/status shell commands (status: exit 0 running, non-zero stopped).
    Without a status command the state is ``UNKNOWN``: drlib cannot tell, so it does not pretend."""

    def __init__(self, profile: Profile, control: ServiceControl) -> None:
        if not (control.start_command and control.stop_command):
            raise ConfigError(
                f"profile {profile.name!r}: the shell controller of [{control.component}] needs "
                "start_command and stop_command"
            )
        self.start_command, self.stop_command = control.start_command, control.stop_command
        self.status_command = control.status_command
        self.description = f"shell commands ({shlex.split(control.start_command)[0]} …)"

    def stop(self) -> None:
        run_command(self.stop_command, shell=True, what="stop command")

    def start(self) -> None:
        run_command(self.start_command, shell=True, what="start command")

    def state(self) -> ServiceState:
        if not self.status_command:
            log.warning("%s: no status_command configured, so whether it runs is unknown", self.description)
            return ServiceState.UNKNOWN
        result = subprocess.run(self.status_command, shell=True, check=False, capture_output=True)
        return ServiceState.RUNNING if result.returncode == 0 else ServiceState.STOPPED


register("sandbox")(SandboxController)
register("compose")(ComposeController)
register("systemd")(SystemdController)
register("shell")(ShellController)
