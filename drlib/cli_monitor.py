"""``drlib monitor``: the prevention checks (the ``prevention_checks`` notebook's) run once, printed, and with
``--prometheus FILE`` written as metrics for a node-exporter textfile collector. Exit 0 when no check fails
(warnings included), 1 when one fails, 3 on a drlib error (e.g. an unknown profile)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from drlib.terminal import EXIT_CHECK_FAILED, handles_errors


@click.command("monitor")
@click.option("--env", "environment", help="profile (default: sandbox)")
@click.option(
    "--prometheus",
    "prometheus",
    type=click.Path(dir_okay=False, path_type=Path),
    help="also write the metrics to FILE (Prometheus text format, written atomically; name it *.prom)",
)
@click.option("--quiet", is_flag=True, help="print only warnings and failures")
@handles_errors
def monitor(environment: str | None, prometheus: Path | None, quiet: bool) -> None:
    """Disk usage (60 % warn, 80 % fail), backup freshness against each RPO and last backup success,
    database connections, storage file counts, application health and error rate: the runbook's
    Monitoring / Automated Alerts, for a scheduler to run (cron, a systemd timer)."""
    from drlib.config import load_profile
    from drlib.monitoring import run_checks

    report = run_checks(load_profile(environment))
    colours = {"pass": "green", "warn": "yellow", "fail": "red"}
    width = max((len(c.name) for c in report.checks), default=10)
    for item in report.checks:
        if quiet and item.status == "pass":
            continue
        click.secho(f"{item.status.upper():<4}  ", fg=colours[item.status], nl=False)
        click.echo(f"{item.name:<{width}}  {item.observed} (expected {item.expected})" + _detail(item.detail))
    for note in report.notes:
        click.echo(f"note: {note}")
    failing = len(report.checks.failures)
    warnings = sum(1 for c in report.checks if c.status == "warn")
    click.echo(f"{report.profile}: {len(report.checks)} checks, {failing} failing, {warnings} warnings")
    if prometheus is not None:
        from drlib.metrics import write_prometheus

        write_prometheus(report, prometheus)
        click.echo(f"metrics: {prometheus}")
    if failing:
        sys.exit(EXIT_CHECK_FAILED)


def _detail(detail: str) -> str:
    return f": {detail}" if detail else ""
