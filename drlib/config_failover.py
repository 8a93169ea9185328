"""A profile's alternative provider, and which of its two providers is active.

``[profiles.NAME.failover]`` describes the alternative provider (another region or cloud) as the keys
that differ from the primary, section by section: ``failover.database`` (host, port, name, user,
password_secret, …), ``failover.storage`` (endpoint_url, bucket, backups_bucket, the key secrets, …),
``failover.backups`` (postgres_dir, storage_dir: where backups are replicated to) and ``failover.app``
(how the application runs there, e.g. another compose file or start command). The profile's *view* on
its alternative provider is the profile with those keys laid over it (:func:`alternative_table`).

Which provider a profile uses is state, not configuration: ``drlib failover switch`` writes
``<state dir>/failover/<profile>.json`` and :func:`drlib.config.load_profile` honours it, so every
command, notebook and drill of that profile then works on the alternative until ``drlib failover back``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from drlib.exceptions import ConfigError, NotConfigured

#: the profile sections a ``[failover]`` table may override
FAILOVER_SECTIONS = ("database", "storage", "backups", "app")
Provider = Literal["primary", "alternative"]
PROVIDERS: tuple[Provider, ...] = ("primary", "alternative")


def state_file(state: Path, profile: str) -> Path:
    """Where the active provider of ``profile`` is recorded (absent: the primary)."""
    return state / "failover" / f"{profile}.json"


def history_file(state: Path, profile: str) -> Path:
    """Every switch of ``profile``, one JSON object a line, oldest first."""
    return state / "failover" / f"{profile}.history.jsonl"


def read_state(state: Path, profile: str) -> dict[str, Any]:
    """The recorded switch of ``profile`` (``{}`` when it never switched)."""
    path = state_file(state, profile)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} (which provider profile {profile!r} uses) is unreadable: fix it, or switch again with "
            f"`drlib failover back --env {profile} --confirm`"
        ) from exc
    if not isinstance(data, dict) or data.get("active") not in PROVIDERS:
        raise ConfigError(
            f"{path} names no provider ('active' must be one of {', '.join(PROVIDERS)}): switch again with "
            f"`drlib failover back --env {profile} --confirm`"
        )
    return data


def active_provider(state: Path, profile: str) -> Provider:
    """The provider ``profile`` is switched to: the primary unless ``drlib failover switch`` said otherwise."""
    provider: Provider = read_state(state, profile).get("active", "primary")
    return provider


def has_alternative(table: dict[str, Any]) -> bool:
    failover = table.get("failover")
    return isinstance(failover, dict) and any(isinstance(failover.get(s), dict) for s in FAILOVER_SECTIONS)


def alternative_table(table: dict[str, Any], *, profile: str) -> dict[str, Any]:
    """The raw profile ``table`` on its alternative provider: each ``failover.<section>`` laid over
    ``<section>`` (the ``failover`` table itself is kept, so the view still knows both providers)."""
    if not has_alternative(table):
        raise NotConfigured(
            f"profile {profile!r} has no alternative provider: add [profiles.{profile}.failover.database] (and "
            "failover.storage, failover.backups) with the keys that differ there; on the sandbox, "
            "`drlib failover replicate --confirm` starts its alternative provider"
        )
    view = dict(table)
    for section in FAILOVER_SECTIONS:
        part = table["failover"].get(section)
        if isinstance(part, dict):
            base = view.get(section)
            view[section] = {**(base if isinstance(base, dict) else {}), **part}
    return view
