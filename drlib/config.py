"""Environment profiles: where the stack is, what the backups look like, and the RPO/RTO targets.

Profiles come from the built-in ``profiles.toml`` (the runbook's "Content Crew" stack and
the sandbox), then from the project's ``drlib.toml`` (or ``$DRLIB_CONFIG``), then from
environment variables (``DATABASE_URL``, ``REDIS_URL``, ``API_URL``, ``S3_ENDPOINT_URL``,
``DRLIB_BACKUP_DIR``) for every profile except the sandbox, whose connection details are
written by ``drlib sandbox up``. Secrets never live in a profile: only the *names* of the
environment variables (or secrets-file keys) that hold them.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from drlib.exceptions import ConfigError, SandboxError, SecretMissing
from drlib.secrets import lookup_secret, register_secret

CONFIG_FILE_NAME = "drlib.toml"
SANDBOX_PROFILE = "sandbox"

#: The runbook's RPO table (seconds).
RUNBOOK_RPO_SECONDS = {"postgres": 24 * 3600, "redis": 3600, "storage": 24 * 3600}
#: The runbook's RTO table (seconds).
RUNBOOK_RTO_SECONDS = {
    "database_loss": 4 * 3600,
    "storage_loss": 2 * 3600,
    "full_system_loss": 8 * 3600,
    "partial_failure": 3600,
}

#: What the Content Crew app keeps in Redis, and whether losing it is safe.
REDIS_KEY_NOTES = {
    "session": "safe to lose: users log in again",
    "cache": "safe to lose: rebuilt from PostgreSQL on the next read",
    "ratelimit": "safe to lose: counters restart",
    "queue": "NOT safe to lose: queued content jobs must be re-enqueued from content_jobs",
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``"24h"``, ``"90m"``, ``"30s"`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid duration {value!r}: use e.g. '4h', '90m' or seconds")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(f"invalid duration {value!r}: use e.g. '4h', '90m', '30s' or seconds")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def project_root(start: Path | None = None) -> Path:
    """The folder holding ``drlib.toml`` (searched upwards from ``start``), else ``start``."""
    if os.environ.get("DRLIB_CONFIG"):
        return Path(os.environ["DRLIB_CONFIG"]).resolve().parent
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_FILE_NAME).is_file():
            return candidate
    return here


def state_dir(root: Path | None = None) -> Path:
    """Where drlib keeps runtime state (sandbox data, connection details): ``$DRLIB_HOME``."""
    if os.environ.get("DRLIB_HOME"):
        return Path(os.environ["DRLIB_HOME"]).resolve()
    return (root or project_root()) / ".drlib"


def reports_dir(root: Path | None = None) -> Path:
    """Where drill reports are archived: ``$DRLIB_REPORTS`` or ``<project>/reports``."""
    if os.environ.get("DRLIB_REPORTS"):
        return Path(os.environ["DRLIB_REPORTS"]).resolve()
    return (root or project_root()) / "reports"


@dataclass(frozen=True)
class OrphanCheck:
    """Rows of ``child_table.child_column`` with no ``parent_table.parent_column``."""

    name: str
    child_table: str
    child_column: str
    parent_table: str
    parent_column: str = "id"


@dataclass(frozen=True)
class DatabaseSettings:
    host: str = "localhost"
    port: int = 5432
    user: str = "contentcrew"
    name: str = "content_crew"
    password_secret: str = "PGPASSWORD"
    maintenance_db: str = "postgres"
    tables: tuple[str, ...] = ("users", "organizations", "content_jobs", "content_artifacts")
    created_at_column: str = "created_at"
    orphan_checks: tuple[OrphanCheck, ...] = (OrphanCheck("orphaned_jobs", "content_jobs", "user_id", "users", "id"),)
    bindir: str | None = None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class BackupSettings:
    postgres_dir: Path = Path("backups/postgres")
    storage_dir: Path = Path("backups/storage")
    redis_dir: Path = Path("backups/redis")
    s3_prefix: str = "storage/"
    prefix: str = "content_crew"
    format: str = "custom"


@dataclass(frozen=True)
class RedisSettings:
    host: str = "localhost"
    port: int = 6379
    password_secret: str = "REDIS_PASSWORD"
    data_dir: Path | None = None
    dbfilename: str = "dump.rdb"
    controller: str = "compose"
    compose_service: str = "redis"
    compose_file: str | None = None
    project_dir: Path | None = None
    systemd_unit: str = "redis-server.service"
    start_command: str | None = None
    stop_command: str | None = None
    status_command: str | None = None
    #: key prefix -> what losing those keys costs (the runbook: cache rebuilds, sessions recreate)
    key_notes: dict[str, str] = field(default_factory=lambda: dict(REDIS_KEY_NOTES))


@dataclass(frozen=True)
class StorageSettings:
    kind: str = "local"
    path: Path = Path("storage")
    bucket: str = "content-crew-storage"
    backups_bucket: str = "backups-bucket"
    endpoint_url: str | None = None
    access_key_secret: str = "AWS_ACCESS_KEY_ID"
    secret_key_secret: str = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class AppSettings:
    controller: str = "compose"
    base_url: str = "http://localhost:8000"
    health_path: str = "/health"
    compose_service: str = "api"
    compose_file: str | None = None
    project_dir: Path | None = None
    systemd_unit: str = "content-crew-api.service"
    start_command: str | None = None
    stop_command: str | None = None
    status_command: str | None = None
    log_file: Path | None = None
    test_account_email: str = "test@example.com"
    test_account_password_secret: str = "DRLIB_TEST_ACCOUNT_PASSWORD"


@dataclass(frozen=True)
class Targets:
    rpo_seconds: dict[str, float] = field(default_factory=lambda: dict(RUNBOOK_RPO_SECONDS))
    rto_seconds: dict[str, float] = field(default_factory=lambda: dict(RUNBOOK_RTO_SECONDS))

    def rpo(self, component: str) -> float:
        return self.rpo_seconds[component]

    def rto(self, scenario_kind: str) -> float:
        return self.rto_seconds[scenario_kind]


@dataclass(frozen=True)
class Profile:
    """One environment drlib can recover: a sandbox, staging or production."""

    name: str
    description: str = ""
    drill_target: bool = False
    database: DatabaseSettings = DatabaseSettings()
    backups: BackupSettings = BackupSettings()
    redis: RedisSettings = RedisSettings()
    storage: StorageSettings = StorageSettings()
    app: AppSettings = AppSettings()
    targets: Targets = Targets()
    secrets_file: Path | None = None

    @property
    def is_sandbox(self) -> bool:
        return self.name == SANDBOX_PROFILE

    def secret(self, name: str, *, required: bool = True) -> str | None:
        """A secret by its variable name, from the environment or the secrets file."""
        value = lookup_secret(name, secrets_file=self.secrets_file)
        if value is None and required:
            where = f" or in {self.secrets_file}" if self.secrets_file else ""
            raise SecretMissing(f"profile {self.name!r} needs the secret {name}: set it in the environment{where}")
        return value

    def database_password(self) -> str | None:
        return self.secret(self.database.password_secret, required=False)


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file and retry.") from exc


def _builtin_profiles() -> dict[str, Any]:
    text = resources.files("drlib").joinpath("profiles.toml").read_text(encoding="utf-8")
    profiles: dict[str, Any] = tomllib.loads(text).get("profiles", {})
    return profiles


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def available_profiles(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Raw profile tables: built-in ones merged with the project's config file."""
    profiles = _builtin_profiles()
    config_path = _config_path(root)
    if config_path is not None:
        for name, table in _load_toml(config_path).get("profiles", {}).items():
            profiles[name] = _merge(profiles.get(name, {}), table)
    return profiles


def _config_path(root: Path | None) -> Path | None:
    if os.environ.get("DRLIB_CONFIG"):
        path = Path(os.environ["DRLIB_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"DRLIB_CONFIG points at {path}, which does not exist")
        return path
    candidate = (root or project_root()) / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


_SECTIONS: dict[str, type] = {
    "database": DatabaseSettings,
    "backups": BackupSettings,
    "redis": RedisSettings,
    "storage": StorageSettings,
    "app": AppSettings,
}
_PATH_FIELDS = {"postgres_dir", "storage_dir", "redis_dir", "path", "project_dir", "log_file", "data_dir"}


def _build_section(cls: type, table: dict[str, Any], root: Path, profile: str, section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(
            f"profile {profile!r} section [{section}] has unknown keys {sorted(unknown)}; known keys: {sorted(known)}"
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in _PATH_FIELDS and value is not None:
            path = Path(str(value)).expanduser()
            values[key] = path if path.is_absolute() else root / path
        elif key == "tables":
            values[key] = tuple(value)
        elif key == "orphan_checks":
            values[key] = tuple(OrphanCheck(**item) for item in value)
        else:
            values[key] = value
    return cls(**values)


def _apply_env_overrides(table: dict[str, Any]) -> dict[str, Any]:
    table = {k: dict(v) if isinstance(v, dict) else v for k, v in table.items()}
    if os.environ.get("DATABASE_URL"):
        url = urlsplit(os.environ["DATABASE_URL"])
        db = table.setdefault("database", {})
        db.update(
            {
                k: v
                for k, v in {
                    "host": url.hostname,
                    "port": url.port,
                    "user": url.username and unquote(url.username),
                    "name": url.path.lstrip("/") or None,
                }.items()
                if v
            }
        )
        if url.password:
            register_secret(unquote(url.password))
            os.environ.setdefault(db.get("password_secret", "PGPASSWORD"), unquote(url.password))
    if os.environ.get("REDIS_URL"):
        url = urlsplit(os.environ["REDIS_URL"])
        redis = table.setdefault("redis", {})
        redis.update({k: v for k, v in {"host": url.hostname, "port": url.port}.items() if v})
        if url.password:
            register_secret(unquote(url.password))
            os.environ.setdefault(redis.get("password_secret", "REDIS_PASSWORD"), unquote(url.password))
    if os.environ.get("API_URL"):
        table.setdefault("app", {})["base_url"] = os.environ["API_URL"]
    if os.environ.get("S3_ENDPOINT_URL"):
        table.setdefault("storage", {})["endpoint_url"] = os.environ["S3_ENDPOINT_URL"]
    if os.environ.get("DRLIB_BACKUP_DIR"):
        table.setdefault("backups", {})["postgres_dir"] = os.environ["DRLIB_BACKUP_DIR"]
    return table


def _sandbox_overrides(root: Path) -> dict[str, Any]:
    connection = state_dir(root) / "sandbox" / "connection.json"
    if not connection.is_file():
        raise SandboxError(
            f"the sandbox is not running (no connection details at {connection}): start it with `drlib sandbox up`"
        )
    data: dict[str, Any] = json.loads(connection.read_text(encoding="utf-8"))
    profile: dict[str, Any] = data["profile"]
    return profile


def load_profile(name: str | None = None, *, root: Path | None = None) -> Profile:
    """The named profile (default ``$DRLIB_PROFILE`` or ``sandbox``), fully resolved."""
    root = root or project_root()
    name = name or os.environ.get("DRLIB_PROFILE") or SANDBOX_PROFILE
    profiles = available_profiles(root)
    if name not in profiles:
        raise ConfigError(
            f"unknown profile {name!r}; known profiles: {', '.join(sorted(profiles))}. "
            f"Add [profiles.{name}] to {root / CONFIG_FILE_NAME}"
        )
    table = profiles[name]
    if name == SANDBOX_PROFILE:
        table = _merge(table, _sandbox_overrides(root))
    else:
        table = _apply_env_overrides(table)
    return build_profile(name, table, root=root)


def build_profile(name: str, table: dict[str, Any], *, root: Path) -> Profile:
    """A :class:`Profile` from a raw TOML table (relative paths resolved against ``root``)."""
    known = {"description", "drill_target", "targets", "secrets_file", *_SECTIONS}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"profile {name!r} has unknown keys {sorted(unknown)}; known: {sorted(known)}")
    sections = {key: _build_section(cls, table.get(key, {}), root, name, key) for key, cls in _SECTIONS.items()}
    targets_table = table.get("targets", {})
    targets = Targets(
        rpo_seconds={**RUNBOOK_RPO_SECONDS, **{k: parse_duration(v) for k, v in targets_table.get("rpo", {}).items()}},
        rto_seconds={**RUNBOOK_RTO_SECONDS, **{k: parse_duration(v) for k, v in targets_table.get("rto", {}).items()}},
    )
    secrets_file = table.get("secrets_file")
    secrets_path = None
    if secrets_file:
        secrets_path = Path(secrets_file)
        secrets_path = secrets_path if secrets_path.is_absolute() else root / secrets_path
    return Profile(
        name=name,
        description=str(table.get("description", "")),
        drill_target=bool(table.get("drill_target", False)),
        targets=targets,
        secrets_file=secrets_path,
        **sections,
    )
