"""Checking a Redis backup, restoring it into a stopped or fresh Redis, and verifying the result."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.exceptions import (
    BackupCorrupt,
    BackupNotFound,
    ConfigError,
    ConnectionFailed,
    DrlibError,
    InsufficientDiskSpace,
    RestoreFailed,
)
from drlib.hashing import sha256_file
from drlib.lazy import lazy_module
from drlib.plans import RestorePlan, timestamp_suffix
from drlib.redis.backup import RDB_MAGIC, RedisBackup, RedisManifest, manifest_path, read_manifest
from drlib.redis.connection import fingerprint, redis_client, redis_error, wait_until_loaded
from drlib.services import ServiceController, controller_for
from drlib.units import format_bytes

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")

#: free space wanted in Redis's data folder on top of the RDB itself
FREE_SPACE_MARGIN = 1024 * 1024


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
    try:
        return _verify_rdb(backup)
    except OSError as exc:
        raise BackupCorrupt(
            f"Redis backup {backup.path} cannot be read ({type(exc).__name__}: {exc.strerror or exc}): check its "
            "permissions and the backup volume, or pick another backup"
        ) from exc


def _verify_rdb(backup: RedisBackup) -> VerifiedRedisBackup:
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
    _matches_manifest(path, manifest)
    try:
        result = subprocess.run(["redis-check-rdb", str(path)], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ConfigError(
            "redis-check-rdb not found on PATH: install Redis (apt-get install redis-server, or "
            "conda env create -f environment.yml)"
        ) from exc
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


def _matches_manifest(path: Path, manifest: RedisManifest) -> None:
    size = path.stat().st_size
    if size != manifest.size_bytes or sha256_file(path) != manifest.sha256:
        raise BackupCorrupt(
            f"Redis backup {path} does not match its manifest (size {size} vs "
            f"{manifest.size_bytes}, or checksum): it is truncated or altered"
        )


def _data_file(profile: Profile) -> Path:
    settings = profile.require_redis()
    if settings.data_dir:
        return Path(settings.data_dir) / settings.dbfilename
    client = redis_client(profile)
    try:
        config = client.config_get("dir") | client.config_get("dbfilename")
        return Path(str(config["dir"])) / str(config["dbfilename"])
    except (redis.RedisError, KeyError) as exc:
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
                "restored RDB. Set appendonly no (and move the AOF aside), then retry. Nothing was changed; "
                "Redis was not stopped."
            )
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # Redis is down: nothing to ask
    except redis.RedisError as exc:
        raise RestoreFailed(
            f"cannot ask Redis whether it uses an AOF ({redis_error(exc, profile).message}). Nothing was changed; "
            "Redis was not stopped."
        ) from exc
    finally:
        client.close()


def _stage(verified: VerifiedRedisBackup, data_file: Path) -> Path:
    """Check the backup again, that the data folder is writable and has room, and copy the RDB next
    to the live one; all before Redis is stopped. Returns the staged copy."""
    untouched = "Nothing was changed; Redis was not stopped."
    try:
        _matches_manifest(verified.backup.path, verified.manifest)
    except OSError as exc:
        raise BackupCorrupt(
            f"Redis backup {verified.backup.path} cannot be read ({type(exc).__name__}). {untouched}"
        ) from exc
    except BackupCorrupt as exc:
        raise BackupCorrupt(f"{exc.message} since it was verified. {untouched}") from exc
    folder = data_file.parent
    with contextlib.suppress(OSError):  # a fresh machine may not have it yet; a file in the way is refused below
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise RestoreFailed(
            f"Redis's data folder {folder} is missing, not a folder or not writable: check [redis] data_dir. "
            f"{untouched}"
        )
    needed = verified.backup.path.stat().st_size + FREE_SPACE_MARGIN
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InsufficientDiskSpace(
            f"{folder} has {format_bytes(free)} free, the restore needs {format_bytes(needed)} (the RDB and a "
            f"margin; the old RDB is kept beside it): free some space. {untouched}"
        )
    staged = data_file.with_name(data_file.name + ".restoring")
    try:
        shutil.copyfile(verified.backup.path, staged)
        if data_file.exists():  # keep the owner Redis runs as
            owner = data_file.stat()
            os.chown(staged, owner.st_uid, owner.st_gid)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise RestoreFailed(
            f"cannot copy the RDB into {folder} ({type(exc).__name__}: {exc.strerror or exc}). {untouched}"
        ) from exc
    return staged


def _wait_for_redis(profile: Profile, *, timeout: float) -> None:
    client = redis_client(profile)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                pass
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ConnectionFailed(f"Redis did not answer within {timeout:.0f}s after it was started") from exc
            except redis.RedisError as exc:
                raise redis_error(exc, profile) from exc
            time.sleep(0.1)
        try:
            wait_until_loaded(client, timeout=max(0.0, deadline - time.monotonic()))
        except redis.RedisError as exc:
            raise redis_error(exc, profile) from exc
    finally:
        client.close()


def restore_redis(
    verified: VerifiedRedisBackup, *, profile: Profile, confirm: bool = False, timeout: float = 120
) -> RedisRestoreResult | RestorePlan:
    """Stop Redis, put the RDB in place (keeping the old file), start Redis and wait for the load.

    Everything that can be checked is checked before Redis is stopped (the backup still matches its
    manifest, appendonly is off, the data folder is writable and has room; the RDB is copied beside
    the live one). If anything fails once Redis is stopped, the old RDB is put back and Redis is
    started again, and the message says so."""
    data_file = _data_file(profile)
    controller = controller_for(profile, "redis")
    old = data_file.with_name(f"{data_file.name}.old-{timestamp_suffix()}")
    if not confirm:
        return RestorePlan(
            action=f"restore Redis from {verified.backup.name}",
            steps=(
                f"check the backup, appendonly, and that {data_file.parent} is writable with room for the RDB",
                f"copy {verified.backup.path} -> {data_file}.restoring (Redis still running)",
                f"stop {controller.description}",
                f"move {data_file} -> {old} (if present), then {data_file}.restoring -> {data_file}",
                f"start {controller.description} and wait for the load (on failure: old RDB back, Redis started)",
            ),
        )
    _refuse_aof(profile)
    staged = _stage(verified, data_file)
    started = time.monotonic()
    try:
        was_running = controller.is_running()
        controller.stop()
    except DrlibError as exc:
        staged.unlink(missing_ok=True)
        raise RestoreFailed(
            f"stopping {controller.description} failed ({exc.message}). The RDB on disk was not changed; "
            f"{_ensure_running(controller)}"
        ) from exc
    kept: str | None = None
    try:
        if data_file.exists():
            os.replace(data_file, old)
            kept = str(old)
        os.replace(staged, data_file)
        controller.start()
        _wait_for_redis(profile, timeout=timeout)
    except (DrlibError, OSError) as exc:
        reason = exc.message if isinstance(exc, DrlibError) else f"{type(exc).__name__}: {exc.strerror or exc}"
        state = _roll_back(
            controller,
            data_file=data_file,
            staged=staged,
            old=old if kept else None,
            profile=profile,
            restart=was_running,
        )
        raise RestoreFailed(f"the Redis restore failed after Redis was stopped ({reason}). {state}") from exc
    return RedisRestoreResult(
        backup=verified.backup.name, data_file=str(data_file), kept_old=kept, seconds=time.monotonic() - started
    )


def _ensure_running(controller: ServiceController) -> str:
    try:
        if not controller.is_running():
            controller.start()
        return f"{controller.description} is running."
    except DrlibError as exc:
        return f"{controller.description} may be down ({exc.message}): start it by hand."


def _roll_back(
    controller: ServiceController, *, data_file: Path, staged: Path, old: Path | None, profile: Profile, restart: bool
) -> str:
    """Put the old RDB back and start Redis again; say what state things are in."""
    with contextlib.suppress(DrlibError):  # it may never have started; the start below says whether it runs
        controller.stop()
    try:
        staged.unlink(missing_ok=True)
        if old is not None:
            os.replace(old, data_file)
            put_back = f"The previous RDB was put back as {data_file}."
        else:
            data_file.unlink(missing_ok=True)
            put_back = f"There was no previous RDB; the restored copy {data_file} was removed."
    except OSError as exc:
        return (
            f"Putting the previous RDB back failed ({type(exc).__name__}): Redis is stopped. Move {old} to "
            f"{data_file} by hand and start {controller.description}."
        )
    if not restart:
        return f"{put_back} Redis was not running before the restore and was left stopped."
    try:
        controller.start()
        _wait_for_redis(profile, timeout=60)
    except DrlibError as exc:
        return (
            f"{put_back} Starting {controller.description} again failed ({exc.message}): Redis is DOWN. "
            "Check its log and start it by hand."
        )
    return f"{put_back} Redis was started again with it and is up, as before the restore."


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
