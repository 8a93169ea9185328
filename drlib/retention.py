"""What can be freed when a disk fills up (the runbook's "delete old backups, logs"), and freeing it under
``confirm``.

Backups (database, local storage, Redis; each component on its own) are kept when younger than
``[backups] keep_days`` days or among the newest ``keep_last`` of their component, and the newest one that
verifies (its checksum against its manifest) is always kept; when none verifies, nothing of that component
is deleted. Everything older is a candidate, deleted with its sidecar files (``.manifest.json``,
``.roles.json``). Logs: rotated files (``api.log.1``, ``api.log.2.gz``, ``api.log-20260101``) in the
``[logs] folders`` last modified more than ``[logs] keep_days`` days ago; a live ``*.log`` never (deleting a
file a process holds open frees nothing until it closes it).

Nothing outside the folder it was listed in is ever touched: a symlink is never followed nor deleted, a
path that is not a plain file or folder, a folder that is or holds a mount point, and a name that moved
out of the folder are refused (listed as such, with why). A hard-linked file frees nothing (another name
keeps its data) and is counted as 0 bytes. Sizes are the blocks a file holds on disk."""

from __future__ import annotations

import functools
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drlib.checks import Checks, check
from drlib.config import Profile
from drlib.evidence import utcnow
from drlib.exceptions import DrlibError
from drlib.plans import RestorePlan
from drlib.postgres.catalogue import list_backups
from drlib.postgres.integrity import verify_backup
from drlib.redis.backup import list_redis_backups
from drlib.redis.restore import verify_redis_backup
from drlib.storage.catalogue import list_storage_backups
from drlib.storage.restore import verify_storage_backup
from drlib.units import format_bytes

#: the sidecar files drlib writes next to a backup (manifest; the database's roles)
COMPANION_SUFFIXES = (".manifest.json", ".roles.json")
#: a rotated log: ``<name>.log`` followed by a number or a date, and/or a compression suffix
ROTATED_LOG = re.compile(
    r"^(?P<base>[\w@+-][\w@+.-]*\.log)"
    r"(?:[.-](?P<mark>\d{1,4}|\d{8}(?:[-_]?\d{2,6})?|\d{4}-\d{2}-\d{2}(?:[T_-]\d{2}-?\d{2}(?:-?\d{2})?)?))?"
    r"(?P<zip>\.(?:gz|bz2|xz|zst|lz4))?$"
)
DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    """How long backups and logs are kept (the profile's, unless given)."""

    keep_days: int
    keep_last: int
    log_keep_days: int

    @classmethod
    def from_profile(cls, profile: Profile, *, keep_days: int | None = None, keep_last: int | None = None) -> Retention:
        return cls(
            keep_days=profile.backups.keep_days if keep_days is None else keep_days,
            keep_last=profile.backups.keep_last if keep_last is None else keep_last,
            log_keep_days=profile.logs.keep_days,
        )

    def describe(self) -> str:
        return (
            f"backups: {self.keep_days} days, at least the newest {self.keep_last} and the newest that verifies; "
            f"rotated logs: {self.log_keep_days} days"
        )


@dataclass(frozen=True)
class Candidate:
    """A backup (with its sidecar files) or a rotated log that may be deleted."""

    component: str
    name: str
    folder: Path
    paths: tuple[Path, ...]
    bytes: int
    created_at: datetime
    reason: str
    device: int

    def row(self, now: datetime) -> dict[str, Any]:
        return {
            "component": self.component,
            "name": self.name,
            "taken_at_utc": self.created_at.isoformat(timespec="seconds"),
            "age_days": round((now - self.created_at).total_seconds() / DAY, 1),
            "size": format_bytes(self.bytes),
            "bytes": self.bytes,
            "files": len(self.paths),
            "why": self.reason,
        }


@dataclass(frozen=True)
class Kept:
    """A backup retention keeps, and why."""

    component: str
    name: str
    created_at: datetime
    reason: str


@dataclass(frozen=True)
class Refused:
    """A path that looked like something to free but is not touched, and why."""

    component: str
    path: Path
    reason: str


@dataclass(frozen=True)
class PrunePlan:
    """What retention would free, what it keeps (and why), and what it refuses to touch."""

    retention: Retention
    taken_at: datetime
    candidates: tuple[Candidate, ...]
    kept: tuple[Kept, ...] = ()
    refused: tuple[Refused, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.candidates)

    def freed_by_device(self) -> dict[int, int]:
        """Bytes the candidates hold, per filesystem (to compute each volume's headroom after freeing)."""
        freed: dict[int, int] = {}
        for candidate in self.candidates:
            freed[candidate.device] = freed.get(candidate.device, 0) + candidate.bytes
        return freed

    def rows(self) -> list[dict[str, Any]]:
        return [c.row(self.taken_at) for c in self.candidates]

    def describe(self) -> str:
        per: dict[str, list[Candidate]] = {}
        for candidate in self.candidates:
            per.setdefault(candidate.component, []).append(candidate)
        parts = [f"{k}: {len(v)} ({format_bytes(sum(c.bytes for c in v))})" for k, v in per.items()]
        return ", ".join(parts) or "nothing"

    def as_plan(self) -> RestorePlan:
        steps = tuple(f"delete {', '.join(str(p) for p in c.paths)} ({format_bytes(c.bytes)})" for c in self.candidates)
        return RestorePlan(
            action=f"freeing {format_bytes(self.total_bytes)} ({len(self.candidates)} item(s) beyond retention)",
            steps=steps or ("nothing: no backup or log is beyond retention",),
        )


@dataclass(frozen=True)
class PruneResult:
    """What was deleted, what could not be, and the bytes freed."""

    deleted: tuple[Candidate, ...]
    failed: tuple[tuple[Candidate, str], ...] = ()
    skipped: tuple[tuple[Candidate, str], ...] = ()

    @property
    def bytes_freed(self) -> int:
        return sum(c.bytes for c in self.deleted)

    def checks(self) -> Checks:
        results = [
            check(
                "freed",
                not self.failed,
                expected="every item beyond retention deleted",
                observed=f"{len(self.deleted)} deleted ({format_bytes(self.bytes_freed)})"
                + (f", {len(self.failed)} failed" if self.failed else ""),
                detail="; ".join(f"{c.name}: {why}" for c, why in self.failed),
            )
        ]
        results += [
            check(
                f"freed:{c.component}:{c.name}", False, expected="deleted", observed="kept", detail=why, warn_only=True
            )
            for c, why in self.skipped
        ]
        return Checks(results)


# -- listing --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Listed:
    name: str
    path: Path
    created_at: datetime
    verify: Callable[[], object]


def _backups(profile: Profile) -> dict[str, tuple[Path, list[_Listed]]]:
    """Each backed-up component's local backups folder and its backups, oldest first (a missing folder: none)."""
    backups = profile.backups
    found: dict[str, tuple[Path, list[_Listed]]] = {}
    if backups.postgres_dir.is_dir():
        found["postgres"] = (
            backups.postgres_dir,
            [
                _Listed(b.name, b.path, b.created_at, functools.partial(verify_backup, b))
                for b in list_backups(backups.postgres_dir, prefix=backups.prefix)
            ],
        )
    if profile.storage is not None and backups.storage_dir.is_dir():
        local = [b for b in list_storage_backups(backup_dir=backups.storage_dir) if not b.in_s3]
        found["storage"] = (
            backups.storage_dir,
            [_Listed(b.name, b.path, b.created_at, functools.partial(verify_storage_backup, b)) for b in local],
        )
    if profile.redis is not None and backups.redis_dir.is_dir():
        found["redis"] = (
            backups.redis_dir,
            [
                _Listed(b.name, b.path, b.created_at, functools.partial(verify_redis_backup, b))
                for b in list_redis_backups(backups.redis_dir)
            ],
        )
    return found


def _allocated(info: os.stat_result) -> int:
    """Bytes deleting this name frees: its blocks, or nothing when another hard link keeps them."""
    return info.st_blocks * 512 if info.st_nlink <= 1 else 0


def inspect_path(path: Path, folder: Path) -> tuple[int, str]:
    """(bytes freed by deleting ``path``, why it must not be deleted, or ``""``). ``folder`` is resolved."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0, "gone"
    if stat.S_ISLNK(info.st_mode):
        return 0, "a symlink: never followed nor deleted; remove it by hand if it is yours"
    if path.parent.resolve() != folder or path.name in ("", ".", ".."):
        return 0, f"not directly inside {folder}"
    if stat.S_ISREG(info.st_mode):
        return _allocated(info), ""
    if not stat.S_ISDIR(info.st_mode):
        return 0, "not a regular file or folder"
    if os.path.ismount(path):
        return 0, "a mount point: not deleted"
    total = 0
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in dirs:
            if os.path.ismount(os.path.join(root, name)):
                return 0, f"holds a mount point ({os.path.join(root, name)}): not deleted"
        for name in files + dirs:
            entry = os.lstat(os.path.join(root, name))
            total += _allocated(entry) if not stat.S_ISDIR(entry.st_mode) else entry.st_blocks * 512
    return total + info.st_blocks * 512, ""


def _companions(path: Path) -> list[Path]:
    return [p for p in (path.with_name(path.name + s) for s in COMPANION_SUFFIXES) if os.path.lexists(p)]


def _newest_verified(listed: list[_Listed]) -> tuple[_Listed | None, str]:
    """The newest backup that verifies, and why the newer ones do not."""
    problems = []
    for item in reversed(listed):
        try:
            item.verify()
        except DrlibError as exc:
            problems.append(f"{item.name}: {exc.message}")
            continue
        return item, "; ".join(problems)
    return None, "; ".join(problems)


def _candidate(
    component: str, folder: Path, name: str, created: datetime, paths: list[Path], why: str
) -> Candidate | Refused:
    """A candidate when every path is safe to delete, else the first refusal."""
    total = 0
    for path in paths:
        size, refusal = inspect_path(path, folder)
        if refusal:
            return Refused(component, path, refusal)
        total += size
    return Candidate(component, name, folder, tuple(paths), total, created, why, os.lstat(paths[0]).st_dev)


def _sort_into(found: Candidate | Refused, candidates: list[Candidate], refused: list[Refused]) -> None:
    if isinstance(found, Candidate):
        candidates.append(found)
    else:
        refused.append(found)


def plan_backups(profile: Profile, retention: Retention, *, now: datetime) -> PrunePlan:
    """The backups beyond retention, per component (see the module docstring)."""
    candidates: list[Candidate] = []
    kept: list[Kept] = []
    refused: list[Refused] = []
    notes: list[str] = []
    horizon = now - timedelta(days=retention.keep_days)
    for component, (folder, listed) in _backups(profile).items():
        if not listed:
            continue
        newest_verified, problems = _newest_verified(listed)
        if newest_verified is None:
            notes.append(f"no {component} backup verifies ({problems}): none of them is deleted")
            kept += [Kept(component, b.name, b.created_at, "no backup of this component verifies") for b in listed]
            continue
        if problems:
            notes.append(f"{component}: newer backups do not verify ({problems})")
        newest = {b.name for b in listed[-retention.keep_last :]}
        real = folder.resolve()
        for item in listed:
            if item is newest_verified:
                kept.append(Kept(component, item.name, item.created_at, "the newest that verifies"))
            elif item.created_at >= horizon:
                kept.append(Kept(component, item.name, item.created_at, f"within {retention.keep_days} days"))
            elif item.name in newest:
                kept.append(Kept(component, item.name, item.created_at, f"one of the newest {retention.keep_last}"))
            else:
                age = (now - item.created_at).total_seconds() / DAY
                why = f"{age:.1f} days old (> {retention.keep_days}), not among the newest {retention.keep_last}"
                found = _candidate(
                    component, real, item.name, item.created_at, [item.path, *_companions(item.path)], why
                )
                _sort_into(found, candidates, refused)
    return PrunePlan(retention, now, tuple(candidates), tuple(kept), tuple(refused), tuple(notes))


def plan_logs(profile: Profile, retention: Retention, *, now: datetime) -> PrunePlan:
    """Rotated log files older than the logs' retention, in each of ``[logs] folders``."""
    candidates: list[Candidate] = []
    refused: list[Refused] = []
    notes: list[str] = []
    horizon = (now - timedelta(days=retention.log_keep_days)).timestamp()
    for folder in dict.fromkeys(profile.logs.folders):
        if not folder.is_dir():
            continue
        real = folder.resolve()
        if real == Path(real.anchor):
            notes.append(f"log folder {folder} is a filesystem root: not pruned (name the application's log folder)")
            continue
        for path in sorted(folder.iterdir()):
            match = ROTATED_LOG.match(path.name)
            if not match or not (match["mark"] or match["zip"]):
                continue  # not a log, or the live log
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if info.st_mtime >= horizon:
                continue
            if not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
                refused.append(Refused("logs", path, "not a regular file: a log is a file"))
                continue
            modified = info.st_mtime
            created = datetime.fromtimestamp(modified, UTC)
            age = (now - created).total_seconds() / DAY
            why = f"rotated log, last written {age:.1f} days ago (> {retention.log_keep_days})"
            found = _candidate("logs", real, path.name, created, [path], why)
            _sort_into(found, candidates, refused)
    return PrunePlan(retention, now, tuple(candidates), (), tuple(refused), tuple(notes))


def plan_pruning(
    profile: Profile, retention: Retention | None = None, *, logs: bool = True, now: datetime | None = None
) -> PrunePlan:
    """Backups beyond retention and (``logs``) old rotated logs: what deleting them would free."""
    retention = retention or Retention.from_profile(profile)
    now = now or utcnow()
    plans = [plan_backups(profile, retention, now=now)] + ([plan_logs(profile, retention, now=now)] if logs else [])
    seen: set[Path] = set()
    candidates = []
    for candidate in (c for p in plans for c in p.candidates):
        if candidate.paths[0] not in seen:  # a folder named twice (logs inside a backups folder)
            seen.add(candidate.paths[0])
            candidates.append(candidate)
    return PrunePlan(
        retention=retention,
        taken_at=now,
        candidates=tuple(candidates),
        kept=tuple(k for p in plans for k in p.kept),
        refused=tuple(r for p in plans for r in p.refused),
        notes=tuple(n for p in plans for n in p.notes),
    )


# -- freeing ---------------------------------------------------------------------------------------------
def prune(plan: PrunePlan, *, confirm: bool) -> PruneResult | RestorePlan:
    """Delete each candidate of ``plan`` with its sidecar files; without ``confirm`` only say what would be.
    Every path is checked again just before it is deleted (a symlink or a moved name is skipped)."""
    if not confirm:
        return plan.as_plan()
    deleted: list[Candidate] = []
    failed: list[tuple[Candidate, str]] = []
    skipped: list[tuple[Candidate, str]] = []
    for candidate in plan.candidates:
        refusal = next(
            (why for p in candidate.paths if (why := inspect_path(p, candidate.folder)[1]) and why != "gone"), ""
        )
        if refusal:
            skipped.append((candidate, f"changed since it was listed: {refusal}"))
            continue
        try:
            for (
                path
            ) in candidate.paths:  # the backup first: a sidecar left behind is harmless, a backup without one is not
                if os.path.lexists(path):
                    _delete(path)
        except OSError as exc:
            failed.append((candidate, f"{type(exc).__name__}: {exc.strerror or exc}"))
            continue
        deleted.append(candidate)
    return PruneResult(deleted=tuple(deleted), failed=tuple(failed), skipped=tuple(skipped))


def _delete(path: Path) -> None:
    if stat.S_ISDIR(os.lstat(path).st_mode):
        shutil.rmtree(path)  # never follows a symlink inside (it is removed, not what it points at)
    else:
        path.unlink()
