"""The backup commands operators run by hand, end to end against the sandbox."""

from __future__ import annotations

from click.testing import CliRunner

from drlib.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_database_backup_commands(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    code, out = run("backup", "create")
    assert code == 0 and "content_crew_" in out
    code, out = run("backup", "list")
    assert code == 0 and "taken_at_utc" in out
    code, out = run("backup", "verify")
    assert code == 0 and "backup_checksum" in out
    code, out = run("backup", "verify", "content_crew_1999-01-01_000000.dump")
    assert code == 3 and "error [backup-not-found]" in out


def test_storage_backup_commands(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    code, out = run("storage", "backup", "--compression", "zst", "--push")
    assert code == 0 and ".tar.zst" in out and "s3://backups-bucket/storage/" in out
    code, out = run("storage", "backup", "--form", "s3")
    assert code == 0 and "s3://backups-bucket/storage/" in out
    code, out = run("storage", "list")
    assert code == 0 and "archive" in out and "s3" in out
    code, out = run("storage", "verify")
    assert code == 0 and "storage_backup_checksum" in out


def test_redis_backup_commands(healthy_sandbox) -> None:  # type: ignore[no-untyped-def]
    code, out = run("redis", "backup")
    assert code == 0 and "keys" in out
    code, out = run("redis", "list")
    assert code == 0 and "redis_" in out
    code, out = run("redis", "verify")
    assert code == 0 and "redis_check_rdb" in out
