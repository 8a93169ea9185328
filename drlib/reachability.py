"""Is a provider's database host or S3 endpoint reachable? Probes that always end within a bounded
time and say *how* an endpoint failed, so an outage is named, never waited out.

Each probe opens a TCP connection first (``timeout``), then speaks the protocol with the same timeout
for the answer (psycopg ``connect_timeout``; boto3 ``connect_timeout``/``read_timeout`` and one attempt):

- ``refused``: nothing listens on host:port (the server or the whole host is down);
- ``timeout``: no TCP connection at all within the timeout (packets dropped: a firewall, a dead host);
- ``no_answer``: the connection was accepted but the server never answered (a hung server, a blackhole);
- ``unresolvable``: the host name does not resolve;
- ``rejected``: the server answered but refused the credentials (reachable, but not usable);
- ``error``: it answered with another error (the detail says which);
- ``up``: it answered the probe (``SELECT 1``; ``HeadBucket`` on the live bucket).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from drlib.checks import CheckResult, check
from drlib.config import Profile
from drlib.exceptions import ConnectionFailed, CredentialsRejected, DrlibError
from drlib.lazy import lazy_module
from drlib.postgres.connection import PgTarget
from drlib.secrets import redact

if TYPE_CHECKING:
    import boto3
    import botocore.config
    import botocore.exceptions
else:
    boto3 = lazy_module("boto3")
    botocore = lazy_module("botocore.exceptions", "botocore.config")

State = Literal["up", "refused", "timeout", "no_answer", "unresolvable", "rejected", "error"]
#: what each state means, for the operator
MEANING: dict[str, str] = {
    "up": "answered",
    "refused": "connection refused: nothing listens there",
    "timeout": "no TCP connection within the timeout",
    "no_answer": "connection accepted, but no answer within the timeout",
    "unresolvable": "host name does not resolve",
    "rejected": "answered, but refused the credentials",
    "error": "answered with an error",
}
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Reachability:
    """One endpoint of one provider, probed."""

    provider: str
    component: str
    address: str
    state: State
    seconds: float
    detail: str = ""

    @property
    def up(self) -> bool:
        return self.state == "up"

    def describe(self) -> str:
        text = f"{self.provider} {self.component} {self.address}: {self.state} ({MEANING[self.state]}"
        return text + (f": {self.detail})" if self.detail else ")") + f" after {self.seconds:.1f} s"

    def check(self, *, warn_only: bool = False, prefix: str = "") -> CheckResult:
        return check(
            f"{prefix}{self.provider}_{self.component}_reachable",
            self.up,
            expected="answers",
            observed=self.state,
            detail=self.describe(),
            warn_only=warn_only,
        )

    def row(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "component": self.component,
            "address": self.address,
            "state": self.state,
            "seconds": round(self.seconds, 2),
            "detail": self.detail or MEANING[self.state],
        }


def tcp_state(host: str, port: int, *, timeout: float) -> tuple[State | None, str]:
    """``(None, "")`` when a TCP connection opens within ``timeout``, else the failure and why."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return "unresolvable", str(exc.strerror or exc)
    family, kind, proto, _, address = addresses[0]
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except ConnectionRefusedError:
            return "refused", ""
        except TimeoutError:
            return "timeout", f"no SYN-ACK within {timeout:g} s"
        except OSError as exc:
            return "timeout" if exc.errno is None else "error", str(exc.strerror or exc)
    return None, ""


def _timed(
    provider: str, component: str, address: str, probe: Callable[[], tuple[State, str]], *, started: float
) -> Reachability:
    state, detail = probe()
    return Reachability(provider, component, address, state, time.monotonic() - started, redact(detail)[:300])


def probe_database(target: PgTarget, *, provider: str, timeout: float = DEFAULT_TIMEOUT) -> Reachability:
    """The database server of ``target`` answers ``SELECT 1`` on its maintenance database."""
    settings = target.settings
    address = f"{settings.host}:{settings.port}"
    started = time.monotonic()

    def probe() -> tuple[State, str]:
        failed, why = tcp_state(settings.host, settings.port, timeout=timeout)
        if failed:
            return failed, why
        try:
            # libpq and psycopg round connect_timeout up to whole seconds (at least 2)
            with target.maintenance.connect(connect_timeout=max(2, round(timeout))) as conn:
                conn.execute("SELECT 1")
        except CredentialsRejected as exc:
            return "rejected", exc.message
        except ConnectionFailed as exc:
            timed_out = "timeout" in exc.message.lower() or "timed out" in exc.message.lower()
            return ("no_answer" if timed_out else "error"), exc.message.split(". Check")[0]
        except DrlibError as exc:
            return "error", exc.message
        return "up", "SELECT 1 answered"

    return _timed(provider, "database", address, probe, started=started)


def s3_address(endpoint_url: str | None, region: str = "us-east-1") -> tuple[str, int]:
    """Host and port of an S3 endpoint (AWS's regional endpoint when none is set)."""
    if not endpoint_url:
        return f"s3.{region}.amazonaws.com", 443
    parts = urlsplit(endpoint_url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def probe_s3(
    *,
    endpoint_url: str | None,
    bucket: str,
    access_key: str | None,
    secret_key: str | None,
    provider: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> Reachability:
    """The S3 endpoint answers ``HeadBucket`` for ``bucket``."""
    host, port = s3_address(endpoint_url)
    started = time.monotonic()

    def probe() -> tuple[State, str]:
        failed, why = tcp_state(host, port, timeout=timeout)
        if failed:
            return failed, why
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=botocore.config.Config(
                connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1}
            ),
        )
        try:
            client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ReadTimeoutError:
            return "no_answer", f"HeadBucket {bucket}: no answer within {timeout:g} s"
        except botocore.exceptions.ConnectTimeoutError:
            return "timeout", f"HeadBucket {bucket}: no connection within {timeout:g} s"
        except botocore.exceptions.EndpointConnectionError as exc:
            return "refused" if "refused" in str(exc).lower() else "error", str(exc)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                return "rejected", f"HeadBucket {bucket}: {code}"
            return "error", f"HeadBucket {bucket}: {code or exc}"
        except botocore.exceptions.BotoCoreError as exc:
            return "error", f"HeadBucket {bucket}: {type(exc).__name__}"
        return "up", f"bucket {bucket} answered"

    return _timed(provider, "s3", f"{host}:{port}", probe, started=started)


def probe_profile(profile: Profile, *, timeout: float = DEFAULT_TIMEOUT) -> list[Reachability]:
    """The profile's database and, when it has an S3 endpoint or bucket, its live bucket, probed on the
    provider the profile points at (``profile.provider``)."""
    found = [probe_database(PgTarget.from_profile(profile), provider=profile.provider, timeout=timeout)]
    storage = profile.storage
    if storage is not None and (storage.kind == "s3" or storage.endpoint_url):
        found.append(
            probe_s3(
                endpoint_url=storage.endpoint_url,
                bucket=storage.bucket,
                access_key=profile.secret(storage.access_key_secret, required=False),
                secret_key=profile.secret(storage.secret_key_secret, required=False),
                provider=profile.provider,
                timeout=timeout,
            )
        )
    return found


def wait_until_up(
    probe: Callable[[], list[Reachability]], *, wait_seconds: float, interval: float
) -> tuple[list[Reachability], float]:
    """Probe, and re-probe every ``interval`` seconds for up to ``wait_seconds``, until every endpoint
    answers; the last probes and the seconds waited."""
    started = time.monotonic()
    found = probe()
    while not all(r.up for r in found):
        left = wait_seconds - (time.monotonic() - started)
        if left <= 0:
            break
        time.sleep(min(interval, left))
        found = probe()
    return found, time.monotonic() - started
