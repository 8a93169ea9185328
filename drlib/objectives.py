"""Recovery objectives: achieved RPO and measured RTO compared with the runbook's targets."""

from __future__ import annotations

from datetime import datetime

from drlib.checks import CheckResult, check
from drlib.units import format_duration


def achieved_rpo_seconds(*, backup_time: datetime, failure_time: datetime) -> float:
    """Data-loss window: from the backup's snapshot to the failure."""
    return max(0.0, (failure_time - backup_time).total_seconds())


def rpo_check(*, component: str, backup_time: datetime, failure_time: datetime, target_seconds: float) -> CheckResult:
    rpo = achieved_rpo_seconds(backup_time=backup_time, failure_time=failure_time)
    return check(
        f"rpo:{component}",
        rpo <= target_seconds,
        expected=f"<= {format_duration(target_seconds)}",
        observed=format_duration(rpo),
        detail=f"backup {backup_time.isoformat(timespec='seconds')} → failure "
        f"{failure_time.isoformat(timespec='seconds')}",
    )


def rto_check(
    *, scenario_kind: str, outage_started: datetime, service_restored: datetime, target_seconds: float
) -> CheckResult:
    rto = (service_restored - outage_started).total_seconds()
    return check(
        f"rto:{scenario_kind}",
        rto <= target_seconds,
        expected=f"<= {format_duration(target_seconds)}",
        observed=format_duration(rto),
        detail="failure → application healthy again",
    )
