"""Checking a Redis backup, restoring it into a stopped or fresh Redis, and verifying the result."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.exceptions import BackupCorrupt, BackupNotFound, ConfigError, ConnectionFailed, RestoreFailed
from drlib.hashing import sha256_file
from drlib.plans import RestorePlan, timestamp_suffix
from drlib.redis.backup import RDB_MAGIC, RedisBackup, RedisManifest, manifest_path, read_manifest
from drlib.redis.connection import fingerprint, redis_client, redis_error, wait_until_loaded
from drlib.services import controller_for


@dataclass(frozen=True)
class VerifiedRedisBackup:
    backup: RedisBackup
    manifest: RedisManifest
    checks: Checks


@dataclass(frozen=True)
class RedisRestoreResult:
    backup: str
    data_file: str
    kept_old: str | None
    seconds: float


def verify_redis_backup(backup: RedisBackup) -> VerifiedRedisBackup:
    """Refuse a missing, empty, truncated or altered RDB before anything is touched."""
    path = backup.path
    if not path.is_file():
        raise BackupNotFound(f"Redis backup {path} does not exist: pick another one")
    size = path.stat().st_size
    if size == 0:
        raise BackupCorrupt(f"Redis backup {path} is 0 bytes: BGSAVE never completed. Pick an earlier backup.")
    with path.open("rb") as handle:
        if handle.read(5) != RDB_MAGIC:
            raise BackupCorrupt(f"Redis backup {path} has the wrong format: it is not an RDB file")
    manifest = backup.manifest or read_manifest(manifest_path(path))
    if size != manifest.size_bytes or sha256_file(path) != manifest.sha256:
        raise BackupCorrupt(
            f"Redis backup {path} does not match its manifest (size {size} vs "
            f"{manifest.size_bytes}, or checksum): it is truncated or altered"
        )
    result = subprocess.run(["redis-check-rdb", str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["failed"]
        raise BackupCorrupt(f"redis-check-rdb rejects {path}: {reason[0]}")
    return VerifiedRedisBackup(
        backup,
        manifest,
        Checks(
            [
                check("redis_backup_checksum", True, expected=manifest.sha256[:16], observed=manifest.sha256[:16]),
                check("redis_check_rdb", True, expected="RDB looks OK", observed="ok", detail="redis-check-rdb"),
            ]
        ),
    )


def _data_file(profile: Profile) -> Path:
    if profile.redis.data_dir:
        return Path(profile.redis.data_dir) / profile.redis.dbfilename
    client = redis_client(profile)
    try:
        config = client.config_get("dir") | client.config_get("dbfilename")
        return Path(str(config["dir"])) / str(config["dbfilename"])
    except redis.RedisError as exc:
        raise ConfigError(
            f"cannot ask Redis where its RDB lives ({type(exc).__name__}) and the profile has no "
            "[redis] data_dir: set data_dir to Redis's data folder"
        ) from exc
    finally:
        client.close()


def _refuse_aof(profile: Profile) -> None:
    client = redis_client(profile, timeout=2)
    try:
        if client.config_get("appendonly").get("appendonly") == "yes":
            raise RestoreFailed(
                "Redis runs with appendonly yes: on start it would load the AOF and ignore the "
                "restored RDB. Set appendonly no (and move the AOF aside), then retry."
            )
    except redis.ConnectionError:
        pass  # Redis is down: nothing to ask
    finally:
        client.close()


def restore_redis(
    verified: VerifiedRedisBackup, *, profile: Profile, confirm: bool = False, timeout: float = 120
) -> RedisRestoreResult | RestorePlan:
    """Stop Redis, put the RDB in place (keeping the old file), start Redis and wait for the load."""
    data_file = _data_file(profile)
    controller = controller_for(profile, "redis")
    old = data_file.with_name(f"{data_file.name}.old-{timestamp_suffix()}")
    if not confirm:
        return RestorePlan(
            action=f"restore Redis from {verified.backup.name}",
            steps=(
                f"stop {controller.description}",
                f"move {data_file} -> {old} (if present)",
                f"copy {verified.backup.path} -> {data_file}",
                f"start {controller.description} and wait for the load",
            ),
        )
    _refuse_aof(profile)
    started = time.monotonic()
    controller.stop()
    data_file.parent.mkdir(parents=True, exist_ok=True)
    kept = None
    if data_file.exists():
        os.replace(data_file, old)
        kept = str(old)
    tmp = data_file.with_name(data_file.name + ".restoring")
    tmp.write_bytes(verified.backup.path.read_bytes())
    os.replace(tmp, data_file)
    controller.start()
    client = redis_client(profile)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline:
                    raise ConnectionFailed(f"Redis did not come back within {timeout:.0f}s after the restore") from exc
            time.sleep(0.1)
        wait_until_loaded(client, timeout=timeout)
    finally:
        client.close()
    return RedisRestoreResult(
        backup=verified.backup.name, data_file=str(data_file), kept_old=kept, seconds=time.monotonic() - started
    )


def verify_redis(profile: Profile, manifest: RedisManifest) -> Checks:
    """Key counts per prefix and the dataset digest equal the backup's."""
    client = redis_client(profile)
    try:
        client.ping()
        now = fingerprint(client)
    except redis.RedisError as exc:
        error = redis_error(exc, profile)
        return Checks([check("redis_reachable", False, expected="PING answers", observed="no", detail=error.message)])
    finally:
        client.close()
    results: list[CheckResult] = [
        check("redis_reachable", True, expected="PING answers", observed="PONG"),
        check("redis_key_count", now.keys == manifest.keys, expected=manifest.keys, observed=now.keys),
    ]
    for prefix in sorted(set(manifest.prefixes) | set(now.prefixes)):
        results.append(
            check(
                f"redis_keys:{prefix}",
                now.prefixes.get(prefix, 0) == manifest.prefixes.get(prefix, 0),
                expected=manifest.prefixes.get(prefix, 0),
                observed=now.prefixes.get(prefix, 0),
            )
        )
    results.append(
        check(
            "redis_digest",
            now.digest == manifest.digest,
            expected=manifest.digest[:16],
            observed=now.digest[:16],
            detail="sha256 over every key's type and value",
        )
    )
    return Checks(results)
