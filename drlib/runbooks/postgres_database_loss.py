"""Restore Runbook → Scenario 1: PostgreSQL Database Loss (Option A and Option B), with the
Pre-Restore Checklist and the database part of the Verify Restore Procedure."""

from __future__ import annotations

from typing import ClassVar

from drlib.app.base import controller_for
from drlib.app.functional import login_and_create_job
from drlib.app.health import wait_healthy
from drlib.checks import Checks, check
from drlib.evidence import Evidence, utcnow
from drlib.exceptions import BackupCorrupt, VerificationFailed
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.catalogue import catalogue_table, list_backups, select_backup
from drlib.postgres.connection import PgTarget
from drlib.postgres.integrity import VerifiedBackup, verify_backup
from drlib.postgres.restore import (
    drop_old_database,
    restore_in_place,
    restore_to_new_database,
    swap_databases,
)
from drlib.postgres.verify import verify_database
from drlib.preflight import (
    RESTORE_HEADROOM,
    credentials_and_connectivity,
    data_directory,
    disk_space,
    failure_scope,
)
from drlib.runbooks.base import COMMON_PARAMS, Outcome, Runbook


class PostgresDatabaseLoss(Runbook):
    """Stop the application, restore the database from the newest good backup, verify, restart."""

    scenario = "postgres_database_loss"
    title = "PostgreSQL database loss"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("backup", str, "latest", "'latest' (newest before failure_time) or a backup file name"),
        Param(
            "option",
            str,
            "B",
            "A: restore into the existing database; B: new database, verify, swap",
            choices=("A", "B"),
        ),
        Param("jobs", int, 4, "parallel pg_restore jobs (-j)", minimum=1),
        Param("require_manifest", bool, True, "refuse backups without a drlib manifest (checksum)"),
        Param("drop_old_database", bool, False, "Option B: drop the replaced database after the swap"),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.target = PgTarget.from_profile(self.profile)
        self.app = controller_for(self.profile)
        self.verified: VerifiedBackup | None = None

    # Pre-Restore Checklist -------------------------------------------------------------
    def pre_restore_checklist(self) -> Outcome:
        """Failure scope, credentials and connectivity, backup located and verified, disk space."""
        return self.run_step("pre_restore_checklist", self._checklist)

    def _checklist(self) -> Outcome:
        results = [failure_scope(self.profile, self.target), credentials_and_connectivity(self.target)]
        backups = list_backups(self.profile.backups.postgres_dir, prefix=self.profile.backups.prefix)
        chosen = select_backup(backups, selection=self.values["backup"], before=self.failure_time)
        results.append(
            check(
                "backup_located",
                True,
                expected=f"backup before {self.failure_time:%Y-%m-%d %H:%M:%S}Z",
                observed=chosen.name,
                detail=str(chosen.path.parent),
            )
        )
        try:
            self.verified = verify_backup(chosen, require_manifest=self.values["require_manifest"])
        except BackupCorrupt as exc:
            self.evidence.add_checks(
                [check("backup_verified", False, expected="intact", observed="corrupt", detail=exc.message)]
            )
            raise
        results.extend(self.verified.checks)
        manifest = self.verified.manifest
        needed = int((manifest.database_size_bytes if manifest else chosen.size_bytes * 5) * RESTORE_HEADROOM)
        results.append(disk_space(path=data_directory(self.target), required_bytes=needed))
        self.evidence.note(
            "backup",
            {"name": chosen.name, "created_at": chosen.created_at.isoformat(), "size_bytes": chosen.size_bytes},
        )
        return Outcome("Pre-restore checklist", facts={"backup": chosen.name}, checks=Checks(results))

    # Step 1 ------------------------------------------------------------------------------
    def stop_application(self) -> Outcome:
        """Stop the API so nothing writes to the database during the restore."""
        return self.run_step("stop_application", self._stop)

    def _stop(self) -> Outcome:
        if not self.confirm:
            return Outcome("Stop application", facts={"dry_run": True, "would stop": self.app.description})
        self.app.stop()
        stopped = not self.app.is_running()
        return Outcome(
            "Stop application",
            facts={"stopped": self.app.description},
            checks=Checks(
                [
                    check(
                        "application_stopped",
                        stopped,
                        expected="stopped",
                        observed="stopped" if stopped else "still running",
                    )
                ]
            ),
        )

    # Step 2 ------------------------------------------------------------------------------
    def identify_backup(self) -> Outcome:
        """The catalogue, and the backup chosen: newest before the failure, not 0 bytes."""
        return self.run_step("identify_backup", self._identify)

    def _identify(self) -> Outcome:
        verified = self._require_verified()
        backups = list_backups(self.profile.backups.postgres_dir, prefix=self.profile.backups.prefix)
        chosen = verified.backup
        results = [
            check(
                "backup_before_failure",
                chosen.created_at <= self.failure_time,
                expected=f"<= {self.failure_time.isoformat(timespec='seconds')}",
                observed=chosen.created_at.isoformat(timespec="seconds"),
            ),
            check("backup_size_not_zero", chosen.size_bytes > 0, expected="> 0", observed=chosen.size_bytes),
        ]
        return Outcome(
            "Identify backup",
            facts={"selected": chosen.name, "taken_at": chosen.created_at.isoformat(timespec="seconds")},
            checks=Checks(results),
            table=catalogue_table(backups),
        )

    # Step 3 ------------------------------------------------------------------------------
    def restore_database(self) -> Outcome:
        """Option A: restore into the existing database. Option B: new database, verify, swap."""
        return self.run_step("restore_database", self._restore)

    def _restore(self) -> Outcome:
        verified = self._require_verified()
        jobs = self.values["jobs"]
        if self.values["option"] == "A":
            result = restore_in_place(verified, target=self.target, jobs=jobs, confirm=self.confirm)
            if isinstance(result, RestorePlan):
                return Outcome("Restore (Option A)", facts={"dry_run": True, "plan": str(result)})
            self.evidence.note("restore", {"option": "A", "seconds": result.seconds, "database": result.database})
            return Outcome(
                "Restore (Option A)",
                facts={"database": result.database, "seconds": round(result.seconds, 2), "jobs": jobs},
            )
        restored = restore_to_new_database(verified, target=self.target, jobs=jobs, confirm=self.confirm)
        if isinstance(restored, RestorePlan):
            return Outcome("Restore (Option B)", facts={"dry_run": True, "plan": str(restored)})
        copy_checks = verify_database(target=self.target.with_database(restored.database), manifest=verified.manifest)
        copy_checks = Checks(
            check(
                f"restored_copy:{c.name}", c.status != "fail", expected=c.expected, observed=c.observed, detail=c.detail
            )
            for c in copy_checks
        )
        if not copy_checks.passed:
            self.evidence.add_checks(copy_checks)
            failed = ", ".join(c.name for c in copy_checks.failures)
            raise VerificationFailed(
                f"the restored copy {restored.database} failed verification ({failed}); it was NOT swapped "
                f"in and the live database {self.target.name} is as it was. Inspect {restored.database}, "
                "then drop it or pick another backup."
            )
        swap = swap_databases(target=self.target, restored=restored.database, confirm=True)
        assert not isinstance(swap, RestorePlan)
        facts = {
            "database": swap.database,
            "restored_from": restored.database,
            "old_database_kept": swap.old_database or "none (live database was missing)",
            "seconds": round(restored.seconds, 2),
            "jobs": jobs,
        }
        if swap.old_database and self.values["drop_old_database"]:
            facts["dropped"] = drop_old_database(target=self.target, name=swap.old_database, confirm=True)
        self.evidence.note(
            "restore",
            {"option": "B", "seconds": restored.seconds, "database": swap.database, "old_database": swap.old_database},
        )
        return Outcome("Restore (Option B)", facts=facts, checks=copy_checks)

    # Step 4 ------------------------------------------------------------------------------
    def verify_restore(self) -> Outcome:
        """Tables, row counts, foreign keys, orphans, newest rows, and the achieved RPO."""
        return self.run_step("verify_restore", self._verify)

    def _verify(self) -> Outcome:
        verified = self._require_verified()
        if not self.confirm:
            return Outcome("Verify restore", facts={"dry_run": True, "would verify": self.target.settings.address})
        checks = list(verify_database(target=self.target, manifest=verified.manifest))
        checks.append(self.rpo("postgres", verified.backup.created_at))
        return Outcome("Verify restore", checks=Checks(checks))

    # Step 5 ------------------------------------------------------------------------------
    def restart_application(self) -> Outcome:
        """Start the API again and wait until /health answers 200."""
        return self.run_step("restart_application", self._restart)

    def _restart(self) -> Outcome:
        if not self.confirm:
            return Outcome("Restart application", facts={"dry_run": True, "would start": self.app.description})
        self.app.start()
        health = wait_healthy(
            self.profile.app.base_url, path=self.profile.app.health_path, timeout=self.values["health_timeout"]
        )
        if health.passed:
            self.evidence.note("service_restored_at", utcnow().isoformat())
        return Outcome("Restart application", facts={"started": self.app.description}, checks=Checks([health]))

    # Step 6 ------------------------------------------------------------------------------
    def post_restore_verification(self) -> Outcome:
        """Health passes, the test account can log in, a new content job can be created."""
        return self.run_step("post_restore_verification", self._post_restore)

    def _post_restore(self) -> Outcome:
        app = self.profile.app
        if not self.confirm:
            return Outcome("Post-restore verification", facts={"dry_run": True})
        health = wait_healthy(app.base_url, path=app.health_path, timeout=10, name="post_restore_health")
        return Outcome("Post-restore verification", checks=Checks([health, *login_and_create_job(self.profile)]))

    def _require_verified(self) -> VerifiedBackup:
        if self.verified is None:
            self.pre_restore_checklist()
        assert self.verified is not None
        return self.verified
