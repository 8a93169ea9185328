"""The backup commands operators run by hand, end to end against the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from drlib.cli import main
from drlib.config import load_profile
from drlib.postgres.catalogue import list_backups
from drlib.postgres.connection import PgTarget
from tests.richdb import create_rich_database, drop_rich_database


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


def test_a_profile_with_connection_settings_only_is_refused_with_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "drlib.toml"
    config.write_text('[profiles.mine.database]\nhost = "db.internal"\nport = 5433\n')
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    code, out = run("backup", "create", "--env", "mine")
    assert code == 3
    assert out.startswith("error [config]: profile 'mine', database.name is required") and "Traceback" not in out


def test_backup_create_on_any_database_discovers_every_schema(
    healthy_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    server = PgTarget.from_profile(load_profile("sandbox"))
    rich = create_rich_database(server)
    try:
        sandbox_db = load_profile("sandbox").database
        config = tmp_path / "drlib.toml"
        config.write_text(
            f"""[profiles.chinook]
secrets_file = "{load_profile("sandbox").secrets_file}"
[profiles.chinook.database]
host = "{sandbox_db.host}"
port = {sandbox_db.port}
user = "{sandbox_db.user}"
name = "{rich.target.name}"
password_secret = "{sandbox_db.password_secret}"
[profiles.chinook.backups]
postgres_dir = "{tmp_path / "backups"}"
"""
        )
        monkeypatch.setenv("DRLIB_CONFIG", str(config))
        code, out = run("backup", "create", "--env", "chinook")
        assert code == 0, out
        assert f"{rich.target.name}_" in out  # named after the database, not Content Crew
        assert "9 tables" in out and "fingerprints: schema" in out
        made = list_backups(tmp_path / "backups", prefix=rich.target.name)[-1]
        assert made.manifest is not None and "sales.invoice_2026" in made.manifest.tables
        code, out = run("backup", "verify", "--env", "chinook")
        assert code == 0 and "roles_file_checksum" in out
    finally:
        drop_rich_database(rich)


def test_a_wrong_password_in_database_url_is_named_as_such(
    healthy_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    db = load_profile("sandbox").database
    config = tmp_path / "drlib.toml"
    config.write_text(f'[profiles.byurl.backups]\npostgres_dir = "{tmp_path}"\n')
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    monkeypatch.setenv("DATABASE_URL", f"postgresql://{db.user}:wrong-pw-123@{db.host}:{db.port}/{db.name}")
    code, out = run("backup", "create", "--env", "byurl")
    assert code == 3 and "error [credentials]" in out
    assert "Check the password in DATABASE_URL." in out and "wrong-pw-123" not in out


def test_verify_database_without_any_backup_fails_saying_so(
    healthy_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    sandbox = load_profile("sandbox")
    db = sandbox.database
    config = tmp_path / "drlib.toml"
    config.write_text(
        f'[profiles.nobackups]\nsecrets_file = "{sandbox.secrets_file}"\n'
        f'[profiles.nobackups.database]\nhost = "{db.host}"\nport = {db.port}\nuser = "{db.user}"\n'
        f'name = "{db.name}"\npassword_secret = "{db.password_secret}"\n'
        f'[profiles.nobackups.backups]\npostgres_dir = "{tmp_path / "empty"}"\n'
    )
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    code, out = run("verify", "database", "--env", "nobackups", "--reports", str(tmp_path / "reports"))
    assert code == 1, out
    assert "backup_manifest" in out
