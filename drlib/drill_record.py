"""What a drill records about itself and how its results are made of it: ``run.json`` (saved as the
drill goes, so the watchdog can report a drill whose command was killed) and :func:`build_results`,
which turns it and the notebooks' evidence into ``results.json``: status, error and the step it was
in, RTO and RPO against their targets, the stack's state and what to do next."""

from __future__ import annotations

import getpass
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from drlib import __version__
from drlib.checks import CheckResult, check
from drlib.evidence import error_info, load_evidence, utcnow
from drlib.exceptions import DrillInterrupted, DrlibError
from drlib.objectives import achieved_rpo_seconds, rto_check
from drlib.report import write_report_folder
from drlib.results import (
    CheckRecord,
    DataLoss,
    DrillResults,
    ErrorInfo,
    Evidence,
    ExecutionInfo,
    RunBy,
    RunKind,
    StepRecord,
)
from drlib.secrets import redact
from drlib.units import format_duration

RUN_FILE = "run.json"
BACKUP_FACTS = ("backup", "storage_backup", "redis_backup")
REPAIR_COMMAND = "drlib sandbox up"


class StageRecord(BaseModel):
    """One notebook run of a drill (``notebook`` empty: the runbook's steps ran in the drlib process)."""

    name: str
    notebook: str
    evidence: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    execution: ExecutionInfo | None = None
    log_tail: str = ""


class RunRecord(BaseModel):
    """What a drill knows about itself, saved to ``run.json`` as it goes: enough for the watchdog to
    write the report of a drill whose command was killed."""

    run_id: str
    kind: RunKind = "drill"
    scenario: str
    title: str
    environment: str
    started_at: str
    given: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False
    staged: bool = False
    fault: str | None = None
    failure_time: str | None = None
    setup_backup: dict[str, Any] | None = None
    written_after_backup: dict[str, int] = Field(default_factory=dict)
    #: what the staging's cleanup did, once it ran (after the notebooks: their stack state is older)
    cleaned_up: str | None = None
    rto_kind: str | None = None
    rto_target_seconds: float | None = None
    rpo_component: str | None = None
    rpo_target_seconds: float | None = None
    preflight: list[CheckRecord] = Field(default_factory=list)
    stages: list[StageRecord] = Field(default_factory=list)
    lock: dict[str, Any] | None = None
    sandbox: bool = False

    def save(self, folder: Path) -> None:
        (folder / RUN_FILE).write_text(redact(self.model_dump_json(indent=2)), encoding="utf-8")


def write_abandoned_report(folder: Path, *, reason: str) -> DrillResults:
    """The report of a drill whose command was killed (called by the watchdog)."""
    record = RunRecord.model_validate_json((folder / RUN_FILE).read_text(encoding="utf-8"))
    try:  # killed while writing its report: the results were complete, keep them
        results = DrillResults.load(folder / "results.json")
        results.execution.interrupted = "killed while writing the report"
    except DrlibError:
        results = build_results(folder, record, failure=None, abandoned=reason)
    write_report_folder(folder, results)
    return results


def build_results(
    folder: Path,
    record: RunRecord,
    *,
    failure: BaseException | None,
    data_loss: dict[str, dict[str, int]] | None = None,
    abandoned: str | None = None,
) -> DrillResults:
    steps: list[StepRecord] = []
    checks: list[CheckRecord] = [c.model_copy(update={"name": f"preflight:{c.name}"}) for c in record.preflight]
    facts: dict[str, Any] = {}
    stack_state: dict[str, str] = {}
    stage_error: ErrorInfo | None = None
    for index, stage in enumerate(record.stages):
        evidence = load_evidence(folder / stage.evidence) or Evidence(
            scenario=stage.name, environment=record.environment, started_at=record.started_at
        )
        if index == 0:
            facts = evidence.facts
        stack_state.update(evidence.facts.get("stack_state", {}))
        prefix_step = "" if index == 0 else f"{stage.name}/"
        prefix_check = "" if index == 0 else f"{stage.name}:"
        steps += [s.model_copy(update={"name": prefix_step + s.name}) for s in evidence.steps]
        checks += [c.model_copy(update={"name": prefix_check + c.name}) for c in evidence.checks]
        stage_error = stage_error or _stage_error(stage, evidence)
    for item in steps:  # a step still "running" was cut short
        if item.status == "running":
            item.status = "error"
            item.detail = "cut short: the run was interrupted or killed during this step"
    restored_at = facts.get("service_restored_at")
    rto_checks, rto_seconds = _rto(record, restored_at)
    checks += [CheckRecord.model_validate(c.to_dict()) for c in rto_checks]
    backup = next((facts[k] for k in BACKUP_FACTS if isinstance(facts.get(k), dict)), None) or record.setup_backup
    rpo_seconds = (
        achieved_rpo_seconds(
            backup_time=datetime.fromisoformat(backup["created_at"]),
            failure_time=datetime.fromisoformat(record.failure_time),
        )
        if backup and record.failure_time and record.rpo_target_seconds is not None and not record.dry_run
        else None
    )
    last_step = steps[-1].name if steps else None
    error: ErrorInfo | None = None
    status: str
    interrupted = None
    if abandoned:
        error = ErrorInfo(step=last_step, message=abandoned, type="Killed")
        interrupted = "killed"
    elif isinstance(failure, DrillInterrupted):
        interrupted = failure.signal_name
        error = ErrorInfo(
            step=last_step or _phase(record),
            message=f"interrupted by {failure.signal_name}"
            + (f" during step {last_step}" if last_step else "")
            + "; its processes were stopped",
            type="DrillInterrupted",
        )
    elif failure is not None:
        where = last_step or _phase(record)
        error = ErrorInfo.model_validate(error_info(failure, step=where))
    else:
        error = stage_error
    if error is None and record.dry_run:
        status = "dry_run"
    elif failure is not None and not isinstance(failure, DrillInterrupted) and not record.staged:
        status = "refused"
    elif error is not None:
        status = "error"
    elif any(c.status == "fail" for c in checks):
        status = "failed"
    else:
        status = "passed"
    executions = [s.execution for s in record.stages if s.execution]
    if record.cleaned_up:  # after every notebook: the last word on the stack
        stack_state["after the drill"] = record.cleaned_up
    return DrillResults(
        schema_version=2,
        kind=record.kind,
        scenario=record.scenario,
        title=record.title,
        environment=record.environment,
        started_at=record.started_at,
        finished_at=utcnow().isoformat(),
        status=status,  # type: ignore[arg-type]
        rto_seconds=rto_seconds,
        rto_target_seconds=record.rto_target_seconds,
        rpo_seconds=rpo_seconds,
        rpo_target_seconds=record.rpo_target_seconds,
        steps=steps,
        checks=checks,
        parameters=record.stages[0].parameters if record.stages else record.given,
        drlib_version=__version__,
        run_by=RunBy(user=getpass.getuser(), host=platform.node(), pid=os.getpid()),
        fault=_fault(record),
        failure_time=record.failure_time,
        service_restored_at=restored_at,
        backup=backup,
        data_loss={k: DataLoss.model_validate(v) for k, v in (data_loss or {}).items()},
        error=error,
        notebooks=[s.notebook for s in record.stages if s.notebook],
        execution=ExecutionInfo(
            seconds=round(sum(e.seconds for e in executions), 2),
            returncode=max((e.returncode for e in executions), default=0),
            timed_out=any(e.timed_out for e in executions),
            interrupted=interrupted,
        ),
        stack_state=stack_state,
        next_steps=_next_steps(record, status, stack_state),
        lock=record.lock,
    )


def _phase(record: RunRecord) -> str:
    """Where a run was when no runbook step had started yet."""
    if record.stages:
        return "notebook startup"
    return "staging" if record.staged else "preflight"


def _fault(record: RunRecord) -> str:
    if record.kind != "drill":
        return f"none ({record.kind} of the stack as it is: no fault injected)"
    if record.fault:
        return record.fault
    if record.dry_run:
        return "none (dry run)"
    if record.staged:
        return "unknown: the drill stopped during staging (backups, marked writes, or the fault itself)"
    return "none (stopped before the fault)"


def _stage_error(stage: StageRecord, evidence: Evidence) -> ErrorInfo | None:
    error = evidence.facts.get("error")
    last = evidence.steps[-1].name if evidence.steps else None
    execution = stage.execution
    if execution and execution.timed_out:
        return ErrorInfo(
            step=last,
            message=f"drill timed out after {execution.seconds:.0f}s; the notebook and its child processes were "
            "stopped",
            type="DrillTimeout",
        )
    if error:
        return ErrorInfo.model_validate(error)
    if execution and execution.returncode != 0:
        return ErrorInfo(step=last, message="notebook execution failed: " + stage.log_tail[-800:])
    return None


def _rto(record: RunRecord, restored_at: str | None) -> tuple[list[CheckResult], float | None]:
    if record.rto_kind is None or record.rto_target_seconds is None or not record.staged or not record.failure_time:
        return [], None
    target = record.rto_target_seconds
    failure_time = datetime.fromisoformat(record.failure_time)
    if restored_at is None:
        return [
            check(
                f"rto:{record.rto_kind}",
                False,
                expected=f"<= {format_duration(target)}",
                observed="service never restored",
            )
        ], None
    restored = datetime.fromisoformat(restored_at)
    result = rto_check(
        scenario_kind=record.rto_kind, outage_started=failure_time, service_restored=restored, target_seconds=target
    )
    return [result], (restored - failure_time).total_seconds()


def _next_steps(record: RunRecord, status: str, stack_state: dict[str, str]) -> list[str]:
    if status in ("passed", "dry_run", "refused") or record.dry_run or not record.staged:
        return []  # nothing was changed
    if record.kind != "drill":  # an operator's restore or verification: what each step left each component in
        return [f"{component}: {state}" for component, state in stack_state.items()]
    if record.sandbox:
        return [f"{REPAIR_COMMAND}    # brings the sandbox back to healthy (re-seeds what the drill destroyed)"]
    steps = [f"{component}: {state}" for component, state in stack_state.items()]
    if steps:
        return steps
    if record.fault:
        return [f"the fault was injected ({record.fault}) and not recovered: restore with the scenario's notebook"]
    return ["the drill stopped during staging, before or while injecting its fault: check the stack before using it"]


def results_summary(results: DrillResults) -> list[str]:
    """The lines a drill ends with on the terminal: RTO, RPO and data lost against targets, warnings."""
    lines = []
    if results.rto_target_seconds is not None or results.rpo_target_seconds is not None:
        lines.append(
            f"RTO {format_duration(results.rto_seconds)} (target {format_duration(results.rto_target_seconds)})"
            f"   RPO {format_duration(results.rpo_seconds)} (target {format_duration(results.rpo_target_seconds)})"
        )
    if results.data_loss:
        lost = ", ".join(f"{k} {v.lost}/{v.written_after_backup}" for k, v in results.data_loss.items())
        lines.append(f"data lost (written after the backup): {lost}")
    lines.append(
        f"checks: {len(results.checks)}, failing: {len(results.failing_checks)}, warnings: {len(results.warnings)}"
    )
    return lines
