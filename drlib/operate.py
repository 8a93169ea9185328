"""Restores and verifications from the command line (``drlib restore|verify database|storage|redis``):
the notebooks' own steps, run in this process one step method after another, with what a drill has
around them (:func:`run_operation`):

1. open the report folder: every run leaves one (refused, failed, interrupted and dry runs too);
2. refuse before the first write: the profile, one operator per stack (a restore takes the drills'
   lock), and for a verification a backup named with ``--backup`` that is missing or damaged (a
   restore's own pre-restore checklist does that);
3. build the scenario's runbook with the parameters and call its step methods in order; each runs
   through ``Runbook.run_step`` (dry run, timing, checks, errors, the stack's state) and is printed
   as it starts and ends;
4. write ``results.json``, ``report.html`` and ``SHA256SUMS`` and update the index, in a ``finally``
   (a watchdog does it when a restore command is killed).

SIGINT, SIGTERM and SIGHUP unwind the run like a failure: the library stops what it started
(``pg_restore`` and its workers; Option B drops its copy) and the report names the step.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drlib.checks import CheckResult
from drlib.config import SANDBOX_PROFILE, Component, Profile, load_profile, reports_dir
from drlib.drill_record import RunRecord, StageRecord, build_results
from drlib.evidence import Evidence, utcnow
from drlib.exceptions import DrillInterrupted, DrlibError, ParameterError
from drlib.interrupts import signals_deferred, signals_interrupt
from drlib.lock import FileLock, acquire, stack_key
from drlib.parameters import validate
from drlib.postgres.connection import reusing_maintenance_connections
from drlib.processes import RUN_MARKER
from drlib.report import report_folder, write_report_folder
from drlib.results import CheckRecord, DrillResults, ExecutionInfo
from drlib.results import Evidence as EvidenceRecord
from drlib.scenarios import get_scenario
from drlib.scenarios.base import Scenario, refuse_without
from drlib.secrets import looks_like_secret_name, redact
from drlib.steps import Outcome
from drlib.terminal import Say, step_printer
from drlib.watchdog import start_watchdog, stop_watchdog

EVIDENCE_FILE = "evidence.json"

#: parameters the command sets itself, and how the operator sets them instead of ``-p``
SET_BY_THE_COMMAND = {
    "profile": "it is --env NAME",
    "confirm": "it is --confirm (restore only; a verification only reads)",
    "evidence_path": "the evidence goes to the report folder",
}

Preflight = Callable[[Profile, dict[str, Any]], list[CheckResult]]


def _quiet(line: str, **style: Any) -> None:
    pass


@dataclass(frozen=True)
class Operation:
    """One ``drlib restore|verify TARGET`` command: which runbook's steps it runs and how its flags map
    to the runbook's parameters."""

    verb: Literal["restore", "verify", "undo"]
    target: str
    #: the runbook's scenario (imported when the command runs: one command imports one scenario)
    scenario_id: str
    #: the parameter ``--backup`` sets
    backup_param: str
    #: the step methods to call, in order; empty: every step of the runbook
    steps: tuple[str, ...] = ()
    #: the parameters ``-p`` may set; empty: every parameter of the runbook the command does not set
    settable: tuple[str, ...] = ()
    #: checks before the first step (raise to refuse)
    preflight: Preflight | None = None
    #: optional components the command cannot do without (a runbook refuses without its own ``needs``)
    needs: tuple[Component, ...] = ()

    @property
    def scenario(self) -> Scenario:
        return get_scenario(self.scenario_id)

    @property
    def name(self) -> str:
        """``restore_database``: the report folder's suffix and the results' ``scenario``."""
        return f"{self.verb}_{self.target}"

    @property
    def command(self) -> str:
        return f"drlib {self.verb} {self.target}"

    @property
    def writes(self) -> bool:
        return self.verb in ("restore", "undo")

    def step_methods(self) -> list[str]:
        return list(self.steps) or [spec.method for spec in self.scenario.steps]

    def parameter_names(self) -> list[str]:
        return list(self.settable) or [p.name for p in self.scenario.params if p.name not in SET_BY_THE_COMMAND]


def _named_database_backup(profile: Profile, values: dict[str, Any]) -> list[CheckResult]:
    from drlib.scenarios import postgres_database_loss

    return postgres_database_loss.named_backup_checks(
        profile, selection=values["backup"], require_manifest=True, deep=False
    )


def _named_storage_backup(profile: Profile, values: dict[str, Any]) -> list[CheckResult]:
    if values["storage_backup"] == "none":
        return []
    from drlib.scenarios import storage_loss

    return storage_loss.named_storage_backup_checks(
        profile, selection=values["storage_backup"], storage_kind=values["storage_kind"]
    )


def _named_redis_backup(profile: Profile, values: dict[str, Any]) -> list[CheckResult]:
    from drlib.scenarios import redis_loss

    return redis_loss.named_redis_backup_checks(profile, selection=values["redis_backup"])


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("restore", "database"): Operation("restore", "database", "postgres_database_loss", "backup"),
    ("restore", "storage"): Operation("restore", "storage", "storage_loss", "storage_backup"),
    ("restore", "redis"): Operation("restore", "redis", "redis_loss", "redis_backup"),
    ("verify", "database"): Operation(
        "verify",
        "database",
        "verify_restore",
        "backup",
        steps=("database_verification",),
        settable=("failure_time", "backup", "exact"),
        preflight=_named_database_backup,
    ),
    ("verify", "storage"): Operation(
        "verify",
        "storage",
        "verify_restore",
        "storage_backup",
        steps=("storage_verification",),
        settable=("failure_time", "storage_backup", "storage_kind"),
        preflight=_named_storage_backup,
        needs=("storage",),  # without it the step is only "not configured": nothing would be verified
    ),
    ("verify", "redis"): Operation(
        "verify",
        "redis",
        "redis_loss",
        "redis_backup",
        # the checklist finds and checks the RDB backup whose manifest the verification compares with
        steps=("pre_restore_checklist", "verify_restore"),
        settable=("failure_time", "redis_backup"),
        preflight=_named_redis_backup,
    ),
}


#: ``drlib undo deletion|files``: the accidental-deletion runbook, rows (and the files they name) or files only
UNDO_ROW_STEPS = (
    "identify_deletion",
    "restore_scratch",
    "find_deleted_rows",
    "find_deleted_files",
    "reinsert_rows",
    "restore_files",
    "verify_undo",
    "drop_scratch",
)
OPERATIONS[("undo", "deletion")] = Operation(
    "undo",
    "deletion",
    "accidental_deletion",
    "backup",
    steps=UNDO_ROW_STEPS,
    settable=(
        "failure_time",
        "backup",
        "table",
        "keys",
        "dependants",
        "paths",
        "storage_backup",
        "keep_scratch",
        "jobs",
    ),
)
OPERATIONS[("undo", "files")] = Operation(
    "undo",
    "files",
    "accidental_deletion",
    "storage_backup",
    steps=("identify_deletion", "find_deleted_files", "restore_files", "verify_undo"),
    settable=("failure_time", "storage_backup", "paths"),
    needs=("storage",),
)


def get_operation(verb: str, target: str) -> Operation:
    return OPERATIONS[(verb, target)]


# -- parameters ---------------------------------------------------------------------------------
def resolve_parameters(
    op: Operation, given: Sequence[tuple[str, str]], flags: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``-p NAME VALUE`` pairs and the convenience flags (``--backup`` …, None when not given) as the
    runbook's parameters; unknown, command-set, conflicting or malformed ones are refused before any run."""
    valid = op.parameter_names()
    values: dict[str, Any] = {}
    for name, value in given:
        if name in SET_BY_THE_COMMAND:
            raise ParameterError(f"parameter {name!r} is not set with -p: {SET_BY_THE_COMMAND[name]}")
        if name not in valid:
            if looks_like_secret_name(name):
                raise ParameterError(
                    f"{name!r} looks like a secret: secrets are never parameters. Put it in the environment "
                    "or the profile's secrets file instead."
                )
            raise ParameterError(f"unknown parameter {name!r} for {op.command}; valid: {', '.join(valid)}")
        values[name] = value
    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name in values and str(values[name]) != str(value):
            raise ParameterError(
                f"parameter {name!r} is given twice with different values ({values[name]!r} with -p, {value!r} "
                "with its option): give it once"
            )
        values[name] = value
    validate(op.scenario.params, values, scenario=op.scenario.id)  # types, allowed values, ranges
    return values


# -- the run --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperationReport:
    """A finished restore or verification: its results and the report folder they are in."""

    results: DrillResults
    folder: Path


@dataclass
class _Run:
    op: Operation
    folder: Path
    record: RunRecord
    say: Say
    lock: FileLock | None = None
    interrupted: list[str] = field(default_factory=list)

    def save(self) -> None:
        self.record.save(self.folder)


class _PrintedEvidence(Evidence):
    """Evidence that also prints each step as it starts and as it ends."""

    def __init__(self, *, show: Callable[[EvidenceRecord], None], **kwargs: Any) -> None:
        self._show = show
        super().__init__(**kwargs)

    def save(self) -> None:
        super().save()
        self._show(self.record)


def run_operation(
    op: Operation,
    *,
    environment: str | None = None,
    values: Mapping[str, Any] | None = None,
    confirm: bool = False,
    reports_root: Path | None = None,
    say: Say = _quiet,
) -> OperationReport:
    """Run ``op`` on a profile's stack and archive its report (see the module docstring). ``values`` are
    the runbook's parameters (:func:`resolve_parameters`); a restore without ``confirm`` is a dry run."""
    started = utcnow()
    folder = report_folder(reports_root or reports_dir(), started, op.name)
    name = environment or os.environ.get("DRLIB_PROFILE") or SANDBOX_PROFILE
    given = dict(values or {})
    record = RunRecord(
        run_id=secrets.token_hex(8),
        kind=op.verb,
        scenario=op.name,
        title=f"{op.command}: {op.scenario.title} runbook",
        environment=name,
        started_at=started.isoformat(),
        given={k: redact(v) if isinstance(v, str) else v for k, v in given.items()},
        dry_run=op.writes and not confirm,
        rto_kind=op.scenario.rto_kind if op.writes else None,
        rpo_component=op.scenario.rpo_component if op.writes else None,
        sandbox=name == SANDBOX_PROFILE,
        stages=[StageRecord(name=op.scenario.id, notebook="", evidence=EVIDENCE_FILE)],
    )
    run = _Run(op=op, folder=folder, record=record, say=say)
    run.save()
    failure: BaseException | None = None
    watchdog = None
    clock = time.monotonic()
    try:
        with signals_interrupt() as run.interrupted, reusing_maintenance_connections():
            profile = load_profile(name)
            if op.writes:
                run.lock = acquire(stack_key(None if record.sandbox else profile), scenario=op.command)
                record.lock = {**run.lock.holder, "took_over_stale": run.lock.stale}
                watchdog = start_watchdog(run_id=record.run_id, folder=folder, lock_fd=run.lock.fd)
                _objectives(record, profile, op)
            _preflight(run, profile, given)
            evidence = _PrintedEvidence(
                show=step_printer(say), scenario=op.scenario.id, environment=name, path=folder / EVIDENCE_FILE
            )
            _run_steps(run, evidence, given, confirm=confirm)
    except BaseException as exc:  # every way a run can end early is reported below
        failure = exc
    finally:
        with signals_deferred():
            results = _finish(run, failure, seconds=time.monotonic() - clock)
            if watchdog is not None:
                stop_watchdog(watchdog)
            if run.lock is not None:
                run.lock.release()
    if failure is not None and not isinstance(failure, Exception | DrillInterrupted):
        raise failure  # SystemExit and the like: the report is written, let it through
    return OperationReport(results=results, folder=folder)


def _objectives(record: RunRecord, profile: Profile, op: Operation) -> None:
    """A restore is measured like a drill: RTO from ``failure_time`` to the application healthy again,
    RPO from the backup to ``failure_time``, against the profile's targets."""
    if op.scenario.rto_kind:
        record.rto_target_seconds = profile.targets.rto(op.scenario.rto_kind)
    if op.scenario.rpo_component:
        record.rpo_target_seconds = profile.targets.rpo(op.scenario.rpo_component)


def _preflight(run: _Run, profile: Profile, given: dict[str, Any]) -> None:
    refuse_without(profile, run.op.needs, what=run.op.command)
    if run.op.preflight is None:
        return
    resolved = validate(run.op.scenario.params, {**given, "profile": profile.name}, scenario=run.op.scenario.id)
    checks = run.op.preflight(profile, resolved)
    run.record.preflight = [CheckRecord.model_validate(c.to_dict()) for c in checks]
    run.save()


def _run_steps(run: _Run, evidence: Evidence, given: dict[str, Any], *, confirm: bool) -> None:
    """Build the runbook and call its step methods in order (a verification's steps only read, so they
    run for real: ``confirm`` is on for them)."""
    op, record = run.op, run.record
    stage = record.stages[0]
    runbook = op.scenario.runbook(
        evidence=evidence,
        **given,
        profile=record.environment,
        confirm=confirm or not op.writes,
        evidence_path=str(run.folder / EVIDENCE_FILE),
    )
    evidence.record.parameters = dict(runbook.values)
    stage.parameters = dict(runbook.values)
    record.failure_time = runbook.failure_time.isoformat()
    run.save()
    specs = {spec.method: spec for spec in op.scenario.steps}
    with _carrying_marker(record.run_id):
        for method in op.step_methods():
            if not record.staged and (not op.writes or (confirm and specs[method].dry_run != "run")):
                record.staged = True  # past the point of refusal: this step may change the stack
                run.save()
            outcome = getattr(runbook, method)()
            _show_plan(outcome, run.say)


@contextlib.contextmanager
def _carrying_marker(run_id: str) -> Iterator[None]:
    """Every process started while inside carries the run's marker, so the watchdog can stop them
    (``pg_restore`` and its workers) if this command is killed; services are started without it."""
    previous = os.environ.get(RUN_MARKER)
    os.environ[RUN_MARKER] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_MARKER, None)
        else:
            os.environ[RUN_MARKER] = previous


def _show_plan(outcome: Outcome, say: Say) -> None:
    """In a dry run, what a step would have done."""
    if not outcome.dry_run:
        return
    for key in ("plan", "would"):
        if key in outcome.facts:
            for line in str(outcome.facts[key]).splitlines():
                say(f"      would: {line}" if key == "would" else f"      {line}", fg="cyan")


def _finish(run: _Run, failure: BaseException | None, *, seconds: float) -> DrillResults:
    """Results from what the run recorded, then the report folder and the index."""
    record = run.record
    record.stages[0].execution = ExecutionInfo(seconds=round(seconds, 2), returncode=0 if failure is None else 1)
    cause = failure
    if run.interrupted and failure is not None and not isinstance(failure, DrillInterrupted):
        failure = DrillInterrupted(run.interrupted[0])  # the library cleaned up and raised its own error
    results = build_results(run.folder, record, failure=failure)
    if results.error is not None and failure is not cause and isinstance(cause, DrlibError):
        results.error.message = f"{results.error.message}. {cause.message}"
    write_report_folder(run.folder, results)
    return results
