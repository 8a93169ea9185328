"""What every runbook shares: validated parameters, a profile, evidence, and steps that record
themselves. A scenario's runbook is a subclass with one method per runbook step; its
notebook calls those methods one per cell."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from drlib.checks import CheckResult, Checks, checks_table_html
from drlib.config import Profile, load_profile
from drlib.evidence import Evidence, utcnow
from drlib.exceptions import ParameterError
from drlib.objectives import rpo_check
from drlib.parameters import Param, validate

COMMON_PARAMS: tuple[Param, ...] = (
    Param("profile", str, "sandbox", "environment profile to recover (see drlib.toml)"),
    Param("failure_time", str, "", "when the failure happened, ISO 8601 UTC; empty means now"),
    Param("confirm", bool, False, "False: dry run, show what would happen; True: do it"),
    Param("evidence_path", str, "", "where to write the evidence JSON (set by drills)"),
)


@dataclass(frozen=True)
class Outcome:
    """What one step did, shown as a small table in the notebook."""

    title: str
    facts: dict[str, Any] = field(default_factory=dict)
    checks: Checks = field(default_factory=Checks)
    table: pd.DataFrame | None = None

    @property
    def passed(self) -> bool:
        return self.checks.passed

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title)}</h4>"]
        if self.facts:
            rows = "".join(
                f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                for k, v in self.facts.items()
            )
            parts.append(f"<table>{rows}</table>")
        if self.table is not None:
            parts.append(self.table.to_html(index=False))
        if self.checks:
            parts.append(checks_table_html(self.checks))
        return "".join(parts)

    def __repr__(self) -> str:
        lines = [self.title, *(f"  {k}: {v}" for k, v in self.facts.items())]
        if self.checks:
            lines.append(repr(self.checks))
        return "\n".join(lines)


def parse_failure_time(value: str) -> datetime:
    if not value:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ParameterError(f"failure_time {value!r} is not ISO 8601 (e.g. 2026-01-13T02:30:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Runbook:
    """Base of the scenario runbooks."""

    scenario: ClassVar[str]
    title: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]

    def __init__(self, *, evidence: Evidence | None = None, **values: Any) -> None:
        """``evidence``: share another runbook's evidence (a scenario built from other scenarios)."""
        self.values = validate(self.params, values, scenario=self.scenario)
        self.profile: Profile = load_profile(self.values["profile"])
        self.confirm: bool = self.values["confirm"]
        self.failure_time = parse_failure_time(self.values["failure_time"])
        path = self.values["evidence_path"]
        self.evidence = evidence or Evidence(
            scenario=self.scenario,
            environment=self.profile.name,
            path=Path(path) if path else None,
            parameters=dict(self.values),
        )
        self.evidence.note("failure_time", self.failure_time.isoformat())

    def common_values(self) -> dict[str, Any]:
        """The shared parameters, to build a sub-runbook that records into the same evidence."""
        return {p.name: self.values[p.name] for p in COMMON_PARAMS}

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> Runbook:
        """Build the runbook from a notebook's variables: the declared parameters are picked
        out of ``namespace`` (the parameters cell plus papermill's injected values)."""
        return cls(**{p.name: namespace[p.name] for p in cls.params if p.name in namespace})

    def run_step(self, name: str, action: Callable[[], Outcome]) -> Outcome:
        """Run one runbook step, recording its time, status and checks."""
        with self.evidence.step(name) as record:
            outcome = action()
            self.evidence.add_checks(outcome.checks, step=record)
            if outcome.facts.get("dry_run"):
                record.status = "skipped"
        return outcome

    def rpo(self, component: str, backup_time: datetime) -> CheckResult:
        """The achieved RPO of ``component`` against the profile's target."""
        return rpo_check(
            component=component,
            backup_time=backup_time,
            failure_time=self.failure_time,
            target_seconds=self.profile.targets.rpo(component),
        )

    def summary(self) -> Outcome:
        """Every check of the run in one table; the last cell of each notebook."""
        steps = pd.DataFrame([{"step": s.name, "status": s.status, "seconds": s.seconds} for s in self.evidence.steps])
        checks = Checks(self.evidence.checks)
        failed = [c.name for c in checks.failures]
        return Outcome(
            title=f"{self.title}: {'all checks passed' if not failed else f'{len(failed)} check(s) FAILED'}",
            facts={
                "environment": self.profile.name,
                "dry_run": not self.confirm,
                **({"failed": ", ".join(failed)} if failed else {}),
            },
            checks=checks,
            table=steps,
        )
