"""Failure Scenarios → Scenario 5: Ransomware / data encryption. **Do not pay the ransom.** Detect what is
encrypted, renamed or left as a note on the live storage (and whether the database looks hit) and since
when; isolate (stop the application, block writes); pick the newest storage backup taken before the first
affected time and prove it clean; restore the storage from it with the storage-loss runbook's restore (the
database too when it looks affected, with the PostgreSQL runbook's Option B); verify nothing affected
remains; unblock writes; restart the application; and check that the backups are where the application's
credentials cannot delete or overwrite them.

Files written or changed since the backup that no detector flagged are **listed, not restored**: the
restore puts the whole storage back to the clean backup, and their current versions stay in the replaced
tree (local) or as older versions of the live bucket (S3), to be copied back after a review."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from drlib.app.functional import artifact_checks, login_and_create_job
from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.evidence import Evidence
from drlib.exceptions import BackupNotFound, DrillRefused
from drlib.faults_ransomware import encrypt_storage, leave_note_table
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.backup import backup_database
from drlib.postgres.catalogue import list_backups, select_backup
from drlib.postgres.connection import PgTarget
from drlib.postgres.ransom import NOT_CHECKED, DatabaseRansomScan, scan_database_for_ransom
from drlib.postgres.restore import MAX_RESTORE_JOBS
from drlib.preflight import stack_reachable
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.scenarios.postgres_database_loss import PostgresDatabaseLoss, named_backup_checks
from drlib.scenarios.storage_loss import named_storage_backup_checks, s3_reachable_checks
from drlib.services import controller_for, stopped_check
from drlib.staging import (
    DrillSetup,
    fail_after_backup,
    write_files_after_backup,
    write_objects_after_backup,
    write_rows_after_backup,
)
from drlib.steps import Outcome, combined, frame, step
from drlib.storage.backends import LocalStorage, S3Storage, live_storage
from drlib.storage.backup import archive_local, snapshot_bucket
from drlib.storage.catalogue import catalogue_for, restorable, storage_catalogue_table
from drlib.storage.immutability import immutability_checks
from drlib.storage.restore import VerifiedStorageBackup, drop_old_tree, restore_live_storage, verify_storage_backup
from drlib.storage.tamper import MASS_RENAME_MIN, TamperScan, clean_backup_checks, pick_clean_backup, scan_storage
from drlib.storage.verify import verify_storage
from drlib.storage.writeblock import block_writes, unblock_writes, writes_blocked

DO_NOT_PAY = (
    "**DO NOT PAY THE RANSOM.** Paying funds the next attack and does not bring the data back reliably; the "
    "backups do. Report the incident (security team, and the authorities where the law asks for it)."
)


class Ransomware(Runbook):
    """Detect, isolate, restore from a clean backup, verify, unblock, restart, and check the backups' lock."""

    scenario = "ransomware"
    title = "Ransomware / data encryption"
    needs = ("storage",)
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param(
            "storage_backup",
            str,
            "latest",
            "'latest': the newest clean storage backup taken before the first affected time; or a backup name "
            "(refused when taken after it, or not clean)",
        ),
        Param(
            "backup",
            str,
            "latest",
            "database restore (when it looks affected): 'latest' (newest before the first affected time) or a file",
        ),
        Param(
            "mass_rename_min", int, MASS_RENAME_MIN, "files given one new extension that make a mass rename", minimum=1
        ),
        Param(
            "restore",
            bool,
            True,
            "restore the storage (and the database, when it looks affected) from clean backups; False: detect and "
            "isolate only",
        ),
        Param("jobs", int, 4, "parallel pg_restore jobs (-j)", minimum=1, maximum=MAX_RESTORE_JOBS),
        Param(
            "drop_old_tree",
            bool,
            False,
            "local storage: delete the replaced (encrypted) tree after the restore; False keeps it as evidence and "
            "to copy the listed newer files from",
        ),
        Param("drop_old_database", bool, False, "after a database restore, drop the replaced database"),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
        Param(
            "drill_share",
            float,
            0.3,
            "drills only: the share of the storage files the fault encrypts (the runbook does not use it)",
            minimum=0.05,
            maximum=1,
        ),
        Param("drill_database", bool, False, "drills only: the fault also leaves a ransom-note table in the database"),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.live = live_storage(self.profile)
        self.target = PgTarget.from_profile(self.profile)
        self.baseline: VerifiedStorageBackup | None = None
        self.found: TamperScan | None = None
        self.database_found: DatabaseRansomScan | None = None
        self.clean: VerifiedStorageBackup | None = None
        self.kept_old: Path | None = None
        self.remaining: TamperScan | None = None
        self.database_remaining: DatabaseRansomScan | None = None
        #: how many entries got their write bits back (None: not unblocked)
        self.unblocked: int | None = None

    # Symptoms -----------------------------------------------------------------------------
    @step(
        "detect_encryption",
        title="Detect the encryption (and DO NOT PAY THE RANSOM)",
        what=f"""{DO_NOT_PAY} Then the live storage (the local folder or the bucket, as the profile has it)
        against the newest storage backup's per-file manifest: files whose sha256 changed; high-entropy rewrites
        (a sample of each changed file's bytes as random as encrypted bytes while the backed-up copy was not;
        compressed media that was high-entropy already is only "changed"); ransom notes (by name, or short text
        that asks for bitcoin to decrypt); mass renames (files gone, same-named files with a new extension in
        their place). The first affected time is the earliest modification time of an affected file (S3: its
        LastModified). The database: a ransom-note table, tables dropped or emptied since the newest database
        backup, or a database that no longer answers.""",
        why="""What is affected, and since when, decides the backup to restore: a backup taken after the attack
        began holds encrypted files. A low-entropy change or a new upload is not ransomware and does not date
        the attack.""",
        if_fails="""No backup to compare with: nothing can be told apart from ordinary use, so restore the
        storage from the newest backup you trust by name (`storage_backup = "..."`). A storage that cannot be
        read at all is itself the symptom: go on.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def detect_encryption(self) -> Outcome:
        kind = self.profile.require_storage().kind
        pool = restorable(catalogue_for(self.profile, storage_kind=kind), storage_kind=kind)
        if not pool:
            raise BackupNotFound(
                f"no {kind} storage backup to compare {self.live.description} with: take backups "
                "(drlib storage backup), or restore one you trust by name"
            )
        self.baseline = verify_storage_backup(pool[-1])
        self.found = found = scan_storage(
            self.live, self.baseline, client=self._client(), mass_rename_min=self.values["mass_rename_min"]
        )
        self.database_found = database = self._scan_database()
        first = found.first_affected
        self.evidence.note("ransomware_found", [f.row() for f in found.affected])
        self.evidence.note("first_affected", first.isoformat() if first else None)
        facts: dict[str, Any] = {
            "storage": found.storage,
            "compared with": found.baseline,
            "files": found.live_files,
            "affected": found.describe(),
            "first affected (UTC)": first.isoformat(timespec="seconds") if first else "none",
            "new since the backup, not flagged": len(found.new_files),
            "database": database.describe(),
            "database content": NOT_CHECKED,
            "seconds": found.seconds,
        }
        return Outcome(
            "Detect encryption",
            facts=facts,
            checks=Checks([*found.checks(warn_only=True), *database.checks(warn_only=True)]),
            table=(lambda: frame(found.rows())) if found.findings else None,
        )

    # Step 1 -------------------------------------------------------------------------------
    @step(
        "isolate",
        title="Step 1: Isolate the affected systems",
        what="""When anything is affected: stop the application (the profile's controller) and block writes to
        the local storage (the write bits of every folder and file removed, the original modes saved beside the
        tree in `.<name>.writes-blocked.json` and recorded in the stack's state). A bucket is not blocked by
        drlib: revoke the application's write permission to it (IAM) until Step 6.""",
        why="""Whatever encrypts the files may still be running: every minute it runs costs more files, and a
        restore into storage it still writes to is undone.""",
        if_fails="""Stop the application by hand; block writes by hand (`chmod -R a-w <storage>`), then re-run
        this cell. Root ignores permission bits: an application running as root is not stopped by the block,
        so look for the encrypting process (new processes, cron jobs, the application's own host) too.""",
        roll_back="""Step 6 gives the write bits back and Step 7 starts the application; if this run was cut
        short, `unblock_writes("<storage>")` (drlib.storage.writeblock) or `chmod -R u+w <storage>`.""",
        dry_run="skip",
        would="stop the application and block writes to {rb.live.description}, when anything is affected",
    )
    def isolate(self) -> Outcome:
        if not self._affected():
            return Outcome("Isolate", facts={"isolated": "nothing: nothing is affected"})
        facts: dict[str, Any] = {}
        results: list[CheckResult] = []
        if self.profile.app is not None:
            app = controller_for(self.profile)
            app.stop()
            self.set_state("application", f"stopped ({app.description}); Step 7 starts it again")
            facts["stopped"] = app.description
            results.append(stopped_check(app))
        else:
            facts["application"] = self.profile.not_configured("app")
        if isinstance(self.live, LocalStorage):
            block = block_writes(self.live.root)
            self.set_state("storage_writes", block.describe())
            facts["writes blocked"] = f"{block.entries} folders and files of {block.root}"
            results.append(check("storage_writes_blocked", True, expected="write bits removed", observed=block.entries))
        else:
            results.append(
                check(
                    "storage_writes_blocked",
                    False,
                    expected="writes to the bucket revoked",
                    observed="not done by drlib",
                    detail=f"revoke the application's write permission to {self.live.description} (IAM) until "
                    "the restore is verified",
                    warn_only=True,
                )
            )
        return Outcome("Isolate", facts=facts, checks=Checks(results))

    # Step 2 -------------------------------------------------------------------------------
    @step(
        "choose_clean_backup",
        title="Step 2: Choose a clean backup from before the attack",
        what="""The newest storage backup taken before the first affected time (a backup named with
        `storage_backup` is refused when taken after it), proven intact (its size and sha256 against its
        manifest) and clean: no file named like a ransom note, no file with the extension the attack gave
        renamed files, and no file as random as encrypted bytes without a known format signature (every file
        of the backup is sampled). With `latest`, a backup that is not clean is passed over for the one before
        it, and named.""",
        why="""Restoring a backup that already holds encrypted files or a note brings the attack back; the
        attacker may also have set files' modification times back, which the cleanliness check still
        catches.""",
        if_fails="""No clean backup before the attack: look for an older one off-site (the backups bucket's
        older versions), or restore what is clean by hand and accept the loss of the rest.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def choose_clean_backup(self) -> Outcome:
        found = self._require_found()
        if found.clean:
            return Outcome("Clean backup", facts={"chosen": "not needed: no storage file is affected"})
        first = found.first_affected
        assert first is not None
        kind = self.profile.require_storage().kind
        pool = restorable(catalogue_for(self.profile, storage_kind=kind), storage_kind=kind)
        verified, checks, rejected = pick_clean_backup(
            pool,
            first_affected=first,
            selection=self.values["storage_backup"],
            judge=lambda b: clean_backup_checks(
                verify_storage_backup(b),
                extensions=found.extensions,
                client=self._client(),
                benign=found.benign_note_names,
            ),
        )
        self.clean = verified
        chosen = verified.backup
        self.evidence.note(
            "storage_backup",
            {"name": chosen.name, "created_at": chosen.created_at.isoformat(), "location": chosen.location},
        )
        before = check(
            "backup_before_first_affected",
            chosen.created_at < first,
            expected=f"< {first.isoformat(timespec='seconds')}",
            observed=chosen.created_at.isoformat(timespec="seconds"),
            detail=chosen.name,
        )
        facts: dict[str, Any] = {
            "chosen": chosen.name,
            "taken at (UTC)": chosen.created_at.isoformat(timespec="seconds"),
        }
        if rejected:
            facts["passed over (not clean)"] = rejected
        return Outcome(
            "Clean backup",
            facts=facts,
            checks=Checks([before, *checks]),
            table=lambda: storage_catalogue_table(pool),
        )

    # Step 3 -------------------------------------------------------------------------------
    @step(
        "restore_storage",
        title="Step 3: Restore the storage from the clean backup",
        what="""The File storage loss runbook's restore: **local**, the backup is extracted into a staging folder
        beside the live tree, every file checked against the manifest, then swapped in; the replaced (encrypted)
        tree is kept as `<storage>.old-<time>` (deleted only with `drop_old_tree = True`). **S3**, the backup is
        copied back server side and live objects the backup lacks (notes, renamed files) are deleted; a
        versioned bucket keeps them as older versions. Files written or changed since the backup that no
        detector flagged are listed here, not restored: copy them back from the kept tree after a review.""",
        why="""Restoring the whole storage to a point known clean leaves nothing of the attack behind, including
        what no detector recognised.""",
        if_fails="""The live storage is untouched and the staging folder removed; the message says why. Pick
        another backup with `storage_backup` and re-run from Step 2.""",
        roll_back="""Local: rename the restored tree aside and `<storage>.old-<time>` back. S3: the older
        versions of each object are still in the versioned bucket.""",
        dry_run="plan",
    )
    def restore_storage(self) -> Outcome | RestorePlan:
        found = self._require_found()
        if found.clean:
            return Outcome("Restore storage", facts={"restored": "not needed: no storage file is affected"})
        listed = [*found.new_files, *(f.key for f in found.of_kind("changed"))]
        if not self.values["restore"]:
            return Outcome(
                "Restore storage", facts={"restored": f"not done (restore = False); still affected: {found.describe()}"}
            )
        verified = self._require_clean()
        s3 = isinstance(self.live, S3Storage)
        result = restore_live_storage(verified, live=self.live, delete_extra=s3, confirm=self.confirm)
        keep_note = "older versions of the bucket" if s3 else "the replaced tree"
        if isinstance(result, RestorePlan):
            return RestorePlan(
                action=result.action,
                steps=(
                    *result.steps,
                    f"list {len(listed)} file(s) new or changed since the backup, not affected: kept in {keep_note}",
                ),
            )
        facts: dict[str, Any] = {"restored": result.target, "files": result.files, "seconds": round(result.seconds, 2)}
        state = f"{result.target} restored from {verified.backup.name}"
        if result.kept_old:
            self.kept_old = Path(result.kept_old)
            facts["replaced tree kept"] = result.kept_old
            state += f"; the encrypted tree kept at {result.kept_old}"
        if result.deleted:
            facts["deleted (notes, renamed and new objects)"] = len(result.deleted)
        facts[f"not affected, not restored (kept in {keep_note})"] = ", ".join(listed) or "none"
        self.evidence.note("listed_files", listed)
        if self.kept_old is not None and self.values["drop_old_tree"]:
            self._unblock()  # a tree whose folders have no write bits cannot be deleted by its owner
            facts["dropped"] = str(drop_old_tree(self.kept_old, live_root=Path(result.target), confirm=True))
            state += ", then deleted (drop_old_tree)"
            self.kept_old = None
        self.set_state("storage", state)
        return Outcome("Restore storage", facts=facts)

    # Step 4 -------------------------------------------------------------------------------
    @step(
        "restore_database",
        title="Step 4: Restore the database, if it looks affected",
        what="""When detection found a ransom-note table, tables dropped or emptied, or a database that no longer
        answers: the PostgreSQL database loss runbook's pre-restore checklist, restore (Option B: a new database
        from the newest backup taken before the first affected time, verified, then swapped in) and
        verification, recorded into this run. Otherwise nothing is restored (recorded as such).""",
        why="The database is restored only on evidence: a restore loses every write since its backup.",
        if_fails="""As in the PostgreSQL database loss notebook: a failed Option B leaves the live database as it
        was; pick another backup with `backup = "<name>.dump"`.""",
        roll_back="""Rename the databases back (`<name>_old_<time>` to `<name>`), as long as the old one was
        kept.""",
        composite=True,
    )
    def restore_database(self) -> Outcome:
        database = self.database_found or self._scan_database()
        if not database.affected:
            why = "not needed: the database does not look affected"
            return self.record_step("restore_database", "Restore database", {"restore": why})
        if not self.values["restore"]:
            why = f"not done (restore = False); {database.describe()}"
            return self.record_step("restore_database", "Restore database", {"restore": why})
        first = self.found.first_affected if self.found else None
        when = min(first, self.failure_time) if first else self.failure_time
        sub = PostgresDatabaseLoss(
            evidence=self.evidence,
            **{**self.common_values(), "failure_time": when.isoformat()},
            backup=self.values["backup"],
            option="B",
            jobs=self.values["jobs"],
            drop_old_database=self.values["drop_old_database"],
            health_timeout=self.values["health_timeout"],
        )
        self.evidence.note("failure_time", self.failure_time.isoformat())
        return combined("Restore database", sub.pre_restore_checklist(), sub.restore_database(), sub.verify_restore())

    # Step 5 -------------------------------------------------------------------------------
    @step(
        "verify_recovery",
        title="Step 5: Verify that nothing of the attack remains",
        what="""Every detector again, now against the backup restored from, failing on anything found: no
        encrypted file, no note, no renamed file; the runbook's storage verification against that backup's
        manifest (counts, checksums, no 0-byte files, permissions); the database scanned again for a
        ransom-note table and tables dropped or emptied; and the achieved RPO.""",
        why="""A restore that completed is not proof: the application goes back online only on storage in which
        nothing of the attack is left.""",
        if_fails="""The failed checks name the files: restore again (Step 3, or another backup in Step 2). Do not
        restart the application on storage that still holds encrypted files.""",
        roll_back="Nothing to roll back: this step only reads.",
        dry_run="skip",
        would="scan {rb.live.description} and the database again, and verify the storage against the backup",
    )
    def verify_recovery(self) -> Outcome:
        reference = self.clean or self.baseline
        if reference is None:
            self.detect_encryption()
            reference = self.baseline
        assert reference is not None
        self.remaining = after = scan_storage(
            self.live, reference, client=self._client(), mass_rename_min=self.values["mass_rename_min"]
        )
        results = list(after.checks(prefix="verify:"))
        if self.clean is not None:
            results += verify_storage(self.live, self.clean.manifest)
            results.append(self.rpo("storage", self.clean.backup.created_at))
        self.database_remaining = database = self._scan_database()
        results += database.checks(prefix="verify:")
        if not after.clean or database.affected:
            self.set_state("ransomware", f"still affected: storage {after.describe()}; database {database.describe()}")
        return Outcome(
            "Verify",
            facts={"storage": after.describe(), "database": database.describe(), "compared with": after.baseline},
            checks=Checks(results),
            table=(lambda: frame(after.rows())) if after.findings else None,
        )

    # Step 6 -------------------------------------------------------------------------------
    @step(
        "unblock_writes",
        title="Step 6: Unblock writes",
        what="""The write bits Step 1 removed are given back (to the restored tree, and to the replaced one kept
        aside), from the record of the original modes, which is then removed. Done whatever the verification
        found: the application stays stopped (Step 7) while anything is affected.""",
        why="The application writes new artifacts into the storage: it cannot run with writes blocked.",
        if_fails="""`chmod -R u+w <storage>` gives the owner the write bits back; then delete
        `.<name>.writes-blocked.json` beside it.""",
        roll_back="Block them again with Step 1.",
        dry_run="skip",
        would="give the write bits of {rb.live.description} back",
    )
    def unblock_writes(self) -> Outcome:
        if not isinstance(self.live, LocalStorage):
            return Outcome("Unblock writes", facts={"unblocked": "nothing: drlib does not block a bucket"})
        root = self.live.root
        if not writes_blocked(root):
            done = (
                "already in Step 3, before the replaced tree was deleted" if self.unblocked else "nothing was blocked"
            )
            return Outcome("Unblock writes", facts={"unblocked": done})
        return Outcome(
            "Unblock writes",
            facts={"write bits given back": self._unblock()},
            checks=Checks(
                [
                    check(
                        "storage_writes_unblocked",
                        not writes_blocked(root),
                        expected="no block record",
                        observed="removed",
                    )
                ]
            ),
        )

    # Step 7 -------------------------------------------------------------------------------
    @step(
        "restart_application",
        title="Step 7: Restart the application",
        what="""Start the API again, wait for `GET /health`, download an artifact, log in with the test account
        and create a content job. Not when the verification found anything of the attack: the application
        stays stopped.""",
        why="The moment it answers on storage verified clean is when the outage ends (the measured RTO).",
        if_fails="Read the application's logs; the storage and the database are already verified.",
        roll_back="Stop the application again (Step 1).",
        dry_run="skip",
        would="start the application and wait for /health, then download an artifact, log in and create a job",
        needs=("app",),
        ends_outage=True,
    )
    def restart_application(self) -> Outcome:
        storage_left = self.remaining is not None and not self.remaining.clean
        database_left = self.database_remaining is not None and self.database_remaining.affected
        if storage_left or database_left:
            left = "; ".join(
                part
                for part in (
                    f"storage: {self.remaining.describe()}" if storage_left and self.remaining else "",
                    f"database: {self.database_remaining.describe()}"
                    if database_left and self.database_remaining
                    else "",
                )
                if part
            )
            return Outcome(
                "Restart application",
                facts={"started": "no: the attack is not cleaned up", "still affected": left},
                checks=Checks([check("clean_at_restart", False, expected="nothing affected", observed=left)]),
            )
        app = controller_for(self.profile)
        health = self.start_application(app)
        results = [health]
        if health.passed:
            if self.profile.content_crew_schema:
                results += artifact_checks(self.profile, self.live)
            results += login_and_create_job(self.profile)
        checks = self.service_restored_if(Checks(results))
        return Outcome("Restart application", facts={"started": app.description}, checks=checks)

    # Step 8 -------------------------------------------------------------------------------
    @step(
        "check_backups_immutable",
        title="Step 8: Strengthen security: backups the application cannot delete",
        what="""The runbook's prevention ("regular backups, offline/immutable") checked with the application's
        own S3 credentials: the backups bucket has versioning on and object lock on with a default retention;
        a probe object written there (only with `confirm`) cannot be deleted by version, not even with the
        governance bypass header, and an overwrite leaves its first version intact; and a warning when the
        newest storage backup is local only. Then the rest of the runbook's list, by hand: rotate the
        credentials the attacker may hold, patch the way in, review access controls and network segmentation,
        and keep the security monitoring that caught this.""",
        why="""Ransomware deletes or encrypts the backups it can reach: backups the application's credentials
        can delete are no defence against an attacker holding them.""",
        if_fails="""Versioning: `aws s3api put-bucket-versioning`; object lock: a bucket made without it cannot get
        it, so make a new one with `--object-lock-enabled-for-bucket` and a default retention
        (`put-object-lock-configuration`, COMPLIANCE mode: GOVERNANCE can be bypassed by credentials allowed
        `s3:BypassGovernanceRetention`), and copy the backups there.""",
        roll_back="""Nothing to roll back: the probe object stays locked for the retention period, hidden behind
        a delete marker under `drlib-probe/`.""",
    )
    def check_backups_immutable(self) -> Outcome:
        checks = immutability_checks(self.profile, probe=self.confirm)
        facts = {"backups bucket": f"s3://{self.profile.require_storage().backups_bucket}"}
        if not self.confirm:
            facts["probe"] = "skipped (dry run: it writes a probe object)"
        return Outcome("Backups immutable", facts=facts, checks=checks)

    # -- helpers --------------------------------------------------------------------------------
    def _client(self) -> Any:
        """The S3 client that reads bucket snapshots (None for a local storage: its backups are local)."""
        return self.live.client if isinstance(self.live, S3Storage) else None

    def _unblock(self) -> int:
        """Give back the write bits Step 1 removed (to the live tree and the replaced one); record it."""
        assert isinstance(self.live, LocalStorage)
        self.unblocked = unblock_writes(self.live.root, also=[self.kept_old] if self.kept_old else [])
        self.set_state("storage_writes", f"unblocked ({self.unblocked} entries got their write bits back)")
        return self.unblocked

    def _affected(self) -> bool:
        found = self._require_found()
        return not found.clean or bool(self.database_found and self.database_found.affected)

    def _require_found(self) -> TamperScan:
        if self.found is None:
            self.detect_encryption()
        assert self.found is not None
        return self.found

    def _require_clean(self) -> VerifiedStorageBackup:
        if self.clean is None:
            self.choose_clean_backup()
        assert self.clean is not None
        return self.clean

    def _scan_database(self) -> DatabaseRansomScan:
        try:
            newest = select_backup(list_backups(self.profile.backups.postgres_dir, prefix=self.profile.backups.prefix))
        except BackupNotFound:
            return scan_database_for_ransom(self.target, None, baseline=None)
        return scan_database_for_ransom(self.target, newest.manifest, baseline=newest.name)


# -- drills ---------------------------------------------------------------------------------
def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """The stack answers, the storage is there, and named backups exist and verify, before anything is
    encrypted."""
    live = live_storage(profile)
    if isinstance(live, LocalStorage) and not live.root.is_dir():
        raise DrillRefused(
            f"the live storage tree {live.root} is missing, so there is nothing to encrypt: restore it first "
            "(on the sandbox: drlib sandbox up)"
        )
    kind = profile.require_storage().kind
    results = stack_reachable(profile) + (s3_reachable_checks(profile) if kind == "s3" else [])
    results += named_storage_backup_checks(profile, selection=params["storage_backup"], storage_kind=kind)
    return results + named_backup_checks(profile, selection=params["backup"], require_manifest=True, deep=False)


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """A database and a storage backup, files (and with ``drill_database`` rows) written after them,
    then ``drill_share`` of the storage files encrypted, some renamed to ``*.locked``, notes dropped (and a
    ransom-note table left). On the sandbox the notebook deletes the replaced tree and database after the
    restore: nothing encrypted stays behind."""
    live = live_storage(profile)
    target = PgTarget.from_profile(profile)
    with_database = bool(params["drill_database"])
    # the database's baseline: what its ransomware check and the verification compare it with
    backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    if isinstance(live, S3Storage):
        bucket = live
        storage_backup = snapshot_bucket(
            live=bucket, backups_bucket=profile.require_storage().backups_bucket, prefix=profile.backups.s3_prefix
        )
    else:
        storage_backup = archive_local(root=live.root, backup_dir=profile.backups.storage_dir)

    def write(token: str) -> dict[str, int]:
        written = (
            write_objects_after_backup(live, token=token)
            if isinstance(live, S3Storage)
            else write_files_after_backup(live.root, token=token)
        )
        return {**written, **(write_rows_after_backup(target, token=token) if with_database else {})}

    done: list[str] = []

    def inject() -> None:
        done.append(encrypt_storage(profile, live, share=params["drill_share"]).describe())
        if with_database:
            done.append(f"left the ransom-note table {leave_note_table(target)}")

    setup = fail_after_backup(storage_backup, write=write, inject=inject, fault="ransomware")
    return dataclasses.replace(
        setup,
        fault=f"ransomware: {'; '.join(done)}",
        # on the sandbox nothing encrypted stays behind; elsewhere the replaced tree and database are kept
        notebook_parameters={"drop_old_tree": True, "drop_old_database": True} if profile.is_sandbox else {},
    )


SCENARIO = Scenario(
    id="ransomware",
    runbook=Ransomware,
    summary="Failure Scenarios → Scenario 5 of `disaster-recovery-plan.md`. " + DO_NOT_PAY + " Encrypted, renamed "
    "and ransom-note files found against the newest storage backup's manifest (sha256, entropy, names, mass "
    "renames) and dated; the application stopped and writes blocked; the storage restored from the newest "
    "clean backup taken before the attack (the database too when it looks affected), verified, unblocked and "
    "restarted; and the backups bucket checked to be out of the application's reach (versioning, object lock).",
    stage=stage,
    preflight=preflight,
    rto_kind="storage_loss",
    rpo_component="storage",
)
