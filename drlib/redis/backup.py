"""Redis RDB backups: BGSAVE (waiting until it completes and checking its status), the RDB file
fetched into ``backups/redis/redis_YYYY-MM-DD_HHMMSS.rdb``, and a manifest whose key counts and
digest come from loading that very file into a throw-away Redis (so the manifest describes the
file exactly, and every backup is restore-tested once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drlib import __version__
from drlib.config import Profile
from drlib.exceptions import BackupCorrupt, BackupNotFound, DrlibError
from drlib.hashing import sha256_file
from drlib.lazy import lazy_module
from drlib.processes import free_port, spawn, stop_pid, wait_for_port
from drlib.redis.connection import (
    Fingerprint,
    fingerprint,
    redis_client,
    redis_error,
    redis_server_program,
    wait_until_loaded,
)
from drlib.selection import check_backup_folder, make_backup_folder

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")

MANIFEST_SUFFIX = ".manifest.json"
RDB_MAGIC = b"REDIS"


class RedisBackupFailed(DrlibError):
    code = "backup-failed"


@dataclass(frozen=True)
class RedisManifest:
    file: str
    created_at: str
    size_bytes: int
    sha256: str
    redis_version: str
    keys: int
    prefixes: dict[str, int]
    digest: str
    drlib_version: str = ""

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)


@dataclass(frozen=True)
class RedisBackup:
    path: Path
    created_at: datetime
    manifest: RedisManifest | None

    @property
    def name(self) -> str:
        return self.path.name


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def read_manifest(path: Path) -> RedisManifest:
    try:
        return RedisManifest(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise BackupCorrupt(f"Redis backup manifest {path} is missing or unreadable: pick another backup") from exc


def describe_rdb(path: Path, *, timeout: float = 60) -> Fingerprint:
    """Load ``path`` into a private, temporary Redis and fingerprint what it holds."""
    try:
        return _describe(path, timeout=timeout)
    except redis.RedisError as exc:
        raise BackupCorrupt(
            f"the RDB {path} could not be loaded into a temporary Redis ({type(exc).__name__}): it is "
            "damaged or from a newer Redis; take a new backup"
        ) from exc
    except OSError as exc:
        raise RedisBackupFailed(
            f"cannot load {path} into a temporary Redis ({type(exc).__name__}: {exc.strerror or exc}): check "
            "free space in the temporary folder"
        ) from exc


def _describe(path: Path, *, timeout: float) -> Fingerprint:
    with tempfile.TemporaryDirectory(prefix="drlib-rdb-") as folder:
        shutil.copyfile(path, Path(folder) / "dump.rdb")
        port = free_port()
        pid = spawn(
            [
                redis_server_program(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                folder,
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            log=Path(folder) / "log",
        )
        try:
            wait_for_port(port, what="temporary Redis", timeout=timeout, log=Path(folder) / "log")
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout)
            wait_until_loaded(client, timeout=timeout)
            result = fingerprint(client)
            client.close()
            return result
        finally:
            stop_pid(pid, timeout=10)


def bgsave(client: redis.Redis, *, timeout: float = 600) -> datetime:
    """BGSAVE and wait for it; return when the snapshot was taken. Raises if the save failed."""
    started = datetime.now(UTC)
    try:
        client.bgsave()
    except redis.ResponseError as exc:
        if "in progress" not in str(exc):
            raise
    deadline = time.monotonic() + timeout
    while True:
        info = client.info("persistence")
        if not int(info.get("rdb_bgsave_in_progress", 0)):  # BGSAVE answers after the fork: no race
            break
        if time.monotonic() > deadline:
            raise RedisBackupFailed(f"BGSAVE did not finish within {timeout:.0f}s")
        time.sleep(0.05)
    if info.get("rdb_last_bgsave_status") != "ok":
        raise RedisBackupFailed(
            f"BGSAVE failed (rdb_last_bgsave_status={info.get('rdb_last_bgsave_status')}): "
            "check Redis's log and free disk space"
        )
    return started


def _fetch_rdb(profile: Profile, client: redis.Redis, dest: Path) -> None:
    """Copy the RDB Redis wrote (same machine), else stream it with ``redis-cli --rdb``."""
    config: dict[Any, Any] = {**client.config_get("dir"), **client.config_get("dbfilename")}
    source = Path(str(config.get("dir", ""))) / str(config.get("dbfilename", "dump.rdb"))
    if source.is_file():
        shutil.copyfile(source, dest)
        return
    settings = profile.require_redis()
    env = {**os.environ, "REDISCLI_AUTH": profile.secret(settings.password_secret, required=False) or ""}
    try:
        result = subprocess.run(
            ["redis-cli", "-h", settings.host, "-p", str(settings.port), "--rdb", str(dest)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RedisBackupFailed(
            "Redis's RDB is not on this machine and redis-cli (to stream it) is not on PATH: install redis-tools"
        ) from exc
    if result.returncode != 0:
        raise RedisBackupFailed(f"redis-cli --rdb failed: {result.stderr.strip()}")


def backup_redis(profile: Profile, *, backup_dir: Path | None = None) -> RedisBackup:
    """BGSAVE, fetch the RDB, restore-test it and write its manifest."""
    backup_dir = backup_dir or profile.backups.redis_dir
    make_backup_folder(backup_dir, what="Redis backup", setting="redis_dir", error=RedisBackupFailed)
    client = redis_client(profile)
    try:
        taken = bgsave(client)
        version = str(client.info("server").get("redis_version", "?"))
        name = f"redis_{taken:%Y-%m-%d_%H%M%S}.rdb"
        final, partial = backup_dir / name, backup_dir / (name + ".partial")
        _fetch_rdb(profile, client, partial)
        os.replace(partial, final)
    except redis.RedisError as exc:
        raise redis_error(exc, profile) from exc
    except OSError as exc:
        raise RedisBackupFailed(
            f"cannot write the RDB into {backup_dir} ({type(exc).__name__}: {exc.strerror or exc}): check free "
            "space and permissions"
        ) from exc
    finally:
        client.close()
    described = describe_rdb(final)
    try:
        manifest = RedisManifest(
            file=name,
            created_at=taken.isoformat(),
            size_bytes=final.stat().st_size,
            sha256=sha256_file(final),
            redis_version=version,
            keys=described.keys,
            prefixes=described.prefixes,
            digest=described.digest,
            drlib_version=__version__,
        )
        manifest_path(final).write_text(json.dumps(asdict(manifest), indent=2), encoding="utf-8")
    except OSError as exc:
        raise RedisBackupFailed(
            f"the RDB {final} was written but its manifest could not be ({type(exc).__name__}): check free space "
            "in the backup folder and take the backup again"
        ) from exc
    return RedisBackup(path=final, created_at=taken, manifest=manifest)


def list_redis_backups(backup_dir: Path) -> list[RedisBackup]:
    """Backups named ``redis_YYYY-MM-DD_HHMMSS.rdb``, oldest first (other names are skipped)."""
    check_backup_folder(backup_dir, what="Redis backup", setting="redis_dir")
    try:
        paths = sorted(backup_dir.glob("redis_*.rdb"))
    except OSError as exc:
        raise BackupNotFound(
            f"Redis backup folder {backup_dir} cannot be listed ({type(exc).__name__}): check its permissions"
        ) from exc
    found = []
    for path in paths:
        try:
            named = datetime.strptime(path.stem.removeprefix("redis_"), "%Y-%m-%d_%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            continue  # not a name drlib writes
        try:
            manifest: RedisManifest | None = read_manifest(manifest_path(path))
            assert manifest is not None
            when = manifest.created if manifest.created.tzinfo else manifest.created.replace(tzinfo=UTC)
        except (BackupCorrupt, TypeError, ValueError):
            manifest, when = None, named
        found.append(RedisBackup(path=path, created_at=when, manifest=manifest))
    return sorted(found, key=lambda b: b.created_at)
