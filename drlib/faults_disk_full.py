"""The disk_full drill's fault (sandbox only): the sandbox's backups folder on a small filesystem of its own,
full to the last block.

A tmpfs is mounted at ``<sandbox>/.disk-full-volume`` and seeded with copies of the newest backup of each
component (with their sidecar files), older copies of them dated beyond retention (the backups that pile up
when nothing prunes them; ``keep_last + 3`` per component) and rotated backup-job logs older than the logs'
retention. It is then shrunk (``mount -o remount,size=``) to exactly what it holds and bind-mounted over the
sandbox's backups folder, so that a real write there fails with ENOSPC.

The real backups folder is never written: it is only hidden under the mount. :func:`release_volume` (the
drill's cleanup, after a pass, a failure or a crash, and before the next drill when a killed one left it)
unmounts both and the folder is back as it was; whatever was written on the volume goes with it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from drlib.config import Profile
from drlib.diskspace import probe_file_write
from drlib.evidence import utcnow
from drlib.exceptions import DrillRefused, DrlibError
from drlib.retention import COMPANION_SUFFIXES, Retention
from drlib.units import format_bytes

VOLUME_DIR = ".disk-full-volume"
#: on the volume: tells the volume's mounts from anything else mounted there
MARKER = ".drlib-disk-full-drill"
#: mounts release_volume takes down at one place at most (stacked by drills that were killed)
MAX_STACKED = 5
#: a backup name's time, replaced in the dated copies
#: how /proc/self/mountinfo writes a space, a tab, a newline or a backslash in a path
_OCTAL = re.compile(r"\\([0-7]{3})")
_NAME_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:_\d{6})?")
LOG_NAME = "backup.log"
ROTATED_LOGS = 4
#: how many dated copies per component beyond the ones ``keep_last`` keeps
OLD_BEYOND_KEEP_LAST = 3


class VolumeFault(DrlibError):
    """The drill's small volume could not be set up or taken down."""

    code = "disk-full-fault"


@dataclass(frozen=True)
class FullVolume:
    """Where the small volume is mounted, what it hides, and what it holds."""

    mountpoint: Path
    target: Path
    size_bytes: int
    seeded: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        held = ", ".join(f"{k} {v}" for k, v in self.seeded.items())
        return (
            f"{self.target} on a {format_bytes(self.size_bytes)} tmpfs of its own, full to the last block "
            f"(the newest backups, old copies beyond retention and rotated logs: {held})"
        )


# -- mounts ----------------------------------------------------------------------------------------------
def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


def mounted(path: Path) -> int:
    """How many mounts sit at ``path`` (``/proc/self/mountinfo``)."""
    where = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    points = [_OCTAL.sub(lambda m: chr(int(m[1], 8)), line.split(" ")[4]) for line in lines if line.count(" ") > 4]
    return sum(1 for point in points if point == where)


def can_mount_tmpfs() -> str:
    """``""`` when this process can mount a small tmpfs (a real one is mounted and unmounted), else why not."""
    with tempfile.TemporaryDirectory(prefix="drlib-mount-probe-") as folder:
        done = _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder)
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip() or f"mount exited {done.returncode}"
        _run("umount", folder)
    return ""


def _mount(*args: str) -> None:
    done = _run("mount", *args)
    if done.returncode != 0:
        raise VolumeFault(f"mount {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")


def _unmount(path: Path) -> None:
    """Unmount ``path``; when it is busy, detach it lazily (the kernel finishes once it is no longer used)."""
    if _run("umount", str(path)).returncode != 0:
        done = _run("umount", "--lazy", str(path))
        if done.returncode != 0 and mounted(path):
            raise VolumeFault(f"cannot unmount {path}: {(done.stderr or done.stdout).strip()}; unmount it by hand")


def _backups_root(profile: Profile) -> Path:
    if not profile.is_sandbox:
        raise DrillRefused(
            f"the disk-full fault mounts a small filesystem over the backups folder and runs only on the sandbox, "
            f"not on profile {profile.name!r}"
        )
    from drlib.sandbox.stack import sandbox_for

    return sandbox_for(profile).backups_root


def release_volume(profile: Profile) -> list[str]:
    """Unmount the drill's volume (its bind over the backups folder, then the tmpfs) and remove its mount
    point: the backups folder is back as it was. Does nothing when nothing is mounted; returns what it did."""
    return release_volume_at(_backups_root(profile))


def volume_left_at(target: Path) -> bool:
    """The drill's full volume is mounted over the backups folder ``target`` (a killed drill left it)."""
    return bool(mounted(target)) and (target / MARKER).exists()


def release_volume_at(target: Path) -> list[str]:
    """:func:`release_volume` for the sandbox's backups folder ``target`` (``drlib sandbox up`` calls it, so
    a drill killed with SIGKILL leaves no full volume behind past the next ``up``)."""
    mountpoint = target.parent / VOLUME_DIR
    done = []
    for _ in range(MAX_STACKED):  # a killed drill's mount and this one's: each is unmounted
        if not volume_left_at(target):
            break
        _unmount(target)
        done.append(f"unmounted the small volume from {target}")
    for _ in range(MAX_STACKED):
        if not mounted(mountpoint):
            break
        _unmount(mountpoint)
        done.append(f"unmounted {mountpoint}")
    if mountpoint.is_dir() and not mounted(mountpoint):
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
    return done


# -- seeding ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Newest:
    """The newest backup of one component: its file (or folder), its sidecars, and its folder's name."""

    component: str
    subfolder: str
    path: Path

    @property
    def files(self) -> list[Path]:
        return [
            self.path,
            *(p for p in (self.path.with_name(self.path.name + s) for s in COMPANION_SUFFIXES) if p.exists()),
        ]


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(_size_on_disk(p) for p in path.iterdir()) + 4096
    return -(-path.stat().st_size // 4096) * 4096


def _dated(name: str, when: datetime) -> str:
    """``name`` with its time replaced by ``when`` (``content_crew_2026-01-13_020000.dump`` →
    ``content_crew_2025-12-01_020000.dump``; ``storage_2026-01-13.tar.gz`` → ``storage_2025-12-01_020000.tar.gz``)."""
    matches = list(_NAME_TIME.finditer(name))
    if not matches:
        raise VolumeFault(f"backup name {name!r} holds no date to change")
    last = matches[-1]
    return f"{name[: last.start()]}{when:%Y-%m-%d_%H%M%S}{name[last.end() :]}"


def _copy(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest)
    else:
        shutil.copyfile(source, dest)


def _dated_copy(newest: _Newest, folder: Path, when: datetime) -> None:
    """A copy of ``newest`` named and recorded (manifest) as taken at ``when``, its files dated then too."""
    name = _dated(newest.path.name, when)
    for source in newest.files:
        dest = folder / (name + source.name[len(newest.path.name) :])
        if source.name.endswith(".manifest.json"):
            data = json.loads(source.read_text(encoding="utf-8"))
            data["created_at"] = when.isoformat()
            for key, value in list(data.items()):
                if key in ("file", "roles_file") and isinstance(value, str) and value.startswith(newest.path.name):
                    data[key] = name + value[len(newest.path.name) :]
            dest.write_text(json.dumps(data, indent=1), encoding="utf-8")
        else:
            _copy(source, dest)
        stamp = when.timestamp()
        os.utime(dest, (stamp, stamp))


def _write_logs(folder: Path, *, size: int, keep_days: int, now: datetime) -> int:
    """A live ``backup.log`` and rotated ones last written beyond ``keep_days``."""
    folder.mkdir(parents=True, exist_ok=True)
    line = f"{now:%Y-%m-%dT%H:%M:%SZ} INFO backup finished: content_crew dump, storage archive, redis rdb\n"
    (folder / LOG_NAME).write_text(line, encoding="utf-8")
    body = (line * (size // len(line) + 1))[:size].encode()
    for k in range(1, ROTATED_LOGS + 1):
        path = folder / (f"{LOG_NAME}.{k}" + (".gz" if k > 1 else ""))
        path.write_bytes(body)
        stamp = (now - timedelta(days=keep_days + k)).timestamp()
        os.utime(path, (stamp, stamp))
    return ROTATED_LOGS


def seed_volume(
    volume: Path, newest: dict[str, Path], *, backups_root: Path, retention: Retention, now: datetime
) -> dict[str, int]:
    """Copies of ``newest`` (component → its newest backup under ``backups_root``) with their sidecars, older
    copies beyond retention, and rotated logs, written into ``volume`` laid out as ``backups_root`` is."""
    seeded: dict[str, int] = {}
    copies = retention.keep_last + OLD_BEYOND_KEEP_LAST
    items = _newest_items(newest, backups_root)
    for item in items:
        folder = volume / item.subfolder
        folder.mkdir(parents=True, exist_ok=True)
        for source in item.files:
            _copy(source, folder / source.name)
        for k in range(1, copies + 1):
            _dated_copy(item, folder, now - timedelta(days=retention.keep_days + k, hours=1))
        seeded[item.component] = copies + 1
    seeded["rotated logs"] = _write_logs(
        volume / "logs", size=max(64 * 1024, _set_size(items)), keep_days=retention.log_keep_days, now=now
    )
    return seeded


def _newest_items(newest: dict[str, Path], backups_root: Path) -> list[_Newest]:
    return [_Newest(c, str(p.parent.relative_to(backups_root)), p) for c, p in newest.items()]


def _set_size(items: list[_Newest]) -> int:
    return sum(_size_on_disk(f) for item in items for f in item.files)


@contextlib.contextmanager
def _released_on_error(profile: Profile) -> Iterator[None]:
    try:
        yield
    except BaseException:
        release_volume(profile)
        raise


def fill_backups_volume(profile: Profile, newest: dict[str, Path]) -> FullVolume:
    """Put the sandbox's backups folder on a small tmpfs holding copies of ``newest`` (component → its newest
    backup), old copies beyond retention and rotated logs, full to the last block (see the module docstring).
    Anything left mounted by a killed drill is released first; on any failure everything is released."""
    target = _backups_root(profile)
    release_volume(profile)
    retention = Retention.from_profile(profile)
    one_set = _set_size(_newest_items(newest, target))
    estimate = one_set * (retention.keep_last + OLD_BEYOND_KEEP_LAST + 2) * 2 + 4 * 1024 * 1024
    mountpoint = target.parent / VOLUME_DIR
    mountpoint.mkdir(exist_ok=True)
    with _released_on_error(profile):
        _mount("-t", "tmpfs", "-o", f"size={estimate},mode=0755", "tmpfs", str(mountpoint))
        (mountpoint / MARKER).write_text("the disk_full drill's volume: drlib releases it after the drill\n")
        seeded = seed_volume(mountpoint, newest, backups_root=target, retention=retention, now=utcnow())
        used = shutil.disk_usage(mountpoint).used
        _mount("-o", f"remount,size={used}", str(mountpoint))  # what it holds fills it to the last block
        _mount("--bind", str(mountpoint), str(target))
        probe = probe_file_write("backups", target, size=4096)
        if probe.ok:
            raise VolumeFault(f"the small volume at {target} still takes writes after it was filled")
    return FullVolume(mountpoint=mountpoint, target=target, size_bytes=shutil.disk_usage(target).total, seeded=seeded)
