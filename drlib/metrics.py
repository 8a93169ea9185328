"""The prevention checks as Prometheus metrics, in the text format a node-exporter textfile collector reads
(written with ``prometheus_client``: to a temporary file beside the target, then renamed over it, so the
collector never reads half a file). Alert rules page on them: see the README's "Monitoring and alerts"."""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from drlib.exceptions import ConfigError
from drlib.monitoring import MonitorReport

#: a check's status as a number: alert on ``drlib_check_status == 2``
STATUS_VALUES = {"pass": 0, "warn": 1, "fail": 2}


def registry_for(report: MonitorReport) -> CollectorRegistry:
    """One gauge per measurement of ``report`` (a backup that does not exist is infinitely old)."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    used = gauge("drlib_disk_used_ratio", "Used share of the volume's filesystem, as df shows it", ("volume",))
    free = gauge("drlib_disk_free_bytes", "Bytes available to users on the volume's filesystem", ("volume",))
    for disk in report.disks:
        used.labels(disk.volume).set(disk.used_ratio)
        free.labels(disk.volume).set(disk.free_bytes)
    age = gauge("drlib_backup_age_seconds", "Age of the newest backup (+Inf: none)", ("component",))
    rpo = gauge("drlib_backup_rpo_seconds", "The component's RPO target", ("component",))
    ok = gauge("drlib_backup_last_success", "1 when the newest backup verifies against its manifest", ("component",))
    taken = gauge("drlib_backup_newest_timestamp_seconds", "When the newest backup was taken", ("component",))
    count = gauge("drlib_backup_count", "Backups in the catalogue", ("component",))
    for status in report.backups:
        component = status.component
        age.labels(component).set(math.inf if status.age_seconds is None else status.age_seconds)
        rpo.labels(component).set(status.rpo_seconds)
        ok.labels(component).set(1 if status.verified else 0)
        count.labels(component).set(status.count)
        if status.created_at is not None:
            taken.labels(component).set(status.created_at.timestamp())
    if report.connections is not None:
        gauge("drlib_db_connections", "Client connections to the database server").set(report.connections.connections)
        gauge("drlib_db_max_connections", "The server's max_connections").set(report.connections.max_connections)
    if report.files is not None:
        files = gauge("drlib_storage_files", "Files in the live storage and in its newest backup", ("source",))
        files.labels("live").set(report.files.live)
        if report.files.in_backup is not None:
            files.labels("backup").set(report.files.in_backup)
    if report.app is not None:
        gauge("drlib_app_up", "1 when the application's health check answers 200").set(1 if report.app.healthy else 0)
        gauge("drlib_app_error_ratio", "5xx responses among the requests logged in the window").set(
            report.app.error_ratio
        )
    checks = gauge("drlib_check_status", "Each prevention check: 0 pass, 1 warn, 2 fail", ("check",))
    for item in report.checks:
        checks.labels(item.name).set(STATUS_VALUES[item.status])
    last = gauge("drlib_monitor_last_run_timestamp_seconds", "When drlib monitor last ran", ("profile",))
    last.labels(report.profile).set(report.taken_at.timestamp())
    return registry


def write_prometheus(report: MonitorReport, path: Path) -> None:
    """Write ``report``'s metrics to ``path`` atomically (a temporary file in the same folder, renamed)."""
    if not path.parent.is_dir():
        raise ConfigError(
            f"cannot write metrics to {path}: the folder {path.parent} does not exist (point --prometheus at the "
            "textfile collector's folder, e.g. /var/lib/node_exporter/textfile_collector/drlib.prom)"
        )
    try:
        write_to_textfile(str(path), registry_for(report))
    except OSError as exc:
        raise ConfigError(
            f"cannot write metrics to {path} ({type(exc).__name__}: {exc.strerror or exc}): check the folder's "
            "permissions and free space"
        ) from exc
