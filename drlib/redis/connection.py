"""Connecting to Redis with the profile's secret, and the dataset's fingerprint.

The fingerprint is drlib's own: key counts per prefix (``session``, ``cache``, …) and a sha256
over every key's type and canonical value (sorted members, scores, TTL present or not). It does
not depend on ``DEBUG DIGEST`` (disabled on most servers) or on the server's internal encodings.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drlib.config import Profile
from drlib.exceptions import ConfigError, ConnectionFailed, CredentialsRejected, DrlibError
from drlib.lazy import lazy_module

if TYPE_CHECKING:
    import redis
    import redis.backoff
    import redis.retry
else:
    redis = lazy_module("redis", "redis.backoff", "redis.retry")

SCAN_BATCH = 1000


def redis_server_program() -> str:
    """``redis-server`` (the sandbox runs it; backups are restore-tested with it)."""
    found = shutil.which("redis-server")
    if not found:
        raise ConfigError(
            "redis-server not found on PATH: install Redis (apt-get install redis-server, or "
            "conda env create -f environment.yml)"
        )
    return found


def redis_client(profile: Profile, *, timeout: float = 5) -> redis.Redis:
    """A client for the profile's Redis (:class:`NotConfigured` when the profile has no ``[redis]``)."""
    settings = profile.require_redis()
    return redis.Redis(
        retry=redis.retry.Retry(
            redis.backoff.NoBackoff(), 0
        ),  # a down Redis should say so now, not after a backoff series
        host=settings.host,
        port=settings.port,
        password=profile.secret(settings.password_secret, required=False) or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def redis_error(exc: Exception, profile: Profile) -> DrlibError:
    settings = profile.require_redis()
    where = f"Redis at {settings.host}:{settings.port}"
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
        return CredentialsRejected(f"{where} rejected the credentials: check the secret {settings.password_secret}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return ConnectionFailed(f"cannot reach {where} ({type(exc).__name__}): is it running?")
    return DrlibError(f"{where} failed: {exc}")


def ping(profile: Profile) -> None:
    """Raise a clear error unless Redis answers PING."""
    client = redis_client(profile)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise redis_error(exc, profile) from exc
    finally:
        client.close()


def wait_until_loaded(client: redis.Redis, *, timeout: float = 60) -> None:
    """Wait until Redis has finished loading its dataset."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if int(client.info("persistence").get("loading", 0)) == 0:
                return
        except (redis.BusyLoadingError, redis.ConnectionError, redis.TimeoutError):
            pass  # still loading, or not listening yet
        if time.monotonic() > deadline:
            raise DrlibError(f"Redis was still loading its dataset after {timeout:.0f}s")
        time.sleep(0.1)


@dataclass(frozen=True)
class Fingerprint:
    keys: int
    prefixes: dict[str, int]
    digest: str


def prefix_of(key: str) -> str:
    return key.split(":", 1)[0] if ":" in key else "(none)"


def _canonical(client: redis.Redis, key: bytes, kind: str) -> Any:
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return sorted(client.hgetall(key).items())
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return client.xrange(key)
    return None


def fingerprint(client: redis.Redis) -> Fingerprint:
    """Key count, counts per prefix and a digest of the whole dataset."""
    keys = sorted(client.scan_iter(count=SCAN_BATCH))
    digest = hashlib.sha256()
    for key in keys:
        raw_kind = client.type(key)
        kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
        has_ttl = client.ttl(key) >= 0
        digest.update(repr((key, kind, has_ttl, _canonical(client, key, kind))).encode())
    prefixes = Counter(prefix_of(k.decode(errors="replace")) for k in keys)
    return Fingerprint(keys=len(keys), prefixes=dict(sorted(prefixes.items())), digest=digest.hexdigest())
