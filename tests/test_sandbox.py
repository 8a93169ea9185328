"""The embedded sandbox: real servers on free ports, idempotent up, recovery, clean down."""

from __future__ import annotations

import boto3
import psutil
import pytest

from drlib.app.health import http_request
from drlib.exceptions import CredentialsRejected
from drlib.postgres.connection import PgTarget
from drlib.processes import port_is_open
from drlib.sandbox.stack import SECRET_NAMES, Sandbox


def test_sandbox_runs_every_service(healthy_sandbox: Sandbox) -> None:
    status = healthy_sandbox.status()
    assert status.running
    assert [s.name for s in status.services] == ["postgres", "redis", "s3", "api"]


def test_postgres_runs_as_an_unprivileged_user_with_password_auth(healthy_sandbox: Sandbox, target: PgTarget) -> None:
    pid = healthy_sandbox.postgres().pid()
    assert pid and psutil.Process(pid).username() != "root"
    with pytest.raises(CredentialsRejected):
        PgTarget(settings=target.settings, password="wrong").connect()
    with pytest.raises(CredentialsRejected):
        PgTarget(settings=target.settings, password=None).connect()


def test_a_second_up_is_idempotent_and_repairs_a_crashed_service(healthy_sandbox: Sandbox) -> None:
    before = {s.name: (s.pid, s.address) for s in healthy_sandbox.status().services}
    psutil.Process(before["redis"][0]).kill()
    psutil.Process(before["redis"][0]).wait(5) if psutil.pid_exists(before["redis"][0]) else None
    after = {s.name: (s.pid, s.address) for s in healthy_sandbox.up().services}
    assert after["postgres"] == before["postgres"] and after["api"] == before["api"]
    assert after["redis"][0] != before["redis"][0] and healthy_sandbox.status().running


def test_the_api_answers_the_runbooks_endpoints(healthy_sandbox: Sandbox, profile) -> None:  # type: ignore[no-untyped-def]
    base = profile.app.base_url
    health = http_request("GET", base + "/health")
    assert health.status == 200
    assert {k: v["status"] for k, v in health.body.items() if isinstance(v, dict)} == {
        "database": "ok",
        "redis": "ok",
        "storage": "ok",
    }
    assert http_request("GET", base + "/v1/storage/voiceovers/test.wav").status == 200
    assert http_request("GET", base + "/v1/storage/../secrets.env").status == 404
    assert http_request("GET", base + "/v1/storage/voiceovers/missing.wav").status == 404


def test_seeded_artifacts_point_at_real_files(healthy_sandbox: Sandbox, target: PgTarget) -> None:
    with target.connect() as conn:
        keys = [r[0] for r in conn.execute("SELECT storage_key FROM content_artifacts").fetchall()]
    assert keys and all((healthy_sandbox.storage_root / key).is_file() for key in keys)
    assert {key.split("/")[0] for key in keys} == {"voiceovers", "videos", "artifacts"}


def test_the_s3_endpoint_serves_the_runbooks_buckets(healthy_sandbox: Sandbox, profile) -> None:  # type: ignore[no-untyped-def]
    s3 = boto3.client(
        "s3",
        endpoint_url=profile.storage.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=profile.secret(SECRET_NAMES["s3_access_key"]),
        aws_secret_access_key=profile.secret(SECRET_NAMES["s3_secret_key"]),
    )
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {"content-crew-storage", "backups-bucket"} <= names
    assert s3.get_bucket_versioning(Bucket="backups-bucket")["Status"] == "Enabled"
    s3.put_object(Bucket="content-crew-storage", Key="probe.txt", Body=b"hello")
    assert s3.get_object(Bucket="content-crew-storage", Key="probe.txt")["Body"].read() == b"hello"


def test_down_leaves_no_process_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    box = Sandbox(tmp_path / "second")
    status = box.up(size="small")
    pids = [s.pid for s in status.services if s.pid]
    ports = [int(s.address.rsplit(":", 1)[1]) for s in status.services]
    box.down(purge=True)
    assert len(pids) == 4
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not [port for port in ports if port_is_open(port)]
    assert not (tmp_path / "second").exists()
