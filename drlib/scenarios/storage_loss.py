"""Restore Runbook → Scenario 2: File Storage Loss, for local storage and for an S3 bucket."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from drlib.app.functional import artifact_checks, login_and_create_job
from drlib.app.health import wait_healthy
from drlib.checks import Checks, check
from drlib.evidence import Evidence, utcnow
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.connection import PgTarget
from drlib.runbooks.base import COMMON_PARAMS, Outcome, Runbook
from drlib.storage.backends import S3Storage, live_storage
from drlib.storage.catalogue import catalogue_for, restorable, select_storage_backup, storage_catalogue_table
from drlib.storage.restore import (
    VerifiedStorageBackup,
    drop_old_tree,
    restore_bucket,
    restore_local,
    verify_storage_backup,
)
from drlib.storage.verify import (
    archive_listing_check,
    storage_key_checks,
    verify_storage,
)


class StorageLoss(Runbook):
    """Find what storage is affected, restore it from the newest good backup, verify, test the app."""

    scenario = "storage_loss"
    title = "File storage loss"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param(
            "storage_kind",
            str,
            "local",
            "which storage failed: the local folder or the S3 bucket",
            choices=("local", "s3"),
        ),
        Param("storage_backup", str, "latest", "'latest' (newest before failure_time) or a backup name"),
        Param(
            "backup_form",
            str,
            "any",
            "local only: restore from an archive, a full copy, or either",
            choices=("any", "archive", "full"),
        ),
        Param("delete_extra", bool, False, "S3 only: delete live objects the backup lacks (aws s3 sync --delete)"),
        Param("drop_old_tree", bool, False, "local only: delete the replaced tree after the swap"),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.kind: str = self.values["storage_kind"]
        self.live = live_storage(self.profile, kind=self.kind)
        self.verified: VerifiedStorageBackup | None = None

    # Step 1 -------------------------------------------------------------------------------
    def identify_affected_storage(self) -> Outcome:
        """What is there now: the live folder or bucket, and how many files it holds."""
        return self.run_step("identify_affected_storage", self._identify)

    def _identify(self) -> Outcome:
        if isinstance(self.live, S3Storage):
            self.live.check_reachable()
        files = list(self.live.files())
        missing = 0 if self.kind == "s3" else int(not Path(self.profile.storage.path).is_dir())
        folders: dict[str, int] = {}
        for item in files:
            folders[item.folder] = folders.get(item.folder, 0) + 1
        scope = check(
            "storage_failure_scope",
            not files or bool(missing),
            expected="storage lost or damaged",
            observed=f"{len(files)} files" + (" (folder missing)" if missing else ""),
            detail=self.live.description,
            warn_only=True,
        )
        return Outcome(
            "Identify affected storage",
            facts={
                "storage": self.live.description,
                "files": len(files),
                **{f"files in {k}": v for k, v in folders.items()},
            },
            checks=Checks([scope]),
        )

    # Step 2 -------------------------------------------------------------------------------
    def locate_backup(self) -> Outcome:
        """The catalogue (local folder and backups bucket), the chosen backup, and its integrity."""
        return self.run_step("locate_backup", self._locate)

    def _locate(self) -> Outcome:
        backups = catalogue_for(self.profile, storage_kind=self.kind)
        form = None if self.values["backup_form"] == "any" else self.values["backup_form"]
        pool = restorable(backups, storage_kind=self.kind, form=form)
        chosen = select_storage_backup(pool, selection=self.values["storage_backup"], before=self.failure_time)
        self.verified = verify_storage_backup(chosen)
        self.evidence.note(
            "storage_backup",
            {"name": chosen.name, "created_at": chosen.created_at.isoformat(), "location": chosen.location},
        )
        results = [
            check(
                "storage_backup_located",
                True,
                expected=f"backup before {self.failure_time:%Y-%m-%d %H:%M:%S}Z",
                observed=chosen.name,
                detail=chosen.location,
            ),
            *self.verified.checks,
        ]
        return Outcome(
            "Locate backup",
            facts={"selected": chosen.name, "kind": chosen.kind},
            checks=Checks(results),
            table=storage_catalogue_table(backups),
        )

    # Step 3 -------------------------------------------------------------------------------
    def restore_storage(self) -> Outcome:
        """Local: extract or copy into staging, verify, swap. S3: copy the prefix back (sync)."""
        return self.run_step("restore_storage", self._restore)

    def _restore(self) -> Outcome:
        verified = self._require_verified()
        if isinstance(self.live, S3Storage):
            result = restore_bucket(
                verified, live=self.live, delete_extra=self.values["delete_extra"], confirm=self.confirm
            )
        else:
            result = restore_local(verified, live_root=self.live.root, confirm=self.confirm)
        if isinstance(result, RestorePlan):
            return Outcome("Restore storage", facts={"dry_run": True, "plan": str(result)})
        facts = {
            "restored": result.target,
            "files": result.files,
            "bytes": result.bytes,
            "seconds": round(result.seconds, 2),
        }
        if result.kept_old:
            facts["old_tree_kept"] = result.kept_old
            if self.values["drop_old_tree"]:
                facts["dropped"] = str(
                    drop_old_tree(Path(result.kept_old), live_root=Path(result.target), confirm=True)
                )
        if result.deleted:
            facts["deleted_extra"] = len(result.deleted)
        self.evidence.note("storage_restore", facts)
        return Outcome("Restore storage", facts=facts)

    # Step 4 -------------------------------------------------------------------------------
    def verify_restore(self) -> Outcome:
        """File counts, 0-byte files, checksums, permissions, archive listing, storage keys, RPO."""
        return self.run_step("verify_storage", self._verify)

    def _verify(self) -> Outcome:
        verified = self._require_verified()
        if not self.confirm:
            return Outcome("Verify storage", facts={"dry_run": True, "would verify": self.live.description})
        checks = list(verify_storage(self.live, verified.manifest))
        if verified.backup.kind == "archive" and not verified.backup.in_s3:
            checks.append(archive_listing_check(verified.backup.path, verified.manifest))
        checks += storage_key_checks(PgTarget.from_profile(self.profile), self.live)
        checks.append(self.rpo("storage", verified.backup.created_at))
        return Outcome("Verify storage", checks=Checks(checks))

    # Step 5 -------------------------------------------------------------------------------
    def test_application(self) -> Outcome:
        """Health, a restored artifact is served, and a content job can be created."""
        return self.run_step("test_application", self._test_application)

    def _test_application(self) -> Outcome:
        if not self.confirm:
            return Outcome("Test application", facts={"dry_run": True})
        app = self.profile.app
        health = wait_healthy(app.base_url, path=app.health_path, timeout=self.values["health_timeout"])
        outcome = Checks([health, *artifact_checks(self.profile, self.live), *login_and_create_job(self.profile)])
        if outcome.passed:
            self.evidence.note("service_restored_at", utcnow().isoformat())
        return Outcome("Test application", checks=outcome)

    def _require_verified(self) -> VerifiedStorageBackup:
        if self.verified is None:
            self.locate_backup()
        assert self.verified is not None
        return self.verified
