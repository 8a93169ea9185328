"""Redis loss: the RPO table's Redis row (1 hour). Redis holds cache and sessions the runbook
treats as rebuildable, plus a job queue that is not: the notebook says which keys are safe to lose."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from drlib import faults
from drlib.app.functional import login_and_create_job
from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.evidence import Evidence
from drlib.exceptions import DrlibError
from drlib.lazy import lazy_module
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.preflight import stack_reachable
from drlib.redis.backup import backup_redis, list_redis_backups
from drlib.redis.connection import ping
from drlib.redis.restore import VerifiedRedisBackup, restore_redis, verify_redis, verify_redis_backup
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.selection import select_backup
from drlib.staging import DrillSetup, fail_after_backup, write_keys_after_backup
from drlib.steps import Outcome, step

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")


def safe_to_lose_table(notes: dict[str, str]) -> pd.DataFrame:
    """Which key prefixes the application can lose, and what losing them costs."""
    return pd.DataFrame([{"prefix": f"{p}:*", "if lost": note} for p, note in notes.items()])


class RedisLoss(Runbook):
    """Restore Redis from the newest RDB snapshot before the failure, verify it, check the app."""

    scenario = "redis_loss"
    title = "Redis loss"
    needs = ("redis",)
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("redis_backup", str, "latest", "'latest' (newest before failure_time) or an RDB file name"),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.verified: VerifiedRedisBackup | None = None

    @step(
        "redis_pre_restore_checklist",
        title="Pre-restore checklist",
        what="""Is Redis down or empty; the newest RDB snapshot before `failure_time`, its checksum against its
        manifest and `redis-check-rdb`. The table shows which keys are safe to lose: the runbook treats
        Redis as rebuildable cache and sessions (RPO 1 hour), but the job queue is not.""",
        why="""Restoring a truncated or altered snapshot would load bad data or keep Redis from starting; and
        knowing what is safe to lose decides whether a restore is worth the wait at all.""",
        if_fails="""A refused backup is named with the reason: pick an earlier one with
        `redis_backup = "<file>.rdb"`. If no backup is usable, Redis can start empty: users log in again,
        caches refill, and queued jobs are re-enqueued from `content_jobs` (status `queued`).""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def pre_restore_checklist(self) -> Outcome:
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
            table=lambda: safe_to_lose_table(self.profile.require_redis().key_notes),
        )

    @step(
        "restore_redis",
        title="Restore Redis",
        what="""Stop Redis, move its RDB file aside (kept as `dump.rdb.old-<time>`), put the backup in place,
        start Redis and wait until it has loaded the data. Refused when Redis runs with `appendonly yes`
        (it would ignore the RDB and start from its AOF).""",
        why="""Redis loads its dataset only at start-up, from the file in its data folder: the snapshot must be
        in place before it starts.""",
        if_fails="""The message says where it stopped and the state Redis is in. If Redis does not come back,
        read its log and check the data folder's permissions; with `appendonly yes`, turn AOF off for the
        restore (`CONFIG SET appendonly no`) and re-run this cell.""",
        roll_back="""Stop Redis, move `dump.rdb.old-<time>` back over `dump.rdb` (the path is in this step's
        output) and start Redis again.""",
        dry_run="plan",
    )
    def restore(self) -> Outcome | RestorePlan:
        verified = self._require_verified()
        result = restore_redis(verified, profile=self.profile, confirm=self.confirm)
        if isinstance(result, RestorePlan):
            return result
        self.set_state(
            "redis",
            f"restarted with {result.backup} loaded"
            + (
                f"; the previous data file kept at {result.kept_old} (stop Redis and move it back to undo)"
                if result.kept_old
                else ""
            ),
        )
        return Outcome(
            "Restore Redis",
            facts={
                "backup": result.backup,
                "data file": result.data_file,
                "old file kept": result.kept_old or "none",
                "seconds": round(result.seconds, 2),
            },
        )

    @step(
        "verify_redis",
        title="Verify Redis",
        what="""Key counts per prefix and the dataset digest equal the backup's (a digest over every key's type
        and value, computed by drlib), and the achieved RPO against the 1-hour target.""",
        why="""Redis answering PING does not mean it loaded the snapshot: an empty or partial dataset also
        answers.""",
        if_fails="""Redis may have started from another file (an AOF, a different `dir`/`dbfilename`): check
        `CONFIG GET dir` and `CONFIG GET dbfilename`, then restore again. If the cache is all that differs,
        starting empty is acceptable (see the keys safe to lose).""",
        roll_back="Nothing to roll back: this step only reads.",
        dry_run="skip",
        would="compare Redis's keys and digest with the backup's manifest",
    )
    def verify_restore(self) -> Outcome:
        verified = self._require_verified()
        checks = [
            *verify_redis(self.profile, verified.manifest),
            self.rpo("redis", verified.backup.created_at),
        ]
        return Outcome("Verify Redis", checks=Checks(checks))

    @step(
        "test_application",
        title="Test the application",
        what="`GET /health`, a login (which writes a session into Redis) and a new content job.",
        why="""Sessions and the job queue live in Redis: a login and a job prove the application can use it
        again. The moment this passes is when the outage ends (the measured RTO).""",
        if_fails="""Keep the incident open and read the application's logs: a login that fails while Redis is
        up usually means the application still points at the old Redis or needs a restart.""",
        roll_back="Nothing to roll back: the session and the test job are ordinary data.",
        dry_run="skip",
        would="check /health, log in and create a content job",
        needs=("app",),
        ends_outage=True,
    )
    def test_application(self) -> Outcome:
        health = self.service_restored_if(Checks([self.application_health()]))
        return Outcome("Test application", checks=Checks([*health, *login_and_create_job(self.profile)]))

    def _require_verified(self) -> VerifiedRedisBackup:
        if self.verified is None:
            self.pre_restore_checklist()
        assert self.verified is not None
        return self.verified


# -- drills ---------------------------------------------------------------------------------
def named_redis_backup_checks(profile: Profile, *, selection: str) -> list[CheckResult]:
    """The RDB a drill was told to use exists and verifies ('latest' is taken by the drill)."""
    if selection == "latest":
        return []
    backups = list_redis_backups(profile.backups.redis_dir)
    chosen = select_backup(backups, selection=selection, what="Redis backup")
    return list(verify_redis_backup(chosen).checks)


def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """A named Redis backup exists and verifies before the drill flushes Redis."""
    return stack_reachable(profile, redis_server=True) + named_redis_backup_checks(
        profile, selection=params["redis_backup"]
    )


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """RDB backup, 5 sessions written after it, then Redis flushed and killed without saving."""
    return fail_after_backup(
        backup_redis(profile),
        write=lambda token: write_keys_after_backup(profile, token=token),
        inject=lambda: faults.kill_redis(profile),
        fault="flushed Redis and shut it down without saving",
    )


SCENARIO = Scenario(
    id="redis_loss",
    runbook=RedisLoss,
    summary="The Redis row of the RPO table (1 hour): restore the newest RDB snapshot and verify it.",
    stage=stage,
    preflight=preflight,
    rto_kind="partial_failure",
    rpo_component="redis",
)
