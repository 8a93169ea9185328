"""Moved to :mod:`drlib.services`; these names stay importable here until callers are updated."""

from __future__ import annotations

from drlib.services import (
    ComposeController,
    SandboxController,
    ServiceControl,
    ShellController,
    SystemdController,
    service_control,
)

__all__ = [
    "ComposeController",
    "SandboxController",
    "ServiceControl",
    "ShellController",
    "SystemdController",
    "service_control",
]
