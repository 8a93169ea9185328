"""Restore speed as a user sees it: the whole ``drlib restore database --confirm`` process (integrity
check, restore, verification, report) against ``createdb`` + raw ``pg_restore`` at the same ``-j``,
and ``drlib verify database`` (the content fingerprint) as a share of the raw restore time.

Two targets, as issue 7 sets them: the restore itself (integrity check, restore into a copy, the copy's
catalogue proven, swap, report: ``-p verify_rows false``) within 5 % of the raw tools, and the content
fingerprint within 30 % of the raw restore. The default restore also proves every row of the copy
before the swap, so it is held to both together: 1.05 + 0.30.

1. starts a throw-away sandbox and creates in it a database of five large tables of different shapes
   (about ``--size-mb`` on disk, see ``bench_database.py``), with a database-only drlib.toml profile
   pointing at it; dumps it once with ``drlib backup create`` (custom format);
2. for each ``-j`` and ``--repeat`` times, in turn (the order rotating): raw = ``createdb NEW`` then
   ``pg_restore -j N -d NEW DUMP`` (wall time of both); drlib = ``drlib restore database --env bench
   --backup NAME --jobs N --confirm --json`` with its defaults (wall time, spawn to exit); drlib
   catalogue = the same with ``-p verify_rows false``; then ``drlib verify database --env bench --json
   -p exact true|false`` (with and without the content fingerprint). What a run leaves (raw's database,
   drlib's kept old database) is dropped untimed after it. Autovacuum is off on this throw-away server,
   and each timed run starts after a CHECKPOINT and a sync, so what one run leaves does not land in the next;
3. prints the best of each and two ratios against their targets (best over best, and the median of each
   attempt's ratio to the raw run beside it, which a machine whose speed drifts cannot fool), the machine,
   how busy it was, and where drlib's time went (its ``--json`` steps) when a ratio is above target.

    python benchmarks/database_restore_command.py [--size-mb 1024] [--jobs 1 2 4] [--repeat 3]
        [--drlib-cmd "drlib"] [--breakdown]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench_database import database_size, generate_database, table_sizes

from drlib.config import load_profile
from drlib.postgres.connection import PgTarget, drop_database
from drlib.postgres.tools import pg_program, program_version
from drlib.sandbox.stack import SECRET_NAMES, Sandbox
from drlib.units import format_bytes

PROFILE = "bench"
DATABASE = "bench"
RESTORE_TARGET = 1.05
VERIFY_TARGET = 0.30
#: the default restore proves every row of its copy too: the restore's target plus the fingerprint's
ROW_PROOF_TARGET = RESTORE_TARGET + VERIFY_TARGET
#: the timed restore commands: kind -> extra ``-p`` parameters, and its target against raw
VARIANTS: dict[str, tuple[tuple[str, ...], float]] = {
    "drlib": ((), ROW_PROOF_TARGET),
    "drlib catalogue": (("-p", "verify_rows", "false"), RESTORE_TARGET),
}


@dataclass(frozen=True)
class Timing:
    """One timed run: wall seconds, and what it was made of."""

    seconds: float
    parts: dict[str, float] = field(default_factory=dict)
    load: float = 0.0
    #: content fingerprints compared, by check prefix: (tables, sum of per-table read seconds)
    fingerprints: dict[str, tuple[int, float]] = field(default_factory=dict)


@dataclass
class Bench:
    """The sandbox, the profile pointing at the benchmark database, and the commands to time."""

    home: Path
    target: PgTarget
    drlib: list[str]
    env: dict[str, str]
    dump: Path = Path()
    #: extra ``-p NAME VALUE`` for ``drlib restore database`` (e.g. verify_rows false)
    restore_params: list[str] = field(default_factory=list)
    best: dict[tuple[str, int], Timing] = field(default_factory=dict)
    #: every run's seconds by (kind, -j), in attempt order
    runs: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def keep(self, kind: str, jobs: int, timing: Timing) -> None:
        self.runs.setdefault((kind, jobs), []).append(timing.seconds)
        if (kind, jobs) not in self.best or timing.seconds < self.best[(kind, jobs)].seconds:
            self.best[(kind, jobs)] = timing

    def paired_ratio(self, kind: str, jobs: int) -> float:
        """The median over attempts of this kind's time over raw's in the same attempt: robust to a
        machine whose speed drifts over minutes (which moves both runs of an attempt alike)."""
        pairs = zip(self.runs[(kind, jobs)], self.runs[("raw", jobs)], strict=False)
        return statistics.median(ours / raw for ours, raw in pairs)


# -- set-up -----------------------------------------------------------------------------------------
def write_profile(home: Path, box: Sandbox) -> Path:
    """A database-only profile for the benchmark database on the sandbox's server."""
    port = json.loads(box.connection_file.read_text())["profile"]["database"]["port"]
    config = home / "drlib.toml"
    config.write_text(
        f"""[profiles.{PROFILE}]
description = "restore benchmark database"
drill_target = true
secrets_file = "{box.secrets_file}"

[profiles.{PROFILE}.database]
name = "{DATABASE}"
host = "127.0.0.1"
port = {port}
user = "contentcrew"
password_secret = "{SECRET_NAMES["database"]}"
""",
        encoding="utf-8",
    )
    return config


def installed_drlib() -> list[str]:
    """The drlib command beside this Python (the project's venv), else the one on PATH."""
    installed = Path(sys.executable).parent / "drlib"
    return [str(installed) if installed.exists() else "drlib"]


def installed_env() -> dict[str, str]:
    """The environment the timed commands run in: drlib as installed, its bytecode compiled once (a
    PYTHONDONTWRITEBYTECODE set here would make every run compile drlib's sources again, which no
    installed copy does)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    package = Path(__import__("drlib").__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], env=env, check=True)
    return env


def drlib_command(args: argparse.Namespace) -> list[str]:
    """The drlib command to time (and to take the benchmark's backup with)."""
    return shlex.split(args.drlib_cmd) if args.drlib_cmd else installed_drlib()


def run_drlib(bench: Bench, arguments: Sequence[str]) -> tuple[float, dict[str, Any]]:
    """Run a drlib command to completion; its wall time (spawn to exit) and its ``--json`` document."""
    started = time.perf_counter()
    done = subprocess.run(
        [*bench.drlib, *arguments], env=bench.env, cwd=bench.home, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        sys.exit(f"`drlib {' '.join(arguments)}` exited {done.returncode}:\n{tail}")
    try:
        document = json.loads(done.stdout) if "--json" in arguments else {}
    except json.JSONDecodeError:
        document = {}
    return seconds, document if isinstance(document, dict) else {}


def step_seconds(document: dict[str, Any]) -> dict[str, float]:
    return {str(s["name"]): float(s.get("seconds", 0.0)) for s in document.get("steps", []) if "name" in s}


#: the content check's detail says how long its table took ("…checksum of every row, 1.23s")
_TABLE_SECONDS = re.compile(r"checksum of every row, ([0-9.]+)s")


def fingerprints(document: dict[str, Any]) -> dict[str, tuple[int, float]]:
    """Content fingerprints compared in a run, by check prefix (``content:`` the live database,
    ``restored_copy:content:`` Option B's copy): how many tables and their read seconds summed."""
    found: dict[str, tuple[int, float]] = {}
    for item in document.get("checks", []):
        name = str(item.get("name", ""))
        if "content:" not in name or item.get("status") != "pass":
            continue
        prefix = name[: name.index("content:") + len("content:")]
        match = _TABLE_SECONDS.search(str(item.get("detail", "")))
        tables, seconds = found.get(prefix, (0, 0.0))
        found[prefix] = (tables + 1, seconds + (float(match[1]) if match else 0.0))
    return found


# -- the timed runs --------------------------------------------------------------------------------
def checkpoint(target: PgTarget) -> None:
    """Flush what the previous run left dirty, the server's and the kernel's, so it does not slow the
    next one (untimed)."""
    with target.maintenance.connect() as conn:
        conn.execute("CHECKPOINT")
    os.sync()


def quiet_server(target: PgTarget) -> None:
    """Autovacuum off on the benchmark's own server: otherwise its vacuum of the tables the last run
    restored lands, at random, inside the next timed run (seen: the same raw restore 9.1 s and 11.6 s)."""
    with target.maintenance.connect() as conn:
        conn.execute("ALTER SYSTEM SET autovacuum = off")
        conn.execute("SELECT pg_reload_conf()")


def raw_restore(bench: Bench, jobs: int, name: str) -> Timing:
    """``createdb NAME`` then ``pg_restore -j N -d NAME DUMP``: the wall time of both processes."""
    env = bench.target.tool_env()
    started = time.perf_counter()
    subprocess.run([pg_program("createdb"), name], env=env, check=True)
    created = time.perf_counter()
    subprocess.run(
        [pg_program("pg_restore"), "--exit-on-error", "-j", str(jobs), "-d", name, str(bench.dump)],
        env=env,
        check=True,
    )
    finished = time.perf_counter()
    return Timing(finished - started, {"createdb": created - started, "pg_restore": finished - created})


def drlib_restore(bench: Bench, jobs: int, backup: str, params: Sequence[str]) -> Timing:
    command = ["restore", "database", "--env", PROFILE, "--backup", backup, "--jobs", str(jobs), "--confirm"]
    seconds, document = run_drlib(bench, [*command, "--json", *params, *bench.restore_params])
    parts = step_seconds(document)
    pg_restore = pg_restore_seconds(bench.home / "reports")
    if pg_restore is not None and "restore_database" in parts:
        parts["restore_database: of which pg_restore"] = pg_restore
    return Timing(seconds, parts, fingerprints=fingerprints(document))


def pg_restore_seconds(reports: Path) -> float | None:
    """pg_restore's own time in the newest restore run, from its report folder's evidence (if written)."""
    runs = sorted(reports.glob("*/*-restore_database/evidence.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        return None
    try:
        restore = json.loads(runs[-1].read_text(encoding="utf-8")).get("facts", {}).get("restore", {})
    except (OSError, json.JSONDecodeError):
        return None
    return float(restore["seconds"]) if isinstance(restore, dict) and "seconds" in restore else None


def drlib_verify(bench: Bench, *, exact: bool) -> Timing:
    """``drlib verify database``; ``exact`` (right after a restore) adds every table's content fingerprint."""
    command = ["verify", "database", "--env", PROFILE, "--json", "-p", "exact", str(exact).lower()]
    seconds, document = run_drlib(bench, command)
    return Timing(seconds, step_seconds(document), fingerprints=fingerprints(document))


def timed(run: Callable[[], Timing]) -> Timing:
    """``run()`` with the 1-minute load average as it started."""
    load = os.getloadavg()[0]
    return dataclasses.replace(run(), load=load)


def drop_leftovers(target: PgTarget) -> None:
    """What the last run left besides the live database: raw's restore, drlib's kept old database."""
    with target.maintenance.connect() as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s",
                (f"{DATABASE}\\_raw\\_%", f"{DATABASE}\\_old\\_%"),
            )
        ]
    for name in names:
        drop_database(target, name)


def measure(bench: Bench, *, jobs_list: Sequence[int], repeat: int, backup: str) -> None:
    kinds = ["raw", *VARIANTS]
    for jobs in jobs_list:
        for attempt in range(repeat):
            order = kinds[attempt % len(kinds) :] + kinds[: attempt % len(kinds)]
            for kind in order:
                checkpoint(bench.target)
                if kind == "raw":
                    timing = timed(partial(raw_restore, bench, jobs, f"{DATABASE}_raw_{jobs}_{attempt}"))
                else:
                    timing = timed(partial(drlib_restore, bench, jobs, backup, VARIANTS[kind][0]))
                drop_leftovers(bench.target)
                bench.keep(kind, jobs, timing)
                print(f"  -j {jobs} {kind:<15} attempt {attempt + 1}: {timing.seconds:7.2f}s  (load {timing.load:.1f})")
            for exact in (True, False) if attempt % 2 == 0 else (False, True):
                checkpoint(bench.target)
                kind = "verify -p exact " + str(exact).lower()
                timing = timed(partial(drlib_verify, bench, exact=exact))
                bench.keep(kind, 0, timing)
                print(f"  {kind:<22} {timing.seconds:7.2f}s  (load {timing.load:.1f})", flush=True)


# -- the report --------------------------------------------------------------------------------------
def machine(target: PgTarget) -> str:
    with target.maintenance.connect() as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    memory = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory = int(meminfo.read_text().split("MemTotal:")[1].split()[0]) * 1024
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln), "")
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({model or 'unknown model'}), {format_bytes(memory)} RAM; "
        f"PostgreSQL server {row[0] if row else '?'}, {program_version('pg_restore')}"
    )


def print_table(bench: Bench, jobs_list: Sequence[int]) -> list[int]:
    """The best times per -j and two ratios: best over best, and the median of each attempt's ratio to the
    raw run beside it. Returns the -j values where either is above target."""
    first = bench.best[("drlib", jobs_list[0])]
    exact, plain = bench.best[("verify -p exact true", 0)], bench.best[("verify -p exact false", 0)]
    header = (
        f"{'-j':>3} {'what':<16} {'raw s':>8} {'drlib s':>8} {'best/best':>10} {'paired':>7} {'target':>7} "
        f"{'speed-up':>9}"
    )
    print(f"\n{header}")
    over = []
    for jobs in jobs_list:
        raw = bench.best[("raw", jobs)]
        for kind, (_, target) in VARIANTS.items():
            ours = bench.best[(kind, jobs)]
            ratio, paired = ours.seconds / raw.seconds, bench.paired_ratio(kind, jobs)
            over += [jobs] if max(ratio, paired) > target and jobs not in over else []
            flag = "" if max(ratio, paired) <= target else "  over target"
            speed_up = bench.best[(kind, jobs_list[0])].seconds / ours.seconds
            print(
                f"{jobs:>3} {kind:<16} {raw.seconds:>8.2f} {ours.seconds:>8.2f} {ratio:>10.3f} {paired:>7.3f} "
                f"{target:>7.2f} {speed_up:>9.2f}{flag}"
            )
        share = exact.seconds / raw.seconds
        print(f"{jobs:>3} {'verify exact':<16} {raw.seconds:>8.2f} {exact.seconds:>8.2f} {share:>10.3f}")
    print(
        f"drlib: the defaults (every row of the copy proven before the swap), target {ROW_PROOF_TARGET:.2f} = restore "
        f"{RESTORE_TARGET} + content fingerprint {VERIFY_TARGET}; drlib catalogue: -p verify_rows false (the copy's "
        f"catalogue proven), target {RESTORE_TARGET}. best/best: the best drlib run over the best raw run; paired: "
        f"the median of each attempt's drlib/raw. speed-up: at -j {jobs_list[0]} / at -j N. verify exact: the "
        "whole `drlib verify database -p exact true` process (every table's content fingerprint, the schema, orphans)"
    )
    for name, timing in (("-p exact true ", exact), ("-p exact false", plain)):
        steps = ", ".join(f"{step} {seconds:.2f}s" for step, seconds in timing.parts.items()) or "no --json steps"
        tables, reads = timing.fingerprints.get("content:", (0, 0.0))
        print(
            f"drlib verify database {name}: {timing.seconds:6.2f}s wall; {steps}; content fingerprints: "
            f"{tables} tables ({reads:.2f}s of table reads)"
        )
    added = exact.parts.get("database_verification", 0.0) - plain.parts.get("database_verification", 0.0)
    fastest = min(bench.best[("raw", jobs)].seconds for jobs in jobs_list)
    print(
        f"the content fingerprint adds {added:.2f}s: {added / fastest:.2f} of the fastest raw restore ({fastest:.2f}s)"
    )
    tables, reads = first.fingerprints.get("restored_copy:content:", (0, 0.0))
    print(f"inside drlib restore (Option B's check of the copy): {tables} content fingerprints, {reads:.2f}s of reads")
    checklist = min(bench.best[("drlib", jobs)].parts.get("pre_restore_checklist", 0.0) for jobs in jobs_list)
    sha256sum = timed_sha256sum(bench.dump)
    print(
        f"the backup's integrity check before the restore (pre_restore_checklist: size, the table of contents' "
        f"sha256, pg_restore --list, disk space): {checklist:.2f}s; the whole file's sha256 is read beside "
        f"pg_restore (sha256sum of the dump alone: {sha256sum:.2f}s)"
    )
    return over


def timed_sha256sum(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def print_breakdown(bench: Bench, jobs: int, kind: str = "drlib") -> None:
    """Where the drlib restore's time went, next to the raw tools' time."""
    raw, ours = bench.best[("raw", jobs)], bench.best[(kind, jobs)]
    print(f"\nwhere the time goes at -j {jobs} ({kind} {ours.seconds:.2f}s vs raw {raw.seconds:.2f}s):")
    print(f"  raw: createdb {raw.parts['createdb']:.2f}s + pg_restore {raw.parts['pg_restore']:.2f}s")
    if not ours.parts:
        print("  drlib: no --json steps to show")
        return
    for name, seconds in ours.parts.items():
        if ":" not in name:
            print(f"  drlib step {name:<28} {seconds:7.2f}s")
            for sub, sub_seconds in ours.parts.items():
                if sub.startswith(f"{name}:"):
                    print(f"    {sub.split(':', 1)[1].strip():<35} {sub_seconds:7.2f}s")
    outside = ours.seconds - sum(v for k, v in ours.parts.items() if ":" not in k)
    print(f"  drlib outside the steps {outside:20.2f}s  (interpreter start, imports, lock, report)")


# -- main --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=1024, help="database size on disk to generate (MiB)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--drlib-cmd", help="the drlib command to time (default: the drlib next to this Python)")
    parser.add_argument(
        "--restore-param",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="another -p for drlib restore database, repeatable (e.g. verify_rows false)",
    )
    parser.add_argument("--breakdown", action="store_true", help="show where the time goes for every -j")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="drlib-bench-"))
    os.environ["DRLIB_HOME"] = str(home)
    os.environ["DRLIB_REPORTS"] = str(home / "reports")
    box = Sandbox(home / "sandbox")
    try:
        started = time.monotonic()
        box.up(seed_data=False, start_api=False)
        os.environ["DRLIB_CONFIG"] = str(write_profile(home, box))
        target = PgTarget.from_profile(load_profile(PROFILE))
        bench = Bench(home=home, target=target, drlib=drlib_command(args), env=installed_env())
        bench.restore_params = [item for name, value in args.restore_param for item in ("-p", name, value)]
        print(f"machine: {machine(target)}")
        print(
            f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; autovacuum off, and a "
            "CHECKPOINT and sync before each timed run"
        )
        print(
            f"timing: {' '.join(bench.drlib)}"
            + (f" (restore {' '.join(bench.restore_params)})" * bool(bench.restore_params))
        )
        generate_database(target, size_mb=args.size_mb)
        quiet_server(target)
        sizes = ", ".join(f"{name} {format_bytes(size)}" for name, size in table_sizes(target).items())
        print(f"database {format_bytes(database_size(target))} ({sizes}) in {time.monotonic() - started:.0f}s")

        started = time.monotonic()
        done = subprocess.run(
            [*bench.drlib, "backup", "create", "--env", PROFILE],
            env=bench.env,
            cwd=home,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"drlib backup create failed:\n{done.stderr.strip()}")
        dumps = sorted((home / "backups" / "postgres").glob(f"{DATABASE}_*.dump"))
        bench.dump = dumps[-1]
        print(
            f"drlib backup create: {bench.dump.name}, {format_bytes(bench.dump.stat().st_size)}, "
            f"{time.monotonic() - started:.1f}s"
        )

        measure(bench, jobs_list=args.jobs, repeat=args.repeat, backup=bench.dump.name)
        over = print_table(bench, args.jobs)
        for jobs in args.jobs if args.breakdown else over:
            for kind in VARIANTS:
                print_breakdown(bench, jobs, kind)
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        box.down(purge=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
