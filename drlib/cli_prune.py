"""``drlib backup prune``: backups beyond retention (and, with ``--logs``, old rotated logs) listed with their
sizes and what deleting them frees per volume; deleted, each with its sidecar files, only with ``--confirm``
(the disk_full runbook's Step 1, :mod:`drlib.retention`). With ``--confirm`` it takes the stack's drill lock,
so a drill or a restore never loses the backup it reads. Exit 0 fine (or a dry run), 1 something could not be
deleted, 2 bad usage, 3 a drlib error (printed as one line ``error [code]: message``)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from drlib.terminal import EXIT_CHECK_FAILED, handles_errors

if TYPE_CHECKING:
    from drlib.retention import PrunePlan, PruneResult


@click.command("prune")
@click.option("--env", "environment", help="profile (default: sandbox)")
@click.option("--keep-days", type=click.IntRange(min=0), help="keep backups younger than N days ([backups] keep_days)")
@click.option(
    "--keep-last", type=click.IntRange(min=1), help="keep the newest N backups of each component ([backups] keep_last)"
)
@click.option("--logs", is_flag=True, help="also rotated logs older than [logs] keep_days in [logs] folders")
@click.option("--confirm", is_flag=True, help="delete them (without it: a dry run that lists them)")
@click.option("--json", "as_json", is_flag=True, help="print what was (or would be) freed as JSON on stdout")
@handles_errors
def prune(
    environment: str | None, keep_days: int | None, keep_last: int | None, logs: bool, confirm: bool, as_json: bool
) -> None:
    """Delete backups beyond retention: older than keep_days and not among the newest keep_last of their
    component, never the newest one that verifies; each with its manifest and sidecar files. Dry run unless
    --confirm."""
    from drlib.config import load_profile
    from drlib.lock import acquire, stack_key
    from drlib.retention import PruneResult, Retention, plan_pruning
    from drlib.retention import prune as delete

    profile = load_profile(environment)
    retention = Retention.from_profile(profile, keep_days=keep_days, keep_last=keep_last)
    result: PruneResult | None = None
    if confirm:
        lock = acquire(stack_key(profile), scenario="backup prune")
        try:
            plan = plan_pruning(profile, retention, logs=logs)
            done = delete(plan, confirm=True)
            assert isinstance(done, PruneResult)
            result = done
        finally:
            lock.release()
    else:
        plan = plan_pruning(profile, retention, logs=logs)
    if as_json:
        click.echo(json.dumps(_document(profile.name, plan, result), indent=2))
    else:
        _show(plan, result, environment)
    if result is not None and (result.failed or result.skipped):
        sys.exit(EXIT_CHECK_FAILED)


def _show(plan: PrunePlan, result: PruneResult | None, environment: str | None) -> None:
    from drlib.units import format_bytes

    click.echo(f"retention: {plan.retention.describe()}")
    for row in plan.rows():
        click.echo(
            f"  {row['component']:<8} {row['name']:<44} {row['age_days']:>6} days  {row['size']:>10}  {row['why']}"
        )
    for refused in plan.refused:
        click.secho(f"  refused  {refused.path}: {refused.reason}", fg="yellow")
    kept: dict[str, int] = {}
    for item in plan.kept:
        kept[item.component] = kept.get(item.component, 0) + 1
    if kept:
        click.echo("kept: " + ", ".join(f"{component} {count}" for component, count in kept.items()))
    for note in plan.notes:
        click.echo(f"note: {note}")
    if result is None:
        click.echo(
            f"would free {format_bytes(plan.total_bytes)} ({len(plan.candidates)} item(s)): DRY RUN, nothing deleted"
        )
        if plan.candidates:
            env = f" --env {environment}" if environment else ""
            click.secho(f"  to do it: drlib backup prune{env} --confirm (with the same options)", fg="cyan")
        return
    for candidate, why in (*result.failed, *result.skipped):
        click.secho(f"  NOT deleted {candidate.name}: {why}", fg="red")
    click.echo(f"freed {format_bytes(result.bytes_freed)} ({len(result.deleted)} item(s) deleted)")


def _document(profile: str, plan: PrunePlan, result: PruneResult | None) -> dict[str, Any]:
    return {
        "profile": profile,
        "dry_run": result is None,
        "retention": {
            "keep_days": plan.retention.keep_days,
            "keep_last": plan.retention.keep_last,
            "log_keep_days": plan.retention.log_keep_days,
        },
        "candidates": [
            {**row, "paths": [str(p) for p in c.paths]} for c, row in zip(plan.candidates, plan.rows(), strict=True)
        ],
        "total_bytes": plan.total_bytes,
        "kept": [{"component": k.component, "name": k.name, "why": k.reason} for k in plan.kept],
        "refused": [{"component": r.component, "path": str(r.path), "why": r.reason} for r in plan.refused],
        "notes": list(plan.notes),
        "freed_bytes": result.bytes_freed if result else 0,
        "deleted": [c.name for c in result.deleted] if result else [],
        "not_deleted": [{"name": c.name, "why": why} for c, why in (*result.failed, *result.skipped)] if result else [],
    }
