"""What drill staging shares: the record of what was staged (:class:`DrillSetup`), writing data
after the backups (so the RPO and the data lost are real, each piece marked with the drill's token),
and the probes that count, after the run, how much of that data the restore lost. Each scenario's
own staging (which backups, which writes, which fault) lives in its scenario module.

A Content Crew database (``check_set = "content_crew"``) gets new users and content jobs. Any other
database gets rows in drlib's own table ``drlib_drill.rpo_probe``, created *before* the backup (so the
backup holds it, empty): the restore brings the table back without the rows, and the data lost is
measured on every database alike."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drlib.config import Profile
from drlib.evidence import utcnow
from drlib.exceptions import DrlibError
from drlib.postgres.connection import PgTarget
from drlib.redis.connection import redis_client
from drlib.storage.backends import S3Storage, live_storage

#: what -> counts the drill's marked data present now (``token`` identifies this drill's writes)
Probe = Callable[[Profile, str], int]

#: where a drill on a database that is not Content Crew writes its rows after the backup
PROBE_SCHEMA = "drlib_drill"
PROBE_TABLE = f"{PROBE_SCHEMA}.rpo_probe"


@dataclass(frozen=True)
class DrillSetup:
    """What the drill did before handing over to the runbook."""

    fault: str
    failure_time: datetime
    backup: dict[str, Any] = field(default_factory=dict)
    written_after_backup: dict[str, int] = field(default_factory=dict)
    marker: str = ""
    notebook_parameters: dict[str, Any] = field(default_factory=dict)
    #: undoes what the staging set up that the runbook does not own (e.g. a small volume mounted for the
    #: drill): the drill calls it once the notebooks are done, after a pass, a failure or a crash
    cleanup: Callable[[], object] | None = None
    #: what the stack is like once ``cleanup`` ran (the report's last word on the stack's state)
    cleanup_leaves: str = ""

    def data_loss(self, profile: Profile) -> dict[str, dict[str, int]]:
        """Per kind of data: how much was written after the backup, and how much of it is gone."""
        loss: dict[str, dict[str, int]] = {}
        for what, written in self.written_after_backup.items():
            try:
                present = PROBES[what](profile, self.marker)
            except DrlibError:
                present = 0
            loss[what] = {"written_after_backup": written, "lost": written - present}
        return loss


def count_rows(query: str) -> Probe:
    def probe(profile: Profile, token: str) -> int:
        with PgTarget.from_profile(profile).connect() as conn:
            row = conn.execute(query, (f"drill-{token}%",)).fetchone()
        return int(row[0]) if row else 0

    return probe


def _count_probe_rows(profile: Profile, token: str) -> int:
    with PgTarget.from_profile(profile).connect() as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (PROBE_TABLE,)).fetchone()
        if not (row and row[0]):
            return 0  # restored from a backup older than the probe table: every row is lost
        row = conn.execute(f"SELECT count(*) FROM {PROBE_TABLE} WHERE token LIKE %s", (f"drill-{token}%",)).fetchone()
    return int(row[0]) if row else 0


def _count_files(profile: Profile, token: str) -> int:
    return sum(1 for f in live_storage(profile).files() if f"drill-{token}" in f.key)


def _count_objects(profile: Profile, token: str) -> int:
    return sum(1 for f in live_storage(profile, kind="s3").files() if f"drill-{token}" in f.key)


def _count_keys(profile: Profile, token: str) -> int:
    client = redis_client(profile)
    try:
        return sum(1 for _ in client.scan_iter(match=f"*drill-{token}*"))
    finally:
        client.close()


PROBES: dict[str, Probe] = {
    "users": count_rows("SELECT count(*) FROM users WHERE email LIKE %s"),
    "content_jobs": count_rows("SELECT count(*) FROM content_jobs WHERE prompt LIKE %s"),
    PROBE_TABLE: _count_probe_rows,
    "storage_files": _count_files,
    "s3_objects": _count_objects,
    "redis_keys": _count_keys,
}


def is_content_crew(target: PgTarget) -> bool:
    """The database has the runbook's Content Crew schema (its profile's ``check_set``)."""
    return target.settings.check_set == "content_crew"


def prepare_rows_after_backup(target: PgTarget) -> None:
    """Before the backup: a database that is not Content Crew gets ``drlib_drill.rpo_probe`` (kept between
    drills), so the backup holds the table the drill writes into after it."""
    if is_content_crew(target):
        return
    with target.connect() as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PROBE_SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} "
            "(token text NOT NULL, written_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            f"COMMENT ON SCHEMA {PROBE_SCHEMA} IS 'drlib drills: rows written after a backup, to measure data lost'"
        )


def write_rows_after_backup(target: PgTarget, *, token: str, jobs: int = 25) -> dict[str, int]:
    """Rows marked with ``token``: new users and content jobs in a Content Crew database, else ``jobs`` rows
    in ``drlib_drill.rpo_probe`` (see :func:`prepare_rows_after_backup`)."""
    if not is_content_crew(target):
        with target.connect() as conn:
            conn.execute(
                f"INSERT INTO {PROBE_TABLE} (token) SELECT 'drill-' || %s || '-' || g FROM generate_series(1, %s) g",
                (token, jobs),
            )
        return {PROBE_TABLE: jobs}
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


def write_files_after_backup(root: Path, *, token: str, count: int = 3) -> dict[str, int]:
    for i in range(count):
        (root / "voiceovers").mkdir(parents=True, exist_ok=True)
        (root / "voiceovers" / f"drill-{token}-{i}.wav").write_bytes(b"RIFF" + token.encode() * 64)
    return {"storage_files": count}


def write_objects_after_backup(live: S3Storage, *, token: str, count: int = 3) -> dict[str, int]:
    for i in range(count):
        live.client.put_object(Bucket=live.bucket, Key=f"voiceovers/drill-{token}-{i}.wav", Body=b"RIFF" * 64)
    return {"s3_objects": count}


def write_keys_after_backup(profile: Profile, *, token: str, count: int = 5) -> dict[str, int]:
    client = redis_client(profile)
    try:
        for i in range(count):
            client.setex(f"session:drill-{token}-{i}", 3600, "written after the backup")
    finally:
        client.close()
    return {"redis_keys": count}


def _backup_fact(backup: Any) -> dict[str, str]:
    return {"name": backup.name, "created_at": backup.created_at.isoformat()}


def _pause() -> None:
    time.sleep(0.05)  # what is written next is unmistakably after the backup's snapshot


def fail_after_backup(
    backup: Any, *, write: Callable[[str], dict[str, int]], inject: Callable[[], object], fault: str
) -> DrillSetup:
    """What every drill does once its backups are taken: wait a moment, ``write`` data marked with a
    new token, note the failure time, ``inject`` the fault, and record it all."""
    _pause()
    token = secrets.token_hex(6)
    written = write(token)
    failure_time = utcnow()
    inject()
    return DrillSetup(
        fault=fault,
        failure_time=failure_time,
        backup=_backup_fact(backup),
        written_after_backup=written,
        marker=token,
    )
