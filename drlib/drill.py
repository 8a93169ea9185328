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

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drlib.config import SANDBOX_PROFILE, Profile, load_profile, project_root, reports_dir
from drlib.drill_record import RunRecord, StageRecord, build_results
from drlib.evidence import load_evidence, utcnow
from drlib.exceptions import DrillInterrupted, DrillRefused, ParameterError, SandboxError
from drlib.execute import execute_notebook
from drlib.faults import ensure_drill_target
from drlib.interrupts import signals_deferred, signals_interrupt
from drlib.lock import FileLock, acquire, stack_key
from drlib.parameters import validate
from drlib.report import report_folder, write_report_folder
from drlib.results import CheckRecord, DrillResults, ExecutionInfo
from drlib.scenarios import VERIFY_SCENARIO, get_scenario
from drlib.scenarios.base import DRILL_CONTROLLED, Scenario
from drlib.secrets import redact
from drlib.staging import DrillSetup
from drlib.terminal import step_printer
from drlib.watchdog import start_watchdog, stop_watchdog

DEFAULT_TIMEOUT_SECONDS = 3600

Say = Callable[[str], None]


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
            failure = clean_up(drill, failure)
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
    staged = [name for name in scenario.drill_sets if name in given]
    if staged:
        raise ParameterError(
            f"parameter {staged[0]!r} is set by the {scenario.id} drill itself (it leaves the sandbox as it found "
            "it): leave it out, or run the notebook by hand to choose it"
        )
    return validate(scenario.params, given, scenario=scenario.id)


def check_target(drill: Drill, name: str, confirm_target: bool) -> Profile | None:
    """Refuse failure injection where it is not allowed; read-only (the sandbox is repaired later)."""
    if name == SANDBOX_PROFILE:
        return None
    profile = load_profile(name)
    ensure_drill_target(profile, confirm=confirm_target)
    if drill.scenario.sandbox_only:
        raise DrillRefused(
            f"the {drill.scenario.id} drill injects its fault into the sandbox's own servers and runs only on the "
            f"sandbox, not on {name!r}; rehearse it there, or run its notebook by hand on a stack built for it"
        )
    drill.scenario.refuse_unconfigured(profile)  # e.g. redis_loss on a profile without Redis
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
        progress=step_printer(drill.say, prefix),
    )
    stage.execution = ExecutionInfo(
        seconds=round(execution.seconds, 2), returncode=execution.returncode, timed_out=execution.timed_out
    )
    stage.log_tail = execution.log_tail
    drill.save()
    return stage


def _facts(folder: Path, stage: StageRecord) -> dict[str, Any]:
    evidence = load_evidence(folder / stage.evidence)
    return evidence.facts if evidence else {}


def clean_up(drill: Drill, failure: BaseException | None) -> BaseException | None:
    """Run the staging's cleanup (:attr:`DrillSetup.cleanup`), whatever the run came to; a cleanup that fails
    makes the run an error (unless something failed before it: that error is the one reported)."""
    if drill.setup is None or drill.setup.cleanup is None:
        return failure
    drill.say("cleaning up what the staging set up")
    try:
        drill.setup.cleanup()
    except Exception as exc:
        drill.say(f"cleanup failed: {exc}")
        drill.record.cleaned_up = f"the drill's cleanup failed ({exc}): run `drlib sandbox up`"
        return failure or exc
    drill.record.cleaned_up = drill.setup.cleanup_leaves or "the drill's cleanup ran"
    drill.save()
    return failure


# -- results --------------------------------------------------------------------------------
def finish(drill: Drill, failure: BaseException | None) -> DrillResults:
    """Results from what the run recorded, then the report folder and the index."""
    results = build_results(drill.folder, drill.record, failure=failure, data_loss=drill.data_loss)
    write_report_folder(drill.folder, results)
    return results
