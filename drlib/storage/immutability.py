"""Are the backups where the application's credentials cannot delete or overwrite them? The runbook's
ransomware prevention ("Regular backups (offline/immutable)"), checked on the backups bucket with the
profile's own S3 credentials (the application's):

- versioning is on (an overwrite keeps the old version);
- object lock is on with a default retention (every backup written is locked for that long);
- a probe object written there cannot be deleted by version, not even with the governance bypass header, and
  an overwrite leaves its first version intact;
- the backups are not local only: the newest storage backup has a copy in the bucket (database dumps
  are written to a local folder: copy them there too).

The probe writes one small object under ``drlib-probe/`` (it stays locked for the retention period, hidden
behind a delete marker); it is only written with ``confirm``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drlib.checks import CheckResult, Checks, check
from drlib.config import Profile
from drlib.exceptions import DrlibError
from drlib.lazy import lazy_module
from drlib.storage.backends import S3Storage, s3_client
from drlib.storage.catalogue import list_storage_backups

if TYPE_CHECKING:
    import botocore.exceptions
else:
    botocore = lazy_module("botocore.exceptions")

PROBE_KEY = "drlib-probe/object-lock-probe"


@dataclass(frozen=True)
class BucketProtection:
    """What the bucket says about itself: versioning, object lock and its default retention."""

    bucket: str
    versioning: str
    lock_enabled: bool
    retention_mode: str | None
    retention_days: int

    def checks(self, prefix: str = "") -> list[CheckResult]:
        retention = f"{self.retention_mode}, {self.retention_days} day(s)" if self.retention_mode else "none"
        return [
            check(
                f"{prefix}backups_bucket_versioning",
                self.versioning == "Enabled",
                expected="Enabled",
                observed=self.versioning or "never enabled",
                detail=f"s3://{self.bucket}: an overwrite or delete must keep the old version",
            ),
            check(
                f"{prefix}backups_bucket_object_lock",
                self.lock_enabled and self.retention_mode is not None and self.retention_days > 0,
                expected="object lock on, with a default retention",
                observed=("on" if self.lock_enabled else "off") + f"; default retention: {retention}",
                detail="a backup bucket made without object lock cannot get it later: make a new one with "
                "--object-lock-enabled-for-bucket and a default retention, and copy the backups there"
                if not self.lock_enabled
                else f"s3://{self.bucket}",
            ),
        ]


def bucket_protection(client: Any, bucket: str) -> BucketProtection:
    backups = S3Storage(client, bucket)
    backups.check_reachable()
    try:
        versioning = str(client.get_bucket_versioning(Bucket=bucket).get("Status", ""))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise backups.error(exc) from exc
    try:
        config = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
            raise backups.error(exc) from exc
        config = {}
    rule = config.get("Rule", {}).get("DefaultRetention", {})
    days = int(rule.get("Days", 0) or 0) + 365 * int(rule.get("Years", 0) or 0)
    return BucketProtection(
        bucket=bucket,
        versioning=versioning,
        lock_enabled=config.get("ObjectLockEnabled") == "Enabled",
        retention_mode=rule.get("Mode"),
        retention_days=days,
    )


def _refused(call: Any) -> tuple[bool, str]:
    """Whether S3 refused ``call`` (and its error code, or "done")."""
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return True, str(exc.response.get("Error", {}).get("Code", "refused"))
    return False, "done"


def probe_lock(client: Any, bucket: str, *, key: str = PROBE_KEY, prefix: str = "") -> list[CheckResult]:
    """Write a probe object, then try what ransomware with these credentials would: delete its version
    (plainly, then with the governance bypass), and overwrite it; its first version must survive."""
    body = f"drlib object-lock probe {secrets.token_hex(8)}".encode()
    try:
        version = client.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId") or "null"
        deleted, how = _refused(lambda: client.delete_object(Bucket=bucket, Key=key, VersionId=version))
        bypassed, how_bypass = (
            _refused(
                lambda: client.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)
            )
            if deleted
            else (False, "not tried: the plain delete succeeded")
        )
        client.put_object(Bucket=bucket, Key=key, Body=b"overwritten by the drlib probe")
        try:
            kept = client.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read() == body
        except botocore.exceptions.ClientError:
            kept = False
        client.delete_object(Bucket=bucket, Key=key)  # a delete marker hides the probe; its versions stay
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise S3Storage(client, bucket).error(exc) from exc
    where = f"s3://{bucket}/{key} version {version}"
    return [
        check(
            f"{prefix}locked_backup_not_deletable",
            deleted and bypassed,
            expected="delete refused, also with x-amz-bypass-governance-retention",
            observed=f"delete: {how}; with the bypass: {how_bypass}",
            detail=where if deleted and bypassed else f"{where}: the application's credentials can delete backups",
        ),
        check(
            f"{prefix}locked_backup_not_overwritable",
            kept,
            expected="the first version intact after an overwrite",
            observed="intact" if kept else "gone or changed",
            detail=where,
        ),
    ]


def off_host_check(profile: Profile, client: Any, *, prefix: str = "") -> CheckResult:
    """A warning when the storage backups are local only (none in the backups bucket)."""
    settings = profile.require_storage()
    backups = list_storage_backups(
        backup_dir=profile.backups.storage_dir, s3=(client, settings.backups_bucket, profile.backups.s3_prefix)
    )
    remote = [b for b in backups if b.in_s3]
    newest = backups[-1] if backups else None
    copied = newest is not None and any(b.name == newest.name or b.created_at >= newest.created_at for b in remote)
    return check(
        f"{prefix}backups_off_host",
        copied,
        expected=f"the newest storage backup in s3://{settings.backups_bucket}",
        observed=f"{len(remote)} of {len(backups)} storage backups in the bucket"
        + (f"; newest {newest.name} local only" if newest is not None and not copied else ""),
        detail=f"database dumps are in {profile.backups.postgres_dir} only: copy them to the bucket as well"
        if copied
        else f"local backups in {profile.backups.storage_dir} can be encrypted with the live data: push them "
        "(drlib storage backup --push) or snapshot the bucket (--form s3)",
        warn_only=True,
    )


def immutability_checks(profile: Profile, *, probe: bool, prefix: str = "") -> Checks:
    """Every check above, with the profile's S3 credentials; an unreachable bucket fails them."""
    settings = profile.require_storage()
    client = s3_client(profile, attempts=2)
    try:
        results = bucket_protection(client, settings.backups_bucket).checks(prefix)
        if probe:
            results += probe_lock(client, settings.backups_bucket, prefix=prefix)
        results.append(off_host_check(profile, client, prefix=prefix))
    except DrlibError as exc:
        return Checks(
            [
                check(
                    f"{prefix}backups_bucket_reachable",
                    False,
                    expected="the backups bucket answers the application's credentials",
                    observed="no",
                    detail=f"{exc.message}: with no bucket every backup is local only",
                )
            ]
        )
    return Checks(results)
