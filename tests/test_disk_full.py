"""Storage disk full: a full volume named with its free bytes and its failing writes named by cause (a real
tmpfs filled to the last block, remounted read-only; a database that refuses writes), no false alarm on the
clean sandbox; retention (never the newest verified backup, never one within retention, sidecars deleted
with their backup, symlinks and odd paths refused, a dry run deletes nothing) and ``drlib backup prune``;
the fault and its release; the drill, which frees the volume, fails when nothing is freed, and leaves the
sandbox as it was after a pass, a failure or a crash."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from drlib.cli import main
from drlib.config import LogSettings, Profile
from drlib.diskspace import (
    PROBE_PREFIX,
    PROBE_SCHEMA,
    WriteProbe,
    probe_database_write,
    probe_file_write,
    read_disk_state,
)
from drlib.drill import run_scenario
from drlib.evidence import utcnow
from drlib.exceptions import DrillRefused
from drlib.faults import flip_byte
from drlib.faults_disk_full import VOLUME_DIR, VolumeFault, fill_backups_volume, mounted, release_volume, seed_volume
from drlib.plans import RestorePlan
from drlib.postgres.catalogue import list_backups
from drlib.postgres.connection import PgTarget
from drlib.redis.backup import list_redis_backups
from drlib.retention import PruneResult, Retention, plan_pruning, prune
from drlib.sandbox.stack import Sandbox
from drlib.storage.catalogue import list_storage_backups
from tests.test_drill import newest, report_folders
from tests.test_prevention import small_volume  # noqa: F401  (the 4 MiB tmpfs fixture)


def statuses(checks: object) -> dict[str, str]:
    return {c.name: c.status for c in checks}  # type: ignore[attr-defined]


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_size for p in sorted(root.rglob("*"))}


def newest_backups(profile: Profile) -> dict[str, Path]:
    return {
        "postgres": list_backups(profile.backups.postgres_dir, prefix=profile.backups.prefix)[-1].path,
        "storage": [b for b in list_storage_backups(backup_dir=profile.backups.storage_dir) if not b.in_s3][-1].path,
        "redis": list_redis_backups(profile.backups.redis_dir)[-1].path,
    }


def fill(volume: Path) -> None:
    """Write until the filesystem refuses (ENOSPC): full to the last block."""
    fd = os.open(volume / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
    finally:
        os.close(fd)


# -- detection ----------------------------------------------------------------------------------------------
def test_a_clean_sandbox_raises_no_alarm_and_the_probes_leave_nothing_behind(
    healthy_sandbox: Sandbox, profile: Profile, target: PgTarget
) -> None:
    state = read_disk_state(profile)
    assert state.describe() == "none" and not state.full and not state.writes_fail
    assert {"postgres_data", "storage", "backups_postgres", "backups_storage", "backups_redis"} <= {
        v.name for v in state.volumes
    }
    assert set(statuses(state.checks(warn_only=True)).values()) == {"pass"}
    assert state.recovered().status == "pass"
    assert not [p for v in state.volumes for p in v.usage.path.glob(f"{PROBE_PREFIX}*")]
    with target.connect() as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (PROBE_SCHEMA,)).fetchone() == (None,)


def test_a_full_volume_is_named_with_its_free_bytes_and_its_writes_fail_with_enospc_or_erofs(
    healthy_sandbox: Sandbox,
    profile: Profile,
    small_volume: Path,  # noqa: F811
) -> None:
    watched = dataclasses.replace(
        profile, monitoring=dataclasses.replace(profile.monitoring, volumes={"uploads": small_volume})
    )
    fill(small_volume)
    state = read_disk_state(watched)
    uploads = next(v for v in state.volumes if v.name == "uploads")
    assert uploads.full and uploads.usage.free_bytes == 0
    assert uploads.probe.error == "no space left on device (ENOSPC)"
    assert "uploads full (0 B free, 100 % used, no space left on device (ENOSPC))" in state.describe()
    found = statuses(state.checks(warn_only=True))
    assert found["disk_uploads"] == found["write_uploads"] == "warn" and found["write_database"] == "pass"
    assert statuses(state.checks())["write_uploads"] == "fail"
    recovered = state.recovered()
    assert recovered.status == "fail" and "add disk space" in recovered.detail and "migrate" in recovered.detail
    assert not list(small_volume.glob(f"{PROBE_PREFIX}*"))
    (small_volume / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_volume)], check=True)
    assert probe_file_write("uploads", small_volume).error == "read-only filesystem (EROFS)"


def test_a_database_that_refuses_writes_is_named_and_the_probe_leaves_nothing(db_copy: PgTarget) -> None:
    assert probe_database_write(db_copy).ok
    with db_copy.maintenance.connect() as conn:
        conn.execute(f'ALTER DATABASE "{db_copy.name}" SET default_transaction_read_only = on')
    probe = probe_database_write(db_copy)
    assert not probe.ok and probe.error.startswith("read-only transaction (SQLSTATE 25006)")
    assert probe.check(warn_only=True).status == "warn" and probe.check().status == "fail"
    with db_copy.connect() as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (PROBE_SCHEMA,)).fetchone() == (None,)


# -- retention -----------------------------------------------------------------------------------------------
@pytest.fixture
def pile(healthy_sandbox: Sandbox, profile: Profile, tmp_path: Path) -> Profile:
    """A backups folder where nothing was ever pruned: copies of the sandbox's newest backups, older copies beyond
    retention (keep_last + 3 per component) and rotated logs, as the drill seeds its volume."""
    root = tmp_path / "backups"
    seed_volume(
        root,
        newest_backups(profile),
        backups_root=healthy_sandbox.backups_root,
        retention=Retention.from_profile(profile),
        now=utcnow(),
    )
    backups = dataclasses.replace(
        profile.backups, postgres_dir=root / "postgres", storage_dir=root / "storage", redis_dir=root / "redis"
    )
    return dataclasses.replace(profile, backups=backups, logs=LogSettings(folders=(root / "logs",)))


def test_backups_beyond_retention_go_with_their_sidecars_and_old_rotated_logs_too_never_the_live_log(
    pile: Profile,
) -> None:
    root = pile.backups.postgres_dir.parent
    plan = plan_pruning(pile)
    per = {k: sorted(c.name for c in plan.candidates if c.component == k) for k in ("postgres", "storage", "redis")}
    assert {k: len(v) for k, v in per.items()} == {"postgres": 4, "storage": 4, "redis": 4}
    assert sorted(c.name for c in plan.candidates if c.component == "logs") == [
        "backup.log.1",
        "backup.log.2.gz",
        "backup.log.3.gz",
        "backup.log.4.gz",
    ]
    assert {c.paths[0].name: len(c.paths) for c in plan.candidates if c.component == "postgres"} == dict.fromkeys(
        per["postgres"], 3
    )  # the dump, its manifest and its roles file
    reasons = {(k.component, k.reason) for k in plan.kept}
    assert ("postgres", "the newest that verifies") in reasons and ("redis", "one of the newest 3") in reasons
    assert plan.total_bytes == sum(c.bytes for c in plan.candidates) > 0
    before = tree(root)
    assert isinstance(prune(plan, confirm=False), RestorePlan)  # a dry run deletes nothing
    assert tree(root) == before
    result = prune(plan, confirm=True)
    assert isinstance(result, PruneResult) and result.checks().passed
    assert result.bytes_freed == plan.total_bytes and len(result.deleted) == 16
    left = tree(root)
    assert not [name for name in left for c in plan.candidates if Path(name).name.startswith(c.name)]
    assert "logs/backup.log" in left
    assert plan_pruning(pile).candidates == ()  # what is left is within retention


def test_the_newest_backup_that_verifies_is_kept_whatever_the_retention(pile: Profile) -> None:
    dumps = list_backups(pile.backups.postgres_dir, prefix=pile.backups.prefix)
    flip_byte(dumps[-1].path)  # the newest no longer verifies
    plan = plan_pruning(pile, Retention(keep_days=0, keep_last=1, log_keep_days=0))
    kept = {k.name: k.reason for k in plan.kept if k.component == "postgres"}
    assert kept == {dumps[-1].name: "one of the newest 1", dumps[-2].name: "the newest that verifies"}
    assert any("newer backups do not verify" in note for note in plan.notes)
    for dump in dumps[:-1]:
        flip_byte(dump.path)
    plan = plan_pruning(pile, Retention(keep_days=0, keep_last=1, log_keep_days=0))
    assert not [c for c in plan.candidates if c.component == "postgres"]
    assert any(note.startswith("no postgres backup verifies") for note in plan.notes)


def test_nothing_within_retention_is_freed(pile: Profile) -> None:
    assert plan_pruning(pile, Retention(keep_days=365, keep_last=3, log_keep_days=365)).candidates == ()
    assert len(plan_pruning(pile, Retention(keep_days=0, keep_last=10, log_keep_days=365)).candidates) == 0


def test_symlinks_and_odd_paths_are_refused_never_followed_nor_deleted(pile: Profile, tmp_path: Path) -> None:
    folder, logs = pile.backups.postgres_dir, pile.logs.folders[0]
    outside = tmp_path / "precious.dump"
    outside.write_bytes(b"PGDMP not drlib's")
    old = sorted(folder.glob("*.dump"))[0]
    linked = folder / "content_crew_2020-01-01_000000.dump"
    linked.symlink_to(outside)
    sidecar = old.with_name(old.name + ".roles.json")
    sidecar.unlink()
    sidecar.symlink_to(outside)  # a backup whose sidecar points out of the folder: the whole backup is refused
    (logs / "evil.log.1").symlink_to(outside)
    (logs / "folder.log.1").mkdir()
    (logs / "notes.txt.1").write_text("not a log")
    stamp = time.time() - 90 * 86400
    for path in (logs / "evil.log.1", logs / "folder.log.1", logs / "notes.txt.1"):
        os.utime(path, (stamp, stamp), follow_symlinks=False)
    plan = plan_pruning(pile)
    refused = {r.path.name: r.reason for r in plan.refused}
    assert refused[linked.name].startswith("a symlink") and refused[sidecar.name].startswith("a symlink")
    assert refused["evil.log.1"].startswith("a symlink") and refused["folder.log.1"].startswith("not a regular file")
    assert old.name not in {c.name for c in plan.candidates} and "notes.txt.1" not in {c.name for c in plan.candidates}
    prune(plan, confirm=True)
    assert outside.read_bytes() == b"PGDMP not drlib's" and linked.is_symlink() and old.exists()
    assert (logs / "evil.log.1").is_symlink() and (logs / "notes.txt.1").exists()


def prune_cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["backup", "prune", "--env", "pile", *args], catch_exceptions=False)


def test_drlib_backup_prune_lists_with_sizes_and_deletes_only_with_confirm(
    pile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pile.backups.postgres_dir.parent
    config = tmp_path / "drlib.toml"
    config.write_text(
        f"[profiles.pile.database]\nname = '{pile.database.name}'\nport = {pile.database.port}\n"
        f"host = '{pile.database.host}'\n[profiles.pile.backups]\nprefix = '{pile.backups.prefix}'\n"
        f"postgres_dir = '{root}/postgres'\nstorage_dir = '{root}/storage'\nredis_dir = '{root}/redis'\n"
        f"[profiles.pile.storage]\nkind = 'local'\n[profiles.pile.redis]\n"
        f"[profiles.pile.logs]\nfolders = ['{root}/logs']\n"
    )
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    before = tree(root)
    listed = prune_cli("--logs")
    assert listed.exit_code == 0, listed.output
    assert (
        "would free" in listed.output
        and "DRY RUN, nothing deleted" in listed.output
        and "backup.log.2.gz" in listed.output
    )
    assert "KiB" in listed.output and "to do it: drlib backup prune --env pile --confirm" in listed.output
    assert tree(root) == before
    document = json.loads(prune_cli("--json", "--keep-last", "5").output)
    assert document["dry_run"] and len(document["candidates"]) == 6 and document["freed_bytes"] == 0
    assert all(c["bytes"] > 0 and c["paths"] for c in document["candidates"])
    assert prune_cli("--keep-last", "0").exit_code == 2
    done = prune_cli("--confirm", "--json")
    assert done.exit_code == 0, done.output
    freed = json.loads(done.output)
    assert len(freed["deleted"]) == 12 and freed["freed_bytes"] == freed["total_bytes"] > 0
    assert "logs/backup.log.1" in tree(root)  # logs only with --logs


# -- the fault -------------------------------------------------------------------------------------------------
def test_the_fault_fills_the_backups_folder_and_its_release_puts_it_back_as_it_was(
    healthy_sandbox: Sandbox, profile: Profile
) -> None:
    root = healthy_sandbox.backups_root
    before = tree(root)
    volume = fill_backups_volume(profile, newest_backups(profile))
    try:
        assert mounted(root) == 1 and volume.target == root
        state = read_disk_state(profile)
        assert {v.name for v in state.full} == {"backups_postgres", "backups_storage", "backups_redis"}
        assert "no space left on device (ENOSPC)" in state.describe() and state.writes_fail
    finally:
        released = release_volume(profile)
    assert len(released) == 2 and not mounted(root) and tree(root) == before
    assert not (root.parent / VOLUME_DIR).exists() and release_volume(profile) == []
    fill_backups_volume(profile, newest_backups(profile))  # as a drill killed with SIGKILL leaves it
    left = healthy_sandbox.status()
    assert not left.healthy and "disk_full drill's full volume" in left.describe()
    assert healthy_sandbox.up().healthy
    assert not mounted(root) and tree(root) == before


def test_the_fault_runs_only_on_the_sandbox_and_unmounts_what_it_mounted_when_it_fails(
    healthy_sandbox: Sandbox, profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DrillRefused, match="only on the sandbox"):
        fill_backups_volume(dataclasses.replace(profile, name="staging"), {})
    import drlib.faults_disk_full as fault

    monkeypatch.setattr(fault, "probe_file_write", lambda volume, folder, **_: WriteProbe(volume, str(folder), ok=True))
    with pytest.raises(VolumeFault, match="still takes writes"):
        fill_backups_volume(profile, newest_backups(profile))
    assert not mounted(healthy_sandbox.backups_root) and not (healthy_sandbox.folder / VOLUME_DIR).exists()


# -- the drill -------------------------------------------------------------------------------------------------
def drill(*args: str) -> Result:
    return CliRunner().invoke(main, ["drill", "run", "disk_full", *args], catch_exceptions=False)


@pytest.fixture
def sandbox_after(healthy_sandbox: Sandbox) -> Iterator[dict[str, int]]:
    """The backups folder before the test; afterwards it must hold all of it, nothing mounted, the sandbox healthy."""
    before = tree(healthy_sandbox.backups_root)
    yield before
    assert not mounted(healthy_sandbox.backups_root) and not (healthy_sandbox.folder / VOLUME_DIR).exists()
    after = tree(healthy_sandbox.backups_root)
    assert {k: v for k, v in after.items() if k in before} == before  # only the staging's new backups added
    assert healthy_sandbox.status().healthy


@pytest.mark.slow
def test_the_drill_frees_the_full_volume_and_leaves_the_sandbox_as_it_was(sandbox_after: dict[str, int]) -> None:
    before = report_folders()
    result = drill()
    assert result.exit_code == 0, result.output
    results = json.loads((newest(report_folders() - before) / "results.json").read_text())
    assert results["status"] == "passed" and results["rto_seconds"] > 0
    checks = {c["name"]: c["status"] for c in results["checks"]}
    assert checks["write_backups_postgres"] == "warn" and checks["verify:write_backups_postgres"] == "pass"
    assert checks["verify:disk_not_full"] == checks["freed"] == checks["verify:backup_written"] == "pass"
    assert "full to the last block" in results["fault"]


@pytest.mark.slow
def test_the_drill_fails_when_nothing_is_freed_and_still_cleans_up(sandbox_after: dict[str, int]) -> None:
    result = drill("-p", "free", "false")
    assert result.exit_code == 1, result.output
    assert "FAIL verify:disk_not_full" in result.output and "FAIL verify:write_backups_postgres" in result.output
    assert "no space left on device (ENOSPC)" in result.output


def test_a_drill_that_crashes_after_the_fault_still_unmounts_the_volume(
    sandbox_after: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import drlib.drill

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("the notebook's kernel died")

    monkeypatch.setattr(drlib.drill, "run_notebook", crash)
    report = run_scenario("disk_full")
    assert report.status == "error" and "kernel died" in (report.results.error.message if report.results.error else "")
    assert report.results.fault and "full to the last block" in report.results.fault


def test_the_drill_is_refused_before_anything_is_written_when_it_cannot_mount(
    sandbox_after: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from drlib.scenarios import disk_full

    monkeypatch.setattr(disk_full, "can_mount_tmpfs", lambda: "mount: only root can do that")
    result = drill()
    assert result.exit_code == 3, result.output
    assert "cannot mount one here (mount: only root can do that): run it as root" in result.output
