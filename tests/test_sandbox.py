"""The embedded sandbox: real servers on free ports, idempotent up, recovery, clean down."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest

from drlib import lock
from drlib.app.health import http_request
from drlib.config import load_profile
from drlib.exceptions import CredentialsRejected, SandboxError
from drlib.postgres.connection import PgTarget
from drlib.processes import is_ours, port_is_open, record_of, start_time
from drlib.sandbox.stack import SECRET_NAMES, Sandbox


@pytest.fixture
def stranger() -> Iterator[psutil.Process]:
    """An unrelated process (``sleep 60``) whose pid a stale pid file might name."""
    process = subprocess.Popen(["sleep", "60"])
    yield psutil.Process(process.pid)
    process.kill()
    process.wait()


def api_processes(box: Sandbox) -> list[psutil.Process]:
    """Every live sample-API process serving ``box`` (found by command line, not by pid file)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "drlib.sandbox.api" in cmdline and str(box.connection_file) in cmdline:
            found.append(process)
    return found


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


def test_status_reports_every_service_healthy_with_how_it_was_probed(healthy_sandbox: Sandbox) -> None:
    status = healthy_sandbox.status()
    assert status.healthy
    assert {s.name: s.healthy for s in status.services} == {"postgres": True, "redis": True, "s3": True, "api": True}
    text = status.describe()
    assert "overall: healthy" in text and "/health answered 200" in text and "PING answered" in text


def test_status_shows_the_api_unhealthy_when_redis_is_down(healthy_sandbox: Sandbox) -> None:
    healthy_sandbox.redis().stop()
    status = healthy_sandbox.status()
    services = {s.name: s for s in status.services}
    assert not services["redis"].running and services["redis"].state == "STOPPED"
    assert services["api"].running and not services["api"].healthy
    assert services["api"].detail == "/health answered 503: redis down"
    assert not status.healthy and not status.running
    assert "UNHEALTHY" in status.describe() and "overall: NOT HEALTHY" in status.describe()
    password = healthy_sandbox._secrets()[SECRET_NAMES["redis"]]
    assert password not in status.describe()


def test_start_api_does_not_start_a_second_api_while_ours_listens(healthy_sandbox: Sandbox) -> None:
    before = healthy_sandbox.status()
    pid = {s.name: s.pid for s in before.services}["api"]
    assert healthy_sandbox.start_api() == pid
    assert Sandbox(healthy_sandbox.folder).start_api() == pid
    assert [p.pid for p in api_processes(healthy_sandbox)] == [pid]


def test_an_api_of_this_sandbox_whose_start_was_never_recorded_is_replaced_not_refused(
    healthy_sandbox: Sandbox,
) -> None:
    lost = healthy_sandbox._ours("api")
    healthy_sandbox._save_pid("api", None)  # as a run killed between starting the API and recording it
    pid = healthy_sandbox.start_api()
    assert lost is not None and pid != lost.pid and not is_ours(lost)  # the unrecorded one was stopped
    assert [p.pid for p in api_processes(healthy_sandbox)] == [pid]


def test_the_api_is_not_started_on_a_port_another_process_listens_on(healthy_sandbox: Sandbox) -> None:
    port = healthy_sandbox._ports()["api"]
    healthy_sandbox.stop_api()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        with pytest.raises(SandboxError, match=f"port {port} .* held by a process drlib did not start"):
            healthy_sandbox.start_api()
    finally:
        squatter.close()
    assert not api_processes(healthy_sandbox)


def test_a_stale_pid_file_entry_never_signals_the_process_now_holding_that_pid(
    tmp_path: Path, stranger: psutil.Process
) -> None:
    box = Sandbox(tmp_path / "stale")
    box.folder.mkdir()
    pgdata = tmp_path / "stale-pgdata"
    pgdata.mkdir()
    (box.folder / "ports.json").write_text(
        json.dumps({"postgres": 1, "redis": 2, "s3": 3, "api": 4, "pgdata": str(pgdata)})
    )
    live = record_of(stranger.pid)
    assert live is not None
    reused = {"pid": stranger.pid, "create_time": live.create_time - 3600, "exe": live.exe}  # ours died, pid reused
    (box.folder / "pids.json").write_text(json.dumps({"api": reused, "s3": stranger.pid}))  # s3: an old bare pid
    (box.folder / "redis").mkdir()
    box.redis().legacy_pidfile.write_text(str(stranger.pid))  # Redis: a bare pid file from an older drlib
    # postmaster.pid: pid, data directory, start time (epoch seconds), port
    (pgdata / "postmaster.pid").write_text(f"{stranger.pid}\n{pgdata}\n{int(live.create_time) - 3600}\n1\n")
    status = box.status()
    assert [(s.name, s.running, s.pid) for s in status.services] == [
        ("postgres", False, None),
        ("redis", False, None),
        ("s3", False, None),
        ("api", False, None),
    ]
    assert not box.api_running()
    box.stop_api()
    box.down()
    assert stranger.is_running() and stranger.status() != psutil.STATUS_ZOMBIE


def test_a_pid_file_naming_a_live_process_of_another_program_is_stale(tmp_path: Path, stranger: psutil.Process) -> None:
    box = Sandbox(tmp_path / "other")
    box.folder.mkdir()
    (box.folder / "redis").mkdir()
    live = record_of(stranger.pid)
    assert live is not None
    box.redis().pidfile.write_text(json.dumps({**live.to_dict(), "exe": "/usr/bin/redis-server"}))
    assert not box.redis().running()
    box.redis().stop()
    assert stranger.is_running()
    box.redis().pidfile.write_text(json.dumps(live.to_dict()))  # the exact record: that one *is* ours
    assert box.redis().pid() == stranger.pid


def test_a_bare_pid_from_an_older_drlib_counts_only_when_it_is_this_sandboxs_service(
    healthy_sandbox: Sandbox, stranger: psutil.Process
) -> None:
    pids_file = healthy_sandbox.folder / "pids.json"
    recorded = json.loads(pids_file.read_text())
    try:
        pids_file.write_text(json.dumps({**recorded, "api": recorded["api"]["pid"]}))
        assert healthy_sandbox.api_running()
        pids_file.write_text(json.dumps({**recorded, "api": stranger.pid}))
        assert not healthy_sandbox.api_running()
    finally:
        pids_file.write_text(json.dumps(recorded))


def test_a_second_operator_waiting_too_long_is_told_the_holders_pid(tmp_path: Path) -> None:
    folder = tmp_path / "busy"
    folder.mkdir()
    with lock.exclusive(folder / "sandbox.lock", timeout=1, what="sandbox"):
        with pytest.raises(SandboxError, match=r"another drlib process \(pid \d+\) has held the sandbox lock"):
            Sandbox(folder, lock_timeout=0.3).up()
        with pytest.raises(SandboxError, match="held the sandbox lock"):
            Sandbox(folder, lock_timeout=0.3).down()


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


def test_two_concurrent_ups_start_one_api_and_down_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRLIB_HOME", str(tmp_path))
    folder = tmp_path / "sandbox"
    results: list[object] = []

    def operator() -> None:
        try:
            results.append(Sandbox(folder).up(size="small"))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=operator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    box = Sandbox(folder)
    assert [type(r).__name__ for r in results] == ["SandboxStatus", "SandboxStatus"]
    assert len(api_processes(box)) == 1
    status = box.status()
    assert status.healthy
    pids = [s.pid for s in status.services if s.pid]
    ports = [int(s.address.rsplit(":", 1)[1]) for s in status.services]

    box.down()
    assert len(pids) == 4
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not [port for port in ports if port_is_open(port)]
    assert not api_processes(box)
    # read-only commands still find the stack's configuration after down
    assert box.connection_file.is_file()
    assert load_profile("sandbox").database.port == ports[0]
    assert not box.status().healthy

    box.down(purge=True)
    assert not folder.exists()


def test_a_clock_adjustment_does_not_make_our_processes_strangers(monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil's create time is the time since boot plus the boot time, which an NTP step moves by whole
    seconds: a process must still be ours (else its server is refused its own port, or a watchdog kills a
    live restore), and a stranger with our pid a stranger."""
    from psutil import _pslinux

    from drlib.watchdog import same_process_alive

    me = record_of(os.getpid())
    assert me is not None and me.started is not None
    real = _pslinux.boot_time
    monkeypatch.setattr(_pslinux, "boot_time", lambda: real() + 1.0)
    moved = record_of(os.getpid())
    assert moved is not None and abs(moved.create_time - me.create_time) >= 1  # as the clock step moves it
    assert is_ours(me) and same_process_alive(os.getpid(), start_time(psutil.Process()))
    assert not is_ours(dataclasses.replace(me, started=me.started - 1))


def test_stopping_the_api_stops_one_of_this_sandbox_whose_start_was_never_recorded(healthy_sandbox: Sandbox) -> None:
    healthy_sandbox._save_pid("api", None)  # as a run killed between starting the API and recording it
    assert api_processes(healthy_sandbox)
    healthy_sandbox.stop_api()
    assert not api_processes(healthy_sandbox)
    assert not port_is_open(healthy_sandbox._ports()["api"])  # the port is free for the next start
