"""The application controller interface and the registry of implementations."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from typing import Protocol

from drlib.config import Profile
from drlib.exceptions import ApplicationControlError, ConfigError
from drlib.secrets import redact


class AppController(Protocol):
    """Stops and starts the application (the runbook's ``docker compose stop/start api``)."""

    description: str

    def stop(self) -> None: ...

    def start(self) -> None: ...

    def is_running(self) -> bool: ...


ControllerFactory = Callable[..., AppController]
_REGISTRY: dict[str, ControllerFactory] = {}


def register(kind: str) -> Callable[[ControllerFactory], ControllerFactory]:
    """Register a controller factory under ``kind`` (the profile's ``app.controller``)."""

    def decorator(factory: ControllerFactory) -> ControllerFactory:
        _REGISTRY[kind] = factory
        return factory

    return decorator


def controller_for(profile: Profile, component: str = "app") -> AppController:
    """The controller the profile names for ``component`` (``app`` or ``redis``)."""
    from drlib.app.controllers import service_control  # also registers the built-in controllers

    control = service_control(profile, component)
    if control.controller not in _REGISTRY:
        raise ConfigError(
            f"profile {profile.name!r} names {component} controller {control.controller!r}; "
            f"known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[control.controller](profile, control)


def run_command(
    argv: Sequence[str] | str, *, what: str, timeout: float = 120, shell: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a control command; raise :class:`ApplicationControlError` with its output on failure."""
    try:
        result = subprocess.run(argv, shell=shell, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ApplicationControlError(f"{what}: {exc.filename} is not installed or not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise ApplicationControlError(f"{what} did not finish within {timeout:.0f}s") from exc
    if result.returncode != 0:
        output = redact((result.stderr or result.stdout).strip())
        raise ApplicationControlError(f"{what} failed (exit {result.returncode}): {output}")
    return result
