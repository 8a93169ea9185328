"""Prevention checks: the runbook's "Prevention Measures → Monitoring / Automated Alerts", the notebook a
scheduler runs daily (``drlib monitor`` runs the same checks and exports them as Prometheus metrics). Every
step only reads; a threshold breach is a ``warn`` or a ``fail`` check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from drlib.checks import Checks
from drlib.config import Profile
from drlib.evidence import Evidence, utcnow
from drlib.exceptions import BackupNotFound
from drlib.lazy import lazy_module
from drlib.monitoring import (
    BACKUP_COMMANDS,
    BackupComponent,
    BackupStatus,
    app_checks,
    backup_checks,
    backup_status,
    connection_checks,
    disk_checks,
    storage_checks,
)
from drlib.parameters import Param
from drlib.postgres.backup import backup_database
from drlib.postgres.catalogue import list_backups
from drlib.postgres.connection import PgTarget
from drlib.redis.backup import backup_redis, list_redis_backups
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.staging import DrillSetup
from drlib.steps import Outcome, step
from drlib.storage.backup import archive_local
from drlib.units import format_bytes, format_duration

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")

_READ_ONLY = "Nothing to roll back: this step only reads."


class PreventionChecks(Runbook):
    """Disk, backups, connections, storage and the application against the runbook's alert thresholds."""

    scenario = "prevention_checks"
    title = "Prevention checks"
    params: ClassVar[tuple[Param, ...]] = COMMON_PARAMS

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.statuses: dict[BackupComponent, BackupStatus] = {}

    @step(
        "disk_usage",
        title="Disk space per volume",
        what="""The filesystem of the database's data directory (when the database runs on this machine), the
        live storage folder and each backup folder, plus any folder named in the profile's `[monitoring]
        volumes`: used space against the runbook's thresholds, a warning over `disk_warn_percent` (60 %) and
        a failure over `disk_critical_percent` (80 %).""",
        why="""A full disk stops the database and the backups together, and a backup folder that fills up
        fails every backup after it: the runbook alerts at 60 % and pages at 80 %.""",
        if_fails="""Free space on the volume the check names: old backups beyond retention (`drlib backup
        list`), logs, the `*.old-*` folders a restore keeps; or grow the volume. The thresholds are in the
        profile's `[monitoring]` section.""",
        roll_back=_READ_ONLY,
    )
    def disk_usage(self) -> Outcome:
        usages, results, notes = disk_checks(self.profile)
        rows = [
            {
                "volume": u.volume,
                "path": str(u.path),
                "used %": u.used_percent,
                "free": format_bytes(u.free_bytes),
                "size": format_bytes(u.total_bytes),
            }
            for u in usages
        ]
        facts: dict[str, Any] = {
            "thresholds": f"warn over {self.profile.monitoring.disk_warn_percent:g} %, "
            f"fail over {self.profile.monitoring.disk_critical_percent:g} %"
        }
        if notes:
            facts["not measured"] = "; ".join(notes)
        return Outcome("Disk space", facts=facts, checks=Checks(results), table=lambda: pd.DataFrame(rows))

    def _backups(self, component: BackupComponent) -> Outcome:
        status = backup_status(self.profile, component)
        self.statuses[component] = status
        facts: dict[str, Any] = {
            "newest": status.newest or "none",
            "taken at": status.created_at.isoformat(timespec="seconds") if status.created_at else "n/a",
            "age": format_duration(status.age_seconds),
            "RPO target": format_duration(status.rpo_seconds),
            "backups in the catalogue": status.count,
        }
        return Outcome(f"Backups: {component}", facts=facts, checks=Checks(backup_checks(status)))

    @step(
        "postgres_backups",
        title="Database backups: freshness and last success",
        what="""The newest database backup (the one a restore would pick): its age against the PostgreSQL RPO
        (24 h in the runbook, `[targets.rpo] postgres` in the profile), and whether it verifies: its archive is
        readable and its checksum matches its manifest.""",
        why="""A backup schedule that silently stopped, or writes backups that do not restore, is found at
        the worst moment otherwise: during a restore.""",
        if_fails="""Take a backup now (`drlib backup create`) and read the backup job's log: cron or the timer
        that runs it, credentials, free space in the backup folder. A backup that does not verify is named in
        the check: take a new one and keep the bad one for inspection.""",
        roll_back=_READ_ONLY,
    )
    def postgres_backups(self) -> Outcome:
        return self._backups("postgres")

    @step(
        "storage_backups",
        title="File storage backups: freshness and last success",
        what="""The newest storage backup of the storage's kind (an archive or full copy for a local folder, a
        bucket snapshot for S3): its age against the File Storage RPO (24 h) and its archive against its
        manifest.""",
        why='The runbook\'s "Backup success/failure" for storage: artifacts are lost with an old backup.',
        if_fails="""Take a storage backup (`drlib storage backup`) and check the job that takes them; for S3,
        that the backups bucket answers with the profile's credentials.""",
        roll_back=_READ_ONLY,
        needs=("storage",),
    )
    def storage_backups(self) -> Outcome:
        return self._backups("storage")

    @step(
        "redis_backups",
        title="Redis backups: freshness and last success",
        what="""The newest RDB snapshot: its age against the Redis RPO (1 hour), its checksum against its
        manifest and `redis-check-rdb`.""",
        why="""Redis has the shortest RPO of the stack: an hourly job that stopped is an hour from breaching
        it.""",
        if_fails="Take one (`drlib redis backup`) and check the job that takes them hourly.",
        roll_back=_READ_ONLY,
        needs=("redis",),
    )
    def redis_backups(self) -> Outcome:
        return self._backups("redis")

    @step(
        "database_connections",
        title="Database connections",
        what="""The database answers with the profile's credentials (a failure is the runbook's critical
        "Database connection failures"), and its client connections in `pg_stat_activity` against
        `max_connections`: a warning over `connections_warn_percent` (80 %).""",
        why="""A connection pool that fills up refuses the application's next connection: the outage starts
        before anything is lost.""",
        if_fails="""Unreachable: the PostgreSQL database loss runbook's pre-restore checklist says whether the
        server or the database is gone. Too many connections: find who holds them (`SELECT usename,
        application_name, state, count(*) FROM pg_stat_activity GROUP BY 1, 2, 3`), idle-in-transaction
        sessions first.""",
        roll_back=_READ_ONLY,
    )
    def database_connections(self) -> Outcome:
        usage, results = connection_checks(self.profile)
        facts = {"database": self.profile.database.address}
        if usage is not None:
            facts["connections"] = f"{usage.connections} of {usage.max_connections}"
        return Outcome("Database connections", facts=facts, checks=Checks(results))

    @step(
        "storage_files",
        title="Storage file count",
        what="""The live storage is there and writable ("Storage write failures"), and its file count against
        the newest storage backup's manifest: any drop warns, a drop over `file_drop_fail_percent` (10 %)
        fails.""",
        why="""Files vanishing between two backups is how accidental deletion and ransomware first show:
        found the same day, the backup before it still holds them.""",
        if_fails="""If the files were not deleted on purpose, bring them back with the accidental_deletion
        runbook (`drlib undo files PATH…`); if they were, the next storage backup resets the baseline.""",
        roll_back=_READ_ONLY,
        needs=("storage",),
    )
    def storage_files(self) -> Outcome:
        status = self.statuses.get("storage") or backup_status(self.profile, "storage")
        counts, results = storage_checks(self.profile, status)
        facts = {"live files": counts.live, "in the newest backup": counts.in_backup or "n/a"}
        return Outcome("Storage files", facts=facts, checks=Checks(results))

    @step(
        "application",
        title="Application health and error rate",
        what="""`GET /health` (waited for up to `[monitoring] health_timeout`), and the application's error rate
        over `log_window` (24 h): 5xx answers among the requests in its access log (or error lines among all
        lines when it logs no requests), a warning over `error_rate_warn_percent` (5 %).""",
        why="""The runbook's Application Monitoring: health check status and error rates are what users see
        first.""",
        if_fails="""Unhealthy: `/health` says which component is down; start with that component's runbook. A
        high error rate: read the log lines around the errors (`docker compose logs api | grep -i error`).""",
        roll_back=_READ_ONLY,
        needs=("app",),
    )
    def application(self) -> Outcome:
        status, results = app_checks(self.profile)
        facts = {
            "healthy": status.healthy,
            "requests logged": status.requests,
            "errors": status.errors,
            "window": format_duration(self.profile.monitoring.log_window),
        }
        return Outcome("Application", facts=facts, checks=Checks(results))

    def summary(self) -> Outcome:
        """The base summary; a dry run (nothing here writes anyway) still says when a check failed."""
        outcome = super().summary()
        failed = len(Checks(self.evidence.checks).failures)
        if self.confirm or not failed:
            return outcome
        title = f"{outcome.title}; {failed} check(s) FAILED"
        return Outcome(title, facts=outcome.facts, checks=outcome.checks, table=outcome.table)


# -- drills ---------------------------------------------------------------------------------
def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """No fault: the stack is checked as it is. A component with no backup at all gets a first one (a fresh
    sandbox has none), so the drill checks a stack that is backed up; an old backup is left old."""
    taken: dict[str, Any] = {}
    target = PgTarget.from_profile(profile)
    try:
        has_pg = bool(list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix))
    except BackupNotFound:
        has_pg = False
    if not has_pg:
        taken["postgres"] = backup_database(
            target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix
        ).name
    if profile.redis is not None:
        try:
            has_rdb = bool(list_redis_backups(profile.backups.redis_dir))
        except BackupNotFound:
            has_rdb = False
        if not has_rdb:
            taken["redis"] = backup_redis(profile).name
    storage = profile.storage
    if storage is not None and storage.kind == "local" and backup_status(profile, "storage").newest is None:
        taken["storage"] = archive_local(root=Path(storage.path), backup_dir=profile.backups.storage_dir).name
    fault = "none (monitoring only)"
    if taken:
        fault += "; first backups taken: " + ", ".join(f"{k} {v}" for k, v in taken.items())
    return DrillSetup(fault=fault, failure_time=utcnow(), backup=taken)


SCENARIO = Scenario(
    id="prevention_checks",
    runbook=PreventionChecks,
    summary="The runbook's Prevention Measures → Monitoring / Automated Alerts, the notebook a scheduler runs "
    "daily: disk usage per volume against 60 % (warn) and 80 % (fail), each component's backup freshness "
    "against its RPO and whether the newest backup verifies, database connections, storage file counts, "
    "application health and error rate. Every step only reads. `drlib monitor --prometheus FILE` runs the "
    "same checks and writes them as metrics. Backup commands: "
    + ", ".join(f"{c}: `{cmd}`" for c, cmd in BACKUP_COMMANDS.items())
    + ".",
    stage=stage,
    rto_kind=None,
    rpo_component=None,
    verify_after=False,
)
