"""Restore Runbook → Scenario 1: PostgreSQL Database Loss (Option A and Option B), with the
Pre-Restore Checklist and the database part of the Verify Restore Procedure."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from drlib.app.health import wait_healthy
from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.evidence import Evidence
from drlib.exceptions import BackupCorrupt, RestoreFailed, VerificationFailed
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.backup import backup_database
from drlib.postgres.catalogue import catalogue_table, list_backups, select_backup
from drlib.postgres.connection import PgTarget
from drlib.postgres.integrity import BackgroundChecksum, VerifiedBackup, verify_backup
from drlib.postgres.restore import (
    MAX_RESTORE_JOBS,
    drop_old_database,
    restore_in_place,
    restore_to_new_database,
    restored_name,
    swap_databases,
)
from drlib.postgres.verify import Depth, verify_database
from drlib.preflight import (
    RESTORE_HEADROOM,
    credentials_and_connectivity,
    data_directory,
    disk_space,
    failure_scope,
    stack_reachable,
)
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.services import ServiceController, controller_for, stopped_check
from drlib.staging import DrillSetup, fail_after_backup, prepare_rows_after_backup, write_rows_after_backup
from drlib.steps import Outcome, step


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
        Param("jobs", int, 4, "parallel pg_restore jobs (-j)", minimum=1, maximum=MAX_RESTORE_JOBS),
        Param("require_manifest", bool, True, "refuse backups without a drlib manifest (checksum)"),
        Param("drop_old_database", bool, False, "Option B: drop the replaced database after the swap"),
        Param(
            "verify_rows",
            bool,
            True,
            "read every row after the restore (row counts, content checksums, newest rows, orphans); "
            "False checks the catalogue only: faster, run `drlib verify database -p exact true` later",
        ),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.target = PgTarget.from_profile(self.profile)
        #: None on a profile without an application: its steps report "not configured"
        self.app: ServiceController | None = controller_for(self.profile) if self.profile.app else None
        self.verified: VerifiedBackup | None = None
        #: Option B: the backup's whole-file sha256, read in the background from the checklist on; a step
        #: that changes the live stack before the restore (stopping the application) waits for it first
        self.checksum: BackgroundChecksum | None = None
        #: Option B verified every row of the copy before swapping it in: Step 4 need not read them again
        self.copy_verified = False

    # Pre-Restore Checklist -------------------------------------------------------------
    @step(
        "pre_restore_checklist",
        title="Pre-restore checklist",
        what="""Identify the failure scope (which components are down), check credentials and connectivity
        to the database server, locate the newest backup taken before `failure_time`, verify its integrity
        (size, checksum against its manifest, `pg_restore --list`; for Option A the whole dump is read
        through) and check there is enough free disk space for the restore.""",
        why="""A restore from a bad backup, or one that runs out of disk half-way, makes the outage longer.
        Nothing is touched in this step.""",
        if_fails="""The error says what to fix: a corrupt backup, pick an earlier one with
        `backup = "<name>.dump"`; a wrong password, fix the secret; disk, free space. Notify stakeholders
        and document the incident before going on.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def pre_restore_checklist(self) -> Outcome:
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
            self.verified = verify_backup(
                chosen,
                require_manifest=self.values["require_manifest"],
                deep=self.values["option"] == "A",
                # Option B restores into a copy: its table of contents is proven now, the rest while restoring
                defer_checksum=self.values["option"] == "B" and self.confirm,
            )
        except BackupCorrupt as exc:
            self.evidence.add_checks(
                [check("backup_verified", False, expected="intact", observed="corrupt", detail=exc.message)]
            )
            raise
        results.extend(self.verified.checks)
        self.checksum = BackgroundChecksum(self.verified) if self.verified.checksum_pending else None
        manifest = self.verified.manifest
        needed = int((manifest.database_size_bytes if manifest else chosen.size_bytes * 5) * RESTORE_HEADROOM)
        results.append(disk_space(path=data_directory(self.target), required_bytes=needed))
        self.evidence.note(
            "backup",
            {"name": chosen.name, "created_at": chosen.created_at.isoformat(), "size_bytes": chosen.size_bytes},
        )
        return Outcome("Pre-restore checklist", facts={"backup": chosen.name}, checks=Checks(results))

    # Step 1 ------------------------------------------------------------------------------
    @step(
        "stop_application",
        title="Step 1: Stop the application",
        what="""Stop the API (`docker compose stop api`, the systemd unit, a shell command or the sandbox
        process, as the profile says).""",
        why="Nothing may write to the database while it is restored.",
        if_fails="Stop it by hand, then re-run this cell.",
        roll_back="Step 5 starts it again; or start it by hand with the profile's start command.",
        dry_run="skip",
        would="stop {rb.app.description}",
        needs=("app",),
    )
    def stop_application(self) -> Outcome:
        app = self._app()
        proven = self._whole_backup_proven()  # never stop the application for a backup that fails
        app.stop()
        self.set_state("application", f"stopped ({app.description}); Step 5 starts it again")
        return Outcome(
            "Stop application", facts={"stopped": app.description}, checks=Checks([*proven, stopped_check(app)])
        )

    # Step 2 ------------------------------------------------------------------------------
    @step(
        "identify_backup",
        title="Step 2: Identify the backup",
        what="""The backup catalogue, and the backup chosen: the most recent before the failure, its
        timestamp, and that it is not 0 bytes.""",
        why="The backup's time is the recovery point: every write after it is lost.",
        if_fails="If the wrong backup is chosen, set `backup` in the parameters cell and re-run from the top.",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def identify_backup(self) -> Outcome:
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
            table=lambda: catalogue_table(backups),
        )

    # Step 3 ------------------------------------------------------------------------------
    @step(
        "restore_database",
        title="Step 3: Restore the database",
        what="""**Option B** (default, safe): restore into a new database `<name>_restored_<time>` with
        parallel `pg_restore -j`, verify the copy, then swap names; the replaced database is kept as
        `<name>_old_<time>` and dropped only with `drop_old_database = True`. **Option A**: after the whole
        dump was read through, one transaction in the live database resets it to an empty one (every schema,
        extension, large object and the like dropped, `public` recreated as a new database has it), replays
        the dump through `psql`, and commits only if all of it succeeded. It works on partitioned tables,
        where `pg_restore --clean` fails; what it could not empty (an object made inside `pg_catalog`, a
        subscription) is refused before anything is written.""",
        why="""The database is what the application cannot run without; the runbook's two options trade speed
        for keeping the live database until the copy is proven.""",
        if_fails="""With Option B the live database is untouched and the partial copy is dropped; with
        Option A the transaction is rolled back (on an error, a timeout or an interrupt alike) and the
        database is exactly as it was: if Option A was refused or keeps failing, use Option B. The message
        says the state of the database and the application.""",
        roll_back="""Option B: rename `<name>_old_<time>` back (`ALTER DATABASE <name> RENAME TO
        <name>_restored; ALTER DATABASE <name>_old_<time> RENAME TO <name>`). Option A: restore the backup
        taken before it.""",
        dry_run="plan",
    )
    def restore_database(self) -> Outcome | RestorePlan:
        verified = self._require_verified()
        jobs = self.values["jobs"]
        if self.values["option"] == "A":
            result = restore_in_place(verified, target=self.target, jobs=jobs, confirm=self.confirm)
            if isinstance(result, RestorePlan):
                return result
            self.set_state("database", f"{result.database} restored in place from {verified.backup.name}")
            self.evidence.note("restore", {"option": "A", "seconds": result.seconds, "database": result.database})
            return Outcome(
                "Restore (Option A)",
                facts={
                    "database": result.database,
                    "seconds": round(result.seconds, 2),
                    "jobs": result.jobs,
                    **({"notes": "; ".join(result.notes)} if result.notes else {}),
                },
            )
        copy = restored_name(self.target.name)
        if self.confirm:  # said before the long part, so a run cut short still names what it left
            self.set_state(
                "database", f"restoring into {copy}; if this run was cut short, drop it: DROP DATABASE {copy};"
            )
        try:
            restored = restore_to_new_database(
                verified, target=self.target, jobs=jobs, confirm=self.confirm, new_name=copy, checksum=self.checksum
            )
        except (RestoreFailed, BackupCorrupt):
            self.set_state("database", f"{self.target.name} untouched by the restore (the copy: see the error)")
            raise
        if isinstance(restored, RestorePlan):
            return restored
        copy_checks = verify_database(
            target=self.target.with_database(restored.database),
            manifest=verified.manifest,
            jobs=jobs,
            depth="full" if self.values["verify_rows"] else "schema",
            fresh_restore=True,
        )
        copy_checks = Checks(
            [
                *restored.checks,
                *(
                    check(
                        f"restored_copy:{c.name}",
                        c.status != "fail",
                        expected=c.expected,
                        observed=c.observed,
                        detail=c.detail,
                    )
                    for c in copy_checks
                ),
            ]
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
            **({"notes": "; ".join(restored.notes)} if restored.notes else {}),
            "jobs": jobs,
        }
        dropped = bool(swap.old_database and self.values["drop_old_database"])
        if dropped and swap.old_database:
            facts["dropped"] = drop_old_database(target=self.target, name=swap.old_database, confirm=True)
            facts["old_database_kept"] = f"none ({swap.old_database} dropped: drop_old_database = True)"
        replaced = (
            f"; the replaced one {'was dropped' if dropped else 'kept as'} {swap.old_database}"
            if swap.old_database
            else ""
        )
        self.set_state("database", f"{swap.database} restored from {verified.backup.name}{replaced}")
        self.evidence.note(
            "restore",
            {"option": "B", "seconds": restored.seconds, "database": swap.database, "old_database": swap.old_database},
        )
        self.copy_verified = True
        return Outcome("Restore (Option B)", facts=facts, checks=copy_checks)

    # Step 4 ------------------------------------------------------------------------------
    @step(
        "verify_restore",
        title="Step 4: Verify the restore",
        what="""The runbook's database verification, object by object against the backup's manifest:
        connection (`SELECT version()`); the schema fingerprint (tables, columns, constraints, indexes,
        triggers, functions, views, sequences, partitions, types, extensions, policies, grants), sequences
        not behind the backup, the database's owner, privileges, settings and comment, and its roles; per
        table the row count, the content fingerprint (a checksum of every row) and the newest row; no
        orphaned rows for any foreign key; and the achieved RPO against its target. After Option B the rows
        were already proven on the copy before the swap, so this step re-reads only the catalogue.""",
        why="""A restore that completed is not a restore that is right: the application must not start on a
        database that lost objects, privileges or rows, or whose rows changed.""",
        if_fails="Do not restart the application; investigate, or restore another backup.",
        roll_back="Nothing to roll back: this step only reads.",
        dry_run="skip",
        would="verify {rb.target.settings.address} against the backup's manifest",
    )
    def verify_restore(self) -> Outcome:
        verified = self._require_verified()
        rows = self.values["verify_rows"] and not self.copy_verified
        depth: Depth = "full" if rows else "schema"
        checks = list(
            verify_database(target=self.target, manifest=verified.manifest, depth=depth, jobs=self.values["jobs"])
        )
        if not self.values["verify_rows"]:
            checks.append(
                check(
                    "rows_verified",
                    False,
                    expected="every row read",
                    observed="not asked for (verify_rows = False)",
                    detail="only the catalogue was compared: run `drlib verify database -p exact true` before "
                    "the application writes",
                    warn_only=True,
                )
            )
        checks.append(self.rpo("postgres", verified.backup.created_at))
        return Outcome("Verify restore", checks=Checks(checks))

    # Step 5 ------------------------------------------------------------------------------
    @step(
        "restart_application",
        title="Step 5: Restart the application",
        what="Start the API again and wait until `GET /health` answers 200 (with retries).",
        why="The moment it does is when the outage ends (the measured RTO).",
        if_fails="Read the application's logs; the database is already restored.",
        roll_back="Stop the application again (Step 1) if it misbehaves.",
        dry_run="skip",
        would="start {rb.app.description} and wait for /health",
        needs=("app",),
        ends_outage=True,
    )
    def restart_application(self) -> Outcome:
        app = self._app()
        health = self.start_application(app)
        return Outcome(
            "Restart application", facts={"started": app.description}, checks=self.service_restored_if(Checks([health]))
        )

    # Step 6 ------------------------------------------------------------------------------
    @step(
        "post_restore_verification",
        title="Step 6: Post-restore verification",
        what="""The health check passes, the test account can log in (`POST /v1/auth/login`) and a new
        content job can be created (`POST /v1/content-jobs`).""",
        why="Users notice what the application does, not what the database holds.",
        if_fails="Keep the incident open; the summary below lists what failed.",
        roll_back="Nothing to roll back: the test job is ordinary data.",
        dry_run="skip",
        would="log in with the test account and create a content job",
        needs=("app",),
    )
    def post_restore_verification(self) -> Outcome:
        from drlib.app.functional import login_and_create_job  # storage checks: not a restore's start-up

        app = self.profile.require_app()
        health = wait_healthy(app.base_url, path=app.health_path, timeout=10, name="post_restore_health")
        return Outcome("Post-restore verification", checks=Checks([health, *login_and_create_job(self.profile)]))

    def _app(self) -> ServiceController:
        """The application's controller (:class:`NotConfigured` on a profile without one)."""
        return self.app or controller_for(self.profile)

    def _whole_backup_proven(self) -> list[CheckResult]:
        """Wait for the background checksum, if one is running; its check (raises BackupCorrupt)."""
        checksum, self.checksum = self.checksum, None
        if checksum is None or self.verified is None:
            return []
        done = checksum.result()
        self.verified = dataclasses.replace(self.verified, checksum_pending=False)
        return [done] if done else []

    def _require_verified(self) -> VerifiedBackup:
        if self.verified is None:
            self.pre_restore_checklist()
        assert self.verified is not None
        return self.verified


# -- drills ---------------------------------------------------------------------------------
def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """A named backup must exist and verify (read through for Option A) before the drill drops anything."""
    return stack_reachable(profile) + named_backup_checks(
        profile,
        selection=params["backup"],
        require_manifest=params["require_manifest"],
        deep=params["option"] == "A",
    )


def named_backup_checks(profile: Profile, *, selection: str, require_manifest: bool, deep: bool) -> list[CheckResult]:
    """The database backup a drill was told to use exists and verifies ('latest' is taken by the drill)."""
    if selection == "latest":
        return []
    backups = list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix)
    verified = verify_backup(select_backup(backups, selection=selection), require_manifest=require_manifest, deep=deep)
    return list(verified.checks)


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Backup, rows written after it (Content Crew: 25 jobs and 2 users; any other database: 25 rows in
    drlib_drill.rpo_probe, created before the backup), then the live database is dropped."""
    from drlib import faults  # drills only: not a restore's start-up

    target = PgTarget.from_profile(profile)
    prepare_rows_after_backup(target)
    backup = backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    return fail_after_backup(
        backup,
        write=lambda token: write_rows_after_backup(target, token=token),
        inject=lambda: faults.drop_live_database(target),
        fault=f"dropped database {target.name}",
    )


SCENARIO = Scenario(
    id="postgres_database_loss",
    runbook=PostgresDatabaseLoss,
    summary="Restore Runbook → Scenario 1 of `disaster-recovery-plan.md`, with the Pre-Restore Checklist "
    "and the database part of the Verify Restore Procedure.",
    stage=stage,
    preflight=preflight,
    rto_kind="database_loss",
    rpo_component="postgres",
)
