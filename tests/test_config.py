"""Profiles, targets, environment overrides, parameters and secrets."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from pathlib import Path

import pytest

from drlib.config import RUNBOOK_RPO_SECONDS, RUNBOOK_RTO_SECONDS, load_profile, parse_duration, profile_schema
from drlib.exceptions import ConfigError, DrlibError, ParameterError
from drlib.parameters import Param, validate
from drlib.scenarios import SCENARIOS
from drlib.secrets import MASK, redact, register_secret, scan_for_secrets


def test_the_default_profile_describes_the_runbooks_stack() -> None:
    profile = load_profile("content_crew")
    assert profile.database.name == "content_crew"
    assert profile.database.check_set == "content_crew"
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
        '[profiles.prod]\ndescription = "prod"\n[profiles.prod.database]\nhost = "db.internal"\nname = "app"\n'
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
    expected = r"unknown key 'hots' in \[profiles.bad.database\] of .*drlib.toml: did you mean 'host'\?"
    with pytest.raises(ConfigError, match=expected):
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


def test_a_limit_is_printed_as_the_operator_types_it() -> None:
    sizes = (Param("probe_bytes", int, 1024, "bytes", minimum=1, maximum=64 * 1024 * 1024),)
    with pytest.raises(ParameterError, match="at most 67108864, not 67108865"):
        validate(sizes, {"probe_bytes": 64 * 1024 * 1024 + 1}, scenario="s")


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


#: every character the key pattern's case-insensitive match takes for a given ASCII letter
ODD_CASE = {"i": "\u0130\u0131", "s": "\u017f", "k": "\u212a"}


@pytest.mark.parametrize(
    "key", ["password", "PASSWD", "PGPassword", "secret", "secret_access_key", "Token", "requirepass"]
)
def test_a_key_value_pair_is_masked_however_its_key_is_spelt(key: str) -> None:
    spellings = {key, key.upper()} | {
        key[:i] + odd + key[i + 1 :] for i, letter in enumerate(key.lower()) for odd in ODD_CASE.get(letter, "")
    }
    for spelling in spellings:
        for text in (f"{spelling}=v4lue-x", f'{{"{spelling}": "v4lue-x"}}', f"a long text, then {spelling} = v4lue-x"):
            assert "v4lue-x" not in redact(text), text


def test_error_messages_never_carry_a_secret() -> None:
    register_secret("leaky-secret-value")
    assert "leaky-secret-value" not in str(DrlibError("failed with leaky-secret-value"))


def test_the_secret_scan_finds_a_leaking_file(tmp_path: Path) -> None:
    (tmp_path / "clean.txt").write_text("nothing here")
    (tmp_path / "leak.txt").write_text("the password is scan-me-secret")
    assert scan_for_secrets(tmp_path, frozenset({"scan-me-secret"})) == [tmp_path / "leak.txt"]


# --- validation by pydantic: one message naming file, profile and key ---------------------


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    config = tmp_path / "drlib.toml"
    config.write_text(text)
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    for variable in ("DATABASE_URL", "REDIS_URL", "API_URL", "S3_ENDPOINT_URL", "DRLIB_BACKUP_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return config


def config_error(name: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_profile(name)
    return str(caught.value)


def test_every_problem_of_a_profile_is_listed_in_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = use_config(
        tmp_path,
        monkeypatch,
        "[profiles.staging.database]\nport = 70000\n[profiles.staging.storage]\nkind = 'ftp'\n"
        "[profiles.staging.app]\ncontroller = 'kubernetes'\n[profiles.staging.backups]\nformat = 'tar'\n",
    )
    message = config_error("staging")
    assert "profile 'staging' has 4 problems" in message
    assert f"{config}: profile 'staging', database.port: Input should be less than or equal to 65535" in message
    assert "storage.kind: Input should be 'local' or 's3' (got 'ftp')" in message
    assert "app.controller: Input should be 'sandbox', 'compose', 'systemd' or 'shell'" in message
    assert "backups.format: Input should be 'custom' or 'directory'" in message
    assert "Traceback" not in message and "pydantic" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[profiles.s.database]\nport = 0\n", "database.port: Input should be greater than or equal to 1"),
        ("[profiles.s.database]\nport = '5432'\n", "database.port: Input should be a valid integer"),
        ("[profiles.s.redis]\nport = 5.5\n", "redis.port: Input should be a valid integer"),
        ("[profiles.s.database]\ntables = 'users'\n", "database.tables: Input should be a valid tuple"),
        (
            "[profiles.s.targets.rto]\ndatabase_loss = '0h'\n",
            "targets.rto.database_loss: Input should be greater than 0",
        ),
        ("[profiles.s.targets.rpo]\npostgres = 'soon'\n", "targets.rpo.postgres: not a duration"),
        ("[profiles.s.targets.rto]\ndatabse_loss = '1h'\n", "unknown RTO target 'databse_loss': did you mean"),
    ],
)
def test_a_wrong_type_or_range_is_refused_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    config = use_config(tmp_path, monkeypatch, text)
    message = config_error("s")
    assert f"{config}: profile 's'" in message and expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[profiles.s]\ndril_target = true\n",
            "unknown key 'dril_target' in [profiles.s] of {config}: did you mean 'drill_target'?",
        ),
        (
            "[profiles.s.targets]\nrpos = {}\n",
            "unknown key 'rpos' in [profiles.s.targets] of {config}: did you mean 'rpo'?",
        ),
        ("[profiles.s]\nname = 'x'\n", "unknown key 'name' in [profiles.s] of {config}"),
        (
            "[[profiles.s.database.orphan_checks]]\nnme = 'x'\n",
            "unknown key 'nme' in [profiles.s.database.orphan_checks[0]] of {config}: did you mean 'name'?",
        ),
        ("[profile.s]\nhost = 'x'\n", "unknown key 'profile' in {config}: did you mean 'profiles'?"),
    ],
)
def test_an_unknown_key_is_refused_with_the_nearest_valid_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    config = use_config(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError) as caught:
        load_profile("s" if "profiles" in text else "content_crew")
    assert expected.format(config=config) in str(caught.value)


def test_a_quoted_boolean_is_refused_so_a_drill_cannot_run_by_mistake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = use_config(tmp_path, monkeypatch, '[profiles.staging]\ndrill_target = "false"\n')
    message = config_error("staging")
    assert f"{config}: profile 'staging', drill_target:" in message
    assert "write drill_target = false without quotes" in message


def test_a_real_boolean_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(
        tmp_path, monkeypatch, "[profiles.staging]\ndrill_target = true\n[profiles.staging.database]\nname = 'app'\n"
    )
    assert load_profile("staging").drill_target is True


# --- secrets from connection URLs stay in memory ----------------------------------------


def test_a_database_url_password_never_reaches_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, "")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://ops:in-memory-pw%2F1@db.example:6543/content_crew")
    monkeypatch.setenv("REDIS_URL", "redis://:redis-memory-pw@cache.example:6380/0")
    before = dict(os.environ)
    profile = load_profile("content_crew")
    assert dict(os.environ) == before
    assert not [k for k, v in os.environ.items() if "memory-pw" in v and not k.endswith("_URL")]
    assert profile.secret("PGPASSWORD") == "in-memory-pw/1" and profile.database_password() == "in-memory-pw/1"
    assert profile.secret("REDIS_PASSWORD") == "redis-memory-pw"
    assert (profile.redis.host, profile.redis.port) == ("cache.example", 6380)
    assert "in-memory-pw" not in redact("auth in-memory-pw/1")
    assert "memory-pw" not in repr(profile) and "memory-pw" not in json.dumps(profile.to_dict())
    assert "memory-pw" not in json.dumps(dataclasses.asdict(profile), default=str)


def test_a_url_password_survives_replacing_a_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, "")
    monkeypatch.setenv("DATABASE_URL", "postgresql://ops:kept-after-replace@db.example/content_crew")
    profile = load_profile("content_crew")
    moved = dataclasses.replace(profile, database=dataclasses.replace(profile.database, host="elsewhere"))
    assert moved.database_password() == "kept-after-replace"


@pytest.mark.parametrize("variable", ["DATABASE_URL", "REDIS_URL"])
@pytest.mark.parametrize("password", ["p/ss#w0rd:x@y", "abc#defgh", "12/secretish", "pq?rs=tuv", "zz#9/qq"])
def test_a_malformed_connection_url_is_refused_without_quoting_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, password: str
) -> None:
    use_config(tmp_path, monkeypatch, "")
    scheme = "postgresql" if variable == "DATABASE_URL" else "redis"
    monkeypatch.setenv(variable, f"{scheme}://ops:{password}@db.example:5432/content_crew")
    message = config_error("content_crew")
    assert variable in message
    assert "percent-encode special characters in the password (e.g. / as %2F, # as %23)" in message
    chunks = {password[i : i + 3] for i in range(len(password) - 2)}
    assert not [chunk for chunk in chunks if chunk in message]


@pytest.mark.parametrize(
    "url",
    ["postgresql://ops:pw@db.example:port/x", "postgresql://db.example:70000/x", "mysql://ops@db/x", "postgresql:///x"],
)
def test_a_database_url_with_a_bad_port_scheme_or_host_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    use_config(tmp_path, monkeypatch, "")
    monkeypatch.setenv("DATABASE_URL", url)
    assert "DATABASE_URL is not a valid connection URL" in config_error("content_crew")


def test_the_documented_environment_overrides_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, "")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://s3.example:9000")
    monkeypatch.setenv("DRLIB_BACKUP_DIR", str(tmp_path / "pg-backups"))
    monkeypatch.setenv("DRLIB_PROFILE", "content_crew")
    profile = load_profile()
    assert profile.name == "content_crew" and profile.storage.endpoint_url == "http://s3.example:9000"
    assert profile.backups.postgres_dir == tmp_path / "pg-backups"


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, "")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("DRLIB_BACKUP_DIR", str(tmp_path / "a-file"))
    assert "DRLIB_BACKUP_DIR: profile 'content_crew', backups.postgres_dir:" in config_error("content_crew")


# --- paths and schema ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["postgres_dir", "storage_dir", "redis_dir"])
def test_a_backups_folder_that_is_a_file_is_refused_at_load_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    (tmp_path / "not-a-folder").write_text("oops")
    config = use_config(tmp_path, monkeypatch, f"[profiles.s.backups]\n{key} = 'not-a-folder'\n")
    message = config_error("s")
    assert f"{config}: profile 's', backups.{key}: {tmp_path / 'not-a-folder'} is a file, not a folder" in message


def test_relative_paths_resolve_against_the_project_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(
        tmp_path,
        monkeypatch,
        "[profiles.s.backups]\nredis_dir = 'rdb'\n[profiles.s]\nsecrets_file = 's.env'\n"
        "[profiles.s.database]\nname = 'app'\n",
    )
    profile = load_profile("s")
    assert profile.backups.redis_dir == tmp_path / "rdb" and profile.secrets_file == tmp_path / "s.env"
    assert profile.backups.storage_dir == tmp_path / "backups/storage"


def test_the_profile_schema_describes_what_a_file_may_say() -> None:
    schema = profile_schema()
    profile = schema["$defs"]["Profile"]
    assert schema["properties"]["profiles"]["additionalProperties"] == {"$ref": "#/$defs/Profile"}
    assert profile["properties"]["drill_target"]["type"] == "boolean"
    assert "name" not in profile["properties"] and "url_secrets" not in profile["properties"]
    assert schema["$defs"]["DatabaseSettings"]["properties"]["port"]["maximum"] == 65535
    assert schema["$defs"]["StorageSettings"]["properties"]["kind"]["enum"] == ["local", "s3"]
    assert set(schema["$defs"]["Targets"]["properties"]) == {"rpo", "rto"}
    json.dumps(schema)


def test_the_projects_profile_files_match_the_schema_and_a_typo_does_not() -> None:
    import jsonschema

    schema = profile_schema()
    root = Path(__file__).resolve().parent.parent
    for path in (root / "drlib.toml", root / "drlib" / "profiles.toml"):
        jsonschema.validate(tomllib.loads(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError, match="hots"):
        jsonschema.validate({"profiles": {"x": {"database": {"hots": "db"}}}}, schema)
    with pytest.raises(jsonschema.ValidationError, match="databse_loss"):
        jsonschema.validate({"profiles": {"x": {"targets": {"rto": {"databse_loss": "1h"}}}}}, schema)


def test_a_profile_converts_to_json_with_paths_as_text() -> None:
    data = load_profile("content_crew").to_dict()
    assert data["database"]["port"] == 5432 and data["backups"]["postgres_dir"].endswith("backups/postgres")
    assert "url_secrets" not in data and json.loads(json.dumps(data)) == data
