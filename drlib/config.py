"""Environment profiles: where the stack is, what the backups look like, and the RPO/RTO targets.

Profiles come from the built-in ``profiles.toml`` (the runbook's "Content Crew" stack and
the sandbox), then from the project's ``drlib.toml`` (or ``$DRLIB_CONFIG``), then from
environment variables (``DATABASE_URL``, ``REDIS_URL``, ``API_URL``, ``S3_ENDPOINT_URL``,
``DRLIB_BACKUP_DIR``) for every profile except the sandbox, whose connection details are
written by ``drlib sandbox up``. Secrets never live in a profile file: only the *names* of
the environment variables (or secrets-file keys) that hold them. A password given inside
``DATABASE_URL``/``REDIS_URL`` is kept in memory on the loaded profile, never in ``os.environ``.

The database is the one component every profile has. The application, Redis, file storage and the
billing webhooks are optional: a profile has ``app``/``redis``/``storage``/``billing`` only when some
layer sets that section (the built-in profiles set them all; ``API_URL``, ``REDIS_URL`` and
``S3_ENDPOINT_URL`` set theirs), and steps that need a missing one report "not configured" instead of failing.

Each profile is validated by pydantic (types, ranges, choices, unknown keys); every problem
is reported at once in one :class:`~drlib.exceptions.ConfigError` naming file, profile and key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from drlib.config_env import UrlOverrides, env_overrides
from drlib.config_failover import FAILOVER_SECTIONS, Provider, active_provider, alternative_table, has_alternative
from drlib.exceptions import ConfigError, NotConfigured, SandboxError, SecretMissing
from drlib.secrets import SecretValues, lookup_secret

CONFIG_FILE_NAME = "drlib.toml"
SANDBOX_PROFILE = "sandbox"

#: The runbook's RPO table (seconds).
RUNBOOK_RPO_SECONDS: dict[str, float] = {"postgres": 24 * 3600, "redis": 3600, "storage": 24 * 3600}
#: The runbook's RTO table (seconds).
RUNBOOK_RTO_SECONDS: dict[str, float] = {
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
_DURATION_HINT = "use e.g. '4h', '90m', '30s' or a number of seconds"


def parse_duration(value: Any) -> float:
    """``"24h"``, ``"90m"``, ``"30s"`` or a number of seconds, as seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"invalid duration {value!r}: {_DURATION_HINT}")
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


# --- field types -------------------------------------------------------------------------


def _under_root(value: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the project root given in the validation context."""
    value = value.expanduser()
    root = (info.context or {}).get("root")
    return value if root is None or value.is_absolute() else Path(root) / value


def _duration_input(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"a duration is not true/false: {_DURATION_HINT}")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {_DURATION_HINT}")
        return float(match[1]) * _UNIT_SECONDS[match[2]]
    return value


Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
ProjectPath = Annotated[Path, AfterValidator(_under_root)]
Duration = Annotated[
    float,
    BeforeValidator(_duration_input),
    Field(gt=0),
    WithJsonSchema(
        {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": _DURATION.pattern}]}
    ),
]
Controller = Literal["sandbox", "compose", "systemd", "shell"]
#: the components a profile may leave out (a database-only profile has none of them)
Component = Literal["app", "redis", "storage", "billing"]
#: each optional component, and the environment variable that configures it ("": only a profile file does)
OPTIONAL: dict[Component, str] = {"app": "API_URL", "redis": "REDIS_URL", "storage": "S3_ENDPOINT_URL", "billing": ""}
StorageKind = Literal["local", "s3"]
BackupFormat = Literal["custom", "directory"]

_STRICT = ConfigDict(extra="forbid")


def _path(default: str) -> Any:
    return Field(default=Path(default), validate_default=True)


# --- the profile ---------------------------------------------------------------------------


@dataclass(frozen=True, config=_STRICT)
class OrphanCheck:
    """Rows of ``child_table.child_column`` with no ``parent_table.parent_column``."""

    name: str
    child_table: str
    child_column: str
    parent_table: str
    parent_column: str = "id"


#: named sets of hand-written checks a profile can add to the discovered ones
CheckSetName = Literal["content_crew"]
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}
_SIZE_UNITS |= {"tb": 10**12, "tib": 2**40}


def _size_input(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a size is not true/false: use e.g. '1GiB', '500MB' or a number of bytes")
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError("not a size: use e.g. '1GiB', '500MB' or a number of bytes")
        return int(float(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()])
    return value


ByteCount = Annotated[
    int,
    BeforeValidator(_size_input),
    Field(ge=0),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _SIZE.pattern}]}),
]


@dataclass(frozen=True, config=_STRICT)
class DatabaseSettings:
    """Where the database is, and what its verification covers.

    Tables are discovered from the catalogue in every non-system schema (``include``/``exclude``
    are ``schema.table`` patterns); orphan checks come from every foreign key; ``check_set`` adds a
    named set of hand-written checks (``content_crew``: the runbook's own queries)."""

    host: str = "localhost"
    port: Port = 5432
    user: str = "postgres"
    #: required: the database to back up and restore
    name: str = ""
    password_secret: str = "PGPASSWORD"
    maintenance_db: str = "postgres"
    check_set: CheckSetName | None = None
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    #: tables that must exist, besides the discovered ones ("users" means public.users)
    tables: tuple[str, ...] = ()
    #: the newest-row column looked for first in every table
    created_at_column: str = "created_at"
    #: table -> its newest-row column ("" turns the check off for that table)
    newest_row_columns: dict[str, str] = dataclasses.field(default_factory=dict)
    orphan_checks: tuple[OrphanCheck, ...] = ()
    #: tables up to this size (pg_table_size) get a content fingerprint by default
    content_fingerprint_limit: ByteCount = 1024**3
    #: tables fingerprinted whatever their size (patterns like include)
    content_fingerprint_tables: tuple[str, ...] = ()
    bindir: str | None = None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True, config=_STRICT)
class BackupSettings:
    postgres_dir: ProjectPath = _path("backups/postgres")
    storage_dir: ProjectPath = _path("backups/storage")
    redis_dir: ProjectPath = _path("backups/redis")
    s3_prefix: str = "storage/"
    #: backup file names start with this; empty: the database name
    prefix: str = ""
    format: BackupFormat = "custom"
    #: retention (``drlib backup prune``, the disk_full runbook): a backup younger than ``keep_days`` days, or
    #: among the newest ``keep_last`` of its component, is kept; the newest one that verifies always is
    keep_days: Annotated[int, Field(strict=True, ge=0)] = 7
    keep_last: Annotated[int, Field(strict=True, ge=1)] = 3


@dataclass(frozen=True, config=_STRICT)
class RedisSettings:
    host: str = "localhost"
    port: Port = 6379
    password_secret: str = "REDIS_PASSWORD"
    data_dir: ProjectPath | None = None
    dbfilename: str = "dump.rdb"
    controller: Controller = "compose"
    compose_service: str = "redis"
    compose_file: str | None = None
    project_dir: ProjectPath | None = None
    systemd_unit: str = "redis-server.service"
    start_command: str | None = None
    stop_command: str | None = None
    status_command: str | None = None
    #: key prefix -> what losing those keys costs (the runbook: cache rebuilds, sessions recreate)
    key_notes: dict[str, str] = dataclasses.field(default_factory=lambda: dict(REDIS_KEY_NOTES))


@dataclass(frozen=True, config=_STRICT)
class StorageSettings:
    kind: StorageKind = "local"
    path: ProjectPath = _path("storage")
    bucket: str = "content-crew-storage"
    backups_bucket: str = "backups-bucket"
    endpoint_url: str | None = None
    access_key_secret: str = "AWS_ACCESS_KEY_ID"
    secret_key_secret: str = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True, config=_STRICT)
class AppSettings:
    controller: Controller = "compose"
    base_url: str = "http://localhost:8000"
    health_path: str = "/health"
    compose_service: str = "api"
    compose_file: str | None = None
    project_dir: ProjectPath | None = None
    systemd_unit: str = "content-crew-api.service"
    start_command: str | None = None
    stop_command: str | None = None
    status_command: str | None = None
    log_file: ProjectPath | None = None
    test_account_email: str = "test@example.com"
    test_account_password_secret: str = "DRLIB_TEST_ACCOUNT_PASSWORD"


Percent = Annotated[float, Field(gt=0, le=100)]


@dataclass(frozen=True, config=_STRICT)
class MonitoringSettings:
    """Thresholds of the prevention checks (the runbook's "Automated Alerts"), percentages of 100.

    Disk usage over ``disk_warn_percent`` warns and over ``disk_critical_percent`` fails (60/80 in the
    runbook); ``volumes`` names more folders whose filesystems are measured (name -> path)."""

    disk_warn_percent: Percent = 60
    disk_critical_percent: Percent = 80
    #: client connections against max_connections
    connections_warn_percent: Percent = 80
    #: 5xx responses among the requests logged within ``log_window`` (or error lines among the lines)
    error_rate_warn_percent: Percent = 5
    log_window: Duration = 24 * 3600
    #: storage files fewer than the newest backup's: any drop warns, a drop over this share fails
    file_drop_fail_percent: Percent = 10
    health_timeout: Duration = 10
    volumes: dict[str, ProjectPath] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.disk_warn_percent >= self.disk_critical_percent:
            raise ValueError(
                f"disk_warn_percent ({self.disk_warn_percent:g}) must be below disk_critical_percent "
                f"({self.disk_critical_percent:g})"
            )


@dataclass(frozen=True, config=_STRICT)
class BillingSettings:
    """The billing webhooks (Failure Scenarios → Webhook Replay Attack): the table the endpoint writes each
    event to, its columns (the recovery's marks included: a duplicate is marked, never deleted), the
    endpoint and the name of the variable holding its signing secret. Defaults: the Content Crew stack."""

    events_table: str = "public.billing_events"
    #: the primary key (a duplicate's ``duplicate_of`` points at its original's)
    id_column: str = "id"
    #: the payment provider's event id (Stripe's ``evt_…``)
    event_id_column: str = "provider_event_id"
    #: "" when the table has none
    idempotency_key_column: str = "idempotency_key"
    #: sha256 of the raw body; "" when the table has none
    payload_hash_column: str = "payload_sha256"
    amount_column: str = "amount_minor"
    currency_column: str = "currency"
    customer_column: str = "customer_id"
    received_at_column: str = "received_at"
    #: the recovery's marks
    duplicate_of_column: str = "duplicate_of"
    marked_at_column: str = "marked_at"
    reversal_state_column: str = "reversal_state"
    #: the endpoint, on the profile's [app] base_url
    webhook_path: str = "/webhooks/billing"
    #: the NAME of the variable (or secrets-file key) holding the signing secret
    signing_secret: str = "BILLING_WEBHOOK_SECRET"
    #: the header carrying ``t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">``
    signature_header: str = "Webhook-Signature"
    #: how old a signed timestamp the endpoint accepts
    tolerance: Duration = 300
    #: two events with the same payload hash this close together are one event received twice
    duplicate_window: Duration = 24 * 3600

    def __post_init__(self) -> None:
        if not _QUALIFIED.match(self.events_table):
            raise ValueError(f"events_table {self.events_table!r} is not a table name: use table or schema.table")
        for name, value in dataclasses.asdict(self).items():
            if name.endswith("_column") and value and not _IDENTIFIER.match(value):
                raise ValueError(f"{name} {value!r} is not a column name")
        if not self.webhook_path.startswith("/"):
            raise ValueError(f"webhook_path {self.webhook_path!r} must start with /")


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_QUALIFIED = re.compile(r"^([A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True, config=_STRICT)
class LogSettings:
    """Log folders whose rotated files (``api.log.1``, ``api.log.2.gz``, ``api.log-20260101``) older than
    ``keep_days`` days may be deleted to free disk space; a live ``*.log`` never is (files directly in each
    folder only)."""

    folders: tuple[ProjectPath, ...] = ()
    keep_days: Annotated[int, Field(strict=True, ge=0)] = 7


def _known_names(values: dict[str, float], known: dict[str, float], what: str) -> dict[str, float]:
    unknown = [name for name in values if name not in known]
    if unknown:
        raise ValueError(f"unknown {what} target {unknown[0]!r}{_did_you_mean(unknown[0], known)}")
    return {**known, **values}


def _rpo_names(values: dict[str, float]) -> dict[str, float]:
    return _known_names(values, RUNBOOK_RPO_SECONDS, "RPO")


def _rto_names(values: dict[str, float]) -> dict[str, float]:
    return _known_names(values, RUNBOOK_RTO_SECONDS, "RTO")


@dataclass(frozen=True, config=_STRICT)
class Targets:
    """RPO per component and RTO per scenario kind, in seconds (the runbook's tables by default).

    In a profile file they are written ``[targets.rpo]`` / ``[targets.rto]`` with durations.
    """

    rpo_seconds: Annotated[dict[str, Duration], AfterValidator(_rpo_names)] = Field(
        default_factory=lambda: dict(RUNBOOK_RPO_SECONDS), validation_alias=AliasChoices("rpo", "rpo_seconds")
    )
    rto_seconds: Annotated[dict[str, Duration], AfterValidator(_rto_names)] = Field(
        default_factory=lambda: dict(RUNBOOK_RTO_SECONDS), validation_alias=AliasChoices("rto", "rto_seconds")
    )

    def rpo(self, component: str) -> float:
        return self.rpo_seconds[component]

    def rto(self, scenario_kind: str) -> float:
        return self.rto_seconds[scenario_kind]


@dataclass(frozen=True, config=_STRICT)
class FailoverSettings:
    """The alternative provider (another region or cloud): per section, the keys that differ from the
    primary (see :mod:`drlib.config_failover`). ``backups`` names where backups are replicated to."""

    description: str = ""
    database: dict[str, Any] = dataclasses.field(default_factory=dict)
    storage: dict[str, Any] = dataclasses.field(default_factory=dict)
    backups: dict[str, Any] = dataclasses.field(default_factory=dict)
    app: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, config=_STRICT)
class Profile:
    """One environment drlib can recover: a sandbox, staging or production."""

    name: str
    description: str = ""
    drill_target: StrictBool = False
    database: DatabaseSettings = DatabaseSettings()
    backups: BackupSettings = BackupSettings()
    #: optional components: None (not configured) unless a layer sets their section (see OPTIONAL)
    redis: RedisSettings | None = None
    storage: StorageSettings | None = None
    app: AppSettings | None = None
    targets: Targets = Targets()
    monitoring: MonitoringSettings = MonitoringSettings()
    #: optional too: the billing webhooks (only a profile file sets it)
    logs: LogSettings = LogSettings()
    #: optional too: the billing webhooks (only a profile file sets it)
    billing: BillingSettings | None = None
    secrets_file: ProjectPath | None = None
    #: the alternative provider a provider outage fails over to (``drlib failover``)
    failover: FailoverSettings | None = None
    #: which provider this profile's settings point at (``drlib failover switch`` / ``back``), never from a file
    provider: SkipJsonSchema[Provider] = "primary"
    #: secrets given inside DATABASE_URL / REDIS_URL (name -> value), kept in memory only
    url_secrets: SkipJsonSchema[SecretValues] = dataclasses.field(
        default_factory=SecretValues, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.backups.prefix and self.database.name:
            object.__setattr__(self, "backups", dataclasses.replace(self.backups, prefix=self.database.name))

    @property
    def is_sandbox(self) -> bool:
        return self.name == SANDBOX_PROFILE

    @property
    def content_crew_schema(self) -> bool:
        """The database is the runbook's Content Crew schema (users, content_jobs, content_artifacts…)."""
        return self.database.check_set == "content_crew"

    # -- optional components ----------------------------------------------------------------
    def configured(self, component: Component) -> bool:
        """Whether the profile has the ``[app]``, ``[redis]`` or ``[storage]`` section."""
        return getattr(self, component) is not None

    def configure_hint(self, component: Component) -> str:
        """How to give the profile ``component``."""
        section = f"add [profiles.{self.name}.{component}]"
        return f"set {OPTIONAL[component]} or {section}" if OPTIONAL[component] else section

    def not_configured(self, component: Component) -> str:
        """What a step that needs ``component`` reports when the profile has no section for it."""
        return f"not configured: the profile has no [{component}] section ({self.configure_hint(component)})"

    def require_app(self) -> AppSettings:
        """The ``[app]`` section; :class:`NotConfigured` when the profile has none."""
        return _required(self, "app", self.app)

    def require_redis(self) -> RedisSettings:
        """The ``[redis]`` section; :class:`NotConfigured` when the profile has none."""
        return _required(self, "redis", self.redis)

    def require_storage(self) -> StorageSettings:
        """The ``[storage]`` section; :class:`NotConfigured` when the profile has none."""
        return _required(self, "storage", self.storage)

    def require_billing(self) -> BillingSettings:
        """The ``[billing]`` section; :class:`NotConfigured` when the profile has none."""
        return _required(self, "billing", self.billing)

    def secret(self, name: str, *, required: bool = True) -> str | None:
        """A secret by its variable name: from a connection URL, the environment or the secrets file."""
        value = self.url_secrets.get(name)
        if value is None:
            value = lookup_secret(name, secrets_file=self.secrets_file)
        if value is None and required:
            where = f" or in {self.secrets_file}" if self.secrets_file else ""
            raise SecretMissing(f"profile {self.name!r} needs the secret {name}: set it in the environment{where}")
        return value

    def database_password(self) -> str | None:
        return self.secret(self.database.password_secret, required=False)

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-able data (paths as strings; a component the profile does not have as
        its "not configured: …" text); secret values never appear."""
        data = dataclasses.asdict(self)
        data.pop("url_secrets", None)
        for component in OPTIONAL:
            if data[component] is None:
                data[component] = self.not_configured(component)
        jsonable: dict[str, Any] = json.loads(json.dumps(data, default=str))
        return jsonable


Section = TypeVar("Section", AppSettings, RedisSettings, StorageSettings, BillingSettings)


def _required(profile: Profile, component: Component, section: Section | None) -> Section:
    if section is None:
        raise NotConfigured(
            f"profile {profile.name!r} has no [{component}] section: {profile.configure_hint(component)}",
            detail=profile.not_configured(component),
        )
    return section


_PROFILE = TypeAdapter(Profile)
#: keys of a profile table that come from elsewhere, never from a file
_NOT_FILE_KEYS = frozenset({"name", "url_secrets", "provider"})
_BACKUP_DIRS = ("postgres_dir", "storage_dir", "redis_dir")


def profile_schema() -> dict[str, Any]:
    """JSON Schema of a ``drlib.toml`` file: ``[profiles.<name>]`` tables of profile keys."""
    profile = _PROFILE.json_schema()
    defs = profile.pop("$defs", {})
    for key in _NOT_FILE_KEYS:
        profile["properties"].pop(key, None)
    profile["required"] = [k for k in profile.get("required", []) if k not in _NOT_FILE_KEYS]
    if not profile["required"]:
        del profile["required"]
    for component in OPTIONAL:  # TOML has no null: a section is either written or left out
        entry = profile["properties"][component]
        entry.pop("default", None)
        ref = next(item for item in entry.pop("anyOf") if "$ref" in item)
        entry.update(ref, description=f"optional: without it, steps that need the {component} are 'not configured'")
    defs["Profile"] = profile
    targets = defs["Targets"]["properties"]
    targets["rpo"]["propertyNames"] = {"enum": sorted(RUNBOOK_RPO_SECONDS)}
    targets["rto"]["propertyNames"] = {"enum": sorted(RUNBOOK_RTO_SECONDS)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "drlib.toml",
        "type": "object",
        "additionalProperties": False,
        "properties": {"profiles": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Profile"}}},
        "$defs": defs,
    }


# --- files -----------------------------------------------------------------------------------


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file and retry.") from exc


def _builtin_path() -> Path:
    return Path(str(resources.files("drlib").joinpath("profiles.toml")))


def _profile_tables(data: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    unknown = [key for key in data if key != "profiles"]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {path}{_did_you_mean(unknown[0], ['profiles'])}")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: profiles must be a table: write [profiles.<name>] followed by its keys")
    bad = [name for name, table in profiles.items() if not isinstance(table, dict)]
    if bad:
        raise ConfigError(f"{path}: profiles.{bad[0]} must be a table: write [profiles.{bad[0]}] followed by its keys")
    return profiles


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _layers(root: Path | None) -> list[tuple[Path, dict[str, dict[str, Any]]]]:
    """(file, profile tables) for the built-in profiles, then the project's config file."""
    builtin = _builtin_path()
    layers = [(builtin, _profile_tables(tomllib.loads(builtin.read_text(encoding="utf-8")), builtin))]
    config_path = _config_path(root)
    if config_path is not None:
        layers.append((config_path, _profile_tables(_load_toml(config_path), config_path)))
    return layers


def available_profiles(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Raw profile tables: built-in ones merged with the project's config file."""
    profiles: dict[str, dict[str, Any]] = {}
    for _, tables in _layers(root):
        for name, table in tables.items():
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


def _sandbox_overrides(root: Path) -> tuple[Path, dict[str, Any]]:
    connection = state_dir(root) / "sandbox" / "connection.json"
    if not connection.is_file():
        raise SandboxError(
            f"the sandbox is not running (no connection details at {connection}): start it with `drlib sandbox up`"
        )
    try:
        data = json.loads(connection.read_text(encoding="utf-8"))
        profile: dict[str, Any] = data["profile"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SandboxError(f"{connection} is unreadable: restart the sandbox with `drlib sandbox up`") from exc
    return connection, profile


# --- loading ---------------------------------------------------------------------------------


def load_profile(name: str | None = None, *, root: Path | None = None, provider: Provider | None = None) -> Profile:
    """The named profile (default ``$DRLIB_PROFILE`` or ``sandbox``), fully resolved and validated, on the
    provider it is switched to (``provider`` picks one: ``primary`` or its ``alternative``)."""
    root = root or project_root()
    name = name or os.environ.get("DRLIB_PROFILE") or SANDBOX_PROFILE
    layers = _layers(root)
    sources: list[tuple[str, dict[str, Any]]] = [(str(p), t[name]) for p, t in layers if name in t]
    if not sources:
        known = sorted({n for _, tables in layers for n in tables})
        raise ConfigError(
            f"unknown profile {name!r}; known profiles: {', '.join(known)}. "
            f"Add [profiles.{name}] to {root / CONFIG_FILE_NAME}"
        )
    overrides = UrlOverrides()
    if name == SANDBOX_PROFILE:
        connection, table = _sandbox_overrides(root)
        sources.append((str(connection), table))
    else:
        overrides = env_overrides()
        sources.extend((variable, table) for variable, table in overrides.tables)
    merged: dict[str, Any] = {}
    for _, layer in sources:
        merged = _merge(merged, layer)
    provider = provider or active_provider(state_dir(root), name)
    database_password = overrides.database_password
    if provider == "alternative":
        merged = alternative_table(merged, profile=name)
        if "password_secret" in merged["failover"].get("database", {}):
            database_password = None  # DATABASE_URL's password is the primary's
    profile = _validate(name, merged, root=root, sources=sources, provider=provider)
    secrets = {profile.database.password_secret: database_password}
    if profile.redis is not None:  # REDIS_URL configures the section its password belongs to
        secrets[profile.redis.password_secret] = overrides.redis_password
    values = {key: value for key, value in secrets.items() if value is not None}
    return dataclasses.replace(profile, url_secrets=SecretValues(values)) if values else profile


def build_profile(name: str, table: dict[str, Any], *, root: Path) -> Profile:
    """A :class:`Profile` from a raw TOML table (relative paths resolved against ``root``)."""
    return _validate(name, table, root=root, sources=[("profile table", table)])


def _validate(
    name: str,
    table: dict[str, Any],
    *,
    root: Path,
    sources: list[tuple[str, dict[str, Any]]],
    provider: Provider = "primary",
) -> Profile:
    problems = [_unknown_key_problem(name, (key,), sources) for key in sorted(_NOT_FILE_KEYS) if key in table]
    profile: Profile | None = None
    given = {key: value for key, value in table.items() if key not in _NOT_FILE_KEYS}
    try:
        profile = _PROFILE.validate_python({**given, "name": name, "provider": provider}, context={"root": root})
    except ValidationError as exc:
        problems.extend(_describe(name, error, sources) for error in exc.errors(include_url=False))
    if profile is not None and profile.failover is not None:
        problems.extend(_failover_problems(name, given, root=root, sources=sources))
    if profile is not None and not profile.database.name:
        problems.append(
            f'profile {name!r}, database.name is required: set name = "<database>" under '
            f"[profiles.{name}.database] in {root / CONFIG_FILE_NAME}, or DATABASE_URL"
        )
    if profile is not None:
        for key in _BACKUP_DIRS:
            path: Path = getattr(profile.backups, key)
            if path.is_file():
                where = _source(("backups", key), sources)
                problems.append(
                    f"{where}: profile {name!r}, backups.{key}: {path} is a file, not a folder: "
                    f"point {key} at a folder (drlib creates it when missing)"
                )
    if len(problems) == 1:
        end = " " if problems[0].endswith(("?", ".")) else ". "
        raise ConfigError(f"{problems[0]}{end}Fix it and retry.")
    if problems:
        listed = "\n".join(f"- {p}" for p in problems)
        raise ConfigError(f"profile {name!r} has {len(problems)} problems:\n{listed}\nFix them and retry.")
    assert profile is not None
    return profile


def _failover_problems(
    name: str, table: dict[str, Any], *, root: Path, sources: list[tuple[str, dict[str, Any]]]
) -> list[str]:
    """What is wrong with the profile on its alternative provider (each key named under ``failover.``)."""
    if not has_alternative(table):
        return [
            f"{_source(('failover',), sources)}: profile {name!r}, failover: names no section to change: add "
            f"[profiles.{name}.failover.database] (or {', '.join(FAILOVER_SECTIONS[1:])}) with the keys that differ"
        ]
    try:
        _PROFILE.validate_python({**alternative_table(table, profile=name), "name": name}, context={"root": root})
    except ValidationError as exc:
        return [_describe(name, {**e, "loc": ("failover", *e["loc"])}, sources) for e in exc.errors(include_url=False)]
    return []


# --- error messages ------------------------------------------------------------------------


def _did_you_mean(word: str, candidates: Any) -> str:
    import difflib

    names = sorted(str(c) for c in candidates)
    close = difflib.get_close_matches(word, names, n=1)
    if close:
        return f": did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(names)}"


def _walk(table: Any, loc: tuple[str | int, ...]) -> Iterator[Any]:
    for part in loc:
        found = isinstance(table, dict) and part in table
        found = found or (isinstance(table, list) and isinstance(part, int) and part < len(table))
        if found:
            table = table[part]
        else:
            return
        yield table


def _source(loc: tuple[str | int, ...], sources: list[tuple[str, dict[str, Any]]]) -> str:
    """The last source (file or variable) that sets ``loc``, else the first one."""
    for where, table in reversed(sources):
        if len(list(_walk(table, loc))) == len(loc):
            return str(where)
    return str(sources[-1][0])


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _valid_keys(loc: tuple[str | int, ...]) -> list[str]:
    """Field names (as written in files) of the dataclass found at ``loc`` under Profile."""
    import typing

    cls: Any = Profile
    for part in loc:
        if isinstance(part, int) or (cls is Profile and part == "failover" and len(loc) > 1):
            continue  # failover.<section> holds the keys of <section>
        hints = typing.get_type_hints(cls)
        target: Any = hints.get(part)
        for arg in (target, *typing.get_args(target)):
            if dataclasses.is_dataclass(arg):
                cls = arg
                break
            inner = [a for a in typing.get_args(arg) if dataclasses.is_dataclass(a)]
            if inner:
                cls = inner[0]
                break
    if cls is Targets:
        return ["rpo", "rto"]
    return [f.name for f in dataclasses.fields(cls) if cls is not Profile or f.name not in _NOT_FILE_KEYS]


def _unknown_key_problem(name: str, loc: tuple[str | int, ...], sources: list[tuple[str, dict[str, Any]]]) -> str:
    key = str(loc[-1])
    section = _dotted(("profiles", name, *loc[:-1]))
    return f"unknown key {key!r} in [{section}] of {_source(loc, sources)}{_did_you_mean(key, _valid_keys(loc[:-1]))}"


def _describe(name: str, error: Any, sources: list[tuple[str, dict[str, Any]]]) -> str:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind = error["type"]
    if kind in {"unexpected_keyword_argument", "extra_forbidden"}:
        return _unknown_key_problem(name, loc, sources)
    key = _dotted(loc)
    given = error.get("input")
    if kind == "bool_type":
        word = str(given).strip().lower() if str(given).strip().lower() in {"true", "false"} else "true"
        detail = f"must be a TOML boolean, not {given!r}: write {loc[-1]} = {word} without quotes"
    elif kind == "missing":
        detail = "is required"
    elif kind == "value_error":
        detail = str(error["msg"]).removeprefix("Value error, ")
    else:
        shown = repr(given) if len(repr(given)) <= 60 else f"{repr(given)[:57]}..."
        detail = f"{error['msg']} (got {shown})"
    return f"{_source(loc, sources)}: profile {name!r}, {key}: {detail}"
