"""The runbook's "Prevention Measures → Monitoring / Automated Alerts" as checks that only read: disk usage
per volume against 60 % (warn) and 80 % (fail), each component's backup freshness against its RPO and whether
the newest backup verifies, database connections against ``max_connections``, storage file counts against
the newest backup, and the application's health and error rate. The ``prevention_checks`` notebook and
``drlib monitor`` both call :func:`run_checks` (or its parts); thresholds come from the profile's
``[monitoring]`` section."""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from drlib.app.health import wait_healthy
from drlib.app.logs import is_error_line, log_lines
from drlib.checks import CheckResult, Checks, CheckStatus, check
from drlib.config import Component, MonitoringSettings, Profile
from drlib.evidence import utcnow
from drlib.exceptions import DrlibError
from drlib.postgres.catalogue import list_backups
from drlib.postgres.connection import PgTarget
from drlib.postgres.integrity import verify_backup
from drlib.redis.backup import list_redis_backups
from drlib.redis.restore import verify_redis_backup
from drlib.storage.backends import LocalStorage, live_storage
from drlib.storage.catalogue import catalogue_for, restorable
from drlib.storage.restore import verify_storage_backup
from drlib.units import format_bytes, format_duration

BackupComponent = Literal["postgres", "storage", "redis"]
#: the backed-up components, and the optional component each needs (None: every profile has it)
BACKUP_COMPONENTS: dict[BackupComponent, Component | None] = {"postgres": None, "storage": "storage", "redis": "redis"}
#: how to take a backup of each component now
BACKUP_COMMANDS: dict[BackupComponent, str] = {
    "postgres": "drlib backup create",
    "storage": "drlib storage backup",
    "redis": "drlib redis backup",
}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}
#: an access-log request line: ``"GET /path HTTP/1.1" 503`` (common/combined log format, uvicorn, gunicorn)
_REQUEST = re.compile(r'"[A-Z]+ \S+ HTTP/[\d.]+" (\d{3})\b')


def _level(percent: float, *, warn: float, fail: float | None = None) -> CheckStatus:
    """``fail`` over ``fail``, ``warn`` over ``warn``, else ``pass``."""
    if fail is not None and percent > fail:
        return "fail"
    return "warn" if percent > warn else "pass"


# -- disk usage -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiskUsage:
    """One volume's filesystem, as ``df`` shows it (used against used + available to users)."""

    volume: str
    path: Path
    total_bytes: int
    used_bytes: int
    free_bytes: int

    @property
    def used_ratio(self) -> float:
        usable = self.used_bytes + self.free_bytes
        return self.used_bytes / usable if usable else 1.0

    @property
    def used_percent(self) -> float:
        return round(100 * self.used_ratio, 1)


def database_data_directory(profile: Profile) -> tuple[Path | None, str]:
    """The database's data directory when it is on this machine, else None and why not."""
    if profile.database.host not in _LOCAL_HOSTS and not profile.database.host.startswith("/"):
        return None, (
            f"the database runs on {profile.database.host}: measure its disk there, or mount its data volume "
            "here and name it in [monitoring] volumes"
        )
    try:
        with PgTarget.from_profile(profile).connect(connect_timeout=5) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
    except DrlibError as exc:
        return None, f"data directory not read: {exc.message}"
    except Exception as exc:  # e.g. permission denied for a role without pg_read_all_settings
        return None, f"data directory not read ({type(exc).__name__}): grant the role pg_read_all_settings"
    path = Path(str(row[0])) if row else None
    if path is None or not path.exists():
        return None, f"the data directory {path} is not visible from this machine"
    return path, ""


def volumes(profile: Profile) -> tuple[dict[str, Path], list[str]]:
    """The folders whose filesystems are measured (name -> path), and notes on those that cannot be."""
    found: dict[str, Path] = {}
    notes: list[str] = []
    data, why = database_data_directory(profile)
    if data is not None:
        found["postgres_data"] = data
    else:
        notes.append(f"postgres_data: {why}")
    if profile.storage is not None and profile.storage.kind == "local":
        found["storage"] = Path(profile.storage.path)
    found["backups_postgres"] = profile.backups.postgres_dir
    if profile.storage is not None:
        found["backups_storage"] = profile.backups.storage_dir
    if profile.redis is not None:
        found["backups_redis"] = profile.backups.redis_dir
    found.update(profile.monitoring.volumes)
    return found, notes


def disk_usage(volume: str, path: Path) -> DiskUsage:
    """The filesystem holding ``path`` (its nearest existing folder: a backups folder not made yet too)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    return DiskUsage(volume=volume, path=path, total_bytes=usage.total, used_bytes=usage.used, free_bytes=usage.free)


def disk_check(usage: DiskUsage, settings: MonitoringSettings) -> CheckResult:
    """The runbook's "Disk space > 60 %" warning and "> 80 %" critical alert."""
    status = _level(usage.used_percent, warn=settings.disk_warn_percent, fail=settings.disk_critical_percent)
    return CheckResult(
        name=f"disk_{usage.volume}",
        status=status,
        expected=f"≤ {settings.disk_warn_percent:g} % used, fail over {settings.disk_critical_percent:g} %",
        observed=f"{usage.used_percent:g} % used",
        detail=f"{usage.path}: {format_bytes(usage.free_bytes)} free of {format_bytes(usage.total_bytes)}",
    )


def disk_checks(profile: Profile) -> tuple[list[DiskUsage], list[CheckResult], list[str]]:
    """Every volume's usage, its check, and notes on volumes that could not be measured."""
    paths, notes = volumes(profile)
    usages = [disk_usage(name, path) for name, path in paths.items()]
    return usages, [disk_check(u, profile.monitoring) for u in usages], notes


# -- backups ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupStatus:
    """The newest backup of one component: its age against the RPO target, and whether it verifies."""

    component: BackupComponent
    rpo_seconds: float
    count: int = 0
    newest: str | None = None
    created_at: datetime | None = None
    age_seconds: float | None = None
    verified: bool = False
    problem: str = ""
    #: files the newest storage backup holds (storage only)
    files: int | None = None

    @property
    def fresh(self) -> bool:
        return self.age_seconds is not None and self.age_seconds <= self.rpo_seconds


def backup_status(profile: Profile, component: BackupComponent, *, now: datetime | None = None) -> BackupStatus:
    """The newest ``component`` backup (the one a restore would pick), its age, and its verification
    (checksum against its manifest, archive readable)."""
    now = now or utcnow()
    rpo = profile.targets.rpo(component)
    try:
        found, where = _catalogue(profile, component)
    except DrlibError as exc:
        return BackupStatus(component=component, rpo_seconds=rpo, problem=exc.message)
    if not found:
        return BackupStatus(component=component, rpo_seconds=rpo, problem=f"no backup in {where}")
    newest = found[-1]
    problem = ""
    try:
        newest.verify()
    except DrlibError as exc:
        problem = exc.message
    return BackupStatus(
        component=component,
        rpo_seconds=rpo,
        count=len(found),
        newest=newest.name,
        created_at=newest.created_at,
        age_seconds=max(0.0, (now - newest.created_at).total_seconds()),
        verified=not problem,
        problem=problem,
        files=newest.files,
    )


@dataclass(frozen=True)
class _Found:
    name: str
    created_at: datetime
    verify: Callable[[], object]
    files: int | None = None


def _catalogue(profile: Profile, component: BackupComponent) -> tuple[list[_Found], str]:
    """A component's backups, oldest first, each with how to verify it; and where they were looked for."""
    if component == "postgres":
        where = f"{profile.backups.postgres_dir} ({profile.backups.prefix}_*)"
        pg = list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix)
        return [_Found(b.name, b.created_at, functools.partial(verify_backup, b)) for b in pg], where
    if component == "redis":
        rdb = list_redis_backups(profile.backups.redis_dir)
        return [_Found(b.name, b.created_at, functools.partial(verify_redis_backup, b)) for b in rdb], str(
            profile.backups.redis_dir
        )
    storage = profile.require_storage()
    where = str(profile.backups.storage_dir) + (f" or s3://{storage.backups_bucket}" if storage.kind == "s3" else "")
    found = restorable(catalogue_for(profile, storage_kind=storage.kind), storage_kind=storage.kind)
    return [
        _Found(
            b.name,
            b.created_at,
            functools.partial(verify_storage_backup, b),
            b.manifest.total_files if b.manifest else None,
        )
        for b in found
    ], where


def backup_checks(status: BackupStatus) -> list[CheckResult]:
    """Freshness against the RPO (the runbook's RPO table) and "Backup failures": the newest verifies."""
    target = format_duration(status.rpo_seconds)
    if status.newest is None or status.age_seconds is None:
        missing = check(
            f"backup_{status.component}_fresh",
            False,
            expected=f"a backup newer than the RPO ({target})",
            observed="no backup",
            detail=f"{status.problem}: take one ({BACKUP_COMMANDS[status.component]}) and check the backup schedule",
        )
        return [missing]
    age = format_duration(status.age_seconds)
    return [
        check(
            f"backup_{status.component}_fresh",
            status.fresh,
            expected=f"newest backup ≤ {target} old (RPO)",
            observed=f"{age} old",
            detail=f"{status.newest}"
            + (
                ""
                if status.fresh
                else f": the schedule stopped or fails: take one now ({BACKUP_COMMANDS[status.component]})"
            ),
        ),
        check(
            f"backup_{status.component}_verifies",
            status.verified,
            expected="newest backup matches its manifest",
            observed="verifies" if status.verified else "does not verify",
            detail=status.problem or f"{status.newest} ({status.count} backup(s) in all)",
        ),
    ]


# -- database connections -------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectionUsage:
    """Client connections open against the server's ``max_connections``."""

    connections: int
    max_connections: int

    @property
    def used_ratio(self) -> float:
        return self.connections / self.max_connections if self.max_connections else 1.0


def connection_usage(profile: Profile) -> ConnectionUsage:
    """``pg_stat_activity``'s client backends and ``max_connections`` (raises when the database is down)."""
    with PgTarget.from_profile(profile).connect(connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
            "current_setting('max_connections')::int FROM pg_stat_activity"
        ).fetchone()
    assert row is not None
    return ConnectionUsage(connections=int(row[0]), max_connections=int(row[1]))


def connection_checks(profile: Profile) -> tuple[ConnectionUsage | None, list[CheckResult]]:
    """ "Database connection failures" (fail) and connection-pool usage over the threshold (warn)."""
    address = profile.database.address
    try:
        usage = connection_usage(profile)
    except DrlibError as exc:
        return None, [check("database_connection", False, expected="connects", observed="fails", detail=exc.message)]
    warn = profile.monitoring.connections_warn_percent
    percent = round(100 * usage.used_ratio, 1)
    return usage, [
        check("database_connection", True, expected="connects", observed="connects", detail=address),
        CheckResult(
            name="database_connections_used",
            status=_level(percent, warn=warn),
            expected=f"≤ {warn:g} % of max_connections",
            observed=f"{usage.connections}/{usage.max_connections} ({percent:g} %)",
            detail="client backends in pg_stat_activity",
        ),
    ]


# -- storage ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileCount:
    """Files in the live storage, and in its newest backup (None: no backup to compare with)."""

    live: int
    in_backup: int | None


def storage_checks(profile: Profile, status: BackupStatus) -> tuple[FileCount, list[CheckResult]]:
    """File count against the newest backup's manifest (any drop warns; over ``file_drop_fail_percent`` it
    fails: the sign of a deletion or of ransomware) and "Storage write failures" (the folder is writable)."""
    storage = live_storage(profile)
    results: list[CheckResult] = []
    if isinstance(storage, LocalStorage):
        root = storage.root
        writable = root.is_dir() and os.access(root, os.W_OK | os.X_OK)
        results.append(
            check(
                "storage_writable",
                writable,
                expected="the storage folder exists and is writable",
                observed="writable" if writable else ("missing" if not root.is_dir() else "not writable"),
                detail=str(root),
            )
        )
    live = sum(1 for _ in storage.files())
    counts = FileCount(live=live, in_backup=status.files)
    if status.files is None:
        results.append(
            check(
                "storage_file_count",
                True,
                expected="no fewer files than the newest backup",
                observed=f"{live} files",
                detail="no storage backup with a manifest to compare with",
            )
        )
        return counts, results
    drop = max(0, status.files - live)
    percent = round(100 * drop / status.files, 1) if status.files else 0.0
    fail = profile.monitoring.file_drop_fail_percent
    status_now: CheckStatus = "pass" if drop == 0 else ("fail" if percent > fail else "warn")
    results.append(
        CheckResult(
            name="storage_file_count",
            status=status_now,
            expected=f"≥ {status.files} files (the newest backup, {status.newest})",
            observed=f"{live} files" + (f" ({drop} fewer, {percent:g} %)" if drop else ""),
            detail=(
                "files were deleted since the backup: if that was not intended, see the accidental_deletion "
                "runbook (drlib undo files)"
                if drop
                else f"a drop over {fail:g} % fails"
            ),
        )
    )
    return counts, results


# -- the application ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AppStatus:
    """``/health`` and the error rate of the requests logged within the window."""

    healthy: bool
    requests: int
    errors: int
    lines: int

    @property
    def error_ratio(self) -> float:
        total = self.requests or self.lines
        return self.errors / total if total else 0.0


def error_counts(lines: list[str]) -> tuple[int, int]:
    """(requests, 5xx responses) from access-log lines; without any, (0, error lines)."""
    statuses = [int(m[1]) for m in (_REQUEST.search(line) for line in lines) if m]
    if statuses:
        return len(statuses), sum(1 for s in statuses if s >= 500)
    return 0, sum(1 for line in lines if is_error_line(line))


def app_checks(profile: Profile, *, now: datetime | None = None) -> tuple[AppStatus, list[CheckResult]]:
    """ "Health check status" (fail) and "High error rates" (warn) over ``log_window``."""
    app = profile.require_app()
    settings = profile.monitoring
    health = wait_healthy(app.base_url, path=app.health_path, timeout=settings.health_timeout, name="app_health")
    since = (now or utcnow()) - timedelta(seconds=settings.log_window)
    window = format_duration(settings.log_window)
    try:
        lines = log_lines(profile, since=since)
    except DrlibError as exc:
        status = AppStatus(healthy=health.passed, requests=0, errors=0, lines=0)
        unread = check(
            "app_error_rate", False, expected="logs readable", observed="unreadable", detail=exc.message, warn_only=True
        )
        return status, [health, unread]
    requests, errors = error_counts(lines)
    status = AppStatus(healthy=health.passed, requests=requests, errors=errors, lines=len(lines))
    percent = round(100 * status.error_ratio, 1)
    warn = settings.error_rate_warn_percent
    what = f"{errors} of {requests} requests answered 5xx" if requests else f"{errors} error lines of {len(lines)}"
    rate = CheckResult(
        name="app_error_rate",
        status=_level(percent, warn=warn),
        expected=f"≤ {warn:g} % errors over the last {window}",
        observed=f"{percent:g} %",
        detail=what,
    )
    return status, [health, rate]


# -- everything, for drlib monitor ----------------------------------------------------------------
@dataclass(frozen=True)
class MonitorReport:
    """Every prevention check of one run, with the measurements behind them (for metrics)."""

    profile: str
    taken_at: datetime
    disks: tuple[DiskUsage, ...]
    backups: tuple[BackupStatus, ...]
    connections: ConnectionUsage | None
    files: FileCount | None
    app: AppStatus | None
    checks: Checks
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.checks.passed


def configured_backups(profile: Profile) -> list[BackupComponent]:
    """The components whose backups this profile has: postgres, and storage and Redis when configured."""
    return [c for c, needs in BACKUP_COMPONENTS.items() if needs is None or profile.configured(needs)]


def run_checks(profile: Profile) -> MonitorReport:
    """Every prevention check on ``profile``; components it lacks are noted as not configured."""
    now = utcnow()
    disks, results, notes = disk_checks(profile)
    statuses = [backup_status(profile, c, now=now) for c in configured_backups(profile)]
    for status in statuses:
        results += backup_checks(status)
    connections, found = connection_checks(profile)
    results += found
    files = None
    storage_status = next((s for s in statuses if s.component == "storage"), None)
    if storage_status is not None:
        try:
            files, found = storage_checks(profile, storage_status)
        except DrlibError as exc:
            listing = exc.message
            found = [check("storage_file_count", False, expected="storage listed", observed="fails", detail=listing)]
        results += found
    else:
        notes.append(profile.not_configured("storage"))
    app = None
    if profile.app is not None:
        app, found = app_checks(profile, now=now)
        results += found
    else:
        notes.append(profile.not_configured("app"))
    if profile.redis is None:
        notes.append(profile.not_configured("redis"))
    return MonitorReport(
        profile=profile.name,
        taken_at=now,
        disks=tuple(disks),
        backups=tuple(statuses),
        connections=connections,
        files=files,
        app=app,
        checks=Checks(results),
        notes=tuple(notes),
    )
