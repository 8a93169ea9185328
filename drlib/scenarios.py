"""The scenario registry: each runbook scenario's id (part of the CLI contract), notebook,
runbook class and objectives, and the named drill plans of the runbook's "Regular Testing"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drlib.config import project_root
from drlib.exceptions import ConfigError
from drlib.parameters import Param
from drlib.runbooks.base import Runbook
from drlib.runbooks.postgres_database_loss import PostgresDatabaseLoss

SOURCE_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class Scenario:
    id: str
    runbook: type[Runbook]
    rto_kind: str
    rpo_component: str

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
    )
}

#: The runbook's "Regular Testing" cadence.
PLANS: dict[str, tuple[str, ...]] = {
    "monthly": ("postgres_database_loss",),
    "quarterly": ("postgres_database_loss",),
    "annually": ("postgres_database_loss",),
}


def get_scenario(scenario_id: str) -> Scenario:
    if scenario_id not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario_id!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[scenario_id]


def plan_scenarios(plan: str) -> tuple[str, ...]:
    if plan not in PLANS:
        raise ConfigError(f"unknown plan {plan!r}; known: {', '.join(PLANS)}")
    return PLANS[plan]
