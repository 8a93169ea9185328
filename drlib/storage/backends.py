"""One storage interface, two implementations side by side: a local directory and an S3 bucket
(any S3-compatible endpoint via ``endpoint_url``)."""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from drlib.config import Profile
from drlib.exceptions import ConfigError, ConnectionFailed, CredentialsRejected, DrlibError
from drlib.hashing import CHUNK, sha256_chunks, sha256_file
from drlib.lazy import lazy_module

if TYPE_CHECKING:
    import boto3
    import boto3.s3.transfer
    import botocore.config
    import botocore.exceptions
else:
    boto3 = lazy_module("boto3.s3.transfer")
    botocore = lazy_module("botocore.exceptions", "botocore.config")


@functools.cache
def transfer_config() -> boto3.s3.transfer.TransferConfig:
    """Multipart above 16 MiB, 8 parallel parts: large videos stream instead of loading into memory."""
    return boto3.s3.transfer.TransferConfig(
        multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=8
    )


@dataclass(frozen=True)
class StoredFile:
    """One file (or object): its key relative to the storage root, size, mtime, and mode if local."""

    key: str
    size: int
    mtime: float
    mode: int | None = None

    @property
    def folder(self) -> str:
        return self.key.split("/", 1)[0] if "/" in self.key else "."


class Storage(Protocol):
    description: str

    def files(self) -> Iterator[StoredFile]: ...

    def sha256(self, key: str) -> str: ...

    def exists(self, key: str) -> bool: ...

    def check_reachable(self) -> None: ...


class LocalStorage:
    """Files under a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"local folder {root}"

    def files(self) -> Iterator[StoredFile]:
        if not self.root.is_dir():
            return
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = Path(dirpath) / name
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):
                    yield StoredFile(
                        path.relative_to(self.root).as_posix(), info.st_size, info.st_mtime, stat.S_IMODE(info.st_mode)
                    )

    def sha256(self, key: str) -> str:
        return sha256_file(self.root / key)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def check_reachable(self) -> None:
        """The tree itself may be what was lost; the folder that holds it must be there."""
        if not self.root.parent.is_dir():
            raise ConfigError(
                f"the folder holding the storage tree, {self.root.parent}, does not exist: check the profile's "
                "[storage] path, or that the storage volume is mounted"
            )


def s3_error(exc: Exception, *, endpoint: str | None, bucket: str) -> DrlibError:
    """Turn a boto3/botocore error into a drlib error naming the endpoint and bucket."""
    where = f"bucket {bucket!r} at {endpoint or 'AWS'}"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return ConnectionFailed(f"cannot reach the S3 endpoint for {where}: check endpoint_url and the network")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return CredentialsRejected(f"no S3 credentials for {where}: set the profile's access key secrets")
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return CredentialsRejected(f"S3 refused the credentials for {where} ({code})")
        if code in ("NoSuchBucket", "404"):
            return ConnectionFailed(f"{where} does not exist ({code})")
        return DrlibError(f"S3 request on {where} failed: {code or exc}")
    return DrlibError(f"S3 request on {where} failed: {type(exc).__name__}")


class S3Storage:
    """Objects in a bucket, under an optional prefix."""

    def __init__(self, client: Any, bucket: str, *, prefix: str = "", endpoint: str | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.description = f"s3://{bucket}/{prefix}"

    def error(self, exc: Exception) -> DrlibError:
        return s3_error(exc, endpoint=self.endpoint, bucket=self.bucket)

    def check_reachable(self) -> None:
        """Raise :class:`ConnectionFailed` / :class:`CredentialsRejected` before anything is touched."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self.error(exc) from exc

    def files(self) -> Iterator[StoredFile]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if key and not key.endswith("/"):
                        yield StoredFile(key, int(item["Size"]), item["LastModified"].timestamp())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self.error(exc) from exc

    def sha256(self, key: str) -> str:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
            with body:
                return sha256_chunks(body.iter_chunks(CHUNK))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self.error(exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except botocore.exceptions.ClientError:
            return False

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (relative to the prefix), 1,000 per request as S3 allows."""
        try:
            for start in range(0, len(keys), 1000):
                batch = [{"Key": self.prefix + k} for k in keys[start : start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self.error(exc) from exc


def s3_client(profile: Profile, *, timeout: float = 10, attempts: int = 3) -> Any:
    """A boto3 S3 client for the profile's endpoint and credentials (secrets from the profile)."""
    settings = profile.require_storage()
    access = profile.secret(settings.access_key_secret, required=False)
    secret = profile.secret(settings.secret_key_secret, required=False)
    config = botocore.config.Config(
        connect_timeout=timeout,
        read_timeout=max(timeout, 60),
        retries={"max_attempts": attempts, "mode": "standard"},
        max_pool_connections=32,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=config,
    )


def live_storage(profile: Profile, *, kind: str | None = None) -> LocalStorage | S3Storage:
    """The application's live storage: the local folder or the live bucket (:class:`NotConfigured`
    when the profile has no ``[storage]``)."""
    settings = profile.require_storage()
    kind = kind or settings.kind
    if kind == "local":
        return LocalStorage(Path(settings.path))
    if kind == "s3":
        return S3Storage(s3_client(profile), settings.bucket, endpoint=settings.endpoint_url)
    raise ConfigError(f"unknown storage kind {kind!r}: use 'local' or 's3'")
