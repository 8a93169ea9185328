"""Billing webhooks (Failure Scenarios → Scenario 4: Webhook Replay Attack): signing and verifying
webhook requests, probing an endpoint's protection, and finding and marking duplicate events."""
