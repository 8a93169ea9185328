"""Backups on more than one provider (the runbook's "multi-region backups"): the newest database backup
and the newest storage backups copied to the alternative provider's backup locations, and a check that
they are there and verify, so a provider outage cannot take the backups with it.

A profile's backups come in up to three kinds, each copied to the same kind of place on the alternative:

- ``database``: the newest dump (with its manifest and roles file) from ``backups.postgres_dir`` to the
  alternative's ``backups.postgres_dir``;
- ``storage``: the newest local storage archive or full copy from ``backups.storage_dir`` to the
  alternative's ``backups.storage_dir``;
- ``storage_s3``: the newest bucket snapshot (``s3://<backups bucket>/storage/<date>/``) to the
  alternative endpoint's backups bucket, object by object (streamed: the two endpoints share nothing).

A copy is written under a temporary name and renamed (its manifest first), and verified against its
manifest once written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drlib.checks import CheckResult, check
from drlib.config import Profile
from drlib.exceptions import DrlibError
from drlib.hashing import parallel_map
from drlib.lazy import lazy_module
from drlib.plans import RestorePlan
from drlib.postgres.backup import Backup
from drlib.postgres.catalogue import list_backups
from drlib.postgres.integrity import verify_backup
from drlib.storage.backends import S3Storage, s3_client, transfer_config
from drlib.storage.catalogue import StorageBackup, list_storage_backups
from drlib.storage.manifest import MANIFEST_SUFFIX
from drlib.storage.restore import verify_storage_backup
from drlib.storage.verify import verify_storage

if TYPE_CHECKING:
    import botocore.exceptions
else:
    botocore = lazy_module("botocore.exceptions")

Found = Backup | StorageBackup
#: the S3 client settings when listing a provider that may be down: fail fast
PROBE_TIMEOUT = 5


@dataclass(frozen=True)
class Newest:
    """The newest backup of one kind in one place; ``error`` when the place could not be read."""

    kind: str
    place: str
    backup: Found | None = None
    error: str = ""

    @property
    def name(self) -> str:
        return self.backup.name if self.backup else ""


@dataclass(frozen=True)
class Replica:
    """One backup copied (or found already there) on the alternative provider."""

    kind: str
    backup: str
    copy: str
    copied: bool
    checks: tuple[CheckResult, ...]


def _newest(items: list[Any]) -> Any:
    return max(items, key=lambda b: b.created_at) if items else None


def _read(kind: str, place: str, lister: Callable[[], Found | None]) -> Newest:
    try:
        return Newest(kind, place, lister())
    except DrlibError as exc:
        return Newest(kind, place, error=exc.message)


def newest_backups(profile: Profile) -> list[Newest]:
    """The newest backup of each kind the profile can hold, in the places its settings name."""
    backups = profile.backups
    found = [
        _read(
            "database",
            str(backups.postgres_dir),
            lambda: (
                _newest(list_backups(backups.postgres_dir, prefix=backups.prefix))
                if backups.postgres_dir.is_dir()
                else None
            ),
        )
    ]
    storage = profile.storage
    if storage is None:
        return found
    found.append(
        _read(
            "storage",
            str(backups.storage_dir),
            lambda: _newest([b for b in list_storage_backups(backup_dir=backups.storage_dir) if not b.in_s3]),
        )
    )
    if storage.kind == "s3" or storage.endpoint_url:
        found.append(
            _read(
                "storage_s3",
                f"s3://{storage.backups_bucket}/{backups.s3_prefix} at {storage.endpoint_url or 'AWS'}",
                lambda: _newest(
                    [b for b in list_storage_backups(backup_dir=None, s3=_s3_catalogue(profile)) if b.kind == "s3"]
                ),
            )
        )
    return found


def _s3_catalogue(profile: Profile) -> tuple[Any, str, str]:
    client = s3_client(profile, timeout=PROBE_TIMEOUT, attempts=1)
    return client, profile.require_storage().backups_bucket, profile.backups.s3_prefix


# -- verifying a copy -------------------------------------------------------------------------
def verify_copy(kind: str, backup: Found, profile: Profile) -> list[CheckResult]:
    """The copy against its manifest: the dump's or archive's checksum, or every object's sha256."""
    if isinstance(backup, Backup):
        return list(verify_backup(backup, require_manifest=True).checks)
    verified = verify_storage_backup(backup)
    if kind != "storage_s3":
        return list(verified.checks)
    client, bucket, prefix = _s3_catalogue(profile)
    objects = S3Storage(
        client, bucket, prefix=f"{prefix}{backup.name}/", endpoint=profile.require_storage().endpoint_url
    )
    return [*verified.checks, *verify_storage(objects, verified.manifest)]


def second_location_checks(primary: Profile, alternative: Profile) -> tuple[list[CheckResult], list[dict[str, Any]]]:
    """Per kind of backup: its newest is on the alternative provider too, and verifies there (fail: in one
    place only; warn: the copy there is older than the primary's newest). The rows say where each is."""
    results: list[CheckResult] = []
    rows: list[dict[str, Any]] = []
    copies = {n.kind: n for n in newest_backups(alternative)}
    for here in newest_backups(primary):
        there = copies[here.kind]
        rows.append(
            {
                "kind": here.kind,
                "primary": here.name or here.error or "none",
                "alternative": there.name or there.error or "none",
                "alternative location": there.place,
            }
        )
        if here.backup is None and there.backup is None:
            continue  # no backup of this kind anywhere: the backup checks report that, not this one
        name = f"{here.kind}_backup_on_second_provider"
        if there.backup is None:
            results.append(
                check(
                    name,
                    False,
                    expected=f"the newest backup also at {there.place}",
                    observed=f"only on the primary ({here.name})" if here.backup else f"none ({there.error})",
                    detail="in one place only: `drlib failover replicate --confirm` copies it",
                )
            )
            continue
        try:
            verified = verify_copy(here.kind, there.backup, alternative)
        except DrlibError as exc:
            results.append(check(name, False, expected="a copy that verifies", observed="damaged", detail=exc.message))
            continue
        behind = here.backup is not None and there.backup.created_at < here.backup.created_at
        results.append(
            check(
                name,
                not behind and all(c.passed for c in verified),
                expected=f"{here.name or 'the newest'} at {there.place}",
                observed=there.name + (f" (older than {here.name})" if behind else ", verified"),
                detail=("the second copy is behind the primary: replicate again" if behind else "")
                + (f"; primary unreadable: {here.error}" if here.error else ""),
                warn_only=behind,
            )
        )
    return results, rows


# -- copying ----------------------------------------------------------------------------------
def replicate_backups(primary: Profile, alternative: Profile, *, confirm: bool = False) -> list[Replica] | RestorePlan:
    """Copy the primary's newest backup of each kind to the alternative provider, unless it is there."""
    wanted: list[tuple[Newest, Newest]] = []
    copies = {n.kind: n for n in newest_backups(alternative)}
    for here in newest_backups(primary):
        if here.error:
            raise DrlibError(f"cannot read the primary's {here.kind} backups at {here.place}: {here.error}")
        if here.backup is not None:
            wanted.append((here, copies[here.kind]))
    for here, there in wanted:
        if (
            there.backup
            and there.name == here.name
            and here.backup
            and there.backup.created_at != here.backup.created_at
        ):
            raise DrlibError(
                f"a different {here.kind} backup named {here.name} (taken {there.backup.created_at.isoformat()}) is "
                f"already at {there.place}: move it away there, or take a new backup, then replicate again"
            )
    todo = [(h, t) for h, t in wanted if not (t.backup and t.backup.name == h.name)]
    if not confirm:
        steps = [f"copy {h.kind} backup {h.name} from {h.place} to {t.place}" for h, t in todo]
        steps += [f"{h.kind} backup {h.name}: already at {t.place}" for h, t in wanted if (h, t) not in todo]
        return RestorePlan(action="replicate the newest backups to the alternative provider", steps=tuple(steps))
    replicas = []
    for here, there in wanted:
        copied = (here, there) in todo
        if copied:
            _COPIERS[here.kind](here, primary, alternative)
        fresh = {n.kind: n for n in newest_backups(alternative)}[here.kind]
        if fresh.backup is None or fresh.name != here.name:
            raise DrlibError(
                f"the copy of {here.name} is not listed at {there.place} after copying it: check that folder"
            )
        replicas.append(
            Replica(here.kind, here.name, there.place, copied, tuple(verify_copy(here.kind, fresh.backup, alternative)))
        )
    return replicas


def _copy_files(source: Path, folder: Path) -> None:
    """A backup file (or folder) and its sidecars (``<name>.manifest.json``, ``<name>.roles.json``) into
    ``folder``: sidecars first, the backup itself last, each under a temporary name then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    sidecars = sorted(p for p in source.parent.iterdir() if p.name.startswith(source.name + "."))
    for path in [*sidecars, source]:
        partial = folder / f".{path.name}.partial"
        if path.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(path, partial)
        else:
            shutil.copy2(path, partial)
        os.replace(partial, folder / path.name)


def _copy_local(here: Newest, primary: Profile, alternative: Profile) -> None:
    assert here.backup is not None
    folder = alternative.backups.postgres_dir if here.kind == "database" else alternative.backups.storage_dir
    _copy_files(Path(here.backup.path), folder)


def _copy_snapshot(here: Newest, primary: Profile, alternative: Profile) -> None:
    """Every object of the snapshot, then its manifest, streamed from one endpoint to the other."""
    assert here.backup is not None
    source, source_bucket, prefix = _s3_catalogue(primary)
    target = s3_client(alternative)
    target_bucket = alternative.require_storage().backups_bucket
    listed = S3Storage(source, source_bucket, prefix=f"{prefix}{here.name}/")
    keys = [f"{prefix}{here.name}/{f.key}" for f in listed.files()] + [f"{prefix}{here.name}{MANIFEST_SUFFIX}"]

    def copy(key: str) -> None:
        try:
            body = source.get_object(Bucket=source_bucket, Key=key)["Body"]
            with body:
                target.upload_fileobj(body, target_bucket, key, Config=transfer_config())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise S3Storage(target, target_bucket).error(exc) from exc

    parallel_map(copy, keys[:-1])
    copy(keys[-1])  # the manifest last: a listed snapshot is a whole one


_COPIERS: dict[str, Callable[[Newest, Profile, Profile], None]] = {
    "database": _copy_local,
    "storage": _copy_local,
    "storage_s3": _copy_snapshot,
}
