"""Profiles, targets, environment overrides, parameters and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from drlib.config import RUNBOOK_RPO_SECONDS, RUNBOOK_RTO_SECONDS, load_profile, parse_duration
from drlib.exceptions import ConfigError, DrlibError, ParameterError
from drlib.parameters import Param, validate
from drlib.scenarios import SCENARIOS
from drlib.secrets import MASK, redact, register_secret, scan_for_secrets


def test_the_default_profile_describes_the_runbooks_stack() -> None:
    profile = load_profile("content_crew")
    assert profile.database.name == "content_crew"
    assert profile.database.tables == ("users", "organizations", "content_jobs", "content_artifacts")
    assert profile.backups.postgres_dir.as_posix().endswith("backups/postgres")
    assert profile.app.health_path == "/health"
    assert profile.app.controller == "compose" and not profile.drill_target


def test_the_runbooks_rpo_and_rto_tables_are_the_default_targets() -> None:
    targets = load_profile("content_crew").targets
    assert RUNBOOK_RPO_SECONDS == {"postgres": 86400, "redis": 3600, "storage": 86400}
    assert RUNBOOK_RTO_SECONDS == {
        "database_loss": 14400,
        "storage_loss": 7200,
        "full_system_loss": 28800,
        "partial_failure": 3600,
    }
    assert targets.rpo("postgres") == 86400 and targets.rto("database_loss") == 14400


def test_a_profile_file_adds_profiles_and_overrides_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "drlib.toml"
    config.write_text(
        '[profiles.prod]\ndescription = "prod"\n[profiles.prod.database]\nhost = "db.internal"\n'
        '[profiles.prod.targets.rpo]\npostgres = "1h"\n[profiles.prod.targets.rto]\ndatabase_loss = "90m"\n'
    )
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    profile = load_profile("prod")
    assert profile.database.host == "db.internal"
    assert profile.targets.rpo("postgres") == 3600 and profile.targets.rto("database_loss") == 5400
    assert profile.targets.rpo("redis") == 3600


def test_environment_variables_override_a_profile_and_the_password_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ops:s3cr3t-pa55@db.example:6543/content_crew")
    monkeypatch.setenv("API_URL", "http://api.example:8000")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    profile = load_profile("content_crew")
    assert (profile.database.host, profile.database.port, profile.database.user) == ("db.example", 6543, "ops")
    assert profile.app.base_url == "http://api.example:8000"
    assert profile.database_password() == "s3cr3t-pa55"
    assert "s3cr3t-pa55" not in redact("connecting with s3cr3t-pa55")


def test_an_unknown_profile_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown profile 'nope'; known profiles:"):
        load_profile("nope")


def test_an_unknown_key_in_a_profile_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "drlib.toml"
    config.write_text("[profiles.bad.database]\nhots = 'typo'\n")
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    with pytest.raises(ConfigError, match="unknown key 'hots' in \\[profiles.bad.database\\] of .*drlib.toml: did you mean 'host'\\?"):
        load_profile("bad")


def test_durations_are_read_as_people_write_them() -> None:
    assert parse_duration("24h") == 86400 and parse_duration("90m") == 5400 and parse_duration(30) == 30
    with pytest.raises(ConfigError):
        parse_duration("soon")


PARAMS = (
    Param("jobs", int, 4, "jobs", minimum=1),
    Param("option", str, "B", "option", choices=("A", "B")),
    Param("confirm", bool, False, "confirm"),
)


def test_parameters_get_their_defaults_and_types() -> None:
    assert validate(PARAMS, {"jobs": "8", "confirm": "yes"}, scenario="s") == {
        "jobs": 8,
        "option": "B",
        "confirm": True,
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jbos": 2}, "unknown parameter 'jbos'"),
        ({"jobs": "many"}, "must be a whole number"),
        ({"jobs": 0}, "at least 1"),
        ({"option": "C"}, "allowed: 'A', 'B'"),
        ({"confirm": "perhaps"}, "true or false"),
        ({"db_password": "x"}, "secrets are never parameters"),
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(values: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        validate(PARAMS, values, scenario="s")


def test_no_scenario_declares_a_secret_as_a_parameter() -> None:
    from drlib.secrets import looks_like_secret_name

    for scenario in SCENARIOS.values():
        assert not [p.name for p in scenario.params if looks_like_secret_name(p.name)]


def test_redaction_masks_registered_secrets_url_passwords_and_pairs() -> None:
    register_secret("hunter2-registered")
    text = redact('pw hunter2-registered in postgresql://u:topsecret@h/db and password=abc123 {"token": "xyz789"}')
    assert "hunter2-registered" not in text and "topsecret" not in text
    assert "abc123" not in text and "xyz789" not in text
    assert text.count(MASK) == 4


def test_error_messages_never_carry_a_secret() -> None:
    register_secret("leaky-secret-value")
    assert "leaky-secret-value" not in str(DrlibError("failed with leaky-secret-value"))


def test_the_secret_scan_finds_a_leaking_file(tmp_path: Path) -> None:
    (tmp_path / "clean.txt").write_text("nothing here")
    (tmp_path / "leak.txt").write_text("the password is scan-me-secret")
    assert scan_for_secrets(tmp_path, frozenset({"scan-me-secret"})) == [tmp_path / "leak.txt"]
