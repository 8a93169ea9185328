"""Staging each scenario's failure for a drill: take a backup, write data after it (so the RPO
and the data lost are real), then inject the fault."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drlib import faults
from drlib.config import Profile
from drlib.evidence import utcnow
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget


@dataclass(frozen=True)
class DrillSetup:
    """What the drill did before handing over to the runbook."""

    fault: str
    failure_time: datetime
    backup: dict[str, Any] = field(default_factory=dict)
    written_after_backup: dict[str, int] = field(default_factory=dict)
    marker: str = ""
    notebook_parameters: dict[str, Any] = field(default_factory=dict)


#: table -> SQL counting the rows a drill wrote (marked with its token) that exist now.
MARKER_QUERIES = {
    "users": "SELECT count(*) FROM users WHERE email LIKE %s",
    "content_jobs": "SELECT count(*) FROM content_jobs WHERE prompt LIKE %s",
}


def write_rows_after_backup(target: PgTarget, *, token: str, jobs: int = 25) -> dict[str, int]:
    """New users and content jobs written after the backup, each marked with ``token``:
    the data a drill is bound to lose."""
    with target.connect() as conn:
        users = [
            row[0]
            for row in conn.execute(
                "INSERT INTO users (organization_id, email, password_hash) "
                "SELECT 1, 'drill-' || %s || '-' || g || '@example.com', '!disabled' "
                "FROM generate_series(1, 2) g RETURNING id",
                (token,),
            ).fetchall()
        ]
        conn.execute(
            "INSERT INTO content_jobs (user_id, organization_id, status, prompt) "
            "SELECT %s, 1, 'queued', 'drill-' || %s || ': written after the backup' "
            "FROM generate_series(1, %s)",
            (users[0], token, jobs),
        )
    return {"users": len(users), "content_jobs": jobs}


def rows_still_present(target: PgTarget, token: str) -> dict[str, int]:
    """How many of the rows the drill wrote after the backup exist now (after the restore)."""
    present: dict[str, int] = {}
    with target.connect() as conn:
        for table, query in MARKER_QUERIES.items():
            row = conn.execute(query, (f"drill-{token}%",)).fetchone()
            present[table] = int(row[0]) if row else 0
    return present


def stage_database_loss(profile: Profile) -> DrillSetup:
    """Backup, 25 jobs and 2 users written after it, then the live database is dropped."""
    target = PgTarget.from_profile(profile)
    backup = backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    time.sleep(0.05)
    marker = secrets.token_hex(6)
    written = write_rows_after_backup(target, token=marker)
    failure_time = utcnow()
    faults.drop_live_database(target)
    return DrillSetup(
        fault=f"dropped database {target.name}",
        failure_time=failure_time,
        backup={"name": backup.name, "created_at": backup.created_at.isoformat()},
        written_after_backup=written,
        marker=marker,
    )


STAGES: dict[str, Callable[[Profile], DrillSetup]] = {
    "postgres_database_loss": stage_database_loss,
}
