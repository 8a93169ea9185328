"""The scenario registry: every runbook scenario, defined once in its own module (parameters,
steps and their notebook text, drill staging and preflight, objectives), and the named drill plans
of the runbook's "Regular Testing". Scenario ids are part of the CLI contract."""

from __future__ import annotations

from typing import Any

from drlib.exceptions import ConfigError
from drlib.scenarios import (
    accidental_deletion,
    database_corruption,
    full_system_loss,
    postgres_database_loss,
    prevention_checks,
    redis_loss,
    storage_loss,
    verify_restore,
    webhook_replay,
)
from drlib.scenarios.base import Scenario

SCENARIOS: dict[str, Scenario] = {
    module.SCENARIO.id: module.SCENARIO
    for module in (
        postgres_database_loss,
        storage_loss,
        redis_loss,
        full_system_loss,
        verify_restore,
        accidental_deletion,
        database_corruption,
        webhook_replay,
        prevention_checks,
    )
}

VERIFY_SCENARIO = verify_restore.SCENARIO.id

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
        ("webhook_replay", {}),
        # Prevention Measures: the monitoring checks, after the drills (they leave fresh backups)
        ("prevention_checks", {}),
    ),
}


def get_scenario(scenario_id: str) -> Scenario:
    if scenario_id not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario_id!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[scenario_id]


def plan_scenarios(plan: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    if plan not in PLANS:
        raise ConfigError(f"unknown plan {plan!r}; known: {', '.join(PLANS)}")
    return PLANS[plan]
