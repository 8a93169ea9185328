"""Restore Runbook → Scenario 3: Full System Loss. Provision the database and Redis first, then
restore the database, file storage and Redis with the other scenarios' runbooks (not copies of
them), start the application and verify the whole system."""

from __future__ import annotations

from typing import ClassVar

from drlib.app.base import controller_for, run_command
from drlib.app.functional import artifact_checks, login_and_create_job
from drlib.app.health import wait_healthy
from drlib.checks import CheckResult, Checks, check
from drlib.evidence import Evidence, utcnow
from drlib.parameters import Param
from drlib.postgres.connection import PgTarget
from drlib.preflight import credentials_and_connectivity
from drlib.redis.connection import ping
from drlib.runbooks.base import COMMON_PARAMS, Outcome, Runbook
from drlib.runbooks.postgres_database_loss import PostgresDatabaseLoss
from drlib.runbooks.redis_loss import RedisLoss
from drlib.runbooks.storage_loss import StorageLoss
from drlib.storage.backends import live_storage


def combined(title: str, *outcomes: Outcome) -> Outcome:
    return Outcome(
        title,
        facts={k: v for o in outcomes for k, v in o.facts.items()},
        checks=Checks(c for o in outcomes for c in o.checks),
    )


class FullSystemLoss(Runbook):
    """Everything is gone but the backups: rebuild the stack from them."""

    scenario = "full_system_loss"
    title = "Full system loss"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("backup", str, "latest", "database backup: 'latest' before failure_time, or a file name"),
        Param("storage_backup", str, "latest", "storage backup: 'latest' before failure_time, or a name"),
        Param("redis_backup", str, "latest", "Redis RDB: 'latest' before failure_time, or a file name"),
        Param("jobs", int, 4, "parallel pg_restore jobs (-j)", minimum=1),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        common = self.common_values()
        self.database = PostgresDatabaseLoss(
            evidence=self.evidence, **common, backup=self.values["backup"], option="A", jobs=self.values["jobs"]
        )
        self.storage = StorageLoss(
            evidence=self.evidence, **common, storage_kind="local", storage_backup=self.values["storage_backup"]
        )
        self.cache = RedisLoss(evidence=self.evidence, **common, redis_backup=self.values["redis_backup"])

    # Step 1 -------------------------------------------------------------------------------
    def provision_infrastructure(self) -> Outcome:
        """Start a fresh database server and Redis (``docker compose up -d db redis``) and wait for them."""
        return self.run_step("provision_infrastructure", self._provision)

    def _provision(self) -> Outcome:
        if not self.confirm:
            return Outcome("Provision infrastructure", facts={"dry_run": True, "would start": "database and Redis"})
        if self.profile.is_sandbox:
            from drlib.sandbox.stack import sandbox_for

            sandbox_for(self.profile).up(seed_data=False, start_api=False)
            how = "fresh sandbox: new PostgreSQL cluster, empty Redis, S3 endpoint"
        elif self.profile.app.controller == "compose":
            app = self.profile.app
            run_command(
                [
                    "docker",
                    "compose",
                    *(["-f", app.compose_file] if app.compose_file else []),
                    "up",
                    "-d",
                    "db",
                    "redis",
                ],
                what="docker compose up -d db redis",
            )
            how = "docker compose up -d db redis"
        else:
            how = "provisioned by the operator (checked below)"
        results: list[CheckResult] = [credentials_and_connectivity(PgTarget.from_profile(self.profile))]
        ping(self.profile)
        results.append(check("redis_up", True, expected="PING answers", observed="PONG"))
        return Outcome("Provision infrastructure", facts={"how": how}, checks=Checks(results))

    # Steps 2-4: the other scenarios' runbooks, sharing this run's evidence ---------------------
    def restore_database(self) -> Outcome:
        """Scenario 1's checklist, Option A restore (into the fresh server) and verification."""
        return combined(
            "Restore database",
            self.database.pre_restore_checklist(),
            self.database.restore_database(),
            self.database.verify_restore(),
        )

    def restore_file_storage(self) -> Outcome:
        """Scenario 2's locate, restore and verify, from the local archive or full copy."""
        return combined(
            "Restore file storage",
            self.storage.locate_backup(),
            self.storage.restore_storage(),
            self.storage.verify_restore(),
        )

    def restore_redis(self) -> Outcome:
        """The Redis runbook's checklist, restore and verification."""
        return combined(
            "Restore Redis", self.cache.pre_restore_checklist(), self.cache.restore(), self.cache.verify_restore()
        )

    # Step 5 -------------------------------------------------------------------------------
    def restore_application(self) -> Outcome:
        """Start the application and wait until ``/health`` answers 200."""
        return self.run_step("restore_application", self._start_application)

    def _start_application(self) -> Outcome:
        if not self.confirm:
            return Outcome("Restore application", facts={"dry_run": True})
        app = controller_for(self.profile)
        app.start()
        health = wait_healthy(
            self.profile.app.base_url, path=self.profile.app.health_path, timeout=self.values["health_timeout"]
        )
        if health.passed:
            self.evidence.note("service_restored_at", utcnow().isoformat())
        return Outcome("Restore application", facts={"started": app.description}, checks=Checks([health]))

    # Step 6 -------------------------------------------------------------------------------
    def verify_system(self) -> Outcome:
        """Health checks passing, content jobs can be created, artifacts accessible."""
        return self.run_step("verify_system", self._verify_system)

    def _verify_system(self) -> Outcome:
        if not self.confirm:
            return Outcome("Verify system", facts={"dry_run": True})
        app = self.profile.app
        health = wait_healthy(app.base_url, path=app.health_path, timeout=10, name="system_health")
        storage = live_storage(self.profile, kind="local")
        return Outcome(
            "Verify system",
            checks=Checks([health, *login_and_create_job(self.profile), *artifact_checks(self.profile, storage)]),
        )
