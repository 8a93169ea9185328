"""A drill, step by step (:func:`run_scenario`):

1. open the report folder (every run leaves one, whatever happens);
2. refuse before the first write: parameters, the target (sandbox, or a drill target confirmed with
   ``--yes``), one drill per stack (the lock), and the scenario's preflight (named backups exist and
   verify…);
3. on the sandbox, repair it so the drill starts healthy;
4. stage the failure: backups, data written after them, the fault (skipped in a dry run);
5. run the scenario's notebook headlessly, then the Verify Restore notebook as the last stage;
6. measure RTO, RPO and the data lost against the profile's targets;
7. write ``results.json``, ``report.html`` and ``SHA256SUMS``, and update the index — in a ``finally``,
   so refused, failed, crashed and interrupted runs are reported too (a watchdog does it when the
   drill command itself is killed).
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from drlib import __version__
from drlib.checks import CheckResult, check
from drlib.config import SANDBOX_PROFILE, Profile, load_profile, project_root, reports_dir
from drlib.evidence import error_info, load_evidence, utcnow
from drlib.exceptions import ConfigError, DrillInterrupted, DrillRefused, DrlibError, ParameterError, SandboxError
from drlib.execute import execute_notebook
from drlib.faults import ensure_drill_target
from drlib.interrupts import signals_deferred, signals_interrupt
from drlib.lock import FileLock, acquire
from drlib.objectives import achieved_rpo_seconds, rto_check
from drlib.parameters import validate
from drlib.report import write_report_folder
from drlib.results import CheckRecord, DataLoss, DrillResults, ErrorInfo, Evidence, ExecutionInfo, RunBy, StepRecord
from drlib.scenarios import VERIFY_SCENARIO, get_scenario
from drlib.scenarios.base import DRILL_CONTROLLED, Scenario
from drlib.secrets import redact
from drlib.staging import DrillSetup
from drlib.units import format_duration
from drlib.watchdog import start_watchdog, stop_watchdog

DEFAULT_TIMEOUT_SECONDS = 3600
RUN_FILE = "run.json"
BACKUP_FACTS = ("backup", "storage_backup", "redis_backup")
REPAIR_COMMAND = "drlib sandbox up"

Say = Callable[[str], None]


class StageRecord(BaseModel):
    """One notebook run of a drill."""

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


@dataclass
class Drill:
    """One drill in progress."""

    scenario: Scenario
    folder: Path
    record: RunRecord
    say: Say
    profile: Profile | None = None
    setup: DrillSetup | None = None
    lock: FileLock | None = None
    data_loss: dict[str, dict[str, int]] = field(default_factory=dict)

    def save(self) -> None:
        self.record.save(self.folder)


@dataclass(frozen=True)
class DrillReport:
    """A finished drill: its results and the report folder they are in."""

    results: DrillResults
    folder: Path

    @property
    def status(self) -> str:
        return self.results.status

    @property
    def passed(self) -> bool:
        return self.results.status == "passed"


def report_folder(root: Path, started: datetime, scenario: str) -> Path:
    """``reports/<YYYY-MM-DD>/<HHMMSS>-<scenario>/`` (a suffix keeps two runs in one second apart)."""
    base = root / f"{started:%Y-%m-%d}" / f"{started:%H%M%S}-{scenario}"
    folder, n = base, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise ConfigError(
                f"cannot create the report folder {folder} ({exc.strerror or type(exc).__name__}): "
                f"--reports / DRLIB_REPORTS must name a folder drlib can write ({root})"
            ) from exc


def _quiet(line: str) -> None:
    pass


def run_scenario(
    scenario_id: str,
    *,
    environment: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    confirm_target: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    reports_root: Path | None = None,
    say: Say | None = None,
) -> DrillReport:
    """Run one scenario as a drill and archive its report (see the module docstring)."""
    scenario = get_scenario(scenario_id)
    started = utcnow()
    folder = report_folder(reports_root or reports_dir(), started, scenario.id)
    name = environment or os.environ.get("DRLIB_PROFILE") or SANDBOX_PROFILE
    record = RunRecord(
        run_id=secrets.token_hex(8),
        scenario=scenario.id,
        title=scenario.title,
        environment=name,
        started_at=started.isoformat(),
        given={k: redact(v) if isinstance(v, str) else v for k, v in (overrides or {}).items()},
        rto_kind=scenario.rto_kind,
        rpo_component=scenario.rpo_component,
        sandbox=name == SANDBOX_PROFILE,
    )
    drill = Drill(scenario=scenario, folder=folder, record=record, say=say or _quiet)
    drill.save()
    failure: BaseException | None = None
    watchdog = None
    try:
        with signals_interrupt():
            params = refuse_bad_parameters(scenario, dict(overrides or {}))
            profile = check_target(drill, name, confirm_target)
            drill.lock = acquire(stack_key(profile), scenario=scenario.id)
            record.lock = {**drill.lock.holder, "took_over_stale": drill.lock.stale}
            watchdog = start_watchdog(run_id=record.run_id, folder=folder, lock_fd=drill.lock.fd)
            drill.profile = prepare(drill, name, profile, params)
            run_stages(drill, params, timeout=timeout)
    except BaseException as exc:  # every way a drill can end early is reported below
        failure = exc
    finally:
        with signals_deferred():
            results = finish(drill, failure)
            if watchdog is not None:
                stop_watchdog(watchdog)
            if drill.lock is not None:
                drill.lock.release()
    if failure is not None and not isinstance(failure, Exception | DrillInterrupted):
        raise failure  # SystemExit and the like: the report is written, let it through
    return DrillReport(results=results, folder=folder)


def refuse_bad_parameters(scenario: Scenario, given: dict[str, Any]) -> dict[str, Any]:
    """Every ``-p`` is known, well-typed and not one the drill sets itself."""
    controlled = [name for name in DRILL_CONTROLLED if name in given]
    if controlled:
        raise ParameterError(
            f"parameter {controlled[0]!r} is set by the drill itself (the failure time is when it injects the "
            "fault, the profile is --env, the evidence goes to the report folder): leave it out"
        )
    return validate(scenario.params, given, scenario=scenario.id)


def stack_key(profile: Profile | None) -> str:
    """What one drill at a time is about: the database a profile points at, by address (so two names for
    one server, or two profiles for one stack, share the lock); ``None``: the sandbox, before it is up."""
    if profile is None:
        from drlib.sandbox.stack import Sandbox

        sandbox = Sandbox()
        try:
            port = json.loads(sandbox.connection_file.read_text(encoding="utf-8"))["profile"]["database"]["port"]
        except (OSError, ValueError, KeyError):
            return f"sandbox {sandbox.folder}"  # never started: no database anyone else could drill
        return f"127.0.0.1:{port}/content_crew"
    db = profile.database
    try:
        host = socket.gethostbyname(db.host)
    except OSError:
        host = db.host
    return f"{host}:{db.port}/{db.name}"


def check_target(drill: Drill, name: str, confirm_target: bool) -> Profile | None:
    """Refuse failure injection where it is not allowed; read-only (the sandbox is repaired later)."""
    if name == SANDBOX_PROFILE:
        return None
    profile = load_profile(name)
    ensure_drill_target(profile, confirm=confirm_target)
    if drill.scenario.sandbox_only:
        raise DrillRefused(
            f"the {drill.scenario.id} drill destroys a whole stack and runs only on the sandbox, not on "
            f"{name!r}; rehearse it there, or run its notebook by hand on a stack built for it"
        )
    return profile


def prepare(drill: Drill, name: str, profile: Profile | None, params: dict[str, Any]) -> Profile:
    """Repair the sandbox, load the profile, run the scenario's preflight: all before the first write."""
    if profile is None:
        from drlib.sandbox.stack import Sandbox

        drill.say("repairing the sandbox (drlib sandbox up)")
        status = Sandbox().up()
        if not status.healthy:
            raise SandboxError(
                "the sandbox is not healthy even after its repair, so the drill injects nothing: "
                + "; ".join(f"{s.name} {s.state}: {s.detail}" for s in status.services if not s.healthy)
                + ". See `drlib sandbox status`; start over with `drlib sandbox down --purge && drlib sandbox up`"
            )
        profile = load_profile(name)
    record = drill.record
    if drill.scenario.rto_kind:
        record.rto_target_seconds = profile.targets.rto(drill.scenario.rto_kind)
    if drill.scenario.rpo_component:
        record.rpo_target_seconds = profile.targets.rpo(drill.scenario.rpo_component)
    checks = drill.scenario.preflight(profile, params)
    record.preflight = [CheckRecord.model_validate(c.to_dict()) for c in checks]
    record.dry_run = params["confirm"] is False and "confirm" in record.given
    drill.save()
    return profile


def run_stages(drill: Drill, params: dict[str, Any], *, timeout: float) -> None:
    """Stage the failure, run the scenario's notebook, then the Verify Restore notebook."""
    scenario, record, profile = drill.scenario, drill.record, drill.profile
    assert profile is not None
    if record.dry_run:
        drill.say("DRY RUN: no failure injected, every step only shows what it would do")
        failure_time = utcnow()
    else:
        drill.say("staging: backups, data written after them, then the fault")
        record.staged = True
        drill.save()
        drill.setup = scenario.stage(profile, params)
        failure_time = drill.setup.failure_time
        record.fault = drill.setup.fault
        record.setup_backup = drill.setup.backup or None
        record.written_after_backup = dict(drill.setup.written_after_backup)
        drill.say(f"fault injected: {drill.setup.fault}")
    record.failure_time = failure_time.isoformat()
    drill.save()
    given = {k: v for k, v in params.items() if k in record.given}
    first = run_notebook(
        drill,
        scenario,
        output="notebook.ipynb",
        parameters={
            **given,
            **(drill.setup.notebook_parameters if drill.setup else {}),
            "profile": profile.name,
            "failure_time": failure_time.isoformat(),
            "confirm": not record.dry_run,
        },
        timeout=timeout,
    )
    if scenario.verify_after and not record.dry_run and first.execution and first.execution.returncode == 0:
        facts = _facts(drill.folder, first)
        restored = facts.get("service_restored_at")
        verify = {
            "profile": profile.name,
            "failure_time": failure_time.isoformat(),
            "since": restored or failure_time.isoformat(),
            "storage_kind": params.get("storage_kind", "local"),
            "confirm": True,
        }
        if isinstance(facts.get("backup"), dict):
            verify["backup"] = facts["backup"]["name"]
        if isinstance(facts.get("storage_backup"), dict):
            verify["storage_backup"] = facts["storage_backup"]["name"]
        run_notebook(
            drill, get_scenario(VERIFY_SCENARIO), output="verify_restore.ipynb", parameters=verify, timeout=timeout
        )
    if drill.setup is not None:
        drill.data_loss = drill.setup.data_loss(profile)


def run_notebook(
    drill: Drill, scenario: Scenario, *, output: str, parameters: dict[str, Any], timeout: float
) -> StageRecord:
    evidence = output.replace(".ipynb", ".evidence.json")
    stage = StageRecord(
        name=scenario.id,
        notebook=output,
        evidence=evidence,
        parameters={**parameters, "evidence_path": str(drill.folder / evidence)},
    )
    drill.record.stages.append(stage)
    drill.save()
    prefix = "" if len(drill.record.stages) == 1 else f"{scenario.id}/"
    execution = execute_notebook(
        notebook=scenario.notebook_path(),
        output=drill.folder / output,
        parameters=stage.parameters,
        cwd=project_root(),
        timeout=timeout,
        log=drill.folder / output.replace(".ipynb", ".log"),
        run_id=drill.record.run_id,
        evidence=drill.folder / evidence,
        progress=_step_printer(drill.say, prefix),
    )
    stage.execution = ExecutionInfo(
        seconds=round(execution.seconds, 2), returncode=execution.returncode, timed_out=execution.timed_out
    )
    stage.log_tail = execution.log_tail
    drill.save()
    return stage


def _step_printer(say: Say, prefix: str) -> Callable[[Evidence], None]:
    shown: dict[int, str] = {}

    def show(evidence: Evidence) -> None:
        for index, item in enumerate(evidence.steps):
            if shown.get(index) == item.status:
                continue
            shown[index] = item.status
            if item.status == "running":
                say(f"  ... {prefix}{item.name}")
            else:
                say(f"  {item.status.upper():<7} {prefix}{item.name} ({item.seconds:.1f} s)")

    return show


def _facts(folder: Path, stage: StageRecord) -> dict[str, Any]:
    evidence = load_evidence(folder / stage.evidence)
    return evidence.facts if evidence else {}


# -- results --------------------------------------------------------------------------------
def finish(drill: Drill, failure: BaseException | None) -> DrillResults:
    """Results from what the run recorded, then the report folder and the index."""
    results = build_results(drill.folder, drill.record, failure=failure, data_loss=drill.data_loss)
    write_report_folder(drill.folder, results)
    return results


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
    return DrillResults(
        schema_version=2,
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
        notebooks=[s.notebook for s in record.stages],
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
    lines = [
        f"RTO {format_duration(results.rto_seconds)} (target {format_duration(results.rto_target_seconds)})"
        f"   RPO {format_duration(results.rpo_seconds)} (target {format_duration(results.rpo_target_seconds)})",
    ]
    if results.data_loss:
        lost = ", ".join(f"{k} {v.lost}/{v.written_after_backup}" for k, v in results.data_loss.items())
        lines.append(f"data lost (written after the backup): {lost}")
    lines.append(
        f"checks: {len(results.checks)}, failing: {len(results.failing_checks)}, warnings: {len(results.warnings)}"
    )
    return lines
