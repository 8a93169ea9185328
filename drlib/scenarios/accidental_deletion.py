"""Failure Scenarios → Scenario 3: accidental data deletion, undone selectively.

The backup taken before the deletion is restored into a scratch database (never over the live one);
the rows it has and the live database lost are found for the chosen table by primary key, with the
rows of every table that depends on them through foreign keys, shown, and re-inserted in foreign-key
order in one transaction. The files those rows point at (and any path asked for) are copied back from
the storage backup. Rows and files written since the backup are kept: nothing is rolled back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from typing import Any, ClassVar

from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.evidence import Evidence
from drlib.exceptions import DrillRefused, DrlibError, ParameterError
from drlib.parameters import Param
from drlib.plans import RestorePlan, derived_name, timestamp_suffix
from drlib.postgres.backup import backup_database
from drlib.postgres.catalog import discover_foreign_keys
from drlib.postgres.catalogue import list_backups, select_backup
from drlib.postgres.connection import PgTarget, drop_database
from drlib.postgres.integrity import VerifiedBackup, verify_backup
from drlib.postgres.restore import MAX_RESTORE_JOBS, restore_to_new_database
from drlib.postgres.undelete import (
    DeletionPlan,
    ReinsertResult,
    check_table,
    find_deleted,
    reinsert,
    survey_deleted,
)
from drlib.postgres.verify import orphan_checks
from drlib.preflight import stack_reachable
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario
from drlib.staging import DrillSetup, fail_after_backup, is_content_crew, write_rows_after_backup
from drlib.steps import Outcome, StepSpec, frame, step
from drlib.storage.backends import LocalStorage, S3Storage, live_storage
from drlib.storage.backup import archive_local
from drlib.storage.catalogue import catalogue_for, restorable, select_storage_backup
from drlib.storage.restore import VerifiedStorageBackup, verify_storage_backup
from drlib.storage.undelete import (
    FilesRestored,
    MissingFiles,
    files_back_check,
    find_missing_files,
    normalise_paths,
    restore_missing_files,
)


def split_list(value: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``: how a notebook parameter holds several keys or paths. With a ``;``
    anywhere it splits on ``;`` only (``"1,2;3,4"``: two keys of a two-column primary key). A JSON list of
    strings is taken as it is (how ``drlib undo`` passes keys and paths that hold ``,`` or ``;``)."""
    if value.lstrip().startswith("["):
        with contextlib.suppress(ValueError):
            items = json.loads(value)
            if isinstance(items, list) and all(isinstance(item, str) for item in items):
                return tuple(item for item in items if item.strip())
    return tuple(part.strip() for part in value.split(";" if ";" in value else ",") if part.strip())


class AccidentalDeletion(Runbook):
    """Bring back deleted rows (and their files) from the backup before the deletion, selectively."""

    scenario = "accidental_deletion"
    title = "Accidental data deletion"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("rows", bool, True, "compare and bring back database rows (False: files only)"),
        Param("backup", str, "latest", "'latest' (newest before failure_time, the deletion) or a backup file name"),
        Param(
            "table",
            str,
            "",
            "the table rows were deleted from (e.g. public.users); empty: only compare every table with the backup",
        ),
        Param(
            "keys",
            str,
            "",
            "primary keys of the deleted rows, comma-separated (a two-column key: ';' between keys, e.g. "
            "'1,2;3,4;'); empty: every row of `table` the backup has and the live database lost",
        ),
        Param("dependants", bool, True, "also bring back the rows that referenced them (foreign keys, recursively)"),
        Param(
            "paths",
            str,
            "",
            "storage files or folders to bring back, comma-separated, relative to the storage root (the files "
            "the deleted rows' storage_key names are added)",
        ),
        Param("storage_backup", str, "latest", "'latest' (newest before failure_time) or a storage backup name"),
        Param("keep_scratch", bool, False, "keep the scratch database at the end (to look at it by hand)"),
        Param("jobs", int, 4, "parallel pg_restore jobs for the scratch database", minimum=1, maximum=MAX_RESTORE_JOBS),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.target = PgTarget.from_profile(self.profile)
        self.keys = split_list(self.values["keys"])
        self.paths = normalise_paths(split_list(self.values["paths"]))
        if self.values["keys"].strip() and not self.keys:
            raise ParameterError(
                f"keys {self.values['keys']!r} holds no key: give the deleted rows' keys, or leave keys out to bring "
                "back every deleted row of the table"
            )
        if self.keys and not self.values["table"]:
            raise ParameterError("keys were given without a table: set table (e.g. public.users)")
        if not self.values["rows"] and not self.paths:
            raise ParameterError("rows = False brings back files only: give the files or folders in paths")
        self.verified: VerifiedBackup | None = None
        self.scratch: PgTarget | None = None
        self.plan: DeletionPlan | None = None
        self.storage_verified: VerifiedStorageBackup | None = None
        self.missing_files: MissingFiles | None = None
        self.reinserted: ReinsertResult | None = None
        self.files_restored: FilesRestored | None = None

    def run_step(self, spec: StepSpec, body: Callable[[], Outcome | RestorePlan]) -> Outcome:
        """A step that fails (or is interrupted) once the scratch database exists drops it, unless
        ``keep_scratch``: the last step, which would, is not reached."""
        try:
            return super().run_step(spec, body)
        except BaseException as exc:
            if self.scratch is not None and not self.values["keep_scratch"] and spec.method != "drop_scratch":
                name = self.scratch.name
                with contextlib.suppress(DrlibError):
                    drop_database(self.target, name)
                    self.scratch = None
                    self.set_state("scratch", f"{name} dropped after the failure")
                    if isinstance(exc, DrlibError):
                        exc.args = (f"{exc.message.split(' State now: ')[0]} State now: {self.state_text()}",)
            raise

    # Step 1 ------------------------------------------------------------------------------
    @step(
        "identify_deletion",
        title="Step 1: Identify the deletion and the backup before it",
        what="""The deletion's time is `failure_time`: the newest database backup taken before it is located and
        verified (size, checksum against its manifest, `pg_restore --list`), and, when the profile has storage,
        the newest storage backup before it too.""",
        why="""Only a backup from before the deletion still holds the rows. Checking it first means a bad backup
        is found before anything is restored anywhere.""",
        if_fails="""A corrupt backup is named with the reason: pick an earlier one with `backup = "<name>.dump"`.
        If the deletion time is unknown, set `failure_time` to the last time the data was known good.""",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def identify_deletion(self) -> Outcome:
        when = self.failure_time.isoformat(timespec="seconds")
        facts: dict[str, Any] = {"deletion time": when}
        results: list[CheckResult] = []
        if self.values["rows"]:
            if self.values["table"]:  # a misspelt table or key is refused now, not after the scratch restore
                check_table(self.target, self.values["table"], self.keys)
            backups = list_backups(self.profile.backups.postgres_dir, prefix=self.profile.backups.prefix)
            chosen = select_backup(backups, selection=self.values["backup"], before=self.failure_time)
            self.verified = verify_backup(chosen)
            self.evidence.note(
                "backup",
                {"name": chosen.name, "created_at": chosen.created_at.isoformat(), "size_bytes": chosen.size_bytes},
            )
            results += [
                check(
                    "backup_before_deletion",
                    chosen.created_at <= self.failure_time,
                    expected=f"<= {when}",
                    observed=chosen.created_at.isoformat(timespec="seconds"),
                    detail=chosen.name,
                ),
                *self.verified.checks,
            ]
            facts["backup"] = chosen.name
        if self.profile.storage is not None:
            kind = self.profile.require_storage().kind
            pool = restorable(catalogue_for(self.profile, storage_kind=kind), storage_kind=kind)
            stored = select_storage_backup(pool, selection=self.values["storage_backup"], before=self.failure_time)
            self.storage_verified = verify_storage_backup(stored)
            results.extend(self.storage_verified.checks)
            facts["storage backup"] = stored.name
        return Outcome("Identify the deletion", facts=facts, checks=Checks(results))

    # Step 2 ------------------------------------------------------------------------------
    @step(
        "restore_scratch",
        title="Step 2: Restore the backup into a scratch database",
        what="""`pg_restore -j` of the backup into a new database `<name>_scratch_<time>` on the same server,
        made like the original. The live database is not touched; this runs in a dry run too (it only adds a
        database, which the last step drops), so the dry run can show the rows it would bring back.""",
        why="""The deleted rows are compared and copied from a copy of the backup, never by rolling the live
        database back.""",
        if_fails="""The live database was not touched and the partial scratch copy was dropped; the message says
        why (disk space, a role, the server).""",
        roll_back="`DROP DATABASE <name>_scratch_<time>;` (the last step does it).",
        dry_run="run",
    )
    def restore_scratch(self) -> Outcome:
        if not self.values["rows"]:
            return Outcome("Scratch database", facts={"not needed": "files only (rows = False)"})
        verified = self._require_verified()
        name = derived_name(self.target.name, f"scratch_{timestamp_suffix()}")
        self.set_state("scratch", f"restoring into {name}; if this run was cut short, drop it: DROP DATABASE {name};")
        jobs = self.values["jobs"]
        result = restore_to_new_database(verified, target=self.target, jobs=jobs, confirm=True, new_name=name)
        assert not isinstance(result, RestorePlan)
        self.scratch = self.target.with_database(name)
        self.set_state("scratch", f"{name} holds the backup; the last step drops it (DROP DATABASE {name};)")
        return Outcome(
            "Scratch database",
            facts={"scratch database": name, "seconds": round(result.seconds, 2)},
            checks=Checks(list(result.checks)),
        )

    # Step 3 ------------------------------------------------------------------------------
    @step(
        "find_deleted_rows",
        title="Step 3: Find the deleted rows",
        what="""With `table`: the rows of that table (those of `keys`, or all) that the backup has and the live
        database no longer has, by primary key, then with `dependants` the rows of every table that referenced
        them through a foreign key and are gone too (recursively); each table's count and its first rows are
        shown, columns that look secret masked. Without `table`: every table's count of rows the backup has and
        the live database lost, to find where a deletion happened.""",
        why="The runbook's “Restore affected data”: exactly the rows that were deleted, and nothing written since.",
        if_fails="""A table without a primary key cannot be compared row by row: look at it in the scratch database
        (`keep_scratch = True`). Keys that are still live or were never in the backup are named.""",
        roll_back="Nothing to roll back: this step only reads.",
        dry_run="run",
    )
    def find_deleted_rows(self) -> Outcome:
        if not self.values["rows"]:
            return Outcome("Deleted rows", facts={"not asked for": "files only (rows = False)"})
        scratch = self._require_scratch()
        if not self.values["table"]:
            counts = survey_deleted(live=self.target, scratch=scratch)
            lost = {name: n for name, n in counts.items() if n}
            return Outcome(
                "Rows missing compared with the backup",
                facts={"tables compared": len(counts), "tables with rows missing": len(lost)},
                checks=Checks(
                    [
                        check(
                            "rows_missing_since_backup",
                            not lost,
                            expected="every row of the backup still there",
                            observed=lost or "none missing",
                            detail="set table (and keys) to bring them back" if lost else "",
                            warn_only=True,
                        )
                    ]
                ),
                table=lambda: frame([{"table": name, "rows missing": n} for name, n in counts.items()]),
            )
        self.plan = find_deleted(
            live=self.target,
            scratch=scratch,
            table=self.values["table"],
            keys=self.keys,
            dependants=self.values["dependants"],
        )
        plan = self.plan
        self.evidence.note("deleted_rows", {t.table.qualified: t.count for t in plan.tables})
        results = [
            check(
                "deleted_rows_found",
                plan.total > 0 or bool(plan.relinks),
                expected="rows the backup has and the live database lost",
                observed=plan.describe(),
                detail="; ".join(f"{k}: {why}" for k, why in plan.not_missing.items()),
            )
        ]
        return Outcome(
            "Deleted rows",
            facts={
                "found": plan.describe(),
                **({"keys not missing": plan.not_missing} if plan.not_missing else {}),
                "files they point at": sum(len(t.storage_keys) for t in plan.tables),
            },
            checks=Checks(results),
            table=lambda: frame(
                [{"table": t.table.qualified, "via": t.via, **row} for t in plan.tables for row in t.sample]
            ),
        )

    # Step 4 ------------------------------------------------------------------------------
    @step(
        "find_deleted_files",
        title="Step 4: Find the deleted files",
        what="""The files the storage backup lists that the live storage no longer has: those the deleted rows'
        `storage_key` names, and everything under `paths`.""",
        why="A row brought back whose file is gone is still broken for its user.",
        if_fails="""The storage backup cannot be read: pick another with `storage_backup`. Paths that match nothing
        in the backup are named.""",
        roll_back="Nothing to roll back: this step only reads.",
        needs=("storage",),
        dry_run="run",
    )
    def find_deleted_files(self) -> Outcome:
        wanted = self._wanted_paths()
        if not wanted:
            return Outcome("Deleted files", facts={"asked for": "no files (no paths, no storage_key in the rows)"})
        verified = self._require_storage()
        self.missing_files = find_missing_files(verified, live=self._live_storage(), paths=wanted)
        missing = self.missing_files
        return Outcome(
            "Deleted files",
            facts={
                "asked for": len(wanted),
                "missing": missing.describe(),
                **({"not in the backup": ", ".join(missing.unknown)} if missing.unknown else {}),
            },
            checks=Checks(
                [
                    check(
                        "asked_files_in_backup",
                        not missing.unknown,
                        expected="every path in the storage backup",
                        observed=list(missing.unknown) or "all",
                    )
                ]
            ),
            table=lambda: frame([{"file": key} for key in missing.keys[:200]]),
        )

    # Step 5 ------------------------------------------------------------------------------
    @step(
        "reinsert_rows",
        title="Step 5: Put the deleted rows back",
        what="""In one transaction on the live database, parents before children: the rows are found again (the
        step refuses if that differs from Step 3), then copied row for row from the scratch database (`COPY`),
        identity values included. Every other row, written before or after the backup, is left as it is.""",
        why="The deleted data comes back without losing what was written since the backup.",
        if_fails="""Nothing was inserted (the transaction rolled back). A unique value or key taken since the
        deletion is named: resolve it by hand (the scratch database has the old row), then re-run.""",
        roll_back="""Delete the re-inserted rows by their keys (listed in Step 3), children first.""",
        dry_run="plan",
    )
    def reinsert_rows(self) -> Outcome | RestorePlan:
        plan = self.plan
        if plan is None or (plan.total == 0 and not plan.relinks):
            return Outcome("Put rows back", facts={"inserted": "nothing to put back"})
        if not self.confirm:
            return RestorePlan(action=f"re-insert {plan.describe()}", steps=tuple(_plan_lines(plan)))
        self.reinserted = reinsert(
            plan,
            live=self.target,
            scratch=self._require_scratch(),
            table=self.values["table"],
            keys=self.keys,
            dependants=self.values["dependants"],
            confirm=True,
        )
        done = self.reinserted
        self.set_state("database", f"{self.target.name}: {plan.describe()} put back")
        return Outcome(
            "Put rows back",
            facts={"inserted": done.inserted, **({"links set again": done.relinked} if done.relinked else {})},
            checks=Checks(
                [
                    *(
                        check(
                            f"reinserted:{t.table.qualified}",
                            done.inserted.get(t.table.qualified) == t.count,
                            expected=t.count,
                            observed=done.inserted.get(t.table.qualified),
                        )
                        for t in plan.tables
                    ),
                    *(
                        check(
                            f"relinked:{label}",
                            done.relinked.get(label) == n,
                            expected=n,
                            observed=done.relinked.get(label),
                        )
                        for label, n in plan.relinks.items()
                    ),
                ]
            ),
        )

    # Step 6 ------------------------------------------------------------------------------
    @step(
        "restore_files",
        title="Step 6: Put the deleted files back",
        what="""Each missing file is copied back from the storage backup (a local archive is extracted into a staging
        folder beside the live tree first; an S3 backup is copied server side), checked against the manifest's
        sha256; a file that exists again is left alone.""",
        why="The rows' files, and the paths asked for, are back where the application looks for them.",
        if_fails="The files already copied stay; re-run this step to copy the rest.",
        roll_back="Delete the files this step lists.",
        needs=("storage",),
        dry_run="plan",
    )
    def restore_files(self) -> Outcome | RestorePlan:
        missing = self.missing_files
        if missing is None or not missing.keys:
            return Outcome("Put files back", facts={"restored": "no missing files"})
        result = restore_missing_files(
            self._require_storage(), missing, live=self._live_storage(), confirm=self.confirm
        )
        if isinstance(result, RestorePlan):
            return result
        self.files_restored = result
        self.set_state("storage", f"{len(result.restored)} deleted file(s) put back")
        return Outcome(
            "Put files back",
            facts={"restored": len(result.restored), "left alone (back already)": len(result.skipped)},
        )

    # Step 7 ------------------------------------------------------------------------------
    @step(
        "verify_undo",
        title="Step 7: Verify",
        what="""The chosen rows and all their dependants are in the live database again (found missing: none,
        whatever `dependants` was), the rows written since the backup are still there (each table has exactly
        the rows it had plus those put back), no foreign key of the tables involved has orphans, every file
        put back matches the backup's sha256, and the RPO.""",
        why="The runbook's “Verify restore”: the data is back, and nothing else changed.",
        if_fails="Read the failing check: the rows or files still missing are named; re-run Steps 3 to 6.",
        roll_back="Nothing to roll back: this step only reads.",
        dry_run="skip",
        would="verify the rows and files are back",
    )
    def verify_undo(self) -> Outcome:
        results: list[CheckResult] = []
        if self.values["rows"] and self.values["table"]:
            # every key asked for, or put back, with every row below it, whatever `dependants` was
            asked = self.keys or (self.plan.root_keys if self.plan else ())
            still = find_deleted(
                live=self.target, scratch=self._require_scratch(), table=self.values["table"], keys=asked
            )
            results.append(
                check(
                    "deleted_rows_back",
                    still.total == 0 and not still.relinks,
                    expected="no row of the backup missing (the table and every dependant)",
                    observed=still.describe(),
                )
            )
            if self.reinserted is not None:
                results.append(rows_kept_check(self.reinserted))
            results.extend(self._orphan_checks())
        if self.missing_files is not None and self.missing_files.keys:
            results.append(files_back_check(self._require_storage(), self.missing_files, live=self._live_storage()))
        if self.verified is not None:
            results.append(self.rpo("postgres", self.verified.backup.created_at))
        elif self.storage_verified is not None:
            results.append(self.rpo("storage", self.storage_verified.backup.created_at))
        return Outcome("Verify", checks=self.service_restored_if(Checks(results)))

    # Step 8 ------------------------------------------------------------------------------
    @step(
        "drop_scratch",
        title="Step 8: Drop the scratch database",
        what="`DROP DATABASE <name>_scratch_<time>` (kept with `keep_scratch = True`).",
        why="It is a whole copy of the database: it should not outlive the incident by accident.",
        if_fails="Drop it by hand: `DROP DATABASE <name>_scratch_<time>;`",
        roll_back="Nothing to roll back.",
        dry_run="run",
    )
    def drop_scratch(self) -> Outcome:
        if self.scratch is None:
            return Outcome("Scratch database", facts={"dropped": "none was made"})
        name = self.scratch.name
        if self.values["keep_scratch"]:
            self.set_state("scratch", f"{name} kept (keep_scratch = True): DROP DATABASE {name}; when done")
            return Outcome("Scratch database", facts={"kept": name})
        drop_database(self.target, name)
        self.scratch = None
        self.set_state("scratch", f"{name} dropped")
        return Outcome("Scratch database", facts={"dropped": name})

    # Step 9 ------------------------------------------------------------------------------
    @step(
        "investigate_cause",
        title="Step 9: Investigate the cause",
        what="""What the server counted: rows deleted per table of the deletion since its statistics were last reset
        (`pg_stat_user_tables.n_tup_del`), and the runbook's prevention measures to check: access controls, audit
        logging, soft deletes.""",
        why="The runbook's “Investigate cause”: the same deletion must not happen again.",
        if_fails="The counters need read access to `pg_stat_user_tables`; look at the server's log instead.",
        roll_back="Nothing to roll back: this step only reads.",
    )
    def investigate_cause(self) -> Outcome:
        tables = [t.table for t in self.plan.tables] if self.plan else []
        counts: dict[str, int] = {}
        if tables:
            with self.target.connect() as conn:
                for ref in tables:
                    row = conn.execute(
                        "SELECT n_tup_del FROM pg_catalog.pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                        (ref.schema, ref.name),
                    ).fetchone()
                    counts[ref.qualified] = int(row[0]) if row else 0
        return Outcome(
            "Investigate the cause",
            facts={
                "rows deleted per table (since the statistics reset)": counts or "no table chosen",
                "prevention": "access controls, audit logging (e.g. pgaudit), soft deletes (mark as deleted)",
            },
        )

    # -- helpers --------------------------------------------------------------------------------
    def _require_verified(self) -> VerifiedBackup:
        if self.verified is None:
            self.identify_deletion()
        assert self.verified is not None
        return self.verified

    def _require_scratch(self) -> PgTarget:
        if self.scratch is None:
            raise DrlibError("no scratch database: run Step 2 (restore_scratch) first")
        return self.scratch

    def _require_storage(self) -> VerifiedStorageBackup:
        if self.storage_verified is None:
            raise DrlibError("no storage backup was located: run Step 1 (identify_deletion) first")
        return self.storage_verified

    def _live_storage(self) -> LocalStorage | S3Storage:
        return live_storage(self.profile)

    def _wanted_paths(self) -> tuple[str, ...]:
        from_rows = [key for t in self.plan.tables for key in t.storage_keys] if self.plan else []
        return tuple(dict.fromkeys([*self.paths, *normalise_paths(from_rows)]))

    def _orphan_checks(self) -> list[CheckResult]:
        """No row of the tables involved points at a missing parent (any foreign key of theirs)."""
        if self.plan is None:
            return []
        involved = {t.table.qualified for t in self.plan.tables}
        with self.target.connect() as conn:
            keys = [fk for fk in discover_foreign_keys(conn, self.target.settings) if {fk.child, fk.parent} & involved]
        return orphan_checks(self.target, keys)


#: rows of each table a dry run prints
SHOWN_ROWS = 5


def _plan_lines(plan: DeletionPlan) -> list[str]:
    """Per table, parents first: how many rows, their keys, and the first rows themselves (secrets masked)."""
    lines = []
    for t in plan.tables:
        more = f" (first {len(t.keys)})" if t.count > len(t.keys) else ""
        lines.append(f"COPY {t.count} row(s) into {t.table.qualified}, key {', '.join(t.keys)}{more}")
        lines += [f"   {json.dumps(row, default=str, ensure_ascii=False)}" for row in t.sample[:SHOWN_ROWS]]
    lines += [
        f"SET {n} link(s) of {label} back to the backup's values (ON DELETE SET NULL)"
        for label, n in plan.relinks.items()
    ]
    return lines


def rows_kept_check(done: ReinsertResult) -> CheckResult:
    """Each table has the rows it had before plus those copied back: nothing written since was lost."""
    before, after, added = done.live_rows_before, done.live_rows_after, done.inserted
    return check(
        "rows_written_since_kept",
        all(after[n] == before[n] + added[n] for n in added),
        expected="each table: its rows before + those put back",
        observed={n: f"{before[n]} + {added[n]} = {after[n]}" for n in added},
    )


# -- drills ---------------------------------------------------------------------------------
def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """The drill deletes a Content Crew user: refused, before anything is written, on another schema."""
    if not is_content_crew(PgTarget.from_profile(profile)):
        raise DrillRefused(
            f"the accidental_deletion drill deletes a Content Crew user, and profile {profile.name!r} is not a "
            "Content Crew database (check_set): run its notebook or `drlib undo deletion` by hand instead"
        )
    return stack_reachable(profile)


def _delete_a_user(target: PgTarget, root: Any, chosen: dict[str, str]) -> None:
    """The fault: the Content Crew user with the most artifacts is deleted with their jobs and artifacts,
    and their artifacts' files are deleted from storage."""
    with target.connect() as conn, conn.transaction():
        row = conn.execute(
            "SELECT j.user_id FROM content_jobs j JOIN content_artifacts a ON a.job_id = j.id "
            "WHERE j.prompt NOT LIKE 'drill-%' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
        ).fetchone()
        if row is None:
            raise DrlibError("the sandbox has no user with artifacts to delete: drlib sandbox up --reset")
        user = int(row[0])
        files = [
            r[0]
            for r in conn.execute(
                "SELECT a.storage_key FROM content_artifacts a JOIN content_jobs j ON j.id = a.job_id "
                "WHERE j.user_id = %s",
                (user,),
            )
        ]
        conn.execute(
            "DELETE FROM content_artifacts WHERE job_id IN (SELECT id FROM content_jobs WHERE user_id = %s)", (user,)
        )
        conn.execute("DELETE FROM content_jobs WHERE user_id = %s", (user,))
        conn.execute("DELETE FROM users WHERE id = %s", (user,))
    if isinstance(root, LocalStorage):
        for key in files:
            (root.root / key).unlink(missing_ok=True)
    chosen.update(table="public.users", keys=str(user))


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Backups of the database and the storage, rows written after them, then a user deleted with their jobs,
    artifacts and files (Content Crew: the sandbox)."""
    target = PgTarget.from_profile(profile)
    if not is_content_crew(target):
        raise ParameterError(
            "the accidental_deletion drill deletes a Content Crew user; on another database run its notebook "
            "or `drlib undo deletion` by hand"
        )
    db = backup_database(target=target, backup_dir=profile.backups.postgres_dir, prefix=profile.backups.prefix)
    live = live_storage(profile)
    if isinstance(live, LocalStorage):
        archive_local(root=live.root, backup_dir=profile.backups.storage_dir)
    chosen: dict[str, str] = {}
    setup = fail_after_backup(
        db,
        write=lambda token: write_rows_after_backup(target, token=token),
        inject=lambda: _delete_a_user(target, live, chosen),
        fault="deleted a user with their content jobs, artifacts and artifact files",
    )
    return dataclasses.replace(setup, notebook_parameters={**setup.notebook_parameters, **chosen})


SCENARIO = Scenario(
    id="accidental_deletion",
    runbook=AccidentalDeletion,
    summary="Failure Scenarios → Scenario 3 of `disaster-recovery-plan.md`: deleted rows and files brought back "
    "selectively from the backup before the deletion, without rolling anything back.",
    stage=stage,
    preflight=preflight,
    rto_kind="partial_failure",
    rpo_component="postgres",
)
