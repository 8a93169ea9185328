"""Failure Scenarios → Scenario 4: Webhook Replay Attack. Find the duplicate billing events (same provider
event id, same idempotency key, or same payload hash within the window) with the charges they caused; probe
the endpoint's protection (a replayed, a re-signed, a stale and a badly signed request must be refused);
mark the duplicates (never delete them) with their charges' reversals requested, in one transaction; bring
the protected webhook handling back (restart the application) and verify: no unmarked duplicate, what is
left charged equals what the distinct events charged, and the endpoint refuses every replay again.

Everything comes from the profile's ``[billing]`` section; a profile without one reports these steps "not
configured". The reversal is recorded, not sent: drlib never calls the payment provider."""

from __future__ import annotations

import functools
import secrets
from typing import Any, ClassVar

from drlib.billing.duplicates import (
    DuplicateScan,
    check_events_table,
    count_rows,
    format_amount,
    mark_duplicates,
    missing_rows,
    scan_duplicates,
)
from drlib.billing.endpoint import ProtectionProbe, Webhook, probe_protection
from drlib.checks import CheckResult, Checks, check
from drlib.config import BillingSettings, Profile
from drlib.evidence import Evidence
from drlib.faults_webhook import protect_webhooks, replay_webhooks
from drlib.parameters import Param
from drlib.plans import RestorePlan
from drlib.postgres.connection import PgTarget
from drlib.preflight import stack_reachable
from drlib.scenarios.base import COMMON_PARAMS, Runbook, Scenario, refuse_without
from drlib.services import controller_for
from drlib.staging import DrillSetup
from drlib.steps import Outcome, frame, step

#: how the notebook says drlib's probes are told apart
PROBES_NOTE = "evt_drlibprobe_…, amount 0, counted apart, never as charges"


class WebhookReplay(Runbook):
    """Duplicate billing events found, marked (reversal requested), the protection restored and verified."""

    scenario = "webhook_replay"
    title = "Webhook replay attack"
    params: ClassVar[tuple[Param, ...]] = (
        *COMMON_PARAMS,
        Param("mark", bool, True, "mark the duplicates (duplicate_of, reversal requested); False: only list them"),
        Param(
            "update_handling",
            bool,
            True,
            "restart the application (its protected webhook handler) when the probe found the protection off",
        ),
        Param("health_timeout", int, 60, "seconds to wait for the application to become healthy", minimum=1),
    )

    def __init__(self, *, evidence: Evidence | None = None, **values: object) -> None:
        super().__init__(evidence=evidence, **values)
        self.target = PgTarget.from_profile(self.profile)
        self.found: DuplicateScan | None = None
        self.probe: ProtectionProbe | None = None
        self.rows_before: int | None = None
        #: every duplicate and original a scan of this run saw: the evidence Step 5 finds still there
        self.seen_rows: set[int] = set()

    # Step 1 ------------------------------------------------------------------------------
    @step(
        "identify_duplicates",
        title="Step 1: Identify duplicate events",
        what="""Every row of the profile's billing events table that repeats an earlier one: the same provider
        event id, the same idempotency key, or the same payload hash received within `duplicate_window`. Each
        is shown with its original, the rule that matched, and the charge it caused (customer, amount,
        currency); then the totals per currency: charged, duplicate charges, already marked reversed, what the
        distinct events charged.""",
        why="""The runbook's symptoms (duplicate billing events, multiple subscription charges): the list is
        what is reversed, and the totals say how much the customers were overcharged.""",
        if_fails="""The message names the missing table or column: set the column names under the profile's
        `[billing]`. A duplicate that is not one (two real events with the same payload in the window) can be
        left unmarked: narrow `duplicate_window`.""",
        roll_back="Nothing to roll back: this step only reads.",
        needs=("billing",),
    )
    def identify_duplicates(self) -> Outcome:
        settings = self.profile.require_billing()
        self.found = found = self._scan(settings)
        self.rows_before = found.events
        self.evidence.note("duplicates_found", {"duplicates": len(found.duplicates), "totals": found.totals()})
        return Outcome(
            "Duplicate events",
            facts={
                "table": found.table,
                "events": found.events,
                "found": found.describe(),
                "drlib probes": f"{found.probes} ({found.probe_duplicates} duplicates): {PROBES_NOTE}",
                **found.totals(),
                "seconds": found.seconds,
            },
            checks=found.checks(warn_only=True),
            table=(lambda: frame(found.rows())) if found.duplicates else None,
        )

    # Step 2 ------------------------------------------------------------------------------
    @step(
        "check_replay_protection",
        title="Step 2: Check the webhook replay protection",
        what="""Five signed requests to the endpoint (`[app] base_url` + `[billing] webhook_path`), each a drlib
        probe event (amount 0, `evt_drlibprobe_…`): a fresh one must be accepted; the same request replayed
        byte for byte, the same event re-signed with a new timestamp, a new one signed with a timestamp older
        than `tolerance`, and one with a wrong signature must each be refused (4xx).""",
        why="""While a replay is accepted, the duplicates keep coming: the protection decides whether Step 4 is
        needed. Probes never look like charges, so a probe accepted by an unprotected endpoint harms nothing
        (Step 3 marks its duplicates as not needing a reversal).""",
        if_fails="""The fresh probe refused means the signing secret drlib has (`[billing] signing_secret`) is
        not the endpoint's, or the endpoint is down: check both before trusting the other answers.""",
        roll_back="Nothing to roll back: the probe events are amount 0 and marked as drlib probes.",
        dry_run="skip",
        would="send 5 signed probe requests to the billing webhook (the fresh one is recorded as an amount-0 probe)",
        needs=("app", "billing"),
    )
    def check_replay_protection(self) -> Outcome:
        self.probe = probe = probe_protection(Webhook.from_profile(self.profile))
        self.evidence.note("protection_before", {"protected": probe.protected, "answers": probe.rows()})
        return Outcome(
            "Replay protection",
            facts={"endpoint": probe.url, "protected": probe.protected, "answers": probe.describe()},
            checks=probe.checks(warn_only=True),  # a finding: Steps 4 and 5 fix and verify it
            table=lambda: frame(probe.rows()),
        )

    # Step 3 ------------------------------------------------------------------------------
    @step(
        "reverse_duplicate_charges",
        title="Step 3: Reverse the duplicate charges",
        what="""The table is scanned again (duplicates may have arrived since Step 1); in one transaction, each
        duplicate not marked yet gets `duplicate_of` = its original's id,
        `marked_at` = now and `reversal_state` = `requested` (a charge) or `not_needed` (an amount of 0, a
        drlib probe). Nothing is deleted: the rows are the evidence. A dry run lists the statements. The
        reversal is *recorded* for the application's refund worker, which asks the payment provider for it;
        drlib never calls the provider itself.""",
        why="""The customers get their money back once, and the record shows which event each refund belongs
        to. Marking only rows not marked yet makes a second run change nothing.""",
        if_fails="""Nothing was marked (the transaction rolled back); the message says why (a column's type, a
        permission): fix it and re-run.""",
        roll_back="""Clear the marks this step set (listed here): `UPDATE <events_table> SET duplicate_of = NULL,
        marked_at = NULL, reversal_state = NULL WHERE id IN (…)` — before the refund worker sends them.""",
        dry_run="plan",
        needs=("billing",),
    )
    def reverse_duplicate_charges(self) -> Outcome | RestorePlan:
        settings = self.profile.require_billing()
        # scanned again: duplicates recorded since Step 1 (an endpoint still unprotected, Step 2's probes) too
        self.found = found = self._scan(settings)
        if not found.unmarked:
            return Outcome("Reverse duplicate charges", facts={"marked": "nothing new to mark"})
        if not self.values["mark"]:
            return Outcome(
                "Reverse duplicate charges",
                facts={"marked": f"nothing (mark = False); {len(found.unmarked)} duplicate(s) left unmarked"},
            )
        result = mark_duplicates(self.target, settings, found.unmarked, confirm=self.confirm)
        if isinstance(result, RestorePlan):
            return result
        requested = [d for d in found.unmarked if result.marked.get(d.row.id) == "requested"]
        self.set_state(
            "billing",
            f"{len(result.marked)} duplicate(s) of {settings.events_table} marked (ids "
            f"{', '.join(map(str, list(result.marked)[:20]))}); {len(requested)} reversal(s) requested, not sent",
        )
        self.evidence.note("marked", {str(k): v for k, v in result.marked.items()})
        return Outcome(
            "Reverse duplicate charges",
            facts={
                "marked": len(result.marked),
                "reversals requested": ", ".join(format_amount(d.row.amount, d.row.currency) for d in requested)
                or "none",
                "marked by someone else meanwhile (left as they are)": len(result.skipped),
                "sent to the payment provider": "no: recorded as reversal_state = 'requested' for the refund worker",
                "seconds": result.seconds,
            },
        )

    # Step 4 ------------------------------------------------------------------------------
    @step(
        "update_webhook_handling",
        title="Step 4: Update the webhook handling",
        what="""When Step 2 found a replay, a stale or a badly signed request accepted: restart the application
        with its protected webhook handler (on a real stack, deploy the fixed handler first: signature over
        `timestamp.body`, a timestamp tolerance, each provider event id and idempotency key taken once), and
        wait until `GET /health` answers. With the protection found on, nothing is restarted.""",
        why="""The duplicates stop only when the endpoint refuses replays again; Step 5 checks that it does.""",
        if_fails="""Read the application's logs; start it by hand with the profile's start command. Until it
        refuses replays, expect new duplicates: run Steps 1 and 3 again afterwards.""",
        roll_back="Nothing to roll back: the application runs the protected handler.",
        dry_run="skip",
        would="restart the application with its protected webhook handler when the probe found it unprotected",
        needs=("app", "billing"),
    )
    def update_webhook_handling(self) -> Outcome:
        if self.probe is not None and self.probe.protected:
            return Outcome("Update webhook handling", facts={"restarted": "no: the protection is on"})
        if not self.values["update_handling"]:
            self.set_state("webhooks", "protection found off and left off (update_handling = False)")
            return Outcome("Update webhook handling", facts={"restarted": "no (update_handling = False)"})
        app = controller_for(self.profile)
        app.stop()
        self.set_state("application", f"stopped ({app.description}) to load the protected webhook handler")
        health = self.start_application(app)
        self.set_state("webhooks", "application restarted with its protected webhook handler; Step 5 checks it")
        return Outcome("Update webhook handling", facts={"restarted": app.description}, checks=Checks([health]))

    # Step 5 ------------------------------------------------------------------------------
    @step(
        "verify_and_monitor",
        title="Step 5: Verify, and monitor for future duplicates",
        what="""The probe of Step 2 again, now failing on any request answered wrongly; the duplicate scan
        again, failing on any duplicate left unmarked and unless what is left charged after the reversals
        equals what the distinct events charged; and no row of the events table gone (each duplicate and
        original the scans saw is looked up: new rows would hide a deletion from a count). To monitor, run this
        notebook with `confirm = False` on a schedule (e.g. daily): Step 1 changes nothing and warns on every
        unmarked duplicate.""",
        why="""Marking that ran is not proof: the customers are charged once only when the table says so, and
        the attack is over only when the endpoint refuses replays.""",
        if_fails="""An unmarked duplicate arrived since Step 1 (re-run Steps 1 and 3), or the endpoint still
        accepts replays (Step 4), or marks were set by hand inconsistently (fix the rows named).""",
        roll_back="Nothing to roll back: this step only reads (and sends the amount-0 probes).",
        dry_run="skip",
        would="probe the endpoint again and check that no duplicate is left unmarked and the totals match",
        needs=("billing",),
    )
    def verify_and_monitor(self) -> Outcome:
        settings = self.profile.require_billing()
        results: list[CheckResult] = []
        facts: dict[str, Any] = {}
        if self.profile.app is not None:
            probe = probe_protection(Webhook.from_profile(self.profile))
            results += probe.checks(prefix="verify:")
            facts["protection"] = probe.describe()
        else:
            facts["protection"] = self.profile.not_configured("app")
        after = scan_duplicates(self.target, settings)
        results += after.checks(prefix="verify:")
        rows_now = count_rows(self.target, settings)
        if self.rows_before is not None:
            # new rows (the probes, live traffic) would hide a deletion from the count: the rows seen are looked up
            gone = missing_rows(self.target, settings, self.seen_rows)
            results.append(
                check(
                    "verify:no_event_deleted",
                    rows_now >= self.rows_before and not gone,
                    expected=f">= {self.rows_before} rows, and the {len(self.seen_rows)} row(s) seen as duplicates or "
                    "originals all still there",
                    observed=f"{rows_now} rows" + (f"; deleted: {', '.join(map(str, gone[:20]))}" if gone else ""),
                    detail=settings.events_table,
                )
            )
        facts |= {"found now": after.describe(), **after.totals()}
        if after.unmarked:
            self.set_state("billing", f"{len(after.unmarked)} duplicate(s) still unmarked: re-run Steps 1 and 3")
        return Outcome("Verify", facts=facts, checks=self.service_restored_if(Checks(results)))

    def _scan(self, settings: BillingSettings) -> DuplicateScan:
        found = scan_duplicates(self.target, settings)
        self.seen_rows |= {row.id for d in found.duplicates for row in (d.row, d.original)}
        return found


# -- drills ---------------------------------------------------------------------------------
def preflight(profile: Profile, params: dict[str, Any]) -> list[CheckResult]:
    """Before the fault: the profile has [app] and [billing], the events table has every column it names,
    the signing secret is there, and the database answers."""
    refuse_without(profile, ("app", "billing"), what="the webhook_replay drill")
    billing = profile.require_billing()
    results = stack_reachable(profile)
    check_events_table(PgTarget.from_profile(profile), billing)
    profile.secret(billing.signing_secret)
    results.append(
        check("billing_events_table", True, expected="every [billing] column", observed=billing.events_table)
    )
    return results


def stage(profile: Profile, params: dict[str, Any]) -> DrillSetup:
    """Real signed events sent and captured, the protection switched off, the captured requests replayed and
    one re-signed (the outage starts when the protection goes off)."""
    token = secrets.token_hex(6)
    fault = replay_webhooks(profile, token=token)
    return DrillSetup(
        fault=fault.describe(),
        failure_time=fault.protection_off_at,
        marker=token,
        cleanup=functools.partial(protect_webhooks, profile),
        cleanup_leaves="the sample API running with its webhook protection on",
    )


SCENARIO = Scenario(
    id="webhook_replay",
    runbook=WebhookReplay,
    summary="Failure Scenarios → Scenario 4 of `disaster-recovery-plan.md`: duplicate billing events found (provider "
    "event id, idempotency key, payload hash within a window) with the charges they caused, the webhook's replay "
    "protection probed, the duplicates marked with their reversals requested (never deleted; nothing is sent to "
    "a payment provider), the protected handling restored and verified.",
    stage=stage,
    preflight=preflight,
    rto_kind="partial_failure",
    rpo_component=None,
    verify_after=False,
    sandbox_only=True,
)
