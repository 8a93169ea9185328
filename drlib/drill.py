"""A drill, step by step: check the target may be drilled, stage the failure, run the runbook
notebook headlessly, measure RTO and RPO, and archive the dated report.

Reads as the list of what a drill does: see :func:`run_scenario`.
"""

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
from drlib.drill_setup import STAGES, DrillSetup, rows_still_present
from drlib.evidence import load_evidence, utcnow
from drlib.exceptions import DrlibError
from drlib.execute import Execution, execute_notebook
from drlib.faults import ensure_drill_target
from drlib.objectives import achieved_rpo_seconds, rto_check
from drlib.parameters import validate
from drlib.postgres.connection import PgTarget
from drlib.report import write_report_folder
from drlib.scenarios import Scenario, get_scenario
from drlib.secrets import redact

DEFAULT_TIMEOUT_SECONDS = 3600


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


def report_folder(root: Path, started: datetime, scenario: str) -> Path:
    """``reports/<YYYY-MM-DD>/<HHMMSS>-<scenario>/`` (a suffix keeps two runs in one second apart)."""
    base = root / f"{started:%Y-%m-%d}" / f"{started:%H%M%S}-{scenario}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


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
    user_params = validate(scenario.params, dict(overrides or {}), scenario=scenario.id)
    profile = load_profile(environment)
    ensure_drill_target(profile, confirm=confirm_target)
    started = utcnow()
    folder = report_folder(reports_root or reports_dir(), started, scenario.id)
    evidence_path = folder / "evidence.json"
    setup = STAGES[scenario.id](profile)
    parameters = {
        **{k: v for k, v in user_params.items() if k in (overrides or {})},
        **setup.notebook_parameters,
        "profile": profile.name,
        "failure_time": setup.failure_time.isoformat(),
        "confirm": user_params["confirm"] if "confirm" in (overrides or {}) else True,
        "evidence_path": str(evidence_path),
    }
    execution = execute_notebook(
        notebook=scenario.notebook_path(),
        output=folder / "notebook.ipynb",
        parameters=parameters,
        cwd=project_root(),
        timeout=timeout,
        log=folder / "execution.log",
    )
    evidence = load_evidence(evidence_path)
    results = collect_results(
        scenario=scenario,
        profile=profile,
        setup=setup,
        evidence=evidence,
        execution=execution,
        parameters=parameters,
        started=started,
    )
    write_report_folder(folder, results)
    failing = [c for c in results["checks"] if c["status"] == "fail"]
    return DrillResult(
        scenario=scenario.id,
        status=results["status"],
        folder=folder,
        failing_checks=failing,
        error=results.get("error"),
    )


def collect_results(
    *,
    scenario: Scenario,
    profile: Profile,
    setup: DrillSetup,
    evidence: dict[str, Any],
    execution: Execution,
    parameters: dict[str, Any],
    started: datetime,
) -> dict[str, Any]:
    """The ``results.json`` document: evidence plus the drill's own measurements."""
    facts = evidence.get("facts", {})
    checks: list[dict[str, Any]] = list(evidence.get("checks", []))
    drill_checks: list[CheckResult] = []
    rto_target = profile.targets.rto(scenario.rto_kind)
    rpo_target = profile.targets.rpo(scenario.rpo_component)
    restored_at = datetime.fromisoformat(facts["service_restored_at"]) if facts.get("service_restored_at") else None
    rto_seconds = (restored_at - setup.failure_time).total_seconds() if restored_at else None
    if restored_at:
        drill_checks.append(
            rto_check(
                scenario_kind=scenario.rto_kind,
                outage_started=setup.failure_time,
                service_restored=restored_at,
                target_seconds=rto_target,
            )
        )
    else:
        drill_checks.append(
            check(
                f"rto:{scenario.rto_kind}", False, expected=f"<= {rto_target:.0f}s", observed="service never restored"
            )
        )
    backup = facts.get("backup") or setup.backup
    rpo_seconds = (
        achieved_rpo_seconds(backup_time=datetime.fromisoformat(backup["created_at"]), failure_time=setup.failure_time)
        if backup
        else None
    )
    data_loss = measure_data_loss(profile, setup)
    checks += [c.to_dict() for c in drill_checks]
    error = facts.get("error")
    if execution.timed_out:
        error = {
            "step": _last_step(evidence),
            "message": f"drill timed out after {execution.seconds:.0f}s; "
            "the notebook and its child processes were stopped",
        }
    elif not execution.succeeded and not error:
        error = {"step": _last_step(evidence), "message": "notebook execution failed: " + execution.log_tail[-800:]}
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
        "steps": evidence.get("steps", []),
        "checks": checks,
        "parameters": {k: redact(str(v)) if isinstance(v, str) else v for k, v in parameters.items()},
        "drlib_version": __version__,
        "run_by": {"user": getpass.getuser(), "host": platform.node()},
        "fault": setup.fault,
        "failure_time": setup.failure_time.isoformat(),
        "service_restored_at": facts.get("service_restored_at"),
        "backup": backup,
        "data_loss": data_loss,
        "error": error,
        "execution": {
            "seconds": round(execution.seconds, 2),
            "returncode": execution.returncode,
            "timed_out": execution.timed_out,
        },
    }


def _last_step(evidence: dict[str, Any]) -> str | None:
    steps = evidence.get("steps") or []
    return steps[-1]["name"] if steps else None


def measure_data_loss(profile: Profile, setup: DrillSetup) -> dict[str, dict[str, int]]:
    """Per table: rows written after the backup, and how many of them the restore lost."""
    if not setup.written_after_backup:
        return {}
    try:
        present = rows_still_present(PgTarget.from_profile(profile), setup.marker)
    except DrlibError:
        present = {}
    loss: dict[str, dict[str, int]] = {}
    for table, written in setup.written_after_backup.items():
        loss[table] = {
            "written_after_backup": written,
            "lost": written - present[table] if table in present else written,
        }
    return loss
