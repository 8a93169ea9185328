"""Regenerate the scenario notebooks from their outlines (run: python tools/make_notebooks.py).

Notebooks are committed without outputs. Each step is a markdown cell (what, why, what to do if
it fails, how to roll back) and one short code cell calling the scenario's runbook.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from drlib.scenarios import SCENARIOS

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

OUTLINES: dict[str, list[tuple[str, str]]] = {
    "postgres_database_loss": [
        (
            """## Pre-restore checklist
**What:** identify the failure scope (which components are down), check credentials and
connectivity to the database server, locate the newest backup taken before `failure_time`,
verify its integrity (size, checksum against its manifest, `pg_restore --list`) and check there
is enough free disk space for the restore.

**Why:** a restore from a bad backup, or one that runs out of disk half-way, makes the outage
longer. Nothing is touched in this step.

**If it fails:** the error says what to fix (a corrupt backup: pick an earlier one with
`backup = "content_crew_YYYY-MM-DD_HHMMSS.dump"`; wrong password: fix the secret; disk: free space).
Notify stakeholders and document the incident before going on.""",
            "runbook.pre_restore_checklist()",
        ),
        (
            """## Step 1: Stop the application
**What:** stop the API (`docker compose stop api`, the systemd unit, or the sandbox process, as the
profile says). **Why:** nothing may write to the database while it is restored.

**If it fails:** stop it by hand, then re-run this cell. **Roll back:** Step 5 starts it again.""",
            "runbook.stop_application()",
        ),
        (
            """## Step 2: Identify the backup
**What:** the backup catalogue, and the backup chosen: the most recent before the failure, its
timestamp, and that it is not 0 bytes. **Why:** the backup's time is the recovery point: every
write after it is lost.

**If the wrong backup is chosen:** set `backup` in the parameters cell and re-run from the top.""",
            "runbook.identify_backup()",
        ),
        (
            """## Step 3: Restore the database
**Option B** (default, safe): restore into a new database `<name>_restored_<time>` with parallel
`pg_restore -j`, verify the copy, then swap names; the replaced database is kept as
`<name>_old_<time>` and dropped only with `drop_old_database = True`.
**Option A**: `pg_restore --clean --if-exists` straight into the live database — faster, but an
interruption leaves it half-restored.

**If it fails:** with Option B the live database is untouched; the message says how to clean up the
partial copy. **Roll back (B):** rename `<name>_old_<time>` back.""",
            "runbook.restore_database()",
        ),
        (
            """## Step 4: Verify the restore
**What:** the runbook's database verification: connection (`SELECT version()`), the expected tables,
row counts equal to the backup's manifest, foreign keys present, no orphaned rows
(`content_jobs → users`), the newest `created_at` equal to the backup's, and the achieved RPO against
its target.

**If a check fails:** do not restart the application; investigate, or restore another backup.""",
            "runbook.verify_restore()",
        ),
        (
            """## Step 5: Restart the application
**What:** start the API again and wait until `GET /health` answers 200 (with retries). The moment
it does is when the outage ends (RTO).

**If it fails:** read the application's logs; the database is already restored.""",
            "runbook.restart_application()",
        ),
        (
            """## Step 6: Post-restore verification
**What:** the health check passes, the test account can log in (`POST /v1/auth/login`) and a new
content job can be created (`POST /v1/content-jobs`).

**If a check fails:** keep the incident open; the summary below lists what failed.""",
            "runbook.post_restore_verification()",
        ),
        (
            """## Summary
Every step with its duration and every check with expected and observed values. Drills turn this
into the dated report.""",
            "runbook.summary()",
        ),
    ],
    "storage_loss": [
        (
            """## Step 1: Identify affected storage
**What:** the live storage (`./storage/` or the `content-crew-storage` bucket) as it is now: does it
exist, how many files per folder. The runbook's `ls -lh ./storage/` / `aws s3 ls --recursive`.

**If nothing looks lost:** stop here and look for the real failure (permissions, disk full, the API).""",
            "runbook.identify_affected_storage()",
        ),
        (
            """## Step 2: Locate the backup
**What:** the storage catalogue across the local backup folder (`storage_YYYY-MM-DD.tar.gz`,
`full_YYYY-MM-DD/`) and the backups bucket (`s3://backups-bucket/storage/YYYY-MM-DD/`), the newest
backup before `failure_time`, and its integrity (size and sha256 against its manifest).

**If it is refused:** pick an earlier backup with `storage_backup = "..."`.""",
            "runbook.locate_backup()",
        ),
        (
            """## Step 3: Restore storage
**Local:** the archive is extracted (or the full copy copied) into a staging folder beside the live tree,
every file checked against the manifest, then swapped in; the replaced tree is kept as
`storage.old-<time>` (deleted only with `drop_old_tree = True`). Members that would escape the target
(absolute paths, `..`, links outside) are refused.
**S3:** the backup prefix is copied back by server-side copy (`aws s3 sync`); live objects the backup
lacks are deleted only with `delete_extra = True` (`--delete`).

**If it fails:** the live storage is untouched; the message says what was wrong.""",
            "runbook.restore_storage()",
        ),
        (
            """## Step 4: Verify the restore
**What:** the runbook's Storage Verification: file counts per folder against the manifest (and the
archive's listing), no 0-byte files, every file's sha256 (a single changed byte is named), permissions,
every `content_artifacts.storage_key` present (files nothing references: a warning), and the RPO.""",
            "runbook.verify_restore()",
        ),
        (
            """## Step 5: Test the application
**What:** `/health`, a restored artifact served by `GET /v1/storage/...` with identical bytes, log in
and create a content job.""",
            "runbook.test_application()",
        ),
        ("""## Summary""", "runbook.summary()"),
    ],
    "redis_loss": [
        (
            """## Pre-restore checklist
**What:** is Redis down or empty; the newest RDB snapshot before `failure_time`, its checksum against
its manifest and `redis-check-rdb`. The table shows which keys are safe to lose: the runbook treats
Redis as rebuildable cache and sessions (RPO 1 hour), but the job queue is not.

**If no backup is usable:** Redis can start empty; re-enqueue queued jobs from `content_jobs`.""",
            "runbook.pre_restore_checklist()",
        ),
        (
            """## Restore Redis
**What:** stop Redis, move its RDB file aside (kept as `dump.rdb.old-<time>`), put the backup in place,
start Redis and wait until it has loaded. Refused when Redis runs with `appendonly yes` (it would
ignore the RDB).

**Roll back:** stop Redis and move the `.old-<time>` file back.""",
            "runbook.restore()",
        ),
        (
            """## Verify Redis
**What:** key counts per prefix and the dataset digest equal the backup's (a digest over every key's
type and value, computed by drlib), and the achieved RPO against the 1-hour target.""",
            "runbook.verify_restore()",
        ),
        (
            """## Test the application
**What:** `/health`, a login (which writes a session into Redis) and a new content job.""",
            "runbook.test_application()",
        ),
        ("""## Summary""", "runbook.summary()"),
    ],
    "verify_restore": [
        (
            """## Database verification
**What:** `SELECT version()`, the expected tables, row counts (at least the backup's: the application
may have written since), foreign keys (`pg_constraint`), orphaned rows, and the newest `created_at`.""",
            "runbook.database_verification()",
        ),
        (
            """## Storage verification
**What:** file counts and checksums against the newest storage backup, no 0-byte files, permissions, and
every `storage_key` in `content_artifacts` present in storage.""",
            "runbook.storage_verification()",
        ),
        (
            """## Application verification
**What:** `/health`, log in, create a content job, download an artifact, and the application's logs
since the restore (`docker compose logs api | grep -i error` / `warning`).""",
            "runbook.application_verification()",
        ),
        ("""## Summary""", "runbook.summary()"),
    ],
    "full_system_loss": [
        (
            """## Step 1: Provision infrastructure
**What:** start a fresh database server and Redis first (`docker compose up -d db redis`; in the
sandbox a fresh sandbox without data or API) and check they answer.""",
            "runbook.provision_infrastructure()",
        ),
        (
            """## Step 2: Restore the database
**What:** Scenario 1's pre-restore checklist, restore (Option A: the server is new, nothing to keep)
and verification — the same runbook code, recording into this run's evidence.""",
            "runbook.restore_database()",
        ),
        (
            """## Step 3: Restore file storage
**What:** Scenario 2's locate, restore (staging + swap) and verification.""",
            "runbook.restore_file_storage()",
        ),
        (
            """## Step 3b: Restore Redis
**What:** the Redis runbook's checklist, restore and verification (sessions and cache may also be left
empty: see the Redis notebook's table of keys safe to lose).""",
            "runbook.restore_redis()",
        ),
        (
            """## Step 4: Restore the application
**What:** start the API and wait for `/health` (`docker compose up -d`). The outage ends here (RTO).""",
            "runbook.restore_application()",
        ),
        (
            """## Step 5: Verify the system
**What:** health checks passing, content jobs can be created, artifacts accessible.""",
            "runbook.verify_system()",
        ),
        ("""## Summary""", "runbook.summary()"),
    ],
}

INTRO = {
    "storage_loss": (
        "File storage loss",
        "Restore Runbook → Scenario 2 (local storage and S3) and the Storage Verification of the "
        "Verify Restore Procedure.",
        "StorageLoss",
    ),
    "redis_loss": (
        "Redis loss",
        "The Redis row of the RPO table (1 hour): restore the newest RDB snapshot and verify it.",
        "RedisLoss",
    ),
    "verify_restore": (
        "Verify restore",
        "The whole Verify Restore Procedure (database, storage, application), runnable on its own after "
        "any restore. Drills run it as their last stage.",
        "VerifyRestore",
    ),
    "full_system_loss": (
        "Full system loss",
        "Restore Runbook → Scenario 3: provision, restore database, storage and Redis, start the "
        "application, verify the system.",
        "FullSystemLoss",
    ),
    "postgres_database_loss": (
        "PostgreSQL database loss",
        "Restore Runbook → Scenario 1 of `disaster-recovery-plan.md`, with the Pre-Restore Checklist "
        "and the database part of the Verify Restore Procedure.",
        "PostgresDatabaseLoss",
    ),
}


def build(scenario_id: str) -> nbformat.NotebookNode:
    scenario = SCENARIOS[scenario_id]
    title, source, cls = INTRO[scenario_id]
    params_doc = "\n".join(
        f"- `{p.name}` ({p.type.__name__}, default `{p.default!r}`): {p.doc}"
        + (f"; one of {', '.join(map(repr, p.choices))}" if p.choices else "")
        for p in scenario.params
    )
    cells = [
        new_markdown_cell(
            f"# {title}\n{source}\n\nRun it cell by cell during an incident, or headless with "
            f"`drlib drill run {scenario_id}`. With `confirm = False` (the default) every destructive "
            "step only shows what it *would* do."
        ),
        new_markdown_cell(
            "## Parameters\nSecrets are never parameters: they come from the environment or the "
            f"profile's secrets file.\n\n{params_doc}"
        ),
    ]
    lines = []
    for p in scenario.params:
        lines.append(f"{p.name} = {p.default!r}  # {p.doc}")
    params_cell = new_code_cell("\n".join(lines))
    params_cell.metadata["tags"] = ["parameters"]
    cells.append(params_cell)
    cells.append(new_markdown_cell("## Start\nValidates the parameters and loads the profile before any step runs."))
    cells.append(
        new_code_cell(f"from drlib.runbooks.{scenario_id} import {cls}\n\nrunbook = {cls}.from_namespace(globals())")
    )
    for markdown, code in OUTLINES[scenario_id]:
        cells.append(new_markdown_cell(markdown))
        cells.append(new_code_cell(code))
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def main() -> None:
    for scenario_id in OUTLINES:
        path = NOTEBOOKS / f"{scenario_id}.ipynb"
        notebook = build(scenario_id)
        for index, cell in enumerate(notebook.cells):
            cell["id"] = f"{scenario_id[:20]}-{index:02d}"
        nbformat.write(notebook, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
