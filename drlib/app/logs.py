"""The runbook's log check (``docker compose logs api | grep -i error``): error and warning lines
written since a time, from the application's log file or from ``docker compose logs``."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from drlib.checks import CheckResult, check
from drlib.config import Profile
from drlib.secrets import redact
from drlib.services import run_command

_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})")
_ERROR = re.compile(r"\b(error|critical|fatal|traceback)\b", re.IGNORECASE)
_WARNING = re.compile(r"\bwarn(ing)?\b", re.IGNORECASE)


def log_lines(profile: Profile, *, since: datetime) -> list[str]:
    """Lines logged at or after ``since`` (file: by their leading timestamp; compose: ``--since``)."""
    app = profile.require_app()
    if app.log_file is not None:
        path = Path(app.log_file)
        if not path.is_file():
            return []
        lines = []
        keep = False
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stamp = _STAMP.match(line)
            if stamp:
                keep = datetime.fromisoformat(stamp[1].replace(" ", "T")).replace(tzinfo=since.tzinfo) >= since
            if keep:
                lines.append(line)
        return lines
    if app.controller == "compose":
        argv = [
            "docker",
            "compose",
            *(["-f", app.compose_file] if app.compose_file else []),
            "logs",
            "--no-color",
            "--since",
            since.isoformat(),
            app.compose_service,
        ]
        return run_command(argv, what="docker compose logs").stdout.splitlines()
    return []


def is_error_line(line: str) -> bool:
    """A line that reports an error (error, critical, fatal, a traceback)."""
    return bool(_ERROR.search(line))


def log_checks(profile: Profile, *, since: datetime) -> list[CheckResult]:
    """No error lines (fail) and no warning lines (warn) since ``since``."""
    lines = log_lines(profile, since=since)
    errors = [redact(line) for line in lines if _ERROR.search(line)]
    warnings = [redact(line) for line in lines if _WARNING.search(line) and not _ERROR.search(line)]
    app = profile.require_app()
    source = str(app.log_file or f"docker compose logs {app.compose_service}")
    return [
        check(
            "log_errors",
            not errors,
            expected=0,
            observed=len(errors),
            detail=(errors[0][:300] if errors else f"{len(lines)} lines scanned in {source}"),
        ),
        check(
            "log_warnings",
            not warnings,
            expected=0,
            observed=len(warnings),
            warn_only=True,
            detail=(warnings[0][:300] if warnings else f"{len(lines)} lines scanned"),
        ),
    ]
