"""The ``drlib`` command. The only place that turns errors into exit codes:
0 all good, 1 a drill failed (a check failed or a step raised), 2 bad usage, 3 a drlib error
(bad input, unreachable server, …) with its message."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from drlib import __version__
from drlib.cli_failover import failover
from drlib.cli_monitor import monitor
from drlib.cli_prune import prune
from drlib.cli_restore import restore, verify
from drlib.cli_undo import undo
from drlib.terminal import (
    EXIT_CHECK_FAILED,
    EXIT_DRLIB_ERROR,
    handles_errors,
    leave,
    leave_after_failed_write,
    parameter_option,
)

EXIT_DRILL_FAILED = EXIT_CHECK_FAILED
__all__ = ["EXIT_DRILL_FAILED", "EXIT_DRLIB_ERROR", "handles_errors", "main", "run"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drlib")
def main() -> None:
    """Executable disaster-recovery runbooks: sandbox, drills, restores, backups and reports."""


def run() -> None:
    """The ``drlib`` console command: :func:`main`, then :func:`~drlib.terminal.leave` with its exit code.

    The first garbage collection comes after 100,000 new objects, not 700: a command's start-up (its
    imports) makes many long-lived objects and little garbage, and collecting during it took a tenth of
    it; a long run still collects."""
    gc.set_threshold(100_000, *gc.get_threshold()[1:])
    try:
        main()  # click's standalone mode: every ending (errors, Ctrl-C, --help) is a SystemExit
    except SystemExit as done:
        leave(done.code)
    except OSError as exc:  # writing the output failed: `| head` gone, or `> file` on a full disk
        leave_after_failed_write(exc)


main.add_command(restore)
main.add_command(verify)
main.add_command(undo)
main.add_command(monitor)
main.add_command(failover)


# -- sandbox ------------------------------------------------------------------------------
@main.group()
def sandbox() -> None:
    """The embedded stack: PostgreSQL, Redis, an S3 endpoint and the sample API."""


@sandbox.command("up")
@click.option(
    "--size",
    type=click.Choice(["small", "medium", "large"]),
    default="small",
    show_default=True,
    help="seed data size (large: over 1 GB, for benchmarks)",
)
@handles_errors
def sandbox_up(size: str) -> None:
    """Start (or repair) the sandbox and print its connection details."""
    from drlib.sandbox.stack import Sandbox

    box = Sandbox()
    with _no_drill_running("sandbox up"):
        status = box.up(size=size)
    click.echo(status.describe())
    click.echo(f"connection details: {box.connection_file}")
    if not status.healthy:
        click.secho("the sandbox is NOT healthy: see the lines above (drlib sandbox status)", fg="red", err=True)
        sys.exit(1)


@sandbox.command("status")
@handles_errors
def sandbox_status() -> None:
    """Show which sandbox services run; exit 1 when any is down."""
    from drlib.sandbox.stack import Sandbox

    status = Sandbox().status()
    if not status.services:
        click.echo("sandbox is not set up: run `drlib sandbox up`")
        sys.exit(1)
    click.echo(status.describe())
    sys.exit(0 if status.running else 1)


@sandbox.command("down")
@click.option("--purge", is_flag=True, help="also delete the sandbox's data, backups and secrets")
@handles_errors
def sandbox_down(purge: bool) -> None:
    """Stop every sandbox process (and with --purge delete its data)."""
    from drlib.sandbox.stack import Sandbox

    with _no_drill_running("sandbox down"):
        Sandbox().down(purge=purge)
    click.echo("sandbox stopped" + (" and purged" if purge else ""))


@contextlib.contextmanager
def _no_drill_running(command: str) -> Iterator[None]:
    """``sandbox up``/``down`` while a drill runs on the sandbox would undo its fault or its restore:
    they take the drill lock, and are refused naming the drill that holds it."""
    from drlib.lock import no_drill_running

    with no_drill_running(None, command=command):
        yield


# -- drill --------------------------------------------------------------------------------
@main.group()
def drill() -> None:
    """Run runbook scenarios as drills and archive dated reports."""


@drill.command("list")
def drill_list() -> None:
    """List the scenarios, their parameters and the named plans."""
    from drlib.scenarios import PLANS, SCENARIOS

    for scenario in SCENARIOS.values():
        click.echo(f"{scenario.id}: {scenario.title}")
        for param in scenario.params:
            click.echo(f"    -p {param.name} ({param.type.__name__}, default {param.default!r}): {param.doc}")
    for name, steps in PLANS.items():
        click.echo(f"plan {name}: " + ", ".join(s + "".join(f" -p {k} {v}" for k, v in p.items()) for s, p in steps))


@drill.command("run")
@click.argument("scenarios", nargs=-1)
@click.option("--plan", help="run a named set of scenarios (monthly, quarterly, annually)")
@click.option("--env", "environment", help="profile to drill (default: sandbox)")
@parameter_option("notebook parameter, repeatable")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    help="whole-run timeout per scenario, seconds",
)
@click.option("--yes", "confirm", is_flag=True, help="confirm failure injection on a non-sandbox drill target")
@click.option("--reports", "reports_root", type=click.Path(path_type=Path), help="reports folder (default ./reports)")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON on stdout (progress goes to stderr)")
@handles_errors
def drill_run(
    scenarios: tuple[str, ...],
    plan: str | None,
    environment: str | None,
    parameters: tuple[tuple[str, str], ...],
    timeout: float,
    confirm: bool,
    reports_root: Path | None,
    as_json: bool,
) -> None:
    """Run SCENARIOS (or --plan) as drills; exit 0 only when every check passed."""
    from drlib.drill import refuse_bad_parameters, run_scenario
    from drlib.scenarios import get_scenario, plan_scenarios
    from drlib.terminal import exit_code as exit_code_of
    from drlib.terminal import show_results

    planned: list[tuple[str, dict[str, Any]]] = [(s, {}) for s in scenarios]
    planned += list(plan_scenarios(plan)) if plan else []
    if not planned:
        raise click.UsageError("name at least one scenario, or --plan (see `drlib drill list`)")
    runs = [(scenario_id, {**plan_params, **dict(parameters)}) for scenario_id, plan_params in planned]
    for scenario_id, overrides in runs:  # every scenario and parameter is checked before anything runs
        refuse_bad_parameters(get_scenario(scenario_id), overrides)

    def say(line: str, **style: Any) -> None:
        click.secho(line, err=as_json, **style)

    exit_code = 0
    documents = []
    for scenario_id, overrides in runs:
        say(f"== drill {scenario_id} ({environment or os.environ.get('DRLIB_PROFILE', 'sandbox')})", bold=True)
        report = run_scenario(
            scenario_id,
            environment=environment,
            overrides=overrides,
            confirm_target=confirm,
            timeout=timeout,
            reports_root=reports_root,
            say=say,
        )
        documents.append(json.loads(report.results.to_json()))
        show_results(report.results, report.folder, say, name=scenario_id)
        code = exit_code_of(report.results)
        if code > 128:  # interrupted by a signal: the plan stops here
            exit_code = code
            break
        exit_code = max(exit_code, code)
    if as_json:
        click.echo(json.dumps(documents, indent=2))
    sys.exit(exit_code)


# -- backups ------------------------------------------------------------------------------
@main.group()
def backup() -> None:
    """Take, list and verify database backups."""


@backup.command("create")
@click.option("--env", "environment", help="profile (default: sandbox)")
@click.option("--format", "fmt", type=click.Choice(["custom", "directory"]), default="custom", show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True, help="parallel dump jobs (directory format)")
@handles_errors
def backup_create(environment: str | None, fmt: str, jobs: int) -> None:
    """pg_dump the profile's database with a manifest beside it."""
    from drlib.config import load_profile
    from drlib.postgres.backup import backup_database
    from drlib.postgres.connection import PgTarget
    from drlib.postgres.manifest import backup_summary

    profile = load_profile(environment)
    made = backup_database(
        target=PgTarget.from_profile(profile),
        backup_dir=profile.backups.postgres_dir,
        prefix=profile.backups.prefix,
        fmt=fmt,
        jobs=jobs,
    )
    click.echo(f"{made.path} ({made.size_bytes} bytes, taken {made.created_at.isoformat(timespec='seconds')})")
    if made.manifest is not None:
        click.echo(backup_summary(made.manifest))


@backup.command("list")
@click.option("--env", "environment", help="profile (default: sandbox)")
@handles_errors
def backup_list(environment: str | None) -> None:
    """The backup catalogue, oldest first."""
    from drlib.config import load_profile
    from drlib.postgres.catalogue import catalogue_table, list_backups

    profile = load_profile(environment)
    table = catalogue_table(list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix))
    click.echo(table.to_string(index=False) if len(table) else "no backups")


@backup.command("verify")
@click.argument("name", default="latest")
@click.option("--env", "environment", help="profile (default: sandbox)")
@click.option("--deep", is_flag=True, help="also read every data block (pg_restore -f /dev/null)")
@click.option("--no-manifest", "no_manifest", is_flag=True, help="accept a backup without a manifest")
@handles_errors
def backup_verify(name: str, environment: str | None, deep: bool, no_manifest: bool) -> None:
    """Integrity-check a backup (default: the newest); exit 3 with the reason when it is bad."""
    from drlib.config import load_profile
    from drlib.postgres.catalogue import list_backups, select_backup
    from drlib.postgres.integrity import verify_backup

    profile = load_profile(environment)
    chosen = select_backup(list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix), selection=name)
    verified = verify_backup(chosen, require_manifest=not no_manifest, deep=deep)
    click.echo(f"{chosen.name}: OK")
    click.echo(repr(verified.checks))


backup.add_command(prune)


# -- storage ------------------------------------------------------------------------------
@main.group()
def storage() -> None:
    """Take, list and verify file-storage backups (local folder and S3)."""


@storage.command("backup")
@click.option("--env", "environment", help="profile (default: sandbox)")
@click.option(
    "--form",
    type=click.Choice(["archive", "full", "s3"]),
    default="archive",
    show_default=True,
    help="archive: storage_DATE.tar.gz; full: full_DATE/ copy; s3: bucket prefix copy",
)
@click.option("--compression", type=click.Choice(["gz", "zst"]), default="gz", show_default=True)
@click.option("--push", is_flag=True, help="also upload a local backup to the backups bucket")
@handles_errors
def storage_backup(environment: str | None, form: str, compression: str, push: bool) -> None:
    """Back up the live storage, with a manifest of every file's size, sha256 and mtime."""
    from drlib.config import load_profile
    from drlib.storage.backends import S3Storage, s3_client
    from drlib.storage.backup import archive_local, copy_full, push_to_bucket, snapshot_bucket

    profile = load_profile(environment)
    settings = profile.require_storage()
    root, backups = Path(settings.path), profile.backups.storage_dir
    if form == "s3":
        live = S3Storage(s3_client(profile), settings.bucket, endpoint=settings.endpoint_url)
        made = snapshot_bucket(live=live, backups_bucket=settings.backups_bucket, prefix=profile.backups.s3_prefix)
    elif form == "full":
        made = copy_full(root=root, backup_dir=backups)
    else:
        made = archive_local(root=root, backup_dir=backups, compression=compression)
    files = made.manifest.total_files if made.manifest else 0
    click.echo(f"{made.location} ({files} files)")
    if push and form != "s3":
        click.echo(
            push_to_bucket(
                made, client=s3_client(profile), bucket=settings.backups_bucket, prefix=profile.backups.s3_prefix
            )
        )


@storage.command("list")
@click.option("--env", "environment", help="profile (default: sandbox)")
@click.option("--s3/--no-s3", "include_s3", default=True, show_default=True, help="include the backups bucket")
@handles_errors
def storage_list(environment: str | None, include_s3: bool) -> None:
    """The storage backup catalogue across the local folder and the backups bucket."""
    from drlib.config import load_profile
    from drlib.storage.backends import s3_client
    from drlib.storage.catalogue import list_storage_backups, storage_catalogue_table

    profile = load_profile(environment)
    s3 = None
    if include_s3:
        s3 = (s3_client(profile), profile.require_storage().backups_bucket, profile.backups.s3_prefix)
    table = storage_catalogue_table(list_storage_backups(backup_dir=profile.backups.storage_dir, s3=s3))
    click.echo(table.to_string(index=False) if len(table) else "no storage backups")


@storage.command("verify")
@click.argument("name", default="latest")
@click.option("--env", "environment", help="profile (default: sandbox)")
@handles_errors
def storage_verify(name: str, environment: str | None) -> None:
    """Integrity-check a local storage backup (default: the newest); exit 3 when it is bad."""
    from drlib.config import load_profile
    from drlib.storage.catalogue import list_storage_backups, select_storage_backup
    from drlib.storage.restore import verify_storage_backup

    profile = load_profile(environment)
    chosen = select_storage_backup(list_storage_backups(backup_dir=profile.backups.storage_dir), selection=name)
    checks = verify_storage_backup(chosen).checks
    click.echo(f"{chosen.name}: OK")
    click.echo(repr(checks))


# -- redis --------------------------------------------------------------------------------
@main.group("redis")
def redis_group() -> None:
    """Take, list and verify Redis RDB backups."""


@redis_group.command("backup")
@click.option("--env", "environment", help="profile (default: sandbox)")
@handles_errors
def redis_backup(environment: str | None) -> None:
    """BGSAVE, fetch the RDB and restore-test it into a throw-away Redis for its manifest."""
    from drlib.config import load_profile
    from drlib.redis.backup import backup_redis

    made = backup_redis(load_profile(environment))
    keys = made.manifest.keys if made.manifest else 0
    click.echo(f"{made.path} ({keys} keys, taken {made.created_at.isoformat(timespec='seconds')})")


@redis_group.command("list")
@click.option("--env", "environment", help="profile (default: sandbox)")
@handles_errors
def redis_list(environment: str | None) -> None:
    """The Redis backup catalogue, oldest first."""
    from drlib.config import load_profile
    from drlib.redis.backup import list_redis_backups

    for item in list_redis_backups(load_profile(environment).backups.redis_dir):
        keys = item.manifest.keys if item.manifest else "?"
        click.echo(f"{item.name}  {item.created_at.isoformat(timespec='seconds')}  {keys} keys")


@redis_group.command("verify")
@click.argument("name", default="latest")
@click.option("--env", "environment", help="profile (default: sandbox)")
@handles_errors
def redis_verify(name: str, environment: str | None) -> None:
    """Integrity-check an RDB backup (checksum, redis-check-rdb); exit 3 when it is bad."""
    from drlib.config import load_profile
    from drlib.redis.backup import list_redis_backups
    from drlib.redis.restore import verify_redis_backup
    from drlib.selection import select_backup

    profile = load_profile(environment)
    chosen = select_backup(list_redis_backups(profile.backups.redis_dir), selection=name, what="Redis backup")
    checks = verify_redis_backup(chosen).checks
    click.echo(f"{chosen.name}: OK")
    click.echo(repr(checks))


# -- profiles and reports -------------------------------------------------------------------
@main.command("profiles")
@handles_errors
def profiles() -> None:
    """List the profiles drlib knows (built-in and drlib.toml)."""
    from drlib.config import available_profiles

    for name, table in sorted(available_profiles().items()):
        click.echo(
            f"{name}: {table.get('description', '')}"
            + ("  [drill target]" if table.get("drill_target") is True else "")
        )


@main.command("profile")
@click.option("--env", "environment", help="profile (default: sandbox)")
@handles_errors
def profile_show(environment: str | None) -> None:
    """Show a resolved profile (secret *names* only, never values)."""
    from drlib.config import load_profile
    from drlib.secrets import redact

    click.echo(redact(json.dumps(load_profile(environment).to_dict(), indent=2, default=str)))


@main.group()
def reports() -> None:
    """The archive of drill reports."""


@reports.command("index")
@click.option("--reports", "reports_root", type=click.Path(path_type=Path), help="reports folder")
def reports_index(reports_root: Path | None) -> None:
    """Rebuild reports/index.html and index.json."""
    from drlib.config import reports_dir
    from drlib.report import write_index

    root = reports_root or reports_dir()
    root.mkdir(parents=True, exist_ok=True)
    click.echo(write_index(root))


@reports.command("verify")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def reports_verify(folder: Path) -> None:
    """Check a report folder against its SHA256SUMS; exit 1 when anything changed."""
    from drlib.report import verify_checksums

    changed = verify_checksums(folder)
    if changed:
        click.secho("ALTERED: " + ", ".join(changed), fg="red")
        sys.exit(1)
    click.echo("intact")


@main.command("lab")
@click.option("--port", type=int, default=8888, show_default=True)
def lab(port: int) -> None:
    """Open the runbook notebooks in JupyterLab for use during an incident."""
    from drlib.config import project_root

    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            f"--port={port}",
            "--no-browser",
            f"--notebook-dir={project_root() / 'notebooks'}",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
    )


if __name__ == "__main__":
    run()
