"""The runbook's whole Verify Restore Procedure (database, storage, application), runnable on its
own after any restore; drills run it as their last stage."""

from __future__ import annotations

from typing import ClassVar

from drlib.app.functional import artifact_checks, login_and_create_job
from drlib.app.health import wait_healthy
from drlib.app.logs import log_checks
from drlib.checks import CheckResult, Checks, check
from drlib.evidence import Evidence
from drlib.exceptions import BackupNotFound
from drlib.parameters import Param
from drlib.postgres.catalogue import list_backups
from drlib.postgres.connection import PgTarget
from drlib.postgres.verify import verify_database
from drlib.runbooks.base import COMMON_PARAMS, Outcome, Runbook, parse_failure_time
from drlib.selection import select_backup
from drlib.storage.backends import LocalStorage, live_storage
from drlib.storage.catalogue import catalogue_for, restorable, select_storage_backup
from drlib.storage.manifest import StorageManifest
from drlib.storage.verify import (
    permission_check,
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
        Param("since", str, "", "scan application logs from this time (ISO 8601 UTC); empty: failure_time"),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.target = PgTarget.from_profile(self.profile)
        self.since = parse_failure_time(self.values["since"]) if self.values["since"] else self.failure_time

    def database_verification(self) -> Outcome:
        """Connection, tables, row counts (at least the backup's), foreign keys, orphans, newest rows."""
        return self.run_step("database_verification", self._database)

    def _database(self) -> Outcome:
        try:
            backups = list_backups(self.profile.backups.postgres_dir, prefix=self.profile.backups.prefix)
            chosen = select_backup(backups, selection=self.values["backup"], before=self.failure_time)
            manifest = chosen.manifest
        except BackupNotFound:
            chosen, manifest = None, None
        checks = verify_database(target=self.target, manifest=manifest, exact=False)
        return Outcome(
            "Database verification", facts={"compared with": chosen.name if chosen else "no backup"}, checks=checks
        )

    def storage_verification(self) -> Outcome:
        """File counts and checksums against the storage backup, 0-byte files, permissions, storage keys."""
        return self.run_step("storage_verification", self._storage)

    def _storage(self) -> Outcome:
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
            if isinstance(storage, LocalStorage):
                results.append(permission_check(storage.root, files))
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

    def application_verification(self) -> Outcome:
        """Health, log in, create a job, download a file, and the logs since the restore."""
        return self.run_step("application_verification", self._application)

    def _application(self) -> Outcome:
        app = self.profile.app
        facts = {"logs since": self.since.isoformat(timespec="seconds")}
        if not self.confirm:  # creating a test job writes to the database: only when confirmed
            facts["create a content job"] = "skipped (dry run: set confirm = True)"
        storage = live_storage(self.profile, kind=self.values["storage_kind"])
        results = [
            wait_healthy(app.base_url, path=app.health_path, timeout=30),
            *login_and_create_job(self.profile, create_job=self.confirm),
            *artifact_checks(self.profile, storage),
            *log_checks(self.profile, since=self.since),
        ]
        return Outcome("Application verification", facts=facts, checks=Checks(results))
