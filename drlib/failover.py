"""Switching a profile between its primary and its alternative provider (the runbook's "Update
DNS/configurations"): explicit (a dry run unless confirmed), refused when the provider switched to does
not answer, reversible (switch back), and recorded: the active provider in
``<state dir>/failover/<profile>.json``, which :func:`drlib.config.load_profile` honours, and every switch
appended to ``<profile>.history.jsonl`` (when, who, from where, why).

Switching changes where drlib (and, through the profile's application controller, the application)
connects; it moves no data. The provider-outage runbook restores into the alternative first.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from drlib.app.health import wait_healthy
from drlib.checks import CheckResult, Checks
from drlib.config import Profile, load_profile, project_root, state_dir
from drlib.config_failover import Provider, active_provider, history_file, read_state, state_file
from drlib.evidence import utcnow
from drlib.exceptions import ConfigError, ConnectionFailed, NotConfigured
from drlib.plans import RestorePlan
from drlib.reachability import DEFAULT_TIMEOUT, Reachability, probe_profile
from drlib.services import controller_for


@dataclass(frozen=True)
class Switched:
    """A switch that was made (or found already made)."""

    profile: str
    before: Provider
    after: Provider
    changes: dict[str, str]
    probes: tuple[Reachability, ...] = ()
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.before != self.after


def where(profile: Profile) -> dict[str, str]:
    """Where a profile's settings point: the database, the S3 endpoint and the backup folders."""
    found = {"database": profile.database.address, "database backups": str(profile.backups.postgres_dir)}
    if profile.storage is not None:
        found["storage"] = (
            f"s3://{profile.storage.bucket} at {profile.storage.endpoint_url or 'AWS'}"
            if profile.storage.kind == "s3" or profile.storage.endpoint_url
            else str(profile.storage.path)
        )
        found["storage backups"] = f"{profile.backups.storage_dir}; s3://{profile.storage.backups_bucket}"
    if profile.app is not None:
        found["application"] = f"{profile.app.controller} {profile.app.base_url}"
    return found


def changes(before: Profile, after: Profile) -> dict[str, str]:
    """Each setting that differs between two views of a profile, as ``old -> new``."""
    old, new = where(before), where(after)
    return {key: f"{old.get(key, '-')} -> {new[key]}" for key in new if old.get(key) != new[key]}


def current_provider(name: str) -> Provider:
    return active_provider(state_dir(project_root()), name)


def switch_provider(
    name: str, *, to: Provider, confirm: bool = False, reason: str = "", timeout: float = DEFAULT_TIMEOUT
) -> Switched | RestorePlan:
    """Point profile ``name`` at provider ``to``. Refused (:class:`ConnectionFailed`, nothing written) when
    that provider's database or S3 endpoint does not answer; a dry run shows what would change."""
    try:
        before = current_provider(name)
    except ConfigError:
        if to != "primary":
            raise
        before = "alternative"  # an unreadable record: going back to the primary writes a new one (as it says)
    target = load_profile(name, provider=to)
    if before == to:
        return Switched(name, before, to, {}, record=read_state(state_dir(project_root()), name))
    try:
        old = load_profile(name, provider=before)
    except NotConfigured:  # switched to an alternative the profile no longer describes
        old = target
    diff = changes(old, target)
    probes = probe_profile(target, timeout=timeout)
    down = [p for p in probes if not p.up]
    if not confirm:
        steps = [f"{key}: {value}" for key, value in diff.items()]
        steps += [f"check: {p.describe()}" for p in probes]
        if down:
            steps.append(f"REFUSED with confirm: the {to} provider does not answer")
        return RestorePlan(action=f"switch profile {name!r} from its {before} to its {to} provider", steps=tuple(steps))
    if down:
        raise ConnectionFailed(
            f"the {to} provider of profile {name!r} does not answer ({'; '.join(p.describe() for p in down)}): "
            f"nothing was switched, the profile still points at its {before} provider. Bring it up (or restore "
            "into it) first, then switch again"
        )
    record = {
        "profile": name,
        "active": to,
        "from": before,
        "switched_at": utcnow().isoformat(),
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
        "reason": reason,
        "changes": diff,
    }
    path = state_file(state_dir(project_root()), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2), encoding="utf-8")
    partial.replace(path)
    with history_file(state_dir(project_root()), name).open("a", encoding="utf-8") as history:
        history.write(json.dumps(record) + "\n")
    return Switched(name, before, to, diff, tuple(probes), record)


def switch_history(name: str) -> list[dict[str, Any]]:
    """Every recorded switch of profile ``name``, oldest first."""
    path = history_file(state_dir(project_root()), name)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def restart_application(before: Profile, after: Profile, *, timeout: float) -> list[CheckResult]:
    """Stop the application as ``before`` runs it, start it as ``after`` does (against the provider it now
    points at) and wait for its health check; nothing when the profile has no application."""
    if before.app is None or after.app is None:
        return []
    controller_for(before).stop()
    controller_for(after).start()
    return [wait_healthy(after.app.base_url, path=after.app.health_path, timeout=timeout)]


def provider_checks(profile: Profile, *, timeout: float = DEFAULT_TIMEOUT) -> Checks:
    """The database and S3 endpoint of each provider the profile has, probed (the active one must answer;
    the other one only warns)."""
    results = [p.check() for p in probe_profile(profile, timeout=timeout)]
    other: Provider = "alternative" if profile.provider == "primary" else "primary"
    if profile.failover is not None or other == "primary":
        view = load_profile(profile.name, provider=other)
        results += [p.check(warn_only=True) for p in probe_profile(view, timeout=timeout)]
    return Checks(results)
