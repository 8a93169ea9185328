"""Restore speed: drlib against raw pg_restore on the same dump at the same -j.

Starts a throw-away sandbox seeded with over 1 GB (``--size large``), dumps it once, then restores
the dump into fresh databases, alternating drlib (``restore_to_new_database``) and raw
``pg_restore -j N -d db dump``, and prints the best time of each, the ratio drlib/raw (target
<= 1.05), the parallel speed-up over -j 1, and the integrity check's time against ``sha256sum``.

    python benchmarks/restore_benchmark.py [--size large] [--jobs 1 2 4] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from drlib.config import load_profile
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget, create_database, drop_database
from drlib.postgres.integrity import verify_backup
from drlib.postgres.restore import RestoreResult, restore_to_new_database
from drlib.postgres.tools import pg_program, program_version
from drlib.sandbox.stack import Sandbox
from drlib.units import format_bytes


def raw_restore(target: PgTarget, dump: Path, jobs: int, name: str) -> float:
    create_database(target, name)
    started = time.monotonic()
    subprocess.run(
        [pg_program("pg_restore"), "--exit-on-error", "-j", str(jobs), "-d", name, str(dump)],
        env=target.tool_env(),
        check=True,
    )
    return time.monotonic() - started


def drlib_restore(target: PgTarget, verified, jobs: int, name: str) -> float:  # type: ignore[no-untyped-def]
    result = restore_to_new_database(verified, target=target, jobs=jobs, confirm=True, new_name=name)
    assert isinstance(result, RestoreResult)
    return result.seconds


def timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="large", choices=["small", "medium", "large"])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="drlib-bench-"))
    os.environ["DRLIB_HOME"] = str(home)
    box = Sandbox(home / "sandbox")
    try:
        started = time.monotonic()
        box.up(size=args.size)
        profile = load_profile("sandbox")
        target = PgTarget.from_profile(profile)
        with target.connect() as conn:
            size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        db_size = int(size_row[0]) if size_row else 0
        machine = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores"
        print(f"machine: {machine}; {program_version('pg_restore')}")
        print(f"seeded {format_bytes(db_size)} in {time.monotonic() - started:.0f}s")
        started = time.monotonic()
        backup = backup_database(target=target, backup_dir=profile.backups.postgres_dir)
        print(f"pg_dump -Fc: {format_bytes(backup.size_bytes)} in {time.monotonic() - started:.1f}s")

        started = time.monotonic()
        verified = verify_backup(backup)
        check_seconds = time.monotonic() - started
        sha_seconds = timed(["sha256sum", str(backup.path)])
        print(
            f"integrity check (sha256 + pg_restore --list): {check_seconds:.2f}s; sha256sum alone: "
            f"{sha_seconds:.2f}s; ratio {check_seconds / sha_seconds:.2f}"
        )

        best: dict[tuple[str, int], float] = {}
        for jobs in args.jobs:
            for attempt in range(args.repeat):
                for kind in ("raw", "drlib"):
                    name = f"bench_{kind}_{jobs}_{attempt}"
                    if kind == "raw":
                        seconds = raw_restore(target, backup.path, jobs, name)
                    else:
                        seconds = drlib_restore(target, verified, jobs, name)
                    drop_database(target, name)
                    best[(kind, jobs)] = min(seconds, best.get((kind, jobs), float("inf")))
                    print(f"  -j {jobs} {kind:<5} attempt {attempt + 1}: {seconds:.2f}s", flush=True)
        print()
        print(f"{'jobs':>4} {'raw s':>8} {'drlib s':>8} {'drlib/raw':>10} {'speed-up vs -j1':>16}")
        for jobs in args.jobs:
            raw, ours = best[("raw", jobs)], best[("drlib", jobs)]
            speedup = best[("drlib", args.jobs[0])] / ours if args.jobs[0] == 1 else float("nan")
            print(f"{jobs:>4} {raw:>8.2f} {ours:>8.2f} {ours / raw:>10.3f} {speedup:>16.2f}")
    finally:
        box.down(purge=True)


if __name__ == "__main__":
    main()
