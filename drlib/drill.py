"""A drill, step by step: check the target may be drilled, stage the failure, run the runbook
notebook headlessly, run the Verify Restore notebook as the last stage, measure RTO, RPO and the
data lost, and archive the dated report. See :func:`run_scenario`."""

from __future__ import annotations

import getpass
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drlib import __version__
from drlib.checks import CheckResult, check
from drlib.config import Profile, load_profile, project_root, reports_dir
from drlib.drill_setup import STAGES, DrillSetup
from drlib.evidence import load_evidence, utcnow
from drlib.execute import Execution, execute_notebook
from drlib.faults import ensure_drill_target
from drlib.objectives import achieved_rpo_seconds, rto_check
from drlib.parameters import validate
from drlib.report import write_report_folder
from drlib.sandbox.stack import sandbox_for
from drlib.scenarios import Scenario, get_scenario
from drlib.secrets import redact
from drlib.units import format_duration

DEFAULT_TIMEOUT_SECONDS = 3600
VERIFY_SCENARIO = "verify_restore"


@dataclass(frozen=True)
class DrillResult:
    scenario: str
    status: str
    folder: Path
    failing_checks: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Stage:
    """One notebook run of a drill and what it recorded."""

    name: str
    execution: Execution
    evidence: dict[str, Any]
    parameters: dict[str, Any]


def report_folder(root: Path, started: datetime, scenario: str) -> Path:
    """``reports/<YYYY-MM-DD>/<HHMMSS>-<scenario>/`` (a suffix keeps two runs in one second apart)."""
    base = root / f"{started:%Y-%m-%d}" / f"{started:%H%M%S}-{scenario}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


def run_notebook(scenario: Scenario, *, folder: Path, output: str, parameters: dict[str, Any], timeout: float) -> Stage:
    evidence_path = folder / output.replace(".ipynb", ".evidence.json")
    parameters = {**parameters, "evidence_path": str(evidence_path)}
    execution = execute_notebook(
        notebook=scenario.notebook_path(),
        output=folder / output,
        parameters=parameters,
        cwd=project_root(),
        timeout=timeout,
        log=folder / output.replace(".ipynb", ".log"),
    )
    return Stage(name=scenario.id, execution=execution, evidence=load_evidence(evidence_path), parameters=parameters)


def run_scenario(
    scenario_id: str,
    *,
    environment: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    confirm_target: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    reports_root: Path | None = None,
) -> DrillResult:
    """Run one scenario as a drill and archive its report."""
    scenario = get_scenario(scenario_id)
    given = dict(overrides or {})
    params = validate(scenario.params, given, scenario=scenario.id)
    profile = load_profile(environment)
    ensure_drill_target(profile, confirm=confirm_target)
    started = utcnow()
    folder = report_folder(reports_root or reports_dir(), started, scenario.id)
    if profile.is_sandbox:  # start from a healthy sandbox, whatever the last drill left behind
        sandbox_for(profile).up()
    setup = STAGES[scenario.id](profile, params)
    parameters = {
        **{k: v for k, v in params.items() if k in given},
        **setup.notebook_parameters,
        "profile": profile.name,
        "failure_time": setup.failure_time.isoformat(),
        "confirm": params["confirm"] if "confirm" in given else True,
    }
    stages = [run_notebook(scenario, folder=folder, output="notebook.ipynb", parameters=parameters, timeout=timeout)]
    if scenario.verify_after and stages[0].execution.succeeded:
        restored = stages[0].evidence.get("facts", {}).get("service_restored_at")
        verify = {
            "profile": profile.name,
            "failure_time": setup.failure_time.isoformat(),
            "since": restored or setup.failure_time.isoformat(),
            "storage_kind": params.get("storage_kind", "local"),
            "confirm": True,
        }
        stages.append(
            run_notebook(
                get_scenario(VERIFY_SCENARIO),
                folder=folder,
                output="verify_restore.ipynb",
                parameters=verify,
                timeout=timeout,
            )
        )
    results = collect_results(scenario=scenario, profile=profile, setup=setup, stages=stages, started=started)
    write_report_folder(folder, results)
    failing = [c for c in results["checks"] if c["status"] == "fail"]
    return DrillResult(
        scenario=scenario.id,
        status=results["status"],
        folder=folder,
        failing_checks=failing,
        error=results.get("error"),
    )


def _prefixed(stage: Stage, index: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    steps = list(stage.evidence.get("steps", []))
    checks = list(stage.evidence.get("checks", []))
    if index == 0:
        return steps, checks
    return (
        [{**s, "name": f"{stage.name}/{s['name']}"} for s in steps],
        [{**c, "name": f"{stage.name}:{c['name']}"} for c in checks],
    )


def _stage_error(stage: Stage) -> dict[str, Any] | None:
    error: dict[str, Any] | None = stage.evidence.get("facts", {}).get("error")
    steps = stage.evidence.get("steps") or []
    last = steps[-1]["name"] if steps else None
    if stage.execution.timed_out:
        return {
            "step": last,
            "message": f"drill timed out after {stage.execution.seconds:.0f}s; the notebook and "
            "its child processes were stopped",
        }
    if not stage.execution.succeeded and not error:
        return {"step": last, "message": "notebook execution failed: " + stage.execution.log_tail[-800:]}
    return error


def objective_checks(
    scenario: Scenario, profile: Profile, setup: DrillSetup, restored_at: datetime | None
) -> tuple[list[CheckResult], float | None, float | None]:
    """The drill's RTO check, and the measured RTO and its target."""
    if scenario.rto_kind is None:
        return [], None, None
    target = profile.targets.rto(scenario.rto_kind)
    if restored_at is None:
        return (
            [
                check(
                    f"rto:{scenario.rto_kind}",
                    False,
                    expected=f"<= {format_duration(target)}",
                    observed="service never restored",
                )
            ],
            None,
            target,
        )
    rto = rto_check(
        scenario_kind=scenario.rto_kind,
        outage_started=setup.failure_time,
        service_restored=restored_at,
        target_seconds=target,
    )
    return [rto], (restored_at - setup.failure_time).total_seconds(), target


def collect_results(
    *, scenario: Scenario, profile: Profile, setup: DrillSetup, stages: list[Stage], started: datetime
) -> dict[str, Any]:
    """The ``results.json`` document: evidence of every stage plus the drill's own measurements."""
    facts = stages[0].evidence.get("facts", {})
    steps: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for index, stage in enumerate(stages):
        stage_steps, stage_checks = _prefixed(stage, index)
        steps += stage_steps
        checks += stage_checks
    restored_at = datetime.fromisoformat(facts["service_restored_at"]) if facts.get("service_restored_at") else None
    drill_checks, rto_seconds, rto_target = objective_checks(scenario, profile, setup, restored_at)
    checks += [c.to_dict() for c in drill_checks]
    backup = setup.backup or facts.get("backup")
    rpo_target = profile.targets.rpo(scenario.rpo_component) if scenario.rpo_component else None
    rpo_seconds = (
        achieved_rpo_seconds(backup_time=datetime.fromisoformat(backup["created_at"]), failure_time=setup.failure_time)
        if backup and rpo_target
        else None
    )
    error = next((e for e in (_stage_error(s) for s in stages) if e), None)
    status = "error" if error else ("failed" if any(c["status"] == "fail" for c in checks) else "passed")
    return {
        "scenario": scenario.id,
        "title": scenario.title,
        "environment": profile.name,
        "started_at": started.isoformat(),
        "finished_at": utcnow().isoformat(),
        "status": status,
        "rto_seconds": rto_seconds,
        "rto_target_seconds": rto_target,
        "rpo_seconds": rpo_seconds,
        "rpo_target_seconds": rpo_target,
        "steps": steps,
        "checks": checks,
        "parameters": {k: redact(v) if isinstance(v, str) else v for k, v in stages[0].parameters.items()},
        "drlib_version": __version__,
        "run_by": {"user": getpass.getuser(), "host": platform.node()},
        "fault": setup.fault,
        "failure_time": setup.failure_time.isoformat(),
        "service_restored_at": facts.get("service_restored_at"),
        "backup": backup,
        "data_loss": setup.data_loss(profile),
        "error": error,
        "notebooks": [f"{'notebook' if i == 0 else s.name}.ipynb" for i, s in enumerate(stages)],
        "execution": {
            "seconds": round(sum(s.execution.seconds for s in stages), 2),
            "returncode": max(s.execution.returncode for s in stages),
            "timed_out": any(s.execution.timed_out for s in stages),
        },
    }
