"""Redis: BGSAVE backups with restore-tested manifests, integrity refusals, restore into a stopped
Redis, and the verification checks failing when the dataset differs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from drlib import faults
from drlib.config import Profile
from drlib.exceptions import (
    BackupCorrupt,
    BackupNotFound,
    CredentialsRejected,
    InsufficientDiskSpace,
    RestoreFailed,
)
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


def redis_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


def live_rdb(profile: Profile) -> Path:
    assert profile.redis.data_dir is not None
    return Path(profile.redis.data_dir) / profile.redis.dbfilename


def test_a_backup_changed_after_verification_is_refused_before_redis_is_stopped(
    rdb: RedisBackup, client: redis.Redis, profile: Profile, tmp_path: Path
) -> None:
    copy = copy_rdb(rdb, tmp_path)
    verified = verify_redis_backup(copy)
    faults.flip_byte(copy.path)
    pid, on_disk = redis_pid(client), live_rdb(profile).read_bytes()
    with pytest.raises(BackupCorrupt, match="Redis was not stopped"):
        restore_redis(verified, profile=profile, confirm=True)
    assert redis_pid(client) == pid and live_rdb(profile).read_bytes() == on_disk


def test_appendonly_is_refused_before_redis_is_stopped(rdb: RedisBackup, client: redis.Redis, profile: Profile) -> None:
    verified = verify_redis_backup(rdb)
    pid = redis_pid(client)
    client.config_set("appendonly", "yes")
    try:
        with pytest.raises(RestoreFailed, match="appendonly yes") as info:
            restore_redis(verified, profile=profile, confirm=True)
    finally:
        client.config_set("appendonly", "no")
    assert "Redis was not stopped" in str(info.value)
    assert redis_pid(client) == pid


def test_a_data_folder_that_is_not_a_folder_is_refused_before_redis_is_stopped(
    rdb: RedisBackup, client: redis.Redis, profile: Profile, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    wrong = replace(profile, redis=replace(profile.redis, data_dir=blocker / "redis"))
    pid = redis_pid(client)
    with pytest.raises(RestoreFailed, match="not a folder or not writable"):
        restore_redis(verify_redis_backup(rdb), profile=wrong, confirm=True)
    assert redis_pid(client) == pid


def test_too_little_free_space_is_refused_before_redis_is_stopped(
    rdb: RedisBackup, client: redis.Redis, profile: Profile, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        cramped = replace(profile, redis=replace(profile.redis, data_dir=small))
        pid = redis_pid(client)
        with pytest.raises(InsufficientDiskSpace, match="Redis was not stopped"):
            restore_redis(verify_redis_backup(rdb), profile=cramped, confirm=True)
        assert redis_pid(client) == pid
        assert not list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=False)


def sandbox_redis_command(action: str) -> str:
    code = (
        "import sys; from drlib.config import load_profile; from drlib.services import controller_for; "
        "c = controller_for(load_profile('sandbox'), 'redis'); "
        + ("sys.exit(0 if c.is_running() else 1)" if action == "status" else f"c.{action}()")
    )
    return f'{sys.executable} -c "{code}"'


def test_a_failed_start_after_the_stop_puts_the_old_rdb_back_and_starts_redis_again(
    rdb: RedisBackup, client: redis.Redis, profile: Profile, tmp_path: Path
) -> None:
    verified = verify_redis_backup(rdb)
    client.set("session:written-after-the-backup", "kept")
    client.save()  # the live RDB on disk now differs from the backup
    on_disk = live_rdb(profile).read_bytes()
    first_start = tmp_path / "first-start-failed"
    flaky = replace(
        profile,
        redis=replace(
            profile.redis,
            controller="shell",
            # the first start fails (as a `docker compose start redis` can), the second works
            start_command=f"test -e {first_start} || {{ touch {first_start}; exit 1; }}; "
            + sandbox_redis_command("start"),
            stop_command=sandbox_redis_command("stop"),
            status_command=sandbox_redis_command("status"),
        ),
    )
    with pytest.raises(RestoreFailed, match="after Redis was stopped") as info:
        restore_redis(verified, profile=flaky, confirm=True)
    assert "previous RDB was put back" in str(info.value) and "started again" in str(info.value)
    assert live_rdb(profile).read_bytes() == on_disk
    assert not list(live_rdb(profile).parent.glob("*.restoring"))
    fresh = redis_client(profile)
    assert fresh.get("session:written-after-the-backup") == b"kept"
    fresh.close()


def test_a_redis_backup_folder_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "redis"
    not_a_folder.write_text("oops")
    with pytest.raises(BackupNotFound, match="is a file, not a folder"):
        list_redis_backups(not_a_folder)


def test_redis_backup_names_that_do_not_parse_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "redis_latest.rdb").write_bytes(b"REDIS0011")
    assert list_redis_backups(tmp_path) == []


def test_a_failed_stop_leaves_the_rdb_alone_and_redis_running(
    rdb: RedisBackup, client: redis.Redis, profile: Profile
) -> None:
    on_disk = live_rdb(profile).read_bytes()
    stuck = replace(
        profile,
        redis=replace(
            profile.redis,
            controller="shell",
            start_command=sandbox_redis_command("start"),
            stop_command="echo 'cannot stop' >&2; exit 1",
            status_command=sandbox_redis_command("status"),
        ),
    )
    with pytest.raises(RestoreFailed, match="RDB on disk was not changed") as info:
        restore_redis(verify_redis_backup(rdb), profile=stuck, confirm=True)
    assert "is running" in str(info.value)
    assert live_rdb(profile).read_bytes() == on_disk
    assert not list(live_rdb(profile).parent.glob("*.restoring"))
    assert client.ping()
