"""``drlib failover status|switch|back|replicate``: a profile's alternative provider (its ``[failover]``
section). ``status`` says which provider the profile points at, whether each one answers (bounded probes)
and whether the newest backups are kept on both; ``switch`` and ``back`` point the profile's connection
settings at the alternative or the primary (dry run unless ``--confirm``; refused when that provider does
not answer; recorded) and restart the application against them; ``replicate`` copies the newest backups to
the alternative. Exit 0 fine, 1 a check failed, 3 a drlib error (``error [code]: …``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from drlib.checks import CheckResult
from drlib.config_failover import Provider
from drlib.terminal import EXIT_CHECK_FAILED, handles_errors

if TYPE_CHECKING:
    from drlib.config import Profile

COLOURS = {"pass": "green", "warn": "yellow", "fail": "red"}
#: seconds the application may take to answer /health after a switch
HEALTH_TIMEOUT = 60


def _name(environment: str | None) -> str:
    from drlib.config import SANDBOX_PROFILE

    return environment or os.environ.get("DRLIB_PROFILE") or SANDBOX_PROFILE


def _show(checks: Iterable[CheckResult]) -> bool:
    """Print each check on a line; True when none failed."""
    passed = True
    for item in checks:
        click.secho(f"{item.status.upper():<4}  ", fg=COLOURS[item.status], nl=False)
        click.echo(
            f"{item.name}: {item.observed} (expected {item.expected})" + (f": {item.detail}" if item.detail else "")
        )
        passed = passed and item.passed
    return passed


@click.group()
def failover() -> None:
    """A profile's alternative provider: status, switch, back, replicate."""


@failover.command("status")
@click.option("--env", "environment", help="profile (default: sandbox)")
@click.option("--timeout", type=click.FloatRange(min=0.5), default=5.0, show_default=True, help="seconds per probe")
@handles_errors
def failover_status(environment: str | None, timeout: float) -> None:
    """Which provider the profile points at, whether each provider's database and S3 endpoint answer, and
    whether the newest backups are kept on both (exit 1 when the active provider does not answer or a
    backup is in one place only)."""
    from drlib.config import load_profile
    from drlib.config_failover import read_state
    from drlib.failover import provider_checks, where
    from drlib.replication import second_location_checks

    name = _name(environment)
    profile = load_profile(name)
    record = read_state(_state(), name)
    switched = f" (switched {record['switched_at']} by {record['by']}: {record.get('reason') or 'no reason given'})"
    click.echo(f"profile {name}: on its {profile.provider} provider" + (switched if record else ""))
    for key, value in where(profile).items():
        click.echo(f"  {key}: {value}")
    checks = list(provider_checks(profile, timeout=timeout))
    if profile.failover is None:
        click.echo(f"no alternative provider: add [profiles.{name}.failover.database] (and .storage, .backups)")
    else:
        primary = load_profile(name, provider="primary")
        found, rows = second_location_checks(primary, load_profile(name, provider="alternative"))
        checks += found
        for row in rows:
            click.echo(f"  newest {row['kind']} backup: primary {row['primary']}, alternative {row['alternative']}")
    if not _show(checks):
        sys.exit(EXIT_CHECK_FAILED)


def _state() -> Path:
    from drlib.config import project_root, state_dir

    return state_dir(project_root())


def _drill_lock(profile: Profile, *, command: str, confirm: bool) -> contextlib.AbstractContextManager[object]:
    """Held while a confirmed command moves the stack (a drill running on it would be undone); a dry run
    changes nothing and needs none."""
    from drlib.lock import no_drill_running

    return no_drill_running(profile, command=command) if confirm else contextlib.nullcontext()


def _switch(
    environment: str | None, *, to: Provider, confirm: bool, reason: str, timeout: float, restart: bool
) -> None:
    from drlib.config import load_profile
    from drlib.exceptions import ConfigError, NotConfigured
    from drlib.failover import restart_application, switch_provider
    from drlib.plans import RestorePlan

    name = _name(environment)
    try:
        before = load_profile(name)
    except NotConfigured:  # switched to an alternative the profile no longer describes: going back is allowed
        before = load_profile(name, provider="primary")
    except ConfigError:  # an unreadable record of the switch: going back to the primary is allowed (and rewrites it)
        if to != "primary":
            raise
        before = load_profile(name, provider="primary")
    with _drill_lock(before, command=f"failover {'switch' if to == 'alternative' else 'back'}", confirm=confirm):
        done = switch_provider(name, to=to, confirm=confirm, reason=reason, timeout=timeout)
        if isinstance(done, RestorePlan):
            click.echo(str(done))
            click.echo(
                "dry run: nothing switched; add --confirm to switch"
                + (" and restart the application" if restart else "")
            )
            return
        if not done.changed:
            click.echo(f"profile {name} already points at its {done.after} provider: nothing to switch")
            return
        click.echo(f"profile {name}: switched from its {done.before} to its {done.after} provider")
        for key, value in done.changes.items():
            click.echo(f"  {key}: {value}")
        if restart and not _show(restart_application(before, load_profile(name), timeout=HEALTH_TIMEOUT)):
            sys.exit(EXIT_CHECK_FAILED)


_CONFIRM = click.option("--confirm", is_flag=True, help="do it (default: a dry run showing what would change)")
_REASON = click.option("--reason", default="", help="why, for the record (e.g. an incident number)")
_TIMEOUT = click.option(
    "--timeout", type=click.FloatRange(min=0.5), default=5.0, show_default=True, help="seconds per probe"
)
_RESTART = click.option("--no-restart", "no_restart", is_flag=True, help="do not restart the application")


@failover.command("switch")
@click.option("--env", "environment", help="profile (default: sandbox)")
@_CONFIRM
@_REASON
@_TIMEOUT
@_RESTART
@handles_errors
def failover_switch(environment: str | None, confirm: bool, reason: str, timeout: float, no_restart: bool) -> None:
    """Point the profile at its alternative provider (refused when it does not answer) and restart the
    application against it; restore into the alternative first (the provider_outage notebook does both)."""
    _switch(environment, to="alternative", confirm=confirm, reason=reason, timeout=timeout, restart=not no_restart)


@failover.command("back")
@click.option("--env", "environment", help="profile (default: sandbox)")
@_CONFIRM
@_REASON
@_TIMEOUT
@_RESTART
@handles_errors
def failover_back(environment: str | None, confirm: bool, reason: str, timeout: float, no_restart: bool) -> None:
    """Point the profile at its primary provider again (refused while it does not answer) and restart the
    application against it. Rows written on the alternative meanwhile stay there."""
    _switch(environment, to="primary", confirm=confirm, reason=reason, timeout=timeout, restart=not no_restart)


@failover.command("replicate")
@click.option("--env", "environment", help="profile (default: sandbox)")
@_CONFIRM
@handles_errors
def failover_replicate(environment: str | None, confirm: bool) -> None:
    """Copy the newest database backup and storage backups to the alternative provider's backup locations
    and verify the copies there (on the sandbox, --confirm starts its alternative provider first)."""
    from drlib.config import load_profile

    name = _name(environment)
    primary = load_profile(name, provider="primary")
    with _drill_lock(primary, command="failover replicate", confirm=confirm):
        _replicate(name, primary, confirm=confirm)


def _replicate(name: str, primary: Profile, *, confirm: bool) -> None:
    from drlib.config import load_profile
    from drlib.exceptions import NotConfigured
    from drlib.plans import RestorePlan
    from drlib.replication import replicate_backups

    if primary.is_sandbox and confirm:
        from drlib.sandbox.alternative import AlternativeProvider
        from drlib.sandbox.stack import sandbox_for

        AlternativeProvider(sandbox_for(primary)).provision()
    try:
        alternative = load_profile(name, provider="alternative")
    except NotConfigured:
        if not primary.is_sandbox:
            raise
        click.echo("dry run: --confirm starts the sandbox's alternative provider, then copies the newest backups")
        return
    done = replicate_backups(primary, alternative, confirm=confirm)
    if isinstance(done, RestorePlan):
        click.echo(str(done))
        click.echo("dry run: nothing copied; add --confirm to copy")
        return
    passed = True
    for replica in done:
        click.echo(f"{replica.kind}: {replica.backup} {'copied to' if replica.copied else 'already at'} {replica.copy}")
        passed = _show(replica.checks) and passed
    if not passed:
        sys.exit(EXIT_CHECK_FAILED)
