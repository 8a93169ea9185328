"""Redis loss: the RPO table's Redis row (1 hour). Redis holds cache and sessions the runbook
treats as rebuildable, plus a job queue that is not: the notebook says which keys are safe to lose."""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from drlib.app.functional import login_and_create_job
from drlib.app.health import wait_healthy
from drlib.checks import Checks, check
from drlib.evidence import Evidence, utcnow
from drlib.exceptions import DrlibError
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.redis.backup import list_redis_backups
from drlib.redis.connection import ping
from drlib.redis.restore import VerifiedRedisBackup, restore_redis, verify_redis, verify_redis_backup
from drlib.runbooks.base import COMMON_PARAMS, Outcome, Runbook
from drlib.selection import select_backup


def safe_to_lose_table(notes: dict[str, str]) -> pd.DataFrame:
    """Which key prefixes the application can lose, and what losing them costs."""
    return pd.DataFrame([{"prefix": f"{p}:*", "if lost": note} for p, note in notes.items()])


class RedisLoss(Runbook):
    """Restore Redis from the newest RDB snapshot before the failure, verify it, check the app."""

    scenario = "redis_loss"
    title = "Redis loss"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("redis_backup", str, "latest", "'latest' (newest before failure_time) or an RDB file name"),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.verified: VerifiedRedisBackup | None = None

    def pre_restore_checklist(self) -> Outcome:
        """Is Redis down or empty; the newest RDB before the failure, located and verified."""
        return self.run_step("redis_pre_restore_checklist", self._checklist)

    def _checklist(self) -> Outcome:
        try:
            ping(self.profile)
            state = "up"
        except DrlibError as exc:
            state = f"down: {exc.message}"
        backups = list_redis_backups(self.profile.backups.redis_dir)
        chosen = select_backup(
            backups, selection=self.values["redis_backup"], before=self.failure_time, what="Redis backup"
        )
        self.verified = verify_redis_backup(chosen)
        self.evidence.note("redis_backup", {"name": chosen.name, "created_at": chosen.created_at.isoformat()})
        results = [
            check("redis_failure_scope", state != "up", expected="Redis down or lost", observed=state, warn_only=True),
            check(
                "redis_backup_located",
                True,
                expected=f"RDB before {self.failure_time:%Y-%m-%d %H:%M:%S}Z",
                observed=chosen.name,
            ),
            *self.verified.checks,
        ]
        return Outcome(
            "Redis pre-restore checklist",
            facts={"backup": chosen.name, "keys in backup": self.verified.manifest.keys},
            checks=Checks(results),
            table=safe_to_lose_table(self.profile.redis.key_notes),
        )

    def restore(self) -> Outcome:
        """Stop Redis, put the RDB in its data folder (the old file is kept), start it, wait for the load."""
        return self.run_step("restore_redis", self._restore)

    def _restore(self) -> Outcome:
        verified = self._require_verified()
        result = restore_redis(verified, profile=self.profile, confirm=self.confirm)
        if isinstance(result, RestorePlan):
            return Outcome("Restore Redis", facts={"dry_run": True, "plan": str(result)})
        return Outcome(
            "Restore Redis",
            facts={
                "backup": result.backup,
                "data file": result.data_file,
                "old file kept": result.kept_old or "none",
                "seconds": round(result.seconds, 2),
            },
        )

    def verify_restore(self) -> Outcome:
        """Key counts per prefix and the dataset digest equal the backup's; the achieved RPO."""
        return self.run_step("verify_redis", self._verify)

    def _verify(self) -> Outcome:
        verified = self._require_verified()
        if not self.confirm:
            return Outcome("Verify Redis", facts={"dry_run": True})
        checks = [
            *verify_redis(self.profile, verified.manifest),
            self.rpo("redis", verified.backup.created_at),
        ]
        return Outcome("Verify Redis", checks=Checks(checks))

    def test_application(self) -> Outcome:
        """Health passes and a login works (it writes a session to Redis); a job can be created."""
        return self.run_step("test_application", self._test_application)

    def _test_application(self) -> Outcome:
        if not self.confirm:
            return Outcome("Test application", facts={"dry_run": True})
        app = self.profile.app
        health = wait_healthy(app.base_url, path=app.health_path, timeout=self.values["health_timeout"])
        if health.passed:
            self.evidence.note("service_restored_at", utcnow().isoformat())
        return Outcome("Test application", checks=Checks([health, *login_and_create_job(self.profile)]))

    def _require_verified(self) -> VerifiedRedisBackup:
        if self.verified is None:
            self.pre_restore_checklist()
        assert self.verified is not None
        return self.verified
