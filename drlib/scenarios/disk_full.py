"""Failure Scenarios → Scenario 2: Storage Disk Full. Detect it per volume (storage, backups, the database's
data directory: usage against the ``[monitoring]`` thresholds, and real writes: a probe file on each volume,
a committed write in the database), list what can be freed (backups beyond retention with their sidecar
files, old rotated logs) with the headroom it would give, free it under ``confirm``, and verify that writes
work again (a database backup is taken too: the scheduled ones failed while the disk was full) and report
the new headroom. Still over the critical threshold: the runbook's advice, as a failing check."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.diskspace import DEFAULT_PROBE_BYTES, RUNBOOK_ADVICE, DiskState, headroom_after, read_disk_state
from drlib.evidence import Evidence, utcnow
from drlib.exceptions import DrillRefused, DrlibError, ParameterError
from drlib.faults_disk_full import can_mount_tmpfs, fill_backups_volume, release_volume
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget
from drlib.preflight import stack_reachable
from drlib.redis.backup import backup_redis
from drlib.retention import PrunePlan, PruneResult, Retention, plan_pruning, prune
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.staging import DrillSetup
from drlib.steps import Outcome, frame, step
from drlib.storage.backup import archive_local
from drlib.units import format_bytes

#: a retention parameter left at this takes the profile's ``[backups]`` value
PROFILE_VALUE = -1


def _not_zero(name: str, value: int) -> None:
    if value == 0:
        raise ParameterError(f"parameter {name!r} must be at least 1 (or -1: the profile's [backups] {name})")


class DiskFull(Runbook):
    """Find the full volume and the failing writes; free what retention allows; prove writes work again."""

    scenario = "disk_full"
    title = "Storage disk full"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param(
            "keep_days",
            int,
            PROFILE_VALUE,
            "keep backups younger than this many days (-1: the profile's [backups] keep_days)",
            minimum=PROFILE_VALUE,
        ),
        Param(
            "keep_last",
            int,
            PROFILE_VALUE,
            "keep at least the newest N backups of each component (-1: the profile's [backups] keep_last)",
            minimum=PROFILE_VALUE,
            check=lambda value: _not_zero("keep_last", value),
        ),
        Param("free_logs", bool, True, "also delete rotated logs older than the profile's [logs] keep_days"),
        Param("free", bool, True, "delete what is beyond retention (False: only list it)"),
        Param("backup_now", bool, True, "after freeing, take a database backup to prove backups are written again"),
        Param("probe_bytes", int, DEFAULT_PROBE_BYTES, "bytes each write probe writes", minimum=1, maximum=2**26),
        Param("health_timeout", int, 10, "seconds to wait for the application to answer /health", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.retention = Retention.from_profile(
            self.profile,
            keep_days=None if self.values["keep_days"] == PROFILE_VALUE else self.values["keep_days"],
            keep_last=None if self.values["keep_last"] == PROFILE_VALUE else self.values["keep_last"],
        )
        self.found: DiskState | None = None
        self.plan: PrunePlan | None = None

    # Symptoms -----------------------------------------------------------------------------
    @step(
        "detect_disk_full",
        title="Detect the full disk",
        what="""The runbook's symptoms, per volume (the database's data directory when it is on this machine,
        local storage, each backups folder, and `[monitoring] volumes`): usage against the `[monitoring]`
        thresholds (60 % warns, 80 % is critical); a real write on each (a probe file created, written, fsynced
        and removed: ENOSPC, EDQUOT, a read-only filesystem are named as such); and a write the database must
        persist (a table of drlib's own created, filled, committed, read back and dropped). A full volume is
        named with its free bytes; the application's health is read too.""",
        why=""""File writes fail" and "database writes fail" are the symptoms; which volume is full decides
        what can be freed, and a volume at 100 % is where the next backup, upload or WAL segment fails.""",
        if_fails="""A volume that cannot be measured is noted (e.g. a database on another host: measure its
        disk there, or add its mounted volume to `[monitoring] volumes`).""",
        roll_back="Nothing to roll back: the probes remove what they write.",
    )
    def detect_disk_full(self) -> Outcome:
        self.found = found = read_disk_state(self.profile, probe_bytes=self.values["probe_bytes"])
        self.evidence.note("disk_full_found", found.describe())
        checks = list(found.checks(warn_only=True))
        if self.profile.app is not None:
            health = self.application_health()
            checks.append(
                replace(health, name="app_health", status="warn" if health.status == "fail" else health.status)
            )
        facts: dict[str, Any] = {"full": found.describe(), "writes fail": found.writes_fail}
        if found.notes:
            facts["not measured"] = "; ".join(found.notes)
        return Outcome("Detect disk full", facts=facts, checks=Checks(checks), table=lambda: frame(found.rows()))

    # Step 1 -------------------------------------------------------------------------------
    @step(
        "list_freeable",
        title="Step 1a: List what can be freed",
        what="""Backups beyond retention (`[backups] keep_days`, `keep_last`, or the `keep_days` / `keep_last`
        parameters): per component (database, local storage, Redis) every backup older than `keep_days` days
        and not among the newest `keep_last`, never the newest one that verifies (checked now; when none
        verifies, nothing of that component is listed); each with its sidecar files. With `free_logs`, rotated
        logs (`*.log.1`, `*.log.2.gz`, `*.log-20260101`) in `[logs] folders` older than `[logs] keep_days`.
        Symlinks, odd paths and mount points are refused, not followed. Shows each volume's headroom after
        freeing them.""",
        why="""The runbook's first recovery step is "free up disk space (delete old backups, logs)": what is
        deleted must be what retention no longer needs, never the last good backup.""",
        if_fails="""A backups folder that cannot be listed is named: check its permissions. Nothing to free on
        a full volume: Step 2 says what to do instead.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def list_freeable(self) -> Outcome:
        found = self._require_found()
        self.plan = plan = plan_pruning(self.profile, self.retention, logs=self.values["free_logs"])
        after = headroom_after(found, plan.freed_by_device())
        facts: dict[str, Any] = {
            "retention": self.retention.describe(),
            "can be freed": f"{format_bytes(plan.total_bytes)}: {plan.describe()}",
        }
        for row in after:
            facts[f"headroom {row['volume']}"] = (
                f"{row['free_now']} free ({row['used_now_percent']:g} % used) → {row['free_after']} free "
                f"({row['used_after_percent']:g} % used)"
            )
        if plan.refused:
            facts["refused"] = "; ".join(f"{r.path}: {r.reason}" for r in plan.refused)
        if plan.notes:
            facts["notes"] = "; ".join(plan.notes)
        self.evidence.note("freeable_bytes", plan.total_bytes)
        refused = [
            check(
                f"refused:{r.path.name}",
                False,
                expected="safe to delete",
                observed="refused",
                detail=r.reason,
                warn_only=True,
            )
            for r in plan.refused
        ]
        return Outcome(
            "What can be freed",
            facts=facts,
            checks=Checks(refused),
            table=(lambda: frame(plan.rows())) if plan.candidates else None,
        )

    @step(
        "free_space",
        title="Step 1b: Free up disk space",
        what="""Delete what Step 1a listed, each backup with its sidecar files (each path checked again just
        before: a symlink or a name that moved is skipped). Without `confirm` the dry run shows what it would
        delete; with `free = False` nothing is deleted.""",
        why="Space freed on the full volume is what lets the writes work again.",
        if_fails="""A path that cannot be deleted is named with the error (permissions, a read-only
        filesystem); delete it by hand or fix the permissions and re-run this cell.""",
        roll_back="""None: deleted backups are gone (they were beyond retention; the newest one that verifies and
        every backup within retention are kept). Off-site copies (S3) are not touched.""",
        dry_run="plan",
    )
    def free_space(self) -> Outcome | RestorePlan:
        plan = self.plan or self._plan()
        if not self.values["free"]:
            return Outcome("Free disk space", facts={"freed": f"nothing (free = False); listed: {plan.describe()}"})
        result = prune(plan, confirm=self.confirm)
        if isinstance(result, RestorePlan):
            return result
        self._record_freed(result)
        return Outcome(
            "Free disk space",
            facts={"freed": format_bytes(result.bytes_freed), "deleted": len(result.deleted)},
            checks=result.checks(),
        )

    # Steps 2 and 3 ------------------------------------------------------------------------
    @step(
        "verify_writes",
        title="Step 2: Verify writes work again, and the new headroom",
        what="""Every volume again: the write probes and the database's write must succeed and no volume may be
        over the critical threshold; with `backup_now`, a database backup is taken into the backups folder
        (the scheduled ones failed while the disk was full). The table shows each volume's new headroom.""",
        why="""Deleting files is not proof: the symptoms must be gone. A volume still over the critical threshold
        fills again with the next backup.""",
        if_fails="""The runbook: if it is still critical, restore from backup (onto a larger volume) when data
        was damaged, add disk space or migrate to larger storage; meanwhile lower `keep_days` / `keep_last` or
        move old backups off this disk (e.g. to the backups bucket).""",
        roll_back="Nothing to roll back: the probes remove what they write; the backup is a normal backup.",
        dry_run="skip",
        would="probe writes on every volume again, check usage against the critical threshold, take a backup",
    )
    def verify_writes(self) -> Outcome:
        state = read_disk_state(self.profile, probe_bytes=self.values["probe_bytes"])
        checks = [*state.checks(prefix="verify:"), replace(state.recovered(), name="verify:disk_not_full")]
        facts: dict[str, Any] = {"full": state.describe()}
        headroom = {
            v.name: {"free_bytes": v.usage.free_bytes, "used_percent": v.usage.used_percent} for v in state.volumes
        }
        self.evidence.note("headroom", headroom)
        if self.values["backup_now"]:
            checks.append(self._backup_written())
        if self.profile.app is not None:
            checks.append(replace(self.application_health(), name="verify:app_health"))
        if state.full:
            self.set_state("disk", f"still full: {state.describe()}; {RUNBOOK_ADVICE}")
        restored = self.service_restored_if(Checks(checks))
        return Outcome("Verify writes", facts=facts, checks=restored, table=lambda: frame(state.rows()))

    # Step 4 -------------------------------------------------------------------------------
    @step(
        "prevent_recurrence",
        title="Step 3: Implement disk space monitoring",
        what="""The runbook's prevention: disk space monitoring (`drlib monitor` from cron or a systemd timer:
        60 % warns, 80 % fails, written as metrics with `--prometheus`), automatic cleanup of old files
        (`drlib backup prune --confirm` after the nightly backup) and storage quotas: a warning when a backups
        folder shares the database's filesystem (a pile of backups then stops the database too).""",
        why="A disk fills slowly: an alert at 60 % and a scheduled prune keep this incident from coming back.",
        if_fails="Nothing fails here: the warnings say what to change.",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def prevent_recurrence(self) -> Outcome:
        state = self._require_found()
        database = next((v for v in state.volumes if v.name == "postgres_data"), None)
        shared = [
            v.name
            for v in state.volumes
            if database is not None
            and v is not database
            and v.name.startswith("backups")
            and v.device == database.device
        ]
        monitoring = self.profile.monitoring
        return Outcome(
            "Prevent recurrence",
            facts={
                "monitor": f"drlib monitor --env {self.profile.name} (warn over {monitoring.disk_warn_percent:g} %, "
                f"fail over {monitoring.disk_critical_percent:g} %)",
                "cleanup": f"drlib backup prune --env {self.profile.name} --confirm ({self.retention.describe()})",
            },
            checks=Checks(
                [
                    check(
                        "backups_on_their_own_disk",
                        not shared,
                        expected="backups on a filesystem (or quota) of their own",
                        observed=("shared with the database: " + ", ".join(shared)) if shared else "separate",
                        detail="give the backups a volume or quota of their own" if shared else "",
                        warn_only=True,
                    )
                ]
            ),
        )

    # -- helpers --------------------------------------------------------------------------------
    def _require_found(self) -> DiskState:
        if self.found is None:
            self.detect_disk_full()
        assert self.found is not None
        return self.found

    def _plan(self) -> PrunePlan:
        self.plan = plan_pruning(self.profile, self.retention, logs=self.values["free_logs"])
        return self.plan

    def _record_freed(self, result: PruneResult) -> None:
        self.evidence.note("freed_bytes", result.bytes_freed)
        self.evidence.note("freed", [f"{c.component}:{c.name}" for c in result.deleted])
        if result.deleted:
            self.set_state(
                "backups",
                f"deleted {len(result.deleted)} item(s) beyond retention ({format_bytes(result.bytes_freed)})",
            )

    def _backup_written(self) -> CheckResult:
        try:
            made = backup_database(
                target=PgTarget.from_profile(self.profile),
                backup_dir=self.profile.backups.postgres_dir,
                prefix=self.profile.backups.prefix,
            )
        except DrlibError as exc:
            return check(
                "verify:backup_written",
                False,
                expected="a database backup is written",
                observed="fails",
                detail=exc.message,
            )
        return check(
            "verify:backup_written",
            True,
            expected="a database backup is written",
            observed=made.name,
            detail=str(made.path.parent),
        )


# -- drills ---------------------------------------------------------------------------------
def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """The database answers, and this process can mount a small filesystem, before anything is written."""
    results = stack_reachable(profile)
    why = can_mount_tmpfs()
    if why:
        raise DrillRefused(
            f"the disk_full drill needs a small filesystem of its own and cannot mount one here ({why}): run it as "
            "root (CAP_SYS_ADMIN)"
        )
    return [*results, check("can_mount_tmpfs", True, expected="a tmpfs mounts", observed="mounted and unmounted")]


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Fresh backups of every component, then the backups folder on a small volume holding copies of them, old
    copies beyond retention and rotated logs, full to the last block; the drill unmounts it at the end."""
    target = PgTarget.from_profile(profile)
    newest: dict[str, Path] = {
        "postgres": backup_database(
            target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix
        ).path
    }
    storage = profile.require_storage()
    newest["storage"] = archive_local(root=Path(storage.path), backup_dir=profile.backups.storage_dir).path
    newest["redis"] = backup_redis(profile).path
    volume = fill_backups_volume(profile, newest)
    return DrillSetup(
        fault=volume.describe(),
        failure_time=utcnow(),
        cleanup=functools.partial(release_volume, profile),
        cleanup_leaves="the small volume unmounted: the backups folder as it was before the drill",
    )


SCENARIO = Scenario(
    id="disk_full",
    runbook=DiskFull,
    summary="Failure Scenarios → Scenario 2 of `disaster-recovery-plan.md`: the full volume named with its free "
    "bytes and the failing writes by cause; backups beyond retention and old rotated logs listed with sizes and "
    "freed under confirm (never the newest verified backup); writes verified again, the new headroom reported.",
    stage=stage,
    preflight=preflight,
    rto_kind="partial_failure",
    rpo_component=None,
    verify_after=False,
    sandbox_only=True,
)
