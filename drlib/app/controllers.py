"""Service controllers side by side: sandbox process, docker compose, systemd, shell commands.

The same controllers stop and start the application (the runbook's ``docker compose stop api``)
and Redis (``docker compose stop redis``); a profile's ``[app]`` and ``[redis]`` sections each
say which one to use.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from drlib.app.base import register, run_command
from drlib.config import Profile
from drlib.exceptions import ConfigError


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
    section = profile.app if component == "app" else profile.redis
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


class SandboxController:
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
        if self.is_running():
            return
        if self.component == "app":
            self.sandbox.start_api()
        else:
            self.sandbox.start_redis()

    def is_running(self) -> bool:
        return self.sandbox.api_running() if self.component == "app" else self.sandbox.redis().running()


class ComposeController:
    """``docker compose stop|start <service>``, as the runbook does it."""

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

    def stop(self) -> None:
        run_command([*self.base, "stop", self.service], what=f"docker compose stop {self.service}")

    def start(self) -> None:
        run_command([*self.base, "start", self.service], what=f"docker compose start {self.service}")

    def is_running(self) -> bool:
        result = run_command(
            [*self.base, "ps", "--format", "json", self.service], what=f"docker compose ps {self.service}"
        )
        states = []
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            data = json.loads(line)
            states += [str(item.get("State", "")).lower() for item in (data if isinstance(data, list) else [data])]
        return "running" in states


class SystemdController:
    """``systemctl stop|start <unit>``."""

    def __init__(self, profile: Profile, control: ServiceControl, *, systemctl: str | None = None) -> None:
        self.unit = control.systemd_unit
        self.systemctl = systemctl or os.environ.get("DRLIB_SYSTEMCTL", "systemctl")
        self.description = f"systemd unit {self.unit}"

    def stop(self) -> None:
        run_command([self.systemctl, "stop", self.unit], what=f"systemctl stop {self.unit}")

    def start(self) -> None:
        run_command([self.systemctl, "start", self.unit], what=f"systemctl start {self.unit}")

    def is_running(self) -> bool:
        return subprocess.run([self.systemctl, "is-active", "--quiet", self.unit], check=False).returncode == 0


class ShellController:
    """Arbitrary start/stop/status shell commands (status: exit 0 means running)."""

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

    def is_running(self) -> bool:
        if not self.status_command:
            return True
        return subprocess.run(self.status_command, shell=True, check=False, capture_output=True).returncode == 0


register("sandbox")(SandboxController)
register("compose")(ComposeController)
register("systemd")(SystemdController)
register("shell")(ShellController)
