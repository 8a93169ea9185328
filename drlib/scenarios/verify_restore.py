"""The runbook's whole Verify Restore Procedure (database, storage, application), runnable on its
own after any restore; drills run it as their last stage."""

from __future__ import annotations

from typing import Any, ClassVar

from drlib.app.functional import artifact_checks, login_and_create_job
from drlib.app.health import wait_healthy
from drlib.app.logs import log_checks
from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.evidence import Evidence, utcnow
from drlib.exceptions import BackupNotFound
from drlib.parameters import Param
from drlib.postgres.catalogue import list_backups
from drlib.postgres.connection import PgTarget
from drlib.postgres.verify import verify_database
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario, parse_failure_time
from drlib.selection import select_backup
from drlib.staging import DrillSetup
from drlib.steps import Outcome, step
from drlib.storage.backends import live_storage
from drlib.storage.catalogue import catalogue_for, restorable, select_storage_backup
from drlib.storage.manifest import StorageManifest
from drlib.storage.verify import (
    layout_checks,
    storage_key_checks,
    verify_storage,
    zero_byte_check,
)


class VerifyRestore(Runbook):
    """Database, storage and application verification, each a table of checks."""

    scenario = "verify_restore"
    title = "Verify restore"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("backup", str, "latest", "database backup to compare with ('latest' before failure_time, or a name)"),
        Param("storage_backup", str, "latest", "storage backup to compare with ('latest', a name, or 'none')"),
        Param("storage_kind", str, "local", "the live storage to verify", choices=("local", "s3")),
        Param(
            "exact",
            bool,
            False,
            "True right after a restore (nothing written since): rows, newest rows and content equal the backup's",
        ),
        Param("since", str, "", "scan application logs from this time (ISO 8601 UTC); empty: failure_time"),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.target = PgTarget.from_profile(self.profile)
        self.since = parse_failure_time(self.values["since"]) if self.values["since"] else self.failure_time

    @step(
        "database_verification",
        title="Database verification",
        what="""`SELECT version()`, the tables discovered in every schema (and the profile's expected ones),
        the schema object by object against the backup's fingerprint, sequences, the database's owner,
        privileges, settings and comment, its roles, row counts and newest rows (at least the backup's: the
        application may have written since; with `exact = True`, equal, and every row's content checksum
        too), foreign keys and orphaned rows for every key.""",
        why="""A database that answers can still have lost objects, privileges or rows; this is the evidence
        that the restore brought back what the backup held.""",
        if_fails="""The failed checks name the table or constraint. Keep the incident open; restore the
        database again (PostgreSQL database loss notebook) from the same or an earlier backup.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def database_verification(self) -> Outcome:
        try:
            backups = list_backups(self.profile.backups.postgres_dir, prefix=self.profile.backups.prefix)
            chosen = select_backup(backups, selection=self.values["backup"], before=self.failure_time)
            manifest = chosen.manifest
        except BackupNotFound:
            chosen, manifest = None, None
        checks = verify_database(target=self.target, manifest=manifest, exact=self.values["exact"])
        if manifest is None:  # without a manifest only the live database's own consistency is checked
            where = self.profile.backups.postgres_dir
            missing = check(
                "backup_manifest",
                False,
                expected="a drlib backup with its manifest to compare with",
                observed=chosen.name + " has no manifest" if chosen else f"no backup in {where}",
                detail="nothing to compare the live database with: take a backup (drlib backup create) or "
                "point backups.postgres_dir at the folder holding them",
            )
            checks = Checks([missing, *checks])
        return Outcome(
            "Database verification", facts={"compared with": chosen.name if chosen else "no backup"}, checks=checks
        )

    @step(
        "storage_verification",
        title="Storage verification",
        what="""File counts and checksums against the newest storage backup of the same kind, no 0-byte files,
        permissions, and every `storage_key` in `content_artifacts` present in storage. With
        `storage_backup = "none"` (or none found) only the last three are checked, and a warning says so.""",
        why="""Missing or altered files show up later as broken downloads; a `storage_key` without its file
        means the database and the storage were restored to different points in time.""",
        if_fails="""The failed checks name the files. Restore storage again (File storage loss notebook); if only
        keys written after the storage backup are missing, that is the data lost since the backup.""",
        roll_back="Nothing to roll back: this step only reads.",
        needs=("storage",),
    )
    def storage_verification(self) -> Outcome:
        storage = live_storage(self.profile, kind=self.values["storage_kind"])
        results: list[CheckResult] = []
        manifest = None
        if self.values["storage_backup"] != "none":
            try:
                manifest = self._storage_backup_manifest()
            except BackupNotFound:
                manifest = None
        if manifest is not None:
            results += verify_storage(storage, manifest)
        else:
            files = list(storage.files())
            results.append(
                check(
                    "storage_backup_to_compare",
                    False,
                    expected="a storage backup",
                    observed="none",
                    warn_only=True,
                    detail="counts and checksums not compared",
                )
            )
            results.append(zero_byte_check(files))
            results += layout_checks(storage, files)
        if self.profile.content_crew_schema:  # content_artifacts.storage_key → the files
            results += storage_key_checks(self.target, storage)
        return Outcome("Storage verification", facts={"storage": storage.description}, checks=Checks(results))

    def _storage_backup_manifest(self) -> StorageManifest | None:
        """The manifest of the newest storage backup of the same kind as the live storage."""
        kind = self.values["storage_kind"]
        backups = [
            b
            for b in restorable(catalogue_for(self.profile, storage_kind=kind), storage_kind=kind)
            if b.manifest is not None
        ]
        return select_storage_backup(
            backups, selection=self.values["storage_backup"], before=self.failure_time
        ).manifest

    @step(
        "application_verification",
        title="Application verification",
        what="""`GET /health`, log in, create a content job (only with `confirm = True`: it writes), download
        an artifact, and the application's logs since the restore (`docker compose logs api | grep -i
        error` / `warning`).""",
        why="""Users see the application, not the data: this is the last proof that the restore is complete
        before the incident is closed.""",
        if_fails="""Keep the incident open. Read the log lines the checks quote; a failing login or job usually
        points at the database or Redis, a failing download at the storage.""",
        roll_back="Nothing to roll back: the test job is ordinary data.",
        needs=("app",),
    )
    def application_verification(self) -> Outcome:
        app = self.profile.require_app()
        facts = {"logs since": self.since.isoformat(timespec="seconds")}
        if not self.confirm:  # a login writes a session, a test job a row: only when confirmed
            facts["log in and create a content job"] = "skipped (dry run: set confirm = True)"
        artifacts: list[CheckResult] = []
        if self.profile.storage is None:
            facts["download an artifact"] = self.profile.not_configured("storage")
        elif self.profile.content_crew_schema:
            artifacts = artifact_checks(self.profile, live_storage(self.profile, kind=self.values["storage_kind"]))
        results = [
            wait_healthy(app.base_url, path=app.health_path, timeout=30),
            *(login_and_create_job(self.profile) if self.confirm else []),
            *artifacts,
            *log_checks(self.profile, since=self.since),
        ]
        return Outcome("Application verification", facts=facts, checks=Checks(results))


# -- drills ---------------------------------------------------------------------------------
def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """verify_restore on its own injects nothing: it checks the stack as it is."""
    return DrillSetup(fault="none (verification only)", failure_time=utcnow())


SCENARIO = Scenario(
    id="verify_restore",
    runbook=VerifyRestore,
    summary="The whole Verify Restore Procedure (database, storage, application), runnable on its own after "
    "any restore. Drills run it as their last stage.",
    stage=stage,
    rto_kind=None,
    rpo_component=None,
    verify_after=False,
)
