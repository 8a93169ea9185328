"""Webhook replay attack: the sample API's signed billing webhook refuses a replayed, a re-signed, a stale and
a badly signed request and accepts a fresh one; the duplicate scan finds duplicates by each of its three rules
on any events table the profile names, and raises no alarm on distinct events; marking is idempotent and
deletes nothing; a profile without [billing] reports the steps "not configured"; the drill passes, and fails
when the recovery does not recover.

The payment provider cannot exist here: the reversal is recorded (``reversal_state = 'requested'``, the
application's refund outbox) and never sent, so no provider is called or mocked."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from drlib.billing.duplicates import count_rows, mark_duplicates, scan_duplicates
from drlib.billing.endpoint import Webhook, probe_protection
from drlib.billing.events import PROBE_PREFIX
from drlib.billing.signing import sign, verify
from drlib.cli import main
from drlib.config import BillingSettings, Profile, load_profile
from drlib.exceptions import ConfigError, DrillRefused, NotConfigured
from drlib.faults_webhook import replay_webhooks
from drlib.plans import RestorePlan
from drlib.postgres.connection import PgTarget
from drlib.sandbox.stack import SECRET_NAMES, Sandbox
from drlib.scenarios import webhook_replay
from drlib.scenarios.webhook_replay import WebhookReplay
from drlib.secrets import read_secrets_file, scan_for_secrets
from tests.scratchdb import Made
from tests.test_drill import newest, report_folders

#: a payments table that is not the sample stack's: other names, no idempotency key of its own
LEDGER_SQL = """
CREATE SCHEMA ledger;
CREATE TABLE ledger.hooks (
    hook_id bigserial PRIMARY KEY, evt text NOT NULL, idem text, body_sha text, cents bigint NOT NULL,
    cur text NOT NULL, payer text NOT NULL, got_at timestamptz NOT NULL,
    dup_of bigint, marked timestamptz, refund text
);
"""
LEDGER = BillingSettings(
    events_table="ledger.hooks",
    id_column="hook_id",
    event_id_column="evt",
    idempotency_key_column="idem",
    payload_hash_column="body_sha",
    amount_column="cents",
    currency_column="cur",
    customer_column="payer",
    received_at_column="got_at",
    duplicate_of_column="dup_of",
    marked_at_column="marked",
    reversal_state_column="refund",
    duplicate_window=3600,
)
T0 = datetime(2026, 1, 13, 2, 0, tzinfo=UTC)


def insert(db: PgTarget, *rows: tuple[str, str | None, str, int, str, str, timedelta]) -> None:
    with db.connect() as conn:
        for evt, idem, sha, cents, cur, payer, after in rows:
            conn.execute(
                "INSERT INTO ledger.hooks (evt, idem, body_sha, cents, cur, payer, got_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (evt, idem, sha, cents, cur, payer, T0 + after),
            )


@pytest.fixture
def ledger(make_db: Made) -> PgTarget:
    """Distinct events only: one payload repeated, but further apart than the window (a monthly renewal)."""
    db = make_db(LEDGER_SQL)
    insert(
        db,
        ("evt_1", "k1", "h1", 1000, "eur", "alice", timedelta(0)),
        ("evt_2", "k2", "h2", 2500, "eur", "bob", timedelta(minutes=1)),
        ("evt_3", None, "h3", 700, "gbp", "carol", timedelta(minutes=2)),
        ("evt_4", "k4", "h1", 1000, "eur", "alice", timedelta(hours=2)),
    )
    return db


def webhook_drill(*args: str) -> Result:
    return CliRunner().invoke(main, ["drill", "run", "webhook_replay", *args], catch_exceptions=False)


@pytest.fixture
def protected_again(healthy_sandbox: Sandbox, profile: Profile, target: PgTarget) -> Iterator[Sandbox]:
    """The sandbox, with its API's webhook protection on again and every duplicate marked afterwards."""
    yield healthy_sandbox
    healthy_sandbox.up()
    assert healthy_sandbox.webhook_protection_on()
    settings = profile.require_billing()
    mark_duplicates(target, settings, scan_duplicates(target, settings).unmarked, confirm=True)


# -- signatures and the endpoint ------------------------------------------------------------------
def test_a_signature_holds_only_for_its_body_its_secret_and_a_recent_timestamp() -> None:
    body = b'{"id":"evt_1"}'
    header = sign("s3cret", body, timestamp=1_000_000)
    assert verify("s3cret", body, header, tolerance=300, now=1_000_100).ok
    assert verify("s3cret", body, header, tolerance=300, now=1_000_400) == verify(
        "s3cret", body, header, tolerance=300, now=999_600
    )
    stale = verify("s3cret", body, header, tolerance=300, now=1_000_400)
    assert not stale.ok and stale.signed and stale.reason.startswith("stale")
    assert verify("other", body, header, tolerance=300, now=1_000_000).reason == "signature does not match"
    assert verify("s3cret", body + b" ", header, tolerance=300, now=1_000_000).reason == "signature does not match"
    assert not verify("s3cret", body, None, tolerance=300).ok and not verify("s3cret", body, "t=x", tolerance=300).ok


def test_the_endpoint_takes_a_fresh_event_and_refuses_a_replay_signed_or_not_a_stale_or_a_bad_signature(
    healthy_sandbox: Sandbox, profile: Profile, target: PgTarget
) -> None:
    settings = profile.require_billing()
    before = scan_duplicates(target, settings)
    probe = probe_protection(Webhook.from_profile(profile))
    assert probe.protected, probe.rows()
    assert [(r.name, r.status) for r in probe.requests] == [
        ("fresh event", 200),
        ("replay", 409),
        ("replay signed again", 409),
        ("stale timestamp", 400),
        ("bad signature", 401),
    ]
    assert probe.checks().passed and probe.recorded == 1
    after = scan_duplicates(target, settings)
    assert after.probes == before.probes + 1 and after.events == before.events + 1
    assert after.charged == before.charged and after.duplicates == before.duplicates  # a probe is never a charge


def test_with_the_protection_off_every_probe_is_taken_but_none_is_a_charge_and_sandbox_up_restores_it(
    protected_again: Sandbox, profile: Profile, target: PgTarget
) -> None:
    settings = profile.require_billing()
    before = scan_duplicates(target, settings)
    protected_again.start_api(webhook_protection=False)
    assert not protected_again.webhook_protection_on()
    api = next(s for s in protected_again.status().services if s.name == "api")
    assert not api.healthy and "protection OFF" in api.detail
    probe = probe_protection(Webhook.from_profile(profile))
    assert not probe.protected and probe.recorded == 5
    failing = {c.name for c in probe.checks().failures}
    assert failing == {
        "webhook_refuses_replay",
        "webhook_refuses_replay_signed_again",
        "webhook_refuses_stale_timestamp",
        "webhook_refuses_bad_signature",
    }
    assert probe.checks(warn_only=True).passed  # a finding, in detection
    after = scan_duplicates(target, settings)
    assert after.probes == before.probes + 5 and after.charged == before.charged
    new = [d for d in after.unmarked if d not in before.duplicates]
    assert len(new) == 2 and all(d.row.probe and d.reversal == "not_needed" for d in new)
    with target.connect() as conn:
        verified = conn.execute(
            "SELECT signature_verified FROM billing_events WHERE provider_event_id LIKE %s ORDER BY id DESC LIMIT 1",
            (f"{PROBE_PREFIX}%",),
        ).fetchone()
    assert verified == (False,)  # the badly signed one, recorded as such
    protected_again.up()  # a later start never leaves the protection off
    assert protected_again.webhook_protection_on() and probe_protection(Webhook.from_profile(profile)).protected


# -- the duplicate scan and marking -----------------------------------------------------------------
def test_distinct_events_raise_no_alarm_even_with_a_payload_repeated_outside_the_window(ledger: PgTarget) -> None:
    scan = scan_duplicates(ledger, LEDGER)
    assert scan.duplicates == () and scan.events == 4 and scan.probes == 0
    assert scan.charged == scan.distinct == scan.net == {"eur": 4500, "gbp": 700}
    assert scan.checks().passed and all(c.status == "pass" for c in scan.checks())


def test_each_rule_finds_its_duplicate_with_the_charge_it_caused(ledger: PgTarget) -> None:
    insert(
        ledger,
        ("evt_2", "k2-retry", "h2-other", 2500, "eur", "bob", timedelta(minutes=5)),  # same provider event id
        ("evt_9", "k1", "h9", 1000, "eur", "alice", timedelta(minutes=6)),  # same idempotency key
        ("evt_8", None, "h3", 700, "gbp", "carol", timedelta(minutes=7)),  # same payload within the window
    )
    scan = scan_duplicates(ledger, LEDGER)
    found = {d.row.event_id: (d.rule, d.original.event_id, d.row.customer, d.row.amount) for d in scan.duplicates}
    assert found == {
        "evt_2": ("provider event id", "evt_2", "bob", 2500),
        "evt_9": ("idempotency key", "evt_1", "alice", 1000),
        "evt_8": ("payload hash", "evt_3", "carol", 700),
    }
    assert scan.charged == {"eur": 8000, "gbp": 1400} and scan.distinct == {"eur": 4500, "gbp": 700}
    failing = {c.name for c in scan.checks().failures}
    assert failing == {"no_unmarked_duplicates", "totals_after_reversal"}
    without_keys = dataclasses.replace(LEDGER, idempotency_key_column="", payload_hash_column="")
    assert [d.row.event_id for d in scan_duplicates(ledger, without_keys).duplicates] == ["evt_2"]


def test_marking_is_one_transaction_deletes_nothing_and_a_second_run_finds_nothing_new(ledger: PgTarget) -> None:
    insert(
        ledger,
        ("evt_2", "k2", "h2", 2500, "eur", "bob", timedelta(minutes=5)),
        ("evt_2", "k2", "h2", 2500, "eur", "bob", timedelta(minutes=6)),
        (f"{PROBE_PREFIX}x_1", "p1", "hp", 0, "usd", "drlib-probe", timedelta(minutes=7)),
        (f"{PROBE_PREFIX}x_1", "p1", "hp", 0, "usd", "drlib-probe", timedelta(minutes=8)),
    )
    rows = count_rows(ledger, LEDGER)
    scan = scan_duplicates(ledger, LEDGER)
    assert len(scan.duplicates) == 3 and len(scan.to_reverse) == 2 and scan.probe_duplicates == 1
    plan = mark_duplicates(ledger, LEDGER, scan.unmarked)
    assert isinstance(plan, RestorePlan) and len(plan.steps) == 3 and "SET dup_of = 2" in plan.steps[0]
    assert len(scan_duplicates(ledger, LEDGER).unmarked) == 3  # a dry run marks nothing
    done = mark_duplicates(ledger, LEDGER, scan.unmarked, confirm=True)
    assert not isinstance(done, RestorePlan)
    assert sorted(done.marked.values()) == ["not_needed", "requested", "requested"]
    after = scan_duplicates(ledger, LEDGER)
    assert count_rows(ledger, LEDGER) == rows and not after.unmarked and after.checks().passed
    assert after.net == after.distinct == {"eur": 4500, "gbp": 700} and after.reversed == {"eur": 5000}
    again = mark_duplicates(ledger, LEDGER, after.unmarked, confirm=True)
    assert not isinstance(again, RestorePlan) and again.marked == {} and scan_duplicates(ledger, LEDGER) == after


def test_a_profile_naming_a_column_the_table_lacks_is_refused_with_the_key(ledger: PgTarget) -> None:
    with pytest.raises(ConfigError, match=r"no column for amount_column = 'amount'"):
        scan_duplicates(ledger, dataclasses.replace(LEDGER, amount_column="amount"))
    with pytest.raises(ConfigError, match=r"ledger.missing does not exist"):
        scan_duplicates(ledger, dataclasses.replace(LEDGER, events_table="ledger.missing"))


# -- profiles --------------------------------------------------------------------------------------
def test_a_profile_without_billing_reports_the_steps_not_configured_and_its_drill_is_refused(
    profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = profile.database
    config = tmp_path / "drlib.toml"
    config.write_text(
        f'[profiles.plain]\nsecrets_file = "{profile.secrets_file}"\n[profiles.plain.database]\n'
        f'host = "{db.host}"\nport = {db.port}\nuser = "{db.user}"\nname = "{db.name}"\n'
        f'password_secret = "{db.password_secret}"\n'
    )
    monkeypatch.setenv("DRLIB_CONFIG", str(config))
    plain = load_profile("plain")
    assert plain.billing is None and load_profile("content_crew").require_billing() == BillingSettings()
    runbook = WebhookReplay(profile="plain", confirm=True, evidence_path=str(tmp_path / "e.json"))
    for spec in runbook.steps():
        getattr(runbook, spec.method)()
    assert {s.status for s in runbook.evidence.steps} == {"not_configured"}
    assert "no [billing] section (add [profiles.plain.billing])" in runbook.evidence.steps[0].detail
    assert runbook.summary().passed
    with pytest.raises(NotConfigured, match=r"needs an application"):
        webhook_replay.preflight(plain, {})


def test_the_fault_runs_only_on_the_sandbox(profile: Profile) -> None:
    with pytest.raises(DrillRefused, match="only on the sandbox"):
        replay_webhooks(dataclasses.replace(profile, name="staging"), token="x")


def test_a_drill_cut_short_after_its_fault_leaves_the_webhook_protection_on(
    protected_again: Sandbox, profile: Profile
) -> None:
    setup = webhook_replay.stage(profile, {})
    assert not protected_again.webhook_protection_on() and setup.cleanup is not None
    setup.cleanup()  # what the drill runs after a SIGINT, a SIGTERM or a crash of its notebook too
    assert protected_again.status().healthy and probe_protection(Webhook.from_profile(profile)).protected


# -- the runbook and its drill -------------------------------------------------------------------------
def test_with_the_protection_left_off_the_verification_fails(
    protected_again: Sandbox, profile: Profile, tmp_path: Path
) -> None:
    protected_again.start_api(webhook_protection=False)
    runbook = WebhookReplay(confirm=True, update_handling=False, evidence_path=str(tmp_path / "e.json"))
    for spec in runbook.steps():
        getattr(runbook, spec.method)()
    failed = {c.name for c in runbook.evidence.checks if c.status == "fail"}
    assert failed == {
        "verify:webhook_refuses_replay",
        "verify:webhook_refuses_replay_signed_again",
        "verify:webhook_refuses_stale_timestamp",
        "verify:webhook_refuses_bad_signature",
        "verify:no_unmarked_duplicates",  # the verification's own probes, replayed into an open endpoint
    }
    assert "service_restored_at" not in runbook.evidence.facts
    assert "left off" in runbook.state_text()


def test_duplicates_deleted_instead_of_marked_fail_the_verification_though_new_rows_hide_them_from_the_count(
    protected_again: Sandbox, profile: Profile, target: PgTarget, tmp_path: Path
) -> None:
    copy = (
        "INSERT INTO billing_events (provider_event_id, idempotency_key, event_type, customer_id, amount_minor, "
        "currency, payload, payload_sha256, signature_verified) SELECT provider_event_id, idempotency_key, "
        "event_type, customer_id, amount_minor, currency, payload, payload_sha256, signature_verified "
        "FROM billing_events WHERE NOT starts_with(provider_event_id, %s) ORDER BY id LIMIT 1 RETURNING id"
    )
    with target.connect() as conn:
        copies = [conn.execute(copy, (PROBE_PREFIX,)).fetchone()[0] for _ in range(2)]  # type: ignore[index]
    runbook = WebhookReplay(confirm=True, evidence_path=str(tmp_path / "e.json"))
    runbook.identify_duplicates()
    runbook.check_replay_protection()  # its accepted probe is a new row: the count alone no longer shows a deletion
    with target.connect() as conn:  # the evidence deleted instead of marked
        conn.execute("DELETE FROM billing_events WHERE id = ANY(%s)", (copies,))
    runbook.update_webhook_handling()
    runbook.verify_and_monitor()
    checks = {c.name: c for c in runbook.evidence.checks}
    assert checks["verify:no_unmarked_duplicates"].status == checks["verify:totals_after_reversal"].status == "pass"
    deleted = checks["verify:no_event_deleted"]
    assert deleted.status == "fail" and f"deleted: {copies[0]}, {copies[1]}" in str(deleted.observed)


@pytest.mark.slow
def test_the_drill_marks_the_replayed_charges_restores_the_protection_and_leaks_no_secret(
    healthy_sandbox: Sandbox, profile: Profile, target: PgTarget
) -> None:
    before = report_folders()
    rows = count_rows(target, profile.require_billing())
    result = webhook_drill()
    assert result.exit_code == 0, result.output
    folder = newest(report_folders() - before)
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "passed" and 0 < results["rto_seconds"] < results["rto_target_seconds"] == 3600
    checks = {c["name"]: c["status"] for c in results["checks"]}
    assert checks["no_unmarked_duplicates"] == checks["webhook_refuses_replay"] == "warn"  # found, then fixed
    assert checks["verify:no_unmarked_duplicates"] == checks["verify:webhook_refuses_replay"] == "pass"
    marked = json.loads((folder / "notebook.evidence.json").read_text())["facts"]["marked"]
    assert list(marked.values()).count("requested") == 4  # 3 replayed requests and 1 signed again
    assert count_rows(target, profile.require_billing()) > rows  # nothing deleted
    assert healthy_sandbox.webhook_protection_on() and probe_protection(Webhook.from_profile(profile)).protected
    secret = read_secrets_file(healthy_sandbox.secrets_file)[SECRET_NAMES["webhook_signing"]]
    assert scan_for_secrets(folder, frozenset({secret})) == []


@pytest.mark.slow
def test_the_drill_fails_when_the_duplicates_are_not_marked(protected_again: Sandbox) -> None:
    result = webhook_drill("-p", "mark", "false")
    assert result.exit_code == 1, result.output
    assert "FAIL verify:no_unmarked_duplicates" in result.output
    assert "FAIL verify:totals_after_reversal" in result.output
