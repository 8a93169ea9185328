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
}

INTRO = {
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
