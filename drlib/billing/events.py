"""The billing events the sample stack's webhook endpoint takes, Stripe-style, and how drlib makes its
own: real charges for a drill, and probes (``evt_drlibprobe_…``, amount 0, type ``drlib.probe``) that
check an endpoint's protection without ever looking like a charge.

An event: ``{"id": "evt_…", "object": "event", "type": "invoice.paid", "created": <unix time>,
"request": {"idempotency_key": "…"}, "data": {"object": {"customer": "cus_…", "amount": 1999,
"currency": "usd"}}}`` (amounts in minor units). Standard library only: the sample API imports it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

#: the sample stack's endpoint (the defaults of a profile's ``[billing]``)
WEBHOOK_PATH = "/webhooks/billing"
SIGNATURE_HEADER = "Webhook-Signature"
TOLERANCE_SECONDS = 300
#: drlib's probe events: never a charge, counted apart from the real events
PROBE_PREFIX = "evt_drlibprobe_"
PROBE_TYPE = "drlib.probe"


@dataclass(frozen=True)
class BillingEvent:
    """What the endpoint records of one event."""

    event_id: str
    event_type: str
    idempotency_key: str | None
    customer: str
    amount: int
    currency: str


def event_body(event: BillingEvent, *, created: int | None = None) -> bytes:
    """The request body of ``event``."""
    payload: dict[str, Any] = {
        "id": event.event_id,
        "object": "event",
        "type": event.event_type,
        "created": int(time.time()) if created is None else created,
        "request": {"idempotency_key": event.idempotency_key},
        "data": {"object": {"customer": event.customer, "amount": event.amount, "currency": event.currency}},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def parse_event(body: bytes) -> BillingEvent | None:
    """The event in a request body; None when it is not one."""
    try:
        payload = json.loads(body)
        charge = payload["data"]["object"]
        request = payload.get("request") or {}
        return BillingEvent(
            event_id=str(payload["id"]),
            event_type=str(payload["type"]),
            idempotency_key=str(request["idempotency_key"]) if request.get("idempotency_key") else None,
            customer=str(charge["customer"]),
            amount=int(charge["amount"]),
            currency=str(charge["currency"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def probe_event(token: str, n: int) -> BillingEvent:
    """A drlib probe: amount 0, its own type and customer; its id says it is a probe."""
    return BillingEvent(
        event_id=f"{PROBE_PREFIX}{token}_{n}",
        event_type=PROBE_TYPE,
        idempotency_key=f"drlibprobe-{token}-{n}",
        customer="drlib-probe",
        amount=0,
        currency="usd",
    )


def is_probe(event_id: str) -> bool:
    return event_id.startswith(PROBE_PREFIX)
