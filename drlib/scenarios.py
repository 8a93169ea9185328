"""The scenario registry: each runbook scenario's id (part of the CLI contract), notebook,
runbook class and objectives, and the named drill plans of the runbook's "Regular Testing"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drlib.config import project_root
from drlib.exceptions import ConfigError
from drlib.parameters import Param
from drlib.runbooks.base import Runbook
from drlib.runbooks.full_system_loss import FullSystemLoss
from drlib.runbooks.postgres_database_loss import PostgresDatabaseLoss
from drlib.runbooks.redis_loss import RedisLoss
from drlib.runbooks.storage_loss import StorageLoss
from drlib.runbooks.verify_restore import VerifyRestore

SOURCE_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class Scenario:
    """A runbook scenario; ``rto_kind``/``rpo_component`` name its targets in the profile (None: no
    outage is measured), ``verify_after`` runs the Verify Restore notebook as the drill's last stage."""

    id: str
    runbook: type[Runbook]
    rto_kind: str | None
    rpo_component: str | None
    verify_after: bool = True

    @property
    def title(self) -> str:
        return self.runbook.title

    @property
    def params(self) -> tuple[Param, ...]:
        return self.runbook.params

    def notebook_path(self) -> Path:
        """``notebooks/<id>.ipynb`` in the project, else in the source tree drlib runs from."""
        for folder in (project_root() / "notebooks", SOURCE_NOTEBOOKS):
            if (folder / f"{self.id}.ipynb").is_file():
                return folder / f"{self.id}.ipynb"
        raise ConfigError(
            f"notebook {self.id}.ipynb not found in {project_root() / 'notebooks'} "
            f"or {SOURCE_NOTEBOOKS}: run drlib from the project folder"
        )


SCENARIOS: dict[str, Scenario] = {
    s.id: s
    for s in (
        Scenario("postgres_database_loss", PostgresDatabaseLoss, rto_kind="database_loss", rpo_component="postgres"),
        Scenario("storage_loss", StorageLoss, rto_kind="storage_loss", rpo_component="storage"),
        Scenario("redis_loss", RedisLoss, rto_kind="partial_failure", rpo_component="redis"),
        Scenario("full_system_loss", FullSystemLoss, rto_kind="full_system_loss", rpo_component="postgres"),
        Scenario("verify_restore", VerifyRestore, rto_kind=None, rpo_component=None, verify_after=False),
    )
}

#: The runbook's "Regular Testing" cadence: (scenario, parameters) per drill.
PLANS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    # Monthly: test database restore, verify backup integrity.
    "monthly": (("postgres_database_loss", {}),),
    # Quarterly: full disaster recovery drill, test restore procedures.
    "quarterly": (("postgres_database_loss", {}), ("storage_loss", {}), ("redis_loss", {}), ("full_system_loss", {})),
    # Annually: test alternative recovery methods too (Option A in place, the S3 storage path).
    "annually": (
        ("postgres_database_loss", {"option": "A"}),
        ("storage_loss", {"storage_kind": "s3", "delete_extra": True}),
        ("redis_loss", {}),
        ("full_system_loss", {}),
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
