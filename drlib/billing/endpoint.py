"""Sending signed events to a billing webhook endpoint, and probing its protection.

A probe sends five requests, each a drlib probe event (amount 0, ``evt_drlibprobe_…``, never a charge):

1. a fresh event, correctly signed now: must be accepted (2xx);
2. the same request again, byte for byte (a captured request replayed): must be refused (4xx);
3. the same event signed again with a new timestamp (a replay signed again): must be refused;
4. a new event signed with a timestamp older than the tolerance: must be refused;
5. a new event with a wrong signature: must be refused.

With the protection off, 2 to 5 are recorded too: probe rows that the duplicate scan counts apart.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from drlib.app.health import HttpResponse, http_request
from drlib.billing.events import BillingEvent, event_body, probe_event
from drlib.billing.signing import sign
from drlib.checks import Checks, check
from drlib.config import Profile

#: how much older than the tolerance the stale probe's timestamp is
STALE_MARGIN_SECONDS = 600


@dataclass(frozen=True)
class Webhook:
    """Where a profile's billing webhook endpoint is and how its requests are signed (secret kept out of repr)."""

    url: str
    header: str
    tolerance: float
    secret: str

    def __repr__(self) -> str:
        return f"Webhook(url={self.url!r}, header={self.header!r})"

    @classmethod
    def from_profile(cls, profile: Profile) -> Webhook:
        billing = profile.require_billing()
        app = profile.require_app()
        secret = profile.secret(billing.signing_secret)
        assert secret is not None
        return cls(
            url=app.base_url.rstrip("/") + billing.webhook_path,
            header=billing.signature_header,
            tolerance=billing.tolerance,
            secret=secret,
        )

    def post(self, body: bytes, signature: str) -> HttpResponse:
        """POST ``body`` exactly as signed."""
        return http_request("POST", self.url, raw=body, headers={self.header: signature}, timeout=10)

    def send(self, event: BillingEvent, *, timestamp: int | None = None) -> tuple[bytes, str, HttpResponse]:
        """Sign ``event`` (now, or at ``timestamp``) and send it; return what was sent (to replay) and the answer."""
        body = event_body(event)
        signature = sign(self.secret, body, timestamp=timestamp)
        return body, signature, self.post(body, signature)


@dataclass(frozen=True)
class ProbeRequest:
    """One probe request and the endpoint's answer."""

    name: str
    should_accept: bool
    status: int
    answer: str

    @property
    def as_expected(self) -> bool:
        if self.should_accept:
            return 200 <= self.status < 300
        return 400 <= self.status < 500

    def as_row(self) -> dict[str, Any]:
        return {
            "request": self.name,
            "expected": "accepted (2xx)" if self.should_accept else "refused (4xx)",
            "status": self.status or "unreachable",
            "answer": self.answer,
        }


@dataclass(frozen=True)
class ProtectionProbe:
    """What the endpoint did with the five probe requests."""

    url: str
    requests: tuple[ProbeRequest, ...]

    @property
    def protected(self) -> bool:
        return all(r.as_expected for r in self.requests)

    @property
    def recorded(self) -> int:
        """Probe requests the endpoint accepted (each one a probe row in the events table)."""
        return sum(1 for r in self.requests if 200 <= r.status < 300)

    def describe(self) -> str:
        wrong = [r.name for r in self.requests if not r.as_expected]
        return "every request answered as expected" if not wrong else "NOT as expected: " + ", ".join(wrong)

    def rows(self) -> list[dict[str, Any]]:
        return [r.as_row() for r in self.requests]

    def checks(self, *, prefix: str = "", warn_only: bool = False) -> Checks:
        return Checks(
            check(
                f"{prefix}webhook_{'accepts' if r.should_accept else 'refuses'}_{r.name.replace(' ', '_')}",
                r.as_expected,
                expected="2xx" if r.should_accept else "4xx",
                observed=r.status or "unreachable",
                detail=f"{self.url}: {r.answer}",
                warn_only=warn_only,
            )
            for r in self.requests
        )


def _answer(response: HttpResponse) -> str:
    body = response.body
    if isinstance(body, dict):
        return str(body.get("error") or body)[:120]
    return str(body)[:120]


def probe_protection(webhook: Webhook) -> ProtectionProbe:
    """Send the five probe requests (module docstring) and record each answer."""
    token = secrets.token_hex(4)
    now = int(time.time())
    requests: list[ProbeRequest] = []

    def record(name: str, should_accept: bool, response: HttpResponse) -> None:
        requests.append(ProbeRequest(name, should_accept, response.status, _answer(response)))

    body, signature, response = webhook.send(probe_event(token, 1), timestamp=now)
    record("fresh event", True, response)
    record("replay", False, webhook.post(body, signature))
    record("replay signed again", False, webhook.post(body, sign(webhook.secret, body, timestamp=now + 1)))
    stale = now - int(webhook.tolerance) - STALE_MARGIN_SECONDS
    record("stale timestamp", False, webhook.send(probe_event(token, 2), timestamp=stale)[2])
    unsigned = event_body(probe_event(token, 3))
    record("bad signature", False, webhook.post(unsigned, sign(secrets.token_hex(16), unsigned)))
    return ProtectionProbe(url=webhook.url, requests=tuple(requests))
