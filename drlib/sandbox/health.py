"""Is each sandbox service healthy, not merely running? One probe per service, each returning
whether it answered and, when not, why (no secrets in the reason)."""

from __future__ import annotations

from typing import Any

import boto3
import psycopg
import redis
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from drlib.app.health import http_request
from drlib.secrets import redact

Probe = tuple[bool, str]


def probe_postgres(port: int, *, user: str, password: str) -> Probe:
    """PostgreSQL accepts a connection and answers ``SELECT 1``."""
    try:
        with psycopg.connect(
            host="127.0.0.1", port=port, user=user, dbname="postgres", password=password, connect_timeout=3
        ) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        return False, f"SELECT 1 failed: {_first_line(exc)}"
    return True, "SELECT 1 answered"


def probe_redis(port: int, *, password: str) -> Probe:
    """Redis answers PING."""
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return False, f"PING failed: {_first_line(exc)}"
    finally:
        client.close()
    return True, "PING answered"


def probe_s3(endpoint_url: str, *, bucket: str, access_key: str, secret_key: str) -> Probe:
    """The S3 endpoint answers ``HeadBucket`` for the live bucket."""
    client: Any = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        return False, f"HeadBucket {bucket} failed: {_first_line(exc)}"
    return True, f"bucket {bucket} answered"


def probe_api(base_url: str, *, path: str = "/health") -> Probe:
    """The API's health endpoint answers 200."""
    response = http_request("GET", base_url + path, timeout=5)
    if response.status == 200:
        return True, f"{path} answered 200"
    if response.status == 0:
        return False, f"{path} {response.body}"
    return False, f"{path} answered {response.status}: {_unhealthy_parts(response.body)}"


def _unhealthy_parts(body: Any) -> str:
    if isinstance(body, dict):
        down = [f"{k} {v.get('status')}" for k, v in body.items() if isinstance(v, dict) and v.get("status") != "ok"]
        if down:
            return ", ".join(down)
    return redact(str(body))[:200]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)[:200]
