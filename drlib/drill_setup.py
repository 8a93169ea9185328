"""Staging each scenario's failure for a drill: take the backups, write data after them (so the
RPO and the data lost are real, each piece marked with the drill's token), then inject the fault.
After the run, :meth:`DrillSetup.data_loss` counts how much of that data the restore lost."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drlib import faults
from drlib.config import Profile
from drlib.evidence import utcnow
from drlib.exceptions import DrlibError
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget
from drlib.redis.backup import backup_redis
from drlib.redis.connection import redis_client
from drlib.storage.backends import S3Storage, live_storage
from drlib.storage.backup import archive_local, snapshot_bucket

#: what -> counts the drill's marked data present now (``token`` identifies this drill's writes)
Probe = Callable[[Profile, str], int]


@dataclass(frozen=True)
class DrillSetup:
    """What the drill did before handing over to the runbook."""

    fault: str
    failure_time: datetime
    backup: dict[str, Any] = field(default_factory=dict)
    written_after_backup: dict[str, int] = field(default_factory=dict)
    marker: str = ""
    notebook_parameters: dict[str, Any] = field(default_factory=dict)

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


def _count_rows(query: str) -> Probe:
    def probe(profile: Profile, token: str) -> int:
        with PgTarget.from_profile(profile).connect() as conn:
            row = conn.execute(query, (f"drill-{token}%",)).fetchone()
        return int(row[0]) if row else 0

    return probe


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
    "users": _count_rows("SELECT count(*) FROM users WHERE email LIKE %s"),
    "content_jobs": _count_rows("SELECT count(*) FROM content_jobs WHERE prompt LIKE %s"),
    "storage_files": _count_files,
    "s3_objects": _count_objects,
    "redis_keys": _count_keys,
}


def write_rows_after_backup(target: PgTarget, *, token: str, jobs: int = 25) -> dict[str, int]:
    """New users and content jobs, marked with ``token``."""
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


def stage_database_loss(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Backup, 25 jobs and 2 users written after it, then the live database is dropped."""
    target = PgTarget.from_profile(profile)
    backup = backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    _pause()
    token = secrets.token_hex(6)
    written = write_rows_after_backup(target, token=token)
    failure_time = utcnow()
    faults.drop_live_database(target)
    return DrillSetup(
        fault=f"dropped database {target.name}",
        failure_time=failure_time,
        backup=_backup_fact(backup),
        written_after_backup=written,
        marker=token,
    )


def stage_storage_loss(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Local: archive, 3 files written after it, the storage tree deleted.
    S3: prefix snapshot, 3 objects written after it, the live bucket emptied."""
    token = secrets.token_hex(6)
    live = live_storage(profile, kind=params.get("storage_kind", "local"))
    if isinstance(live, S3Storage):
        backup = snapshot_bucket(
            live=live, backups_bucket=profile.storage.backups_bucket, prefix=profile.backups.s3_prefix
        )
        _pause()
        written = write_objects_after_backup(live, token=token)
        failure_time = utcnow()
        faults.empty_bucket(live)
        fault = f"emptied bucket {live.bucket}"
    else:
        backup = archive_local(root=live.root, backup_dir=profile.backups.storage_dir)
        _pause()
        written = write_files_after_backup(live.root, token=token)
        failure_time = utcnow()
        shutil.rmtree(live.root)
        fault = f"deleted the storage tree {live.root}"
    return DrillSetup(
        fault=fault,
        failure_time=failure_time,
        backup=_backup_fact(backup),
        written_after_backup=written,
        marker=token,
    )


def stage_redis_loss(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """RDB backup, 5 sessions written after it, then Redis flushed and killed without saving."""
    backup = backup_redis(profile)
    _pause()
    token = secrets.token_hex(6)
    written = write_keys_after_backup(profile, token=token)
    failure_time = utcnow()
    faults.kill_redis(profile)
    return DrillSetup(
        fault="flushed Redis and shut it down without saving",
        failure_time=failure_time,
        backup=_backup_fact(backup),
        written_after_backup=written,
        marker=token,
    )


def stage_full_system_loss(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Backups of all three, data written after them in all three, then the whole stack is destroyed."""
    target = PgTarget.from_profile(profile)
    db = backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    storage_root = Path(profile.storage.path)
    archive_local(root=storage_root, backup_dir=profile.backups.storage_dir)
    backup_redis(profile)
    _pause()
    token = secrets.token_hex(6)
    written = {
        **write_rows_after_backup(target, token=token),
        **write_files_after_backup(storage_root, token=token),
        **write_keys_after_backup(profile, token=token),
    }
    failure_time = utcnow()
    faults.destroy_sandbox(profile)
    return DrillSetup(
        fault="destroyed the whole stack: database cluster, Redis data, storage, processes",
        failure_time=failure_time,
        backup=_backup_fact(db),
        written_after_backup=written,
        marker=token,
    )


def stage_nothing(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """verify_restore on its own injects nothing: it checks the stack as it is."""
    return DrillSetup(fault="none (verification only)", failure_time=utcnow())


STAGES: dict[str, Callable[[Profile, dict[str, Any]], DrillSetup]] = {
    "postgres_database_loss": stage_database_loss,
    "storage_loss": stage_storage_loss,
    "redis_loss": stage_redis_loss,
    "full_system_loss": stage_full_system_loss,
    "verify_restore": stage_nothing,
}
