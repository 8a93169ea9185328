"""What every scenario shares: the :class:`Scenario` model (parameters, drill staging, objectives,
steps and their notebook text, defined once per scenario module) and the :class:`Runbook` base whose
steps the notebook calls one per cell."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from drlib.app.health import wait_healthy
from drlib.checks import CheckResult, Checks
from drlib.config import Component, Profile, load_profile, project_root
from drlib.evidence import Evidence, utcnow
from drlib.exceptions import ConfigError, DrlibError, NotConfigured, ParameterError
from drlib.lazy import lazy_module
from drlib.objectives import rpo_check
from drlib.parameters import Param, validate
from drlib.plans import RestorePlan
from drlib.results import StepRecord
from drlib.services import ServiceController
from drlib.steps import Outcome, StepSpec, dry_run_outcome, not_configured_outcome, step_specs

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")

if TYPE_CHECKING:
    from drlib.staging import DrillSetup

SOURCE_NOTEBOOKS = Path(__file__).resolve().parent.parent.parent / "notebooks"


def parse_failure_time(value: str) -> datetime:
    """An ISO 8601 time (UTC when no zone is given); empty means now."""
    if not value:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ParameterError(f"failure_time {value!r} is not an ISO 8601 time (e.g. 2026-01-13T02:30:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


COMMON_PARAMS: tuple[Param, ...] = (
    Param("profile", str, "sandbox", "environment profile to recover (see drlib.toml)"),
    Param(
        "failure_time", str, "", "when the failure happened, ISO 8601 UTC; empty means now", check=parse_failure_time
    ),
    Param("confirm", bool, False, "False: dry run, show what would happen; True: do it"),
    Param("evidence_path", str, "", "where to write the evidence JSON (set by drills)"),
)

#: how messages name each optional component
COMPONENT_NAMES: dict[Component, str] = {
    "app": "an application",
    "redis": "Redis",
    "storage": "file storage",
    "billing": "billing webhooks",
}


def refuse_without(profile: Profile, needs: tuple[Component, ...], *, what: str) -> None:
    """:class:`NotConfigured` naming the first of ``needs`` that ``profile`` does not have."""
    for component in needs:
        if not profile.configured(component):
            raise NotConfigured(
                f"{what} needs {COMPONENT_NAMES[component]}, but profile {profile.name!r} has no [{component}] "
                f"section: {profile.configure_hint(component)}"
            )


#: Parameters a drill sets itself: given with ``-p`` they are refused, not silently replaced.
DRILL_CONTROLLED = ("profile", "failure_time", "evidence_path")


class Runbook:
    """Base of the scenario runbooks: validated parameters, a profile, evidence, and steps."""

    scenario: ClassVar[str]
    title: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    #: components the runbook cannot run without (refused at construction on a profile without them)
    needs: ClassVar[tuple[Component, ...]] = ()

    def __init__(self, *, evidence: Evidence | None = None, on: object = None, **values: Any) -> None:
        """``evidence``: share another runbook's evidence (a scenario built from other scenarios); ``on``: work
        on this loaded :class:`Profile` (e.g. a profile's view on its alternative provider), not ``profile``'s."""
        self.values = validate(self.params, values, scenario=self.scenario)
        self.failure_time = parse_failure_time(self.values["failure_time"])
        if on is not None and not isinstance(on, Profile):
            raise TypeError(f"on= takes a loaded Profile, not {type(on).__name__}")
        self.profile: Profile = on or load_profile(self.values["profile"])
        refuse_without(self.profile, self.needs, what=f"the {self.scenario} runbook")
        self.confirm: bool = self.values["confirm"]
        path = self.values["evidence_path"]
        self.evidence = evidence or Evidence(
            scenario=self.scenario,
            environment=self.profile.name,
            path=Path(path) if path else None,
            parameters=dict(self.values),
        )
        self.evidence.note("failure_time", self.failure_time.isoformat())
        self.evidence.note("dry_run", not self.confirm)

    def common_values(self) -> dict[str, Any]:
        """The shared parameters, to build a sub-runbook that records into the same evidence."""
        return {p.name: self.values[p.name] for p in COMMON_PARAMS}

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> Runbook:
        """Build the runbook from a notebook's variables: the declared parameters are picked
        out of ``namespace`` (the parameters cell plus papermill's injected values)."""
        return cls(**{p.name: namespace[p.name] for p in cls.params if p.name in namespace})

    @classmethod
    def steps(cls) -> list[StepSpec]:
        return step_specs(cls)

    # -- the step mechanism ---------------------------------------------------------------
    def missing(self, spec: StepSpec) -> list[Component]:
        """The components ``spec`` needs that the profile does not have."""
        return [component for component in spec.needs if not self.profile.configured(component)]

    def run_step(self, spec: StepSpec, body: Callable[[], Outcome | RestorePlan]) -> Outcome:
        """Run one step: dry run, timing, checks, errors and components the profile lacks are handled
        here, once for all steps."""
        with self.evidence.step(spec.name) as record:
            missing = self.missing(spec)
            if missing:
                return self._not_configured(spec, record, self.profile.not_configured(missing[0]))
            try:
                if not self.confirm and spec.dry_run == "skip":
                    outcome = dry_run_outcome(spec, None, would=spec.would.format(rb=self))
                else:
                    result = body()
                    if isinstance(result, RestorePlan) or (not self.confirm and spec.dry_run == "plan"):
                        outcome = dry_run_outcome(spec, result, would=spec.would)
                    else:
                        outcome = result
            except NotConfigured as exc:  # a component the step reached for without declaring it
                return self._not_configured(spec, record, exc.detail)
            except DrlibError as exc:
                state = self.state_text()
                if state and "State now:" not in exc.message:
                    exc.args = (f"{exc.message} State now: {state}",)
                raise
            self.evidence.add_checks(outcome.checks, step=record)
            if outcome.dry_run:
                record.status = "skipped"
                record.detail = "dry run: nothing changed"
        return outcome

    def record_step(self, method: str, title: str, facts: dict[str, Any]) -> Outcome:
        """Record step ``method`` (a composite step's part the runbook decided not to do) with only ``facts``."""
        spec = next(s for s in self.steps() if s.method == method)
        return self.run_step(spec, lambda: Outcome(title, facts=facts))

    def _not_configured(self, spec: StepSpec, record: StepRecord, detail: str) -> Outcome:
        """Record a step that needs a component the profile lacks: not run, not failed."""
        record.status = "not_configured"
        record.detail = detail
        if spec.ends_outage:
            self.service_restored_without_app()
        return not_configured_outcome(spec, detail)

    # -- the state the stack is in ---------------------------------------------------------
    def set_state(self, component: str, state: str) -> None:
        """Record what a step did to a component (and how to undo it) for errors and the report."""
        states = dict(self.evidence.facts.get("stack_state", {}))
        states[component] = state
        self.evidence.note("stack_state", states)

    def state_text(self) -> str:
        states: dict[str, str] = self.evidence.facts.get("stack_state", {})
        return "; ".join(f"{k}: {v}" for k, v in states.items())

    # -- the application coming back (the end of the outage: RTO) ---------------------------------
    def application_health(self) -> CheckResult:
        """``/health``, waited for up to the ``health_timeout`` parameter."""
        app = self.profile.require_app()
        return wait_healthy(app.base_url, path=app.health_path, timeout=self.values["health_timeout"])

    def start_application(self, app: ServiceController) -> CheckResult:
        """Start the application, record it in the stack's state, and wait until it is healthy."""
        app.start()
        self.set_state("application", f"started ({app.description})")
        return self.application_health()

    def service_restored_if(self, checks: Checks) -> Checks:
        """The outage ends when ``checks`` pass: record when (the drill measures RTO to it)."""
        if checks.passed:
            self.evidence.note("service_restored_at", utcnow().isoformat())
        return checks

    def service_restored_without_app(self) -> None:
        """Without an application the service is the data: the outage ends once it is restored and every
        check so far passed (in a dry run nothing was restored, so nothing ends)."""
        if self.confirm and Checks(self.evidence.checks).passed:
            self.evidence.note("service_restored_at", utcnow().isoformat())

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
        rows = [{"step": s.name, "status": s.status, "seconds": s.seconds} for s in self.evidence.steps]
        checks = Checks(self.evidence.checks)
        failed = [c.name for c in checks.failures]
        skipped = sum(1 for s in self.evidence.steps if s.status == "skipped")
        if not self.confirm:
            title = f"{self.title}: DRY RUN — nothing changed ({skipped} step(s) only planned or skipped)"
        elif failed:
            title = f"{self.title}: {len(failed)} check(s) FAILED"
        else:
            title = f"{self.title}: all checks passed"
        facts: dict[str, Any] = {"environment": self.profile.name, "dry_run": not self.confirm}
        if failed:
            facts["failed"] = ", ".join(failed)
        not_configured = [s.name for s in self.evidence.steps if s.status == "not_configured"]
        if not_configured:
            facts["not configured (not run)"] = ", ".join(not_configured)
        if self.state_text():
            facts["stack state"] = self.state_text()
        return Outcome(title=title, facts=facts, checks=checks, table=lambda: pd.DataFrame(rows))


#: Checks run before a drill writes anything; raise to refuse.
Preflight = Callable[[Profile, dict[str, Any]], list[CheckResult]]
#: Takes the backups, writes data after them, injects the fault.
Stage = Callable[[Profile, dict[str, Any]], "DrillSetup"]


def no_preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    return []


@dataclass(frozen=True)
class Scenario:
    """A runbook scenario, defined once: its runbook (parameters, steps and their notebook text),
    the notebook's introduction, drill staging and preflight, and the objectives it is measured by
    (``rto_kind``/``rpo_component`` name the profile's targets; None: no outage is measured).
    Its runbook's ``needs`` are the optional components it cannot run at all without: its drill is
    refused on a profile without them (steps that need others report "not configured")."""

    id: str
    runbook: type[Runbook]
    summary: str
    stage: Stage
    rto_kind: str | None
    rpo_component: str | None
    preflight: Preflight = no_preflight
    verify_after: bool = True
    sandbox_only: bool = False
    #: parameters the drill's staging sets itself (its ``notebook_parameters``): refused with ``-p``
    drill_sets: tuple[str, ...] = ()

    @property
    def needs(self) -> tuple[Component, ...]:
        return self.runbook.needs

    def refuse_unconfigured(self, profile: Profile) -> None:
        """Raise :class:`NotConfigured` when ``profile`` lacks a component this scenario cannot run without."""
        refuse_without(profile, self.needs, what=f"the {self.id} drill")

    @property
    def title(self) -> str:
        return self.runbook.title

    @property
    def params(self) -> tuple[Param, ...]:
        return self.runbook.params

    @property
    def steps(self) -> list[StepSpec]:
        return self.runbook.steps()

    def notebook_path(self) -> Path:
        """``notebooks/<id>.ipynb`` in the project, else in the source tree drlib runs from."""
        for folder in (project_root() / "notebooks", SOURCE_NOTEBOOKS):
            if (folder / f"{self.id}.ipynb").is_file():
                return folder / f"{self.id}.ipynb"
        raise ConfigError(
            f"notebook {self.id}.ipynb not found in {project_root() / 'notebooks'} "
            f"or {SOURCE_NOTEBOOKS}: run drlib from the project folder"
        )
