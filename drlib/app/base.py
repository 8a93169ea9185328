"""Moved to :mod:`drlib.services`; these names stay importable here until callers are updated."""

from __future__ import annotations

from drlib.services import ControllerFactory, ServiceController, controller_for, register, run_command

AppController = ServiceController

__all__ = ["AppController", "ControllerFactory", "controller_for", "register", "run_command"]
