"""Restore Runbook → Scenario 2: File Storage Loss, for local storage and for an S3 bucket, with
the Storage Verification of the Verify Restore Procedure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

from drlib import faults
from drlib.app.functional import artifact_checks, login_and_create_job
from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.evidence import Evidence
from drlib.exceptions import DrillRefused, ParameterError
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.connection import PgTarget
from drlib.preflight import stack_reachable
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.staging import DrillSetup, fail_after_backup, write_files_after_backup, write_objects_after_backup
from drlib.steps import Outcome, step
from drlib.storage.backends import S3Storage, live_storage
from drlib.storage.backup import archive_local, snapshot_bucket
from drlib.storage.catalogue import catalogue_for, restorable, select_storage_backup, storage_catalogue_table
from drlib.storage.restore import (
    VerifiedStorageBackup,
    drop_old_tree,
    restore_live_storage,
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
    needs = ("storage",)
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
        refuse_options_of_the_other_kind(self.values)
        self.kind: str = self.values["storage_kind"]
        self.live = live_storage(self.profile, kind=self.kind)
        self.verified: VerifiedStorageBackup | None = None

    # Step 1 -------------------------------------------------------------------------------
    @step(
        "identify_affected_storage",
        title="Step 1: Identify affected storage",
        what="""The live storage (`./storage/` or the `content-crew-storage` bucket) as it is now: does it
        exist, and how many files does each folder hold. This is the runbook's `ls -lh ./storage/` /
        `aws s3 ls s3://content-crew-storage/ --recursive`; for S3 the bucket must answer first.""",
        why="""Restoring storage that is not lost costs time and can hide the real failure; the file
        counts also show how much is missing.""",
        if_fails="""If nothing looks lost (a warning here), stop and look for the real failure: permissions,
        a full disk, the API itself. If the bucket cannot be reached, the error names the endpoint and the
        bucket: fix `endpoint_url` or the S3 credential secrets, then re-run this cell.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def identify_affected_storage(self) -> Outcome:
        self.live.check_reachable()
        files = list(self.live.files())
        missing = 0 if self.kind == "s3" else int(not Path(self.profile.require_storage().path).is_dir())
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
    @step(
        "locate_backup",
        title="Step 2: Locate the backup",
        what="""The storage catalogue across the local backup folder (`storage_YYYY-MM-DD.tar.gz`,
        `full_YYYY-MM-DD/`) and the backups bucket (`s3://backups-bucket/storage/YYYY-MM-DD/`), the newest
        backup before `failure_time` that can restore this kind of storage, and its integrity (size and
        sha256 against its manifest).""",
        why="""The backup's time is the recovery point for files: everything uploaded after it is lost. A
        damaged backup would restore damaged files, so it is checked before anything is touched.""",
        if_fails="""A refused backup is named with the reason (truncated, checksum mismatch, no manifest): pick
        an earlier one with `storage_backup = "..."` and re-run from the top. No backup found: check the
        backup folder and the backups bucket in the profile.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def locate_backup(self) -> Outcome:
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
            table=lambda: storage_catalogue_table(backups),
        )

    # Step 3 -------------------------------------------------------------------------------
    @step(
        "restore_storage",
        title="Step 3: Restore storage",
        what="""**Local:** the archive is extracted (or the full copy copied) into a staging folder beside the
        live tree, every file checked against the manifest, then swapped in; the replaced tree is kept as
        `storage.old-<time>` (deleted only with `drop_old_tree = True`). Members that would escape the target
        (absolute paths, `..`, links outside) are refused. **S3:** the backup prefix is copied back by
        server-side copy (`aws s3 sync`); live objects the backup lacks are deleted only with
        `delete_extra = True` (`--delete`).""",
        why="""The application serves voiceovers, videos and images from this storage: without it every
        artifact link is broken. Staging and swapping means a failed restore never leaves a half-written
        live tree.""",
        if_fails="""The live storage is untouched and the staging folder removed; the message says what was
        wrong (an unsafe archive member, a file not matching the manifest, an unreachable bucket). Fix it or
        pick another backup with `storage_backup`, then re-run from Step 2.""",
        roll_back="""Local: rename the restored tree aside and `storage.old-<time>` back to the live folder's
        name (the kept path is in this step's output). S3: the copied objects are the backup's versions;
        objects removed with `delete_extra` come back only from a versioned bucket or another backup.""",
        dry_run="plan",
    )
    def restore_storage(self) -> Outcome | RestorePlan:
        verified = self._require_verified()
        result = restore_live_storage(
            verified, live=self.live, delete_extra=self.values["delete_extra"], confirm=self.confirm
        )
        if isinstance(result, RestorePlan):
            return result
        facts: dict[str, Any] = {
            "restored": result.target,
            "files": result.files,
            "bytes": result.bytes,
            "seconds": round(result.seconds, 2),
        }
        state = f"{result.target} restored from {verified.backup.name}"
        if result.kept_old:
            facts["old_tree_kept"] = result.kept_old
            state += f"; the replaced tree kept at {result.kept_old} (rename it back to undo)"
            if self.values["drop_old_tree"]:
                facts["dropped"] = str(
                    drop_old_tree(Path(result.kept_old), live_root=Path(result.target), confirm=True)
                )
                state += ", then deleted (drop_old_tree)"
        if result.deleted:
            facts["deleted_extra"] = len(result.deleted)
            state += f"; {len(result.deleted)} live object(s) the backup lacked deleted"
        self.set_state("storage", state)
        self.evidence.note("storage_restore", facts)
        return Outcome("Restore storage", facts=facts)

    # Step 4 -------------------------------------------------------------------------------
    @step(
        "verify_storage",
        title="Step 4: Verify the restore",
        what="""The runbook's Storage Verification: file counts per folder against the manifest (and the
        archive's listing), no 0-byte files, every file's sha256 (a single changed byte is named),
        permissions, every `content_artifacts.storage_key` present (files nothing references: a warning),
        and the achieved RPO against its target.""",
        why="""A copy that finished is not a copy that is right: a missing or altered file shows up later as a
        broken download in front of a user.""",
        if_fails="""Do not hand the storage back to users: the failed checks name the files. Restore again from
        Step 3, or from an earlier backup with `storage_backup`; a storage key with no file means the
        database is newer than the storage backup (data lost since the backup).""",
        roll_back="Nothing to roll back: this step only reads.",
        dry_run="skip",
        would="verify {rb.live.description} against the backup's manifest",
    )
    def verify_restore(self) -> Outcome:
        verified = self._require_verified()
        checks = list(verify_storage(self.live, verified.manifest))
        if verified.backup.kind == "archive" and not verified.backup.in_s3:
            checks.append(archive_listing_check(verified.backup.path, verified.manifest))
        if self.profile.content_crew_schema:  # content_artifacts.storage_key → the files
            checks += storage_key_checks(PgTarget.from_profile(self.profile), self.live)
        checks.append(self.rpo("storage", verified.backup.created_at))
        return Outcome("Verify storage", checks=Checks(checks))

    # Step 5 -------------------------------------------------------------------------------
    @step(
        "test_application",
        title="Step 5: Test the application",
        what="""`GET /health`, a restored artifact served by `GET /v1/storage/...` with identical bytes, log in
        with the test account and create a content job.""",
        why="""Users notice whether their files download, not what the folder holds; the moment this passes is
        when the outage ends (the measured RTO).""",
        if_fails="""Keep the incident open. An artifact that is not served while the file is there points at
        the application's storage settings or permissions; read the application's logs.""",
        roll_back="Nothing to roll back: the test job is ordinary data.",
        dry_run="skip",
        would="check /health, download a restored artifact, log in and create a content job",
        needs=("app",),
        ends_outage=True,
    )
    def test_application(self) -> Outcome:
        checks = [
            self.application_health(),
            *(artifact_checks(self.profile, self.live) if self.profile.content_crew_schema else []),
            *login_and_create_job(self.profile),
        ]
        return Outcome("Test application", checks=self.service_restored_if(Checks(checks)))

    def _require_verified(self) -> VerifiedStorageBackup:
        if self.verified is None:
            self.locate_backup()
        assert self.verified is not None
        return self.verified


# -- drills ---------------------------------------------------------------------------------
def s3_reachable_checks(profile: Profile) -> list[CheckResult]:
    """The live bucket and the backups bucket both answer (raises ConnectionFailed / CredentialsRejected)."""
    live = live_storage(profile, kind="s3")
    assert isinstance(live, S3Storage)
    backups = S3Storage(live.client, profile.require_storage().backups_bucket, endpoint=live.endpoint)
    results = []
    for name, bucket in (("s3_live_bucket_reachable", live), ("s3_backups_bucket_reachable", backups)):
        bucket.check_reachable()
        results.append(check(name, True, expected="bucket answers", observed="reachable", detail=bucket.description))
    return results


def named_storage_backup_checks(
    profile: Profile, *, selection: str, storage_kind: str, form: str | None = None
) -> list[CheckResult]:
    """The storage backup a drill was told to use exists and verifies ('latest' is taken by the drill)."""
    if selection == "latest":
        return []
    pool = restorable(catalogue_for(profile, storage_kind=storage_kind), storage_kind=storage_kind, form=form)
    return list(verify_storage_backup(select_storage_backup(pool, selection=selection)).checks)


#: options that only mean something for one kind of storage
ONLY_FOR = {"delete_extra": ("s3", False), "backup_form": ("local", "any"), "drop_old_tree": ("local", False)}


def refuse_options_of_the_other_kind(values: dict[str, Any]) -> None:
    """An option for S3 given for a local restore (or the other way round) is a mistake: say so."""
    kind = values["storage_kind"]
    for name, (applies_to, default) in ONLY_FOR.items():
        if kind != applies_to and values[name] != default:
            raise ParameterError(
                f"parameter {name!r} applies to storage_kind {applies_to!r} only, not {kind!r}: leave it out "
                f"or set storage_kind = {applies_to!r}"
            )


def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """For S3 both buckets answer; a named storage backup exists and verifies."""
    refuse_options_of_the_other_kind(params)
    kind = params["storage_kind"]
    results = stack_reachable(profile) + (s3_reachable_checks(profile) if kind == "s3" else [])
    storage = profile.require_storage()
    if kind == "local" and not Path(storage.path).is_dir():
        raise DrillRefused(
            f"the live storage tree {storage.path} is missing, so there is nothing to drill: restore it "
            "first (on the sandbox: drlib sandbox up)"
        )
    form = None if params["backup_form"] == "any" else params["backup_form"]
    return results + named_storage_backup_checks(
        profile, selection=params["storage_backup"], storage_kind=kind, form=form
    )


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Local: archive, 3 files written after it, the storage tree deleted.
    S3: prefix snapshot, 3 objects written after it, the live bucket emptied."""
    live = live_storage(profile, kind=params.get("storage_kind", "local"))
    if isinstance(live, S3Storage):
        bucket = live
        return fail_after_backup(
            snapshot_bucket(
                live=bucket, backups_bucket=profile.require_storage().backups_bucket, prefix=profile.backups.s3_prefix
            ),
            write=lambda token: write_objects_after_backup(bucket, token=token),
            inject=lambda: faults.empty_bucket(bucket),
            fault=f"emptied bucket {bucket.bucket}",
        )
    root = live.root
    return fail_after_backup(
        archive_local(root=root, backup_dir=profile.backups.storage_dir),
        write=lambda token: write_files_after_backup(root, token=token),
        inject=lambda: shutil.rmtree(root),
        fault=f"deleted the storage tree {root}",
    )


SCENARIO = Scenario(
    id="storage_loss",
    runbook=StorageLoss,
    summary="Restore Runbook → Scenario 2 (local storage and S3) and the Storage Verification of the "
    "Verify Restore Procedure.",
    stage=stage,
    preflight=preflight,
    rto_kind="storage_loss",
    rpo_component="storage",
)
