"""The scenario registry: every runbook scenario, defined once in its own module (parameters,
steps and their notebook text, drill staging and preflight, objectives), and the named drill plans
of the runbook's "Regular Testing". Scenario ids are part of the CLI contract."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from drlib.exceptions import ConfigError

if TYPE_CHECKING:
    from drlib.scenarios.base import Scenario

#: every scenario, by id: the id is also its module's name in this package (imported on first use, so a
#: command that runs one scenario does not import them all)
SCENARIO_IDS: tuple[str, ...] = (
    "postgres_database_loss",
    "storage_loss",
    "redis_loss",
    "full_system_loss",
    "verify_restore",
    "accidental_deletion",
    "database_corruption",
    "disk_full",
    "webhook_replay",
    "ransomware",
    "provider_outage",
    "prevention_checks",
)

#: every scenario by id (built on first use: see ``__getattr__``)
SCENARIOS: dict[str, Scenario]

VERIFY_SCENARIO = "verify_restore"

#: The runbook's "Regular Testing" cadence: (scenario, parameters) per drill.
PLANS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    # Monthly: test database restore, verify backup integrity.
    "monthly": (("postgres_database_loss", {}), ("prevention_checks", {})),
    # Quarterly: full disaster recovery drill, test restore procedures.
    "quarterly": (("postgres_database_loss", {}), ("storage_loss", {}), ("redis_loss", {}), ("full_system_loss", {})),
    # Annually: test alternative recovery methods too (Option A in place, the S3 storage path).
    "annually": (
        ("postgres_database_loss", {"option": "A"}),
        ("storage_loss", {"storage_kind": "s3", "delete_extra": True}),
        ("redis_loss", {}),
        ("full_system_loss", {}),
        # the Failure Scenarios
        ("accidental_deletion", {}),
        ("database_corruption", {"drill_damage": "index"}),
        ("database_corruption", {"drill_damage": "table"}),
        ("disk_full", {}),
        ("webhook_replay", {}),
        ("ransomware", {}),
        ("provider_outage", {}),
        # Prevention Measures: the monitoring checks, after the drills (they leave fresh backups)
        ("prevention_checks", {}),
    ),
}


def get_scenario(scenario_id: str) -> Scenario:
    if scenario_id not in SCENARIO_IDS:
        raise ConfigError(f"unknown scenario {scenario_id!r}; known: {', '.join(SCENARIO_IDS)}")
    built: dict[str, Scenario] | None = globals().get("SCENARIOS")  # the registry, once something read it
    return built[scenario_id] if built is not None else _load(scenario_id)


def _load(scenario_id: str) -> Scenario:
    scenario: Scenario = importlib.import_module(f"{__name__}.{scenario_id}").SCENARIO
    return scenario


def __getattr__(name: str) -> Any:
    """``SCENARIOS``: every scenario by id, built (and kept) on first use."""
    if name == "SCENARIOS":
        scenarios = {scenario_id: _load(scenario_id) for scenario_id in SCENARIO_IDS}
        globals()["SCENARIOS"] = scenarios
        return scenarios
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def plan_scenarios(plan: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    if plan not in PLANS:
        raise ConfigError(f"unknown plan {plan!r}; known: {', '.join(PLANS)}")
    return PLANS[plan]
