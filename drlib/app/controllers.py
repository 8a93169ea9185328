"""Application controllers side by side: sandbox process, docker compose, systemd, shell commands."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from drlib.app.base import register, run_command
from drlib.config import Profile
from drlib.exceptions import ConfigError


class SandboxController:
    """The embedded sandbox's sample API process."""

    def __init__(self, profile: Profile) -> None:
        from drlib.sandbox.stack import Sandbox

        folder = profile.secrets_file.parent if profile.secrets_file else None
        self.sandbox = Sandbox(folder)
        self.description = f"sandbox API ({profile.app.base_url})"

    def stop(self) -> None:
        self.sandbox.stop_api()

    def start(self) -> None:
        if not self.sandbox.api_running():
            self.sandbox.start_api()

    def is_running(self) -> bool:
        return self.sandbox.api_running()


class ComposeController:
    """``docker compose stop|start <service>``, as the runbook does it."""

    def __init__(self, profile: Profile, *, docker: str | None = None) -> None:
        self.service = profile.app.compose_service
        self.docker = docker or os.environ.get("DRLIB_DOCKER", "docker")
        base = [self.docker, "compose"]
        if profile.app.compose_file:
            base += ["-f", profile.app.compose_file]
        if profile.app.project_dir:
            base += ["--project-directory", str(profile.app.project_dir)]
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
            line = line.strip()
            if not line:
                continue
            data = json.loads(line)
            for item in data if isinstance(data, list) else [data]:
                states.append(str(item.get("State", "")).lower())
        return any(state == "running" for state in states)


class SystemdController:
    """``systemctl stop|start <unit>``."""

    def __init__(self, profile: Profile, *, systemctl: str | None = None) -> None:
        self.unit = profile.app.systemd_unit
        self.systemctl = systemctl or os.environ.get("DRLIB_SYSTEMCTL", "systemctl")
        self.description = f"systemd unit {self.unit}"

    def stop(self) -> None:
        run_command([self.systemctl, "stop", self.unit], what=f"systemctl stop {self.unit}")

    def start(self) -> None:
        run_command([self.systemctl, "start", self.unit], what=f"systemctl start {self.unit}")

    def is_running(self) -> bool:
        result = subprocess.run([self.systemctl, "is-active", "--quiet", self.unit], check=False)
        return result.returncode == 0


class ShellController:
    """Arbitrary start/stop/status shell commands (status: exit 0 means running)."""

    def __init__(self, profile: Profile) -> None:
        app = profile.app
        if not (app.start_command and app.stop_command):
            raise ConfigError(
                f"profile {profile.name!r}: the shell controller needs app.start_command and app.stop_command"
            )
        self.start_command, self.stop_command = app.start_command, app.stop_command
        self.status_command = app.status_command
        self.cwd = Path(app.project_dir) if app.project_dir else None
        self.description = f"shell commands ({shlex.split(app.start_command)[0]} …)"

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
