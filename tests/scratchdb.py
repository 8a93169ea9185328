"""Scratch databases on the sandbox's server for restore tests (the ``make_db`` fixture makes them and
drops every one whose name starts with ``PREFIX`` afterwards)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from drlib.postgres.connection import PgTarget

Made = Callable[..., PgTarget]
PREFIX = "rfix_"


def on(server: PgTarget, name: str) -> PgTarget:
    """``name`` on ``server``'s cluster, as a database with no check set (discovery only)."""
    return replace(server, settings=replace(server.settings, name=name, check_set=None, tables=(), orphan_checks=()))
