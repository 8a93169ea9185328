"""Webhook signatures, Stripe-style: the header ``t=<unix time>,v1=<hex>`` where ``<hex>`` is the
HMAC-SHA256, keyed with the signing secret, of ``"<t>.<raw body>"``. The endpoint refuses a missing or
wrong signature, and a timestamp further than ``tolerance`` seconds from its clock (a captured request
replayed later). Used by the sample API and by drlib's probes and drill alike; standard library only."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The signature header's value for ``body`` (signed now unless ``timestamp`` is given)."""
    when = int(time.time()) if timestamp is None else timestamp
    return f"t={when},v1={signature(secret, body, when)}"


@dataclass(frozen=True)
class Verdict:
    """Whether a request's signature holds; ``reason`` says why not (``"stale"``: signed, but too old)."""

    ok: bool
    reason: str = ""
    #: the signature itself is right (a stale request may have a valid one)
    signed: bool = False


def verify(secret: str, body: bytes, header: str | None, *, tolerance: float, now: float | None = None) -> Verdict:
    """Check ``header`` against ``body``: parsed, one of its ``v1`` signatures right, timestamp within
    ``tolerance`` seconds of ``now``."""
    parts: dict[str, list[str]] = {}
    for item in (header or "").split(","):
        key, _, value = item.strip().partition("=")
        if value:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return Verdict(False, "signature header missing or malformed")
    expected = signature(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, given) for given in parts.get("v1", [])):
        return Verdict(False, "signature does not match")
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return Verdict(False, "stale: timestamp outside the tolerance", signed=True)
    return Verdict(True, signed=True)
