"""Failure injection for the webhook-replay drill (sandbox only): real signed billing events are sent to the
sample API and captured, its webhook protection is switched off (the API restarted without it), and the
captured requests are replayed byte for byte, plus one re-signed with a new timestamp, so that
``billing_events`` holds real duplicate charges. Any later start of the API switches the protection on again
(``drlib sandbox up`` included)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drlib.billing.duplicates import format_amount
from drlib.billing.endpoint import Webhook
from drlib.billing.events import BillingEvent
from drlib.billing.signing import sign
from drlib.config import Profile
from drlib.evidence import utcnow
from drlib.exceptions import DrillRefused, DrlibError

#: the drill's charges, in minor units (USD)
DRILL_AMOUNTS = (1999, 4999, 999)


@dataclass(frozen=True)
class ReplayFault:
    """What the fault did: events sent, requests replayed, and when the protection went off."""

    sent: tuple[str, ...]
    replayed: int
    resigned: int
    duplicate_charges_minor: int
    protection_off_at: datetime

    def describe(self) -> str:
        charges = format_amount(self.duplicate_charges_minor, "usd")
        return (
            f"sent {len(self.sent)} signed billing event(s), switched the sample API's webhook protection off, "
            f"replayed the {self.replayed} captured request(s) and {self.resigned} re-signed one: "
            f"{self.replayed + self.resigned} duplicate charge(s) of {charges}"
        )


def drill_event(token: str, n: int) -> BillingEvent:
    return BillingEvent(
        event_id=f"evt_drill_{token}_{n}",
        event_type="invoice.paid",
        idempotency_key=f"idem_drill_{token}_{n}",
        customer=f"cus_drill_{token}_{n % 2}",
        amount=DRILL_AMOUNTS[n % len(DRILL_AMOUNTS)],
        currency="usd",
    )


def _accepted(status: int, what: str) -> None:
    if not 200 <= status < 300:
        raise DrlibError(
            f"the sample API answered {status or 'nothing'} to {what}: the fault could not be injected; "
            "see .drlib/sandbox/logs/api.log, then `drlib sandbox up`"
        )


def replay_webhooks(profile: Profile, *, token: str, events: int = 3) -> ReplayFault:
    """The fault (module docstring); ``token`` marks the drill's events."""
    if not profile.is_sandbox:
        raise DrillRefused(
            f"the webhook replay fault switches the API's webhook protection off and runs only on the sandbox, "
            f"not on profile {profile.name!r}"
        )
    from drlib.sandbox.stack import sandbox_for

    webhook = Webhook.from_profile(profile)
    captured: list[tuple[bytes, str]] = []
    for n in range(events):
        body, signature, response = webhook.send(drill_event(token, n))
        _accepted(response.status, f"a fresh signed event ({drill_event(token, n).event_id})")
        captured.append((body, signature))
    protection_off_at = utcnow()
    sandbox_for(profile).start_api(webhook_protection=False)
    for body, signature in captured:
        _accepted(webhook.post(body, signature).status, "a replayed request (protection off)")
    first_body, first_signature = captured[0]
    timestamp = int(first_signature.split(",")[0].removeprefix("t=")) + 1
    _accepted(webhook.post(first_body, sign(webhook.secret, first_body, timestamp=timestamp)).status, "a re-signed one")
    charges = sum(drill_event(token, n).amount for n in range(events)) + drill_event(token, 0).amount
    return ReplayFault(
        sent=tuple(drill_event(token, n).event_id for n in range(events)),
        replayed=len(captured),
        resigned=1,
        duplicate_charges_minor=charges,
        protection_off_at=protection_off_at,
    )


def protect_webhooks(profile: Profile) -> None:
    """The drill's cleanup, whatever the run came to: the sample API runs with its webhook protection again
    (nothing happens when the runbook's Step 4 already restarted it), so a drill cut short leaves no open
    endpoint behind."""
    from drlib.sandbox.stack import sandbox_for

    sandbox_for(profile).start_api(webhook_protection=True)
