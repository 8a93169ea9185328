"""The runbook's log check: error lines fail it, warning lines warn, older lines are ignored."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drlib.app.logs import log_checks
from drlib.config import AppSettings, Profile


def profile_logging_to(path: Path) -> Profile:
    return replace(Profile(name="test"), app=replace(AppSettings(), log_file=path))


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S,000")


def test_errors_since_the_restore_fail_and_warnings_warn(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    log = tmp_path / "api.log"
    log.write_text(
        f"{stamp(now - timedelta(minutes=5))} ERROR api database unavailable\n"
        f"{stamp(now + timedelta(seconds=1))} INFO api GET /health 200\n"
    )
    clean = {c.name: c.status for c in log_checks(profile_logging_to(log), since=now)}
    assert clean == {"log_errors": "pass", "log_warnings": "pass"}
    with log.open("a") as handle:
        handle.write(f"{stamp(now + timedelta(seconds=2))} WARNING api login refused for x\n")
        handle.write(f"{stamp(now + timedelta(seconds=3))} ERROR api /v1/content-jobs failed: OperationalError\n")
        handle.write("Traceback (most recent call last):\n")
    result = {c.name: c for c in log_checks(profile_logging_to(log), since=now)}
    assert result["log_errors"].status == "fail" and result["log_errors"].observed == 2
    assert "content-jobs failed" in result["log_errors"].detail
    assert result["log_warnings"].status == "warn"
