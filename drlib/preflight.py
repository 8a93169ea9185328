"""The runbook's Pre-Restore Checklist as checks: failure scope, credentials and connectivity,
backup located and verified, free disk space."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from drlib.app.health import http_request
from drlib.checks import CheckResult, check
from drlib.config import Profile
from drlib.exceptions import ConnectionFailed, InsufficientDiskSpace
from drlib.lazy import lazy_module
from drlib.postgres.connection import PgTarget
from drlib.redis.connection import ping, redis_client
from drlib.units import format_bytes

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")

#: Free space wanted on top of the database size (indexes are rebuilt, WAL is written).
RESTORE_HEADROOM = 1.2


def probe_database(target: PgTarget) -> str:
    try:
        with target.connect(connect_timeout=3) as conn:
            conn.execute("SELECT 1 FROM pg_class LIMIT 1")
        return "up"
    except ConnectionFailed as exc:
        return "down: " + exc.message.split(":")[0]


#: what a probe says of a component the profile does not have
NOT_CONFIGURED = "not configured"


def probe_redis(profile: Profile) -> str:
    if profile.redis is None:
        return NOT_CONFIGURED
    client = redis_client(profile, timeout=2)
    try:
        client.ping()
        return "up"
    except redis.RedisError as exc:
        return f"down: {type(exc).__name__}"
    finally:
        client.close()


def probe_storage(profile: Profile) -> str:
    if profile.storage is None:
        return NOT_CONFIGURED
    if profile.storage.kind == "local":
        return "up" if Path(profile.storage.path).is_dir() else "down: storage folder missing"
    return "unknown (s3 probed by the storage runbook)"


def probe_api(profile: Profile) -> str:
    if profile.app is None:
        return NOT_CONFIGURED
    response = http_request("GET", profile.app.base_url + profile.app.health_path, timeout=3)
    return "up" if response.status == 200 else f"down: {response.status or 'unreachable'}"


def failure_scope(profile: Profile, target: PgTarget) -> CheckResult:
    """Which components are down right now (warns when nothing looks broken); the ones the profile
    does not have show as "not configured"."""
    scope = {
        "database": probe_database(target),
        "redis": probe_redis(profile),
        "storage": probe_storage(profile),
        "api": probe_api(profile),
    }
    down = [name for name, state in scope.items() if state.startswith("down")]
    return check(
        "failure_scope",
        bool(down),
        expected="at least one component down",
        observed=scope,
        detail=f"affected: {', '.join(down)}" if down else "no failed component found: is a restore needed?",
        warn_only=True,
    )


def credentials_and_connectivity(target: PgTarget) -> CheckResult:
    """The server answers and accepts the credentials (raises with a clear message otherwise)."""
    with target.maintenance.connect(connect_timeout=5) as conn:
        row = conn.execute("SELECT current_user, current_setting('server_version')").fetchone()
    assert row is not None
    return check(
        "credentials_and_connectivity",
        True,
        expected="login to the server",
        observed=f"{row[0]} on PostgreSQL {row[1]}",
        detail=target.settings.address,
    )


def stack_reachable(profile: Profile, *, database: bool = True, redis_server: bool = False) -> list[CheckResult]:
    """A drill's stack answers with the profile's credentials before the drill writes anything: the
    live database (it must exist: the drill is about to break it) and, when the scenario uses it, Redis
    (:class:`NotConfigured` when the profile has none)."""
    results = []
    if database:
        target = PgTarget.from_profile(profile)
        results.append(credentials_and_connectivity(target))
        with target.connect(connect_timeout=5):
            pass
        results.append(check("live_database_exists", True, expected="database answers", observed=target.name))
    if redis_server:
        ping(profile)
        results.append(check("redis_reachable", True, expected="PING answers", observed="PONG"))
    return results


def data_directory(target: PgTarget) -> Path | None:
    """The server's data directory, when it is on this machine and readable."""
    if target.settings.host not in ("localhost", "127.0.0.1", "::1"):
        return None
    try:
        with target.maintenance.connect() as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    except Exception:
        return None
    return Path(row[0]) if row else None


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free


def require_free_space(*, path: Path, required_bytes: int, what: str, then: str) -> int:
    """The free bytes at ``path``; :class:`InsufficientDiskSpace` when fewer than ``required_bytes``."""
    free = free_bytes(path)
    if free < required_bytes:
        raise InsufficientDiskSpace(
            f"not enough free disk space for {what}: {format_bytes(free)} free at {path}, "
            f"about {format_bytes(required_bytes)} needed. {then}"
        )
    return free


def disk_space(*, path: Path | None, required_bytes: int) -> CheckResult:
    """Enough free space at ``path`` for ``required_bytes``; raises :class:`InsufficientDiskSpace`."""
    if path is None:
        return check(
            "disk_space",
            False,
            expected=f">= {format_bytes(required_bytes)} free",
            observed="not measurable (remote server)",
            warn_only=True,
            detail="check free space on the database host by hand",
        )
    free = require_free_space(
        path=path,
        required_bytes=required_bytes,
        what="the restore",
        then="Free space (old backups, logs) or grow the volume, then retry.",
    )
    return check(
        "disk_space",
        True,
        expected=f">= {format_bytes(required_bytes)} free",
        observed=f"{format_bytes(free)} free",
        detail=str(path),
    )
