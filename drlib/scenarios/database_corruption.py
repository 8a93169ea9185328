"""Failure Scenarios → Scenario 1: Database Corruption. Detect the damage object by object (connection,
data checksums, amcheck on every btree index and table, a full read of every table), stop the
application, rebuild a damaged index where its table reads cleanly, and otherwise restore the database
with the PostgreSQL database-loss runbook's Option B (the same code, recording into this run); verify
that nothing damaged remains and restart the application."""

from __future__ import annotations

from typing import Any, ClassVar

from drlib.app.functional import login_and_create_job
from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.evidence import Evidence
from drlib.faults_corruption import Damage, damage_relations
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget
from drlib.postgres.corruption import CorruptionScan, reindex_indexes, scan_database
from drlib.postgres.restore import MAX_RESTORE_JOBS
from drlib.preflight import stack_reachable
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.scenarios.postgres_database_loss import PostgresDatabaseLoss, named_backup_checks
from drlib.services import controller_for, stopped_check
from drlib.staging import DrillSetup, fail_after_backup, write_rows_after_backup
from drlib.steps import Outcome, combined, frame, step

#: what the drill damages in the sandbox's Content Crew database, per ``drill_damage``
DRILL_DAMAGE: dict[str, dict[str, Damage]] = {
    "index": {"public.content_jobs_pkey": "page"},
    "table": {"public.content_artifacts": "page"},
}


class DatabaseCorruption(Runbook):
    """Find what is damaged; rebuild damaged indexes; restore from the backup when a table is damaged."""

    scenario = "database_corruption"
    title = "Database corruption"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("backup", str, "latest", "for a restore: 'latest' (newest before failure_time) or a backup file name"),
        Param("use_amcheck", bool, True, "check with amcheck (installed for the check when missing and allowed)"),
        Param("repair", bool, True, "rebuild damaged indexes whose table reads cleanly (REINDEX INDEX)"),
        Param("concurrently", bool, False, "REINDEX INDEX CONCURRENTLY (writes go on; slower)"),
        Param(
            "restore",
            bool,
            True,
            "restore the database from the backup (Option B) when a table is damaged or damage remains",
        ),
        Param("jobs", int, 4, "parallel pg_restore jobs (-j)", minimum=1, maximum=MAX_RESTORE_JOBS),
        Param(
            "drop_old_database",
            bool,
            False,
            "after a restore, drop the replaced (damaged) database; False keeps it to salvage rows from",
        ),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
        Param(
            "drill_damage",
            str,
            "index",
            "drills only: what the fault damages (the runbook does not use it)",
            choices=tuple(DRILL_DAMAGE),
        ),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.target = PgTarget.from_profile(self.profile)
        self.database = PostgresDatabaseLoss(
            evidence=self.evidence,
            **self.common_values(),
            backup=self.values["backup"],
            option="B",
            jobs=self.values["jobs"],
            drop_old_database=self.values["drop_old_database"],
            health_timeout=self.values["health_timeout"],
        )
        #: the first scan, and the latest (after a repair)
        self.found: CorruptionScan | None = None
        self.remaining: CorruptionScan | None = None
        self.app_stopped = False
        self.restored = False

    # Symptoms -----------------------------------------------------------------------------
    @step(
        "detect_corruption",
        title="Detect the corruption",
        what="""The runbook's symptoms, object by object: does the database accept connections and queries;
        are data checksums on, and has the server counted checksum failures; `amcheck` on every btree index
        (`bt_index_check`) and every table (`verify_heapam`), installed in a schema of its own for the check
        and removed again when it was missing; and a full read of every table (every column of every row).
        Each damaged table or index is named with the server's message. Without amcheck (not installable
        here: a warning says so) every index is read by an index scan instead.""",
        why="""What is damaged decides the recovery: a damaged index is rebuilt from its table in seconds and
        loses nothing; a damaged table cannot be trusted and is restored from a backup.""",
        if_fails="""No connection at all: check the server's log (`invalid page`, `could not read block`, a
        crash loop) and the disk; go on to the restore. A check that cannot take its lock is named: stop
        the application and re-run this cell. A scan without amcheck that ends a server process (the server
        restarts every session) points at that index: install amcheck (`postgresql-contrib`).""",
        roll_back="Nothing to roll back: this step only reads (amcheck, if installed for it, is removed again).",
    )
    def detect_corruption(self) -> Outcome:
        self.found = self.remaining = scan_database(self.target, use_amcheck=self.values["use_amcheck"])
        self.evidence.note("corruption_found", [d.row() for d in self.found.damaged])
        found = self.found
        facts: dict[str, Any] = {
            "database": found.database,
            "damaged": found.describe(),
            "amcheck": found.amcheck,
            "seconds": found.seconds,
        }
        if found.damaged:
            facts["repair"] = ", ".join(found.repairable_indexes) or "none: no index can be rebuilt from its table"
            facts["restore needed"] = found.needs_restore
        return Outcome(
            "Detect corruption",
            facts=facts,
            checks=found.checks(warn_only=True),
            table=(lambda: frame(found.rows())) if found.damaged else None,
        )

    # Step 1 -------------------------------------------------------------------------------
    @step(
        "stop_application",
        title="Step 1: Stop the application",
        what="""Stop the API (the profile's controller), when anything is damaged; with nothing damaged the
        application keeps running and the steps below have nothing to do.""",
        why="""Writes through a damaged index spread the damage or fail; a restore swaps the database, which
        needs every session off it.""",
        if_fails="Stop it by hand, then re-run this cell.",
        roll_back="Step 4 starts it again; or start it by hand with the profile's start command.",
        dry_run="skip",
        would="stop {rb.profile.name}'s application when anything is damaged",
        needs=("app",),
    )
    def stop_application(self) -> Outcome:
        found = self._require_found()
        if found.clean:
            return Outcome("Stop application", facts={"stopped": "nothing: no corruption found"})
        app = controller_for(self.profile)
        app.stop()
        self.app_stopped = True
        self.set_state("application", f"stopped ({app.description}); Step 4 starts it again")
        return Outcome("Stop application", facts={"stopped": app.description}, checks=Checks([stopped_check(app)]))

    # Step 2 -------------------------------------------------------------------------------
    @step(
        "repair_indexes",
        title="Step 2: Attempt a repair (damaged indexes)",
        what="""`REINDEX INDEX` (with `concurrently = True`, `REINDEX INDEX CONCURRENTLY`) for each damaged
        index whose table read cleanly, then the database is checked again. Nothing else is repaired: a
        damaged table is not "fixed" (zeroing pages or skipping rows loses data silently), and when a restore
        is needed anyway (a table is damaged) the indexes are not rebuilt first: the restore replaces them.""",
        why="""An index holds no data of its own: rebuilding it from its table is a complete repair, with no
        restore and nothing lost (the rows written since the last backup stay).""",
        if_fails="""The message names the index: a REINDEX that fails because its table reads with errors
        means the table is damaged too, so go on to the restore. A failed `CONCURRENTLY` leaves an invalid
        `<index>_ccnew` index: `DROP INDEX` it.""",
        roll_back="""Nothing to roll back: the rebuilt index holds what its table holds (the damaged one is
        gone).""",
        dry_run="plan",
    )
    def repair_indexes(self) -> Outcome | RestorePlan:
        found = self._require_found()
        indexes = found.repairable_indexes
        why_not = ""
        if not indexes:
            why_not = "no damaged index" if not found.damaged_indexes else "no damaged index has an intact table"
        elif not self.values["repair"]:
            why_not = "repair = False"
        elif found.needs_restore and self.values["restore"]:
            why_not = "a table is damaged: the restore (Step 3) replaces every index"
        if why_not:
            return Outcome("Repair indexes", facts={"rebuilt": f"none ({why_not})"})
        result = reindex_indexes(self.target, indexes, concurrently=self.values["concurrently"], confirm=self.confirm)
        if isinstance(result, RestorePlan):
            return result
        self.set_state("database", f"{self.target.name}: rebuilt {', '.join(result.rebuilt)} (REINDEX)")
        self.remaining = after = scan_database(self.target, use_amcheck=self.values["use_amcheck"])
        rebuilt = [
            check(
                f"rebuilt:{index}",
                index not in after.damaged_indexes,
                expected="intact after REINDEX",
                observed=f"rebuilt in {seconds} s; "
                + ("still damaged" if index in after.damaged_indexes else "checks clean"),
                warn_only=True,  # what is left is restored (Step 3) and verified (the last step)
            )
            for index, seconds in result.rebuilt.items()
        ]
        return Outcome(
            "Repair indexes",
            facts={"rebuilt": ", ".join(result.rebuilt), "damaged now": after.describe()},
            checks=Checks(rebuilt),
        )

    # Step 3 -------------------------------------------------------------------------------
    @step(
        "restore_from_backup",
        title="Step 3: If the repair is not enough, restore from backup",
        what="""When a table is damaged, or damage remains after the repair, or the database cannot be
        reached: the PostgreSQL database loss runbook's pre-restore checklist, restore (Option B: a new
        database from the newest backup before `failure_time`, verified, then swapped in; the damaged one kept
        as `<name>_old_<time>` unless `drop_old_database = True`) and verification, recording its steps into
        this run. Nothing left damaged: nothing to restore (recorded as such).""",
        why="""Damaged rows cannot be trusted or completed: the backup is the last copy known to be whole. Option
        B leaves the damaged database untouched until the copy is proven.""",
        if_fails="""As in the PostgreSQL database loss notebook: the live database is untouched by a failed
        Option B; pick another backup with `backup = "<name>.dump"`. Rows written after the backup can be
        salvaged from the undamaged tables of the kept `<name>_old_<time>`.""",
        roll_back="""Rename the databases back (`ALTER DATABASE <name> RENAME TO <name>_restored;
        ALTER DATABASE <name>_old_<time> RENAME TO <name>`), as long as the old one was kept.""",
        composite=True,
    )
    def restore_from_backup(self) -> Outcome:
        found = self._require_found()
        remaining = self.remaining or found
        repair_planned = bool(found.repairable_indexes) and self.values["repair"]
        # in a dry run nothing was rebuilt: a planned repair is taken to work
        if remaining.clean or not (remaining.needs_restore or self.confirm or not repair_planned):
            why = "not needed: " + ("nothing damaged" if remaining.clean else "the repair rebuilds what is damaged")
            return self.record_step("restore_from_backup", "Restore from backup", {"restore": why})
        if not self.values["restore"]:
            why = f"not done (restore = False); still damaged: {remaining.describe()}"
            return self.record_step("restore_from_backup", "Restore from backup", {"restore": why})
        outcomes = [
            self.database.pre_restore_checklist(),
            self.database.restore_database(),
            self.database.verify_restore(),
        ]
        self.restored = self.confirm
        return combined("Restore from backup", *outcomes)

    # Step 4 -------------------------------------------------------------------------------
    @step(
        "verify_no_corruption",
        title="Step 4: Verify",
        what="""The whole check of the first step again, now failing on anything damaged: the database answers,
        amcheck and a full read of every table find nothing, no checksum failure.""",
        why="""A repair or a restore that completed is not proof: the database is trusted again only when every
        table and index checks clean.""",
        if_fails="""The damaged objects are named: re-run from Step 2 (a REINDEX), or restore (`restore = True`,
        another `backup`). Do not restart the application on a damaged database.""",
        roll_back="Nothing to roll back: this step only reads.",
        dry_run="skip",
        would="check every table and index of {rb.target.name} again",
    )
    def verify_no_corruption(self) -> Outcome:
        self.remaining = after = scan_database(self.target, use_amcheck=self.values["use_amcheck"])
        if not after.clean:
            self.set_state(
                "database",
                f"{self.target.name} still damaged ({after.describe()}): re-run this notebook with repair = True "
                "and restore = True",
            )
        return Outcome(
            "Verify",
            facts={"damaged": after.describe(), "seconds": after.seconds},
            checks=after.checks(prefix="verify:"),
            table=(lambda: frame(after.rows())) if after.damaged else None,
        )

    # Step 5 -------------------------------------------------------------------------------
    @step(
        "restart_application",
        title="Step 5: Restart the application",
        what="""Start the API again and wait until `GET /health` answers; then the test account logs in and a
        content job is created. Not when the verification found damage: the application stays stopped.""",
        why="The moment it answers on a database verified clean is when the outage ends (the measured RTO).",
        if_fails="Read the application's logs; the database is already verified.",
        roll_back="Stop the application again (Step 1) if it misbehaves.",
        dry_run="skip",
        would="start the application and wait for /health, then log in and create a content job",
        needs=("app",),
        ends_outage=True,
    )
    def restart_application(self) -> Outcome:
        if self.remaining is not None and not self.remaining.clean:
            return Outcome(
                "Restart application",
                facts={"started": "no: the database is still damaged", "damaged": self.remaining.describe()},
                checks=Checks(
                    [check("database_clean_at_restart", False, expected="clean", observed=self.remaining.describe())]
                ),
            )
        app = controller_for(self.profile)
        health = self.start_application(app)
        checks = Checks([health, *(login_and_create_job(self.profile) if health.passed else [])])
        checks = self.service_restored_if(checks)
        return Outcome("Restart application", facts={"started": app.description}, checks=checks)

    # -- helpers --------------------------------------------------------------------------------
    def _require_found(self) -> CorruptionScan:
        if self.found is None:
            self.detect_corruption()
        assert self.found is not None
        return self.found


# -- drills ---------------------------------------------------------------------------------
def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """The database answers, and a named backup exists and verifies, before any file is damaged."""
    return stack_reachable(profile) + named_backup_checks(
        profile, selection=params["backup"], require_manifest=True, deep=False
    )


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """A backup, rows written after it, then the sandbox server stopped, a page of ``drill_damage``'s relation
    overwritten, and the server started again. The notebook drops the replaced database after a restore:
    a damaged database must not stay behind in the sandbox."""
    target = PgTarget.from_profile(profile)
    relations = DRILL_DAMAGE[params["drill_damage"]]
    backup = backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    damaged: list[str] = []
    setup = fail_after_backup(
        backup,
        write=lambda token: write_rows_after_backup(target, token=token),
        inject=lambda: damaged.extend(d.describe() for d in damage_relations(profile, target, relations)),
        fault=f"overwrote a page of {', '.join(relations)} with the server stopped",
    )
    return DrillSetup(
        fault=f"{setup.fault} ({'; '.join(damaged)})",
        failure_time=setup.failure_time,
        backup=setup.backup,
        written_after_backup=setup.written_after_backup,
        marker=setup.marker,
        notebook_parameters={"drop_old_database": True},
    )


SCENARIO = Scenario(
    id="database_corruption",
    runbook=DatabaseCorruption,
    summary="Failure Scenarios → Scenario 1 of `disaster-recovery-plan.md`: damaged tables and indexes found by "
    "name (amcheck, checksums, full reads), a damaged index rebuilt, a damaged table restored from the backup "
    "(Option B), verified clean.",
    stage=stage,
    preflight=preflight,
    rto_kind="database_loss",
    rpo_component="postgres",
    sandbox_only=True,
    drill_sets=("drop_old_database",),
)
