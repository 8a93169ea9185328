"""A stand-in for ``drlib restore database`` / ``drlib verify database`` (until those commands land),
so the benchmark harness can be built and checked: same arguments, same steps, ``--json`` output.

    python benchmarks/drlib_standin.py restore database --env X --backup NAME --jobs N --confirm --json \
        [--option A|B] [-p NAME VALUE]...
    python benchmarks/drlib_standin.py verify database --env X [--backup NAME] --json

``restore database`` runs the database steps of ``postgres_database_loss`` in process (pre-restore
checklist, identify backup, restore, verify); the application steps are left out, as a
database-only profile has no application. ``verify database`` runs ``verify_restore``'s
``database_verification``. Prints ``{"status", "steps": [...], "checks": [...]}`` and exits 0 when
every check passed, 1 when one failed, 3 on a drlib error. Use it with
``database_restore_command.py --standin``; the real commands replace it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from drlib.exceptions import DrlibError
from drlib.scenarios.base import Runbook
from drlib.scenarios.postgres_database_loss import PostgresDatabaseLoss
from drlib.scenarios.verify_restore import VerifyRestore

RESTORE_STEPS = ("pre_restore_checklist", "identify_backup", "restore_database", "verify_restore")
VERIFY_STEPS = ("database_verification",)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="drlib_standin")
    parser.add_argument("action", choices=["restore", "verify"])
    parser.add_argument("component", choices=["database"])
    parser.add_argument("--env", default="sandbox")
    parser.add_argument("--backup", default="latest")
    parser.add_argument("--option", choices=["A", "B"])
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--confirm", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    return parser.parse_args(argv)


def runbook(args: argparse.Namespace) -> tuple[Runbook, tuple[str, ...]]:
    values: dict[str, Any] = {"profile": args.env, "backup": args.backup, "confirm": args.confirm}
    values.update({name: value for name, value in args.p})
    if args.action == "verify":
        values["confirm"] = True  # verification only reads
        return VerifyRestore(**values), VERIFY_STEPS
    if args.confirm:  # the evidence where the real command's report folder keeps it
        run = f"{time.strftime('%H%M%S')}-{time.monotonic_ns()}-restore_database"
        values["evidence_path"] = str(
            Path(os.environ.get("DRLIB_REPORTS", "reports")) / "standin" / run / "evidence.json"
        )
    if args.option:
        values["option"] = args.option
    if args.jobs:
        values["jobs"] = args.jobs
    return PostgresDatabaseLoss(**values), RESTORE_STEPS


def main(argv: list[str]) -> int:
    args = parse(argv)
    status, code = "passed", 0
    try:
        book, steps = runbook(args)
        for name in steps:
            getattr(book, name)()
    except DrlibError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 3
    record = book.evidence.to_dict()
    failed = [c for c in record["checks"] if c["status"] == "fail"]
    if failed:
        status, code = "failed", 1
    if not args.confirm and args.action == "restore":
        status = "dry_run"
    document = {"status": status, "steps": record["steps"], "checks": record["checks"]}
    if args.json:
        print(json.dumps(document, default=str))
    else:
        for step in record["steps"]:
            print(f"{step['status']:>8}  {step['name']} ({step['seconds']:.2f} s)")
        for check in failed:
            print(f"FAILED {check['name']}: expected {check['expected']}, observed {check['observed']}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
