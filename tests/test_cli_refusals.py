"""What the commands say when things are wrong: a damaged backup is never called OK, a drill starts a
stopped sandbox as the README promises, and a quoted boolean never shows a profile as a drill target."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from drlib import faults
from drlib.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("group", "folder", "pattern"),
    [("storage", "storage", "storage_*.tar.gz"), ("redis", "redis", "redis_*.rdb"), ("backup", "postgres", "*.dump")],
)
def test_verify_of_a_damaged_backup_never_prints_ok(
    healthy_sandbox, profile, tmp_path: Path, group: str, folder: str, pattern: str
) -> None:  # type: ignore[no-untyped-def]
    code, out = run(group, "create" if group == "backup" else "backup")
    assert code == 0, out
    newest = sorted((healthy_sandbox.backups_root / folder).glob(pattern))[-1]
    keep = tmp_path / newest.name
    shutil.copy2(newest, keep)
    try:
        faults.flip_byte(newest)
        code, out = run(group, "verify", newest.name)
        assert code == 3, out
        assert ": OK" not in out and "error [backup-corrupt]" in out
    finally:
        shutil.copy2(keep, newest)


@pytest.mark.slow
def test_a_drill_starts_a_stopped_sandbox_first(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    healthy_sandbox.down()
    code, out = run("drill", "run", "verify_restore")
    assert code == 0, out
    assert "repairing the sandbox" in out and "PASSED: verify_restore" in out
    assert healthy_sandbox.status().healthy


def test_a_quoted_drill_target_is_never_listed_as_one(tmp_path: Path) -> None:
    config = tmp_path / "drlib.toml"
    config.write_text('[profiles.quoted]\ndrill_target = "false"\n[profiles.real]\ndrill_target = true\n')
    code, out = run("profiles", env={"DRLIB_CONFIG": str(config)})
    assert code == 0, out
    lines = {line.split(":", 1)[0]: line for line in out.splitlines()}
    assert "[drill target]" in lines["real"] and "[drill target]" not in lines["quoted"]


@pytest.mark.parametrize(
    ("scenario", "parameter"),
    [
        ("provider_outage", "fail_back"),
        ("provider_outage", "drill_end_outage"),
        ("database_corruption", "drop_old_database"),
    ],
)
def test_a_parameter_the_drill_sets_itself_is_refused_not_silently_replaced(scenario: str, parameter: str) -> None:
    code, out = run("drill", "run", scenario, "-p", parameter, "false")
    assert code == 3 and out.startswith("error [parameter]: ") and f"{parameter!r} is set by the {scenario}" in out, out
