"""Redis: BGSAVE backups with restore-tested manifests, integrity refusals, restore into a stopped
Redis, and the verification checks failing when the dataset differs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from drlib import faults
from drlib.config import Profile
from drlib.exceptions import BackupCorrupt, CredentialsRejected
from drlib.plans import RestorePlan
from drlib.redis.backup import RedisBackup, RedisBackupFailed, backup_redis, list_redis_backups, manifest_path
from drlib.redis.connection import fingerprint, ping, redis_client
from drlib.redis.restore import RedisRestoreResult, restore_redis, verify_redis, verify_redis_backup
from drlib.sandbox.stack import Sandbox


@pytest.fixture
def client(healthy_sandbox: Sandbox, profile: Profile) -> redis.Redis:
    healthy_sandbox.start_redis()
    return redis_client(profile)


@pytest.fixture
def rdb(client: redis.Redis, profile: Profile) -> RedisBackup:
    return backup_redis(profile)


def copy_rdb(backup: RedisBackup, folder: Path) -> RedisBackup:
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / backup.path.name
    shutil.copy2(backup.path, dest)
    shutil.copy2(manifest_path(backup.path), manifest_path(dest))
    return RedisBackup(path=dest, created_at=backup.created_at, manifest=None)


def test_a_backup_waits_for_bgsave_and_describes_the_dataset(
    rdb: RedisBackup, client: redis.Redis, profile: Profile
) -> None:
    assert rdb.name.startswith("redis_") and rdb.path.read_bytes()[:5] == b"REDIS"
    live = fingerprint(client)
    assert rdb.manifest is not None
    assert (rdb.manifest.keys, rdb.manifest.prefixes, rdb.manifest.digest) == (live.keys, live.prefixes, live.digest)
    assert {"session", "cache", "queue", "ratelimit"} <= set(rdb.manifest.prefixes)
    assert list_redis_backups(profile.backups.redis_dir)[-1].name == rdb.name


def test_a_failed_bgsave_is_reported(client: redis.Redis, profile: Profile) -> None:
    rdb_file = Path(str(client.config_get("dir")["dir"])) / "dump.rdb"
    aside = rdb_file.with_name("dump.rdb.aside")
    if rdb_file.exists():
        rdb_file.rename(aside)
    rdb_file.mkdir()  # Redis cannot rename its temp file over a folder: the save fails, even as root
    try:
        with pytest.raises(RedisBackupFailed, match="BGSAVE failed"):
            backup_redis(profile)
    finally:
        rdb_file.rmdir()
        if aside.exists():
            aside.rename(rdb_file)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (faults.empty_file, "0 bytes"),
        (faults.truncate_file, "truncated or altered"),
        (lambda p: p.write_text("not an rdb"), "wrong format"),
    ],
)
def test_a_damaged_rdb_is_refused(rdb: RedisBackup, tmp_path: Path, fault, message: str) -> None:  # type: ignore[no-untyped-def]
    damaged = copy_rdb(rdb, tmp_path)
    fault(damaged.path)
    with pytest.raises(BackupCorrupt, match=message):
        verify_redis_backup(damaged)


def test_redis_check_rdb_catches_damage_the_manifest_cannot(rdb: RedisBackup, tmp_path: Path) -> None:
    from drlib.hashing import sha256_file

    damaged = copy_rdb(rdb, tmp_path)
    faults.flip_byte(damaged.path, offset=damaged.path.stat().st_size - 4)  # inside the CRC64 trailer
    data = json.loads(manifest_path(damaged.path).read_text())
    data["sha256"] = sha256_file(damaged.path)  # as if the file had been damaged before it was catalogued
    manifest_path(damaged.path).write_text(json.dumps(data))
    with pytest.raises(BackupCorrupt, match="redis-check-rdb rejects"):
        verify_redis_backup(damaged)


def test_a_restore_into_a_stopped_redis_brings_the_dataset_back(
    rdb: RedisBackup, client: redis.Redis, profile: Profile, healthy_sandbox: Sandbox
) -> None:
    verified = verify_redis_backup(rdb)
    client.flushall()
    client.set("session:after-backup", "lost")
    assert isinstance(restore_redis(verified, profile=profile), RestorePlan)
    assert not verify_redis(profile, verified.manifest).passed
    result = restore_redis(verified, profile=profile, confirm=True)
    assert isinstance(result, RedisRestoreResult) and result.kept_old
    assert verify_redis(profile, verified.manifest).passed
    assert not redis_client(profile).exists("session:after-backup")


def test_verification_fails_on_a_missing_key_and_on_a_changed_value(
    rdb: RedisBackup, client: redis.Redis, profile: Profile
) -> None:
    manifest = rdb.manifest
    assert manifest is not None
    key = next(iter(client.scan_iter(match="cache:organization:*")))
    value = client.hget(key, "plan")
    client.hset(key, "plan", "free")
    changed = {c.name: c.status for c in verify_redis(profile, manifest)}
    assert changed["redis_digest"] == "fail" and changed["redis_key_count"] == "pass"
    client.hset(key, "plan", value)  # type: ignore[arg-type]
    client.delete(key)
    missing = {c.name: c.status for c in verify_redis(profile, manifest)}
    assert missing["redis_key_count"] == "fail" and missing["redis_keys:cache"] == "fail"
    assert missing["redis_keys:session"] == "pass"


def test_a_wrong_redis_password_is_a_clear_error(
    healthy_sandbox: Sandbox, profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(profile.redis.password_secret, "not-the-redis-password-7")
    with pytest.raises(CredentialsRejected, match="rejected the credentials") as info:
        ping(profile)
    assert "not-the-redis-password-7" not in str(info.value)


def test_redis_can_be_controlled_through_docker_compose_too(profile: Profile) -> None:
    from drlib.services import controller_for

    compose = replace(profile, redis=replace(profile.redis, controller="compose"))
    assert controller_for(compose, "redis").description == "docker compose service 'redis'"
