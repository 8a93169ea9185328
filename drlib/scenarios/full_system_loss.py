"""Restore Runbook → Scenario 3: Full System Loss. Provision the database and Redis first, then
restore the database, file storage and Redis with the other scenarios' runbooks (not copies of
them), start the application and verify the whole system."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from drlib import faults
from drlib.app.functional import artifact_checks, login_and_create_job
from drlib.app.health import wait_healthy
from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.evidence import Evidence
from drlib.parameters import Param
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget
from drlib.postgres.restore import MAX_RESTORE_JOBS
from drlib.preflight import credentials_and_connectivity, stack_reachable
from drlib.redis.backup import backup_redis
from drlib.redis.connection import ping
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.scenarios.postgres_database_loss import PostgresDatabaseLoss, named_backup_checks
from drlib.scenarios.redis_loss import RedisLoss, named_redis_backup_checks
from drlib.scenarios.storage_loss import StorageLoss, named_storage_backup_checks
from drlib.services import controller_for, provision
from drlib.staging import (
    DrillSetup,
    fail_after_backup,
    write_files_after_backup,
    write_keys_after_backup,
    write_rows_after_backup,
)
from drlib.steps import Outcome, combined, step
from drlib.storage.backends import live_storage
from drlib.storage.backup import archive_local


class FullSystemLoss(Runbook):
    """Everything is gone but the backups: rebuild the stack from them."""

    scenario = "full_system_loss"
    title = "Full system loss"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("backup", str, "latest", "database backup: 'latest' before failure_time, or a file name"),
        Param("storage_backup", str, "latest", "storage backup: 'latest' before failure_time, or a name"),
        Param("redis_backup", str, "latest", "Redis RDB: 'latest' before failure_time, or a file name"),
        Param("jobs", int, 4, "parallel pg_restore jobs (-j)", minimum=1, maximum=MAX_RESTORE_JOBS),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        common = self.common_values()
        self.database = PostgresDatabaseLoss(
            evidence=self.evidence, **common, backup=self.values["backup"], option="A", jobs=self.values["jobs"]
        )
        # storage and Redis only where the profile has them (their steps say "not configured" otherwise)
        self.storage = (
            StorageLoss(
                evidence=self.evidence, **common, storage_kind="local", storage_backup=self.values["storage_backup"]
            )
            if self.profile.storage
            else None
        )
        self.cache = (
            RedisLoss(evidence=self.evidence, **common, redis_backup=self.values["redis_backup"])
            if self.profile.redis
            else None
        )

    # Step 1 -------------------------------------------------------------------------------
    @step(
        "provision_infrastructure",
        title="Step 1: Provision infrastructure",
        what="""Start a fresh database server and Redis first (`docker compose up -d db redis`; in the sandbox
        a fresh sandbox without data or API; with another controller the operator provisions them) and check
        that both answer.""",
        why="""Nothing can be restored into servers that do not exist; the application stays down until the
        data is back, so only the database and Redis are started here.""",
        if_fails="""The error names the server that does not answer. Check `docker compose ps` and the
        containers' logs, or provision the servers by hand, then re-run this cell.""",
        roll_back="""`docker compose stop db redis` (in the sandbox `drlib sandbox down`): the new servers hold
        no data yet.""",
        dry_run="skip",
        would="start a fresh database server and Redis for profile {rb.profile.name} and check they answer",
    )
    def provision_infrastructure(self) -> Outcome:
        with_redis = self.profile.redis is not None
        how = provision(self.profile, ["db", "redis"] if with_redis else ["db"])
        self.set_state("infrastructure", f"database{' and Redis' if with_redis else ''} started, empty ({how})")
        results: list[CheckResult] = [credentials_and_connectivity(PgTarget.from_profile(self.profile))]
        facts = {"how": how}
        if with_redis:
            ping(self.profile)
            results.append(check("redis_up", True, expected="PING answers", observed="PONG"))
        else:
            facts["redis"] = self.profile.not_configured("redis")
        return Outcome("Provision infrastructure", facts=facts, checks=Checks(results))

    # Steps 2-3b: the other scenarios' runbooks, sharing this run's evidence -------------------
    @step(
        "restore_database",
        title="Step 2: Restore the database",
        what="""Scenario 1's pre-restore checklist, restore (Option A: the server is new, there is nothing to
        keep) and verification: the same runbook code as the PostgreSQL database loss notebook, recording
        its steps into this run's evidence.""",
        why="Every other part of the stack refers to the database: it is restored first.",
        if_fails="""The failing sub-step says what to fix, as in the PostgreSQL database loss notebook (a
        corrupt backup: set `backup`; a refused password: fix the secret). Re-run this cell after the fix.""",
        roll_back="""The server is new: drop the restored database and run this cell again, with another
        `backup` if needed.""",
        composite=True,
    )
    def restore_database(self) -> Outcome:
        return combined(
            "Restore database",
            self.database.pre_restore_checklist(),
            self.database.restore_database(),
            self.database.verify_restore(),
        )

    @step(
        "restore_file_storage",
        title="Step 3: Restore file storage",
        what="""Scenario 2's locate, restore (staging folder, then swap) and verification of the local storage,
        from the newest archive or full copy before `failure_time`.""",
        why="""The application's artifacts (voiceovers, videos, images) live here; the database's
        `storage_key`s point at them.""",
        if_fails="""The live tree is untouched and the message says what was wrong; pick another backup with
        `storage_backup` and re-run this cell.""",
        roll_back="Rename the restored tree aside and the kept `storage.old-<time>` (if any) back.",
        composite=True,
        needs=("storage",),
    )
    def restore_file_storage(self) -> Outcome:
        assert self.storage is not None  # needs=("storage",)
        return combined(
            "Restore file storage",
            self.storage.locate_backup(),
            self.storage.restore_storage(),
            self.storage.verify_restore(),
        )

    @step(
        "restore_redis",
        title="Step 3b: Restore Redis",
        what="""The Redis runbook's checklist, restore and verification. Sessions and cache may also be left
        empty: see the Redis notebook's table of keys safe to lose.""",
        why="The job queue lives in Redis; sessions spare users a new login.",
        if_fails="""A refused RDB is named: set `redis_backup` to an earlier one. If none is usable, go on with
        an empty Redis and re-enqueue queued jobs from `content_jobs`.""",
        roll_back="Stop Redis, move the kept `dump.rdb.old-<time>` back (if any) and start it again.",
        composite=True,
        needs=("redis",),
    )
    def restore_redis(self) -> Outcome:
        assert self.cache is not None  # needs=("redis",)
        return combined(
            "Restore Redis", self.cache.pre_restore_checklist(), self.cache.restore(), self.cache.verify_restore()
        )

    # Step 4 -------------------------------------------------------------------------------
    @step(
        "restore_application",
        title="Step 4: Restore the application",
        what="Start the API (`docker compose up -d`) and wait until `GET /health` answers 200.",
        why="The outage ends here: the moment `/health` answers is the measured RTO.",
        if_fails="""Read the application's logs (`docker compose logs api`): it usually cannot reach the
        database or Redis with its configured address or credentials.""",
        roll_back="Stop the application again (`docker compose stop api`) if it misbehaves.",
        dry_run="skip",
        would="start the application ({rb.profile.app.controller} controller) and wait for /health",
        needs=("app",),
        ends_outage=True,
    )
    def restore_application(self) -> Outcome:
        app = controller_for(self.profile)
        health = self.start_application(app)
        return Outcome(
            "Restore application", facts={"started": app.description}, checks=self.service_restored_if(Checks([health]))
        )

    # Step 5 -------------------------------------------------------------------------------
    @step(
        "verify_system",
        title="Step 5: Verify the system",
        what="Health checks passing, the test account logs in, content jobs can be created, artifacts accessible.",
        why="Each part was verified on its own; this proves they work together, as users use them.",
        if_fails="""Keep the incident open; the failed check points at the part (login: database or Redis;
        download: storage). Run the Verify restore notebook for the full picture.""",
        roll_back="Nothing to roll back: the test job is ordinary data.",
        dry_run="skip",
        would="check /health, log in, create a content job and download an artifact",
        needs=("app",),
    )
    def verify_system(self) -> Outcome:
        app = self.profile.require_app()
        health = wait_healthy(app.base_url, path=app.health_path, timeout=10, name="system_health")
        checks = [health, *login_and_create_job(self.profile)]
        if self.profile.storage is not None and self.profile.content_crew_schema:
            checks += artifact_checks(self.profile, live_storage(self.profile, kind="local"))
        return Outcome("Verify system", checks=Checks(checks))


# -- drills ---------------------------------------------------------------------------------
def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """Every named backup (database, storage, Redis) exists and verifies before the stack is destroyed."""
    return [
        *stack_reachable(profile, redis_server=True),
        *named_backup_checks(profile, selection=params["backup"], require_manifest=True, deep=True),
        *named_storage_backup_checks(profile, selection=params["storage_backup"], storage_kind="local"),
        *named_redis_backup_checks(profile, selection=params["redis_backup"]),
    ]


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Backups of all three, data written after them in all three, then the whole stack is destroyed."""
    target = PgTarget.from_profile(profile)
    db = backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    storage_root = Path(profile.require_storage().path)
    archive_local(root=storage_root, backup_dir=profile.backups.storage_dir)
    backup_redis(profile)
    return fail_after_backup(
        db,
        write=lambda token: {
            **write_rows_after_backup(target, token=token),
            **write_files_after_backup(storage_root, token=token),
            **write_keys_after_backup(profile, token=token),
        },
        inject=lambda: faults.destroy_sandbox(profile),
        fault="destroyed the whole stack: database cluster, Redis data, storage, processes",
    )


SCENARIO = Scenario(
    id="full_system_loss",
    runbook=FullSystemLoss,
    summary="Restore Runbook → Scenario 3: provision, restore database, storage and Redis, start the "
    "application, verify the system.",
    stage=stage,
    preflight=preflight,
    rto_kind="full_system_loss",
    rpo_component="postgres",
    sandbox_only=True,
)
