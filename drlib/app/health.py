"""Health checks and the runbook's post-restore application checks (login, create a job)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from drlib.checks import CheckResult, check


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: Any


def http_request(
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5,
    raw: bytes | None = None,
) -> HttpResponse:
    """One HTTP request with ``body`` as JSON (or the bytes ``raw`` exactly as given, e.g. a signed webhook);
    a connection failure comes back as status 0 with the reason."""
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    status, raw, reason = _send(
        method, url, data=data, headers={"Content-Type": "application/json", **(headers or {})}, timeout=timeout
    )
    if status == 0:
        return HttpResponse(status=0, body=f"unreachable: {reason}")
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw[:200].decode(errors="replace")
    return HttpResponse(status=status, body=parsed)


def http_raw(method: str, url: str, *, timeout: float = 10) -> tuple[int, bytes]:
    """Status and body bytes (status 0 when unreachable)."""
    status, raw, _ = _send(method, url, timeout=timeout)
    return status, raw


def _send(
    method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float
) -> tuple[int, bytes, str]:
    """Status, body and, when the server could not be reached, why (status 0)."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""
    except (urllib.error.URLError, OSError) as exc:
        return 0, b"", str(getattr(exc, "reason", exc))


def wait_healthy(
    base_url: str, *, path: str = "/health", timeout: float = 60, interval: float = 0.5, name: str = "health"
) -> CheckResult:
    """Poll ``GET /health`` until it answers 200 (retries until ``timeout``)."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        response = http_request("GET", base_url + path, timeout=min(5, timeout))
        if response.status == 200:
            return check(
                name, True, expected="200", observed=f"200 after {attempts} attempt(s)", detail=_summary(response.body)
            )
        if time.monotonic() >= deadline:
            return check(
                name,
                False,
                expected="200",
                observed=response.status or "unreachable",
                detail=f"{attempts} attempts over {timeout:.0f}s; last: {_summary(response.body)}",
            )
        time.sleep(interval)


def _summary(body: Any) -> str:
    if isinstance(body, dict):
        return ", ".join(f"{k}: {v.get('status') if isinstance(v, dict) else v}" for k, v in body.items())
    return str(body)[:200]


def check_login(base_url: str, *, email: str, password: str) -> tuple[CheckResult, str | None]:
    """The runbook's "can log in with test account"; returns the session token when it works."""
    response = http_request("POST", base_url + "/v1/auth/login", body={"email": email, "password": password})
    token = response.body.get("token") if isinstance(response.body, dict) else None
    ok = response.status == 200 and bool(token)
    return check("login_test_account", ok, expected="200 with a token", observed=response.status, detail=email), token


def check_create_job(base_url: str, *, token: str | None) -> CheckResult:
    """The runbook's "can create new content job"."""
    if not token:
        return check("create_content_job", False, expected="201", observed="no session (login failed)")
    response = http_request(
        "POST",
        base_url + "/v1/content-jobs",
        body={"prompt": "drlib post-restore check"},
        headers={"Authorization": f"Bearer {token}"},
    )
    job_id = response.body.get("id") if isinstance(response.body, dict) else None
    return check(
        "create_content_job",
        response.status == 201,
        expected="201",
        observed=response.status,
        detail=f"job id {job_id}" if job_id else str(response.body)[:200],
    )
