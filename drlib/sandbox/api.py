"""The sample HTTP API the runbook checks, reading and writing the real database and storage.

Endpoints: ``GET /health`` (database, redis and storage status), ``POST /v1/auth/login``,
``POST /v1/content-jobs`` (bearer token from login), ``GET|HEAD /v1/storage/<path>`` and
``POST /webhooks/billing`` (signed billing events, written to ``billing_events``).
Run as ``python -m drlib.sandbox.api --config connection.json``; secrets come from the
environment (``PGPASSWORD``, ``REDIS_PASSWORD``, ``WEBHOOK_SIGNING_SECRET``).

The billing webhook's protection: a signature over ``timestamp.body`` (``Webhook-Signature:
t=…,v1=…``, HMAC-SHA256), a timestamp within 300 s, and each provider event id and idempotency key
taken once (401, 400, 409). ``--no-webhook-protection`` (a drill's fault) checks nothing and records
every request, with whether its signature held. Logs go to stdout with levels, so the
runbook's log scan (``grep -i error``) has something real to read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import mimetypes
import os
import secrets
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import redis

from drlib.billing.events import SIGNATURE_HEADER, TOLERANCE_SECONDS, WEBHOOK_PATH, BillingEvent, parse_event
from drlib.billing.signing import verify
from drlib.sandbox.seed import verify_password

log = logging.getLogger("content-crew-api")
SESSION_TTL_SECONDS = 3600


class Backends:
    """Connections to the stack, opened per request (the sandbox favours simplicity)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        db = settings["database"]
        self.conninfo = psycopg.conninfo.make_conninfo(
            host=db["host"],
            port=db["port"],
            user=db["user"],
            dbname=db["name"],
            password=os.environ.get("PGPASSWORD", ""),
            connect_timeout=3,
        )
        rd = settings["redis"]
        self.redis = redis.Redis(
            host=rd["host"],
            port=rd["port"],
            password=os.environ.get("REDIS_PASSWORD") or None,
            socket_timeout=2,
            socket_connect_timeout=2,
        )
        self.storage_root = Path(settings["storage"]["path"])

    def database(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True)

    def health(self) -> dict[str, Any]:
        components: dict[str, Any] = {}
        try:
            with self.database() as conn:
                users = conn.execute("SELECT count(*) FROM users").fetchone()
            components["database"] = {"status": "ok", "users": users[0] if users else 0}
        except psycopg.Error as exc:
            components["database"] = {"status": "down", "error": type(exc).__name__}
        try:
            self.redis.ping()
            components["redis"] = {"status": "ok"}
        except redis.RedisError as exc:
            components["redis"] = {"status": "down", "error": type(exc).__name__}
        ok = self.storage_root.is_dir()
        components["storage"] = {"status": "ok" if ok else "down"}
        status = "ok" if all(c["status"] == "ok" for c in components.values()) else "degraded"
        return {"status": status, **components}


class Handler(BaseHTTPRequestHandler):
    backends: Backends
    webhook_protection = True
    server_version = "ContentCrewSandbox/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            return {}
        return body if isinstance(body, dict) else {}

    def do_GET(self) -> None:
        if self.path == "/health":
            health = self.backends.health()
            if health["status"] != "ok":
                log.warning("health degraded: %s", json.dumps(health))
            self._send(HTTPStatus.OK if health["status"] == "ok" else HTTPStatus.SERVICE_UNAVAILABLE, health)
        elif self.path.startswith("/v1/storage/"):
            self._serve_file(self.path.removeprefix("/v1/storage/"))
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        try:
            if self.path == "/v1/auth/login":
                self._login()
            elif self.path == "/v1/content-jobs":
                self._create_job()
            elif self.path == WEBHOOK_PATH:
                self._billing_webhook()
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
        except (psycopg.Error, redis.RedisError) as exc:
            log.error("%s failed: %s", self.path, type(exc).__name__)
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "backend unavailable"})

    def _login(self) -> None:
        body = self._json_body()
        with self.backends.database() as conn:
            row = conn.execute("SELECT id, password_hash FROM users WHERE email = %s", (body.get("email"),)).fetchone()
        if row is None or not verify_password(str(body.get("password", "")), row[1]):
            log.warning("login refused for %s", body.get("email"))
            self._send(HTTPStatus.UNAUTHORIZED, {"error": "invalid credentials"})
            return
        token = secrets.token_urlsafe(24)
        self.backends.redis.setex(f"session:{token}", SESSION_TTL_SECONDS, row[0])
        self._send(HTTPStatus.OK, {"token": token, "user_id": row[0]})

    def _create_job(self) -> None:
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        user_id = self.backends.redis.get(f"session:{token}") if token else None
        if user_id is None:
            self._send(HTTPStatus.UNAUTHORIZED, {"error": "login required"})
            return
        body = self._json_body()
        with self.backends.database() as conn:
            row = conn.execute(
                "INSERT INTO content_jobs (user_id, organization_id, status, prompt) "
                "SELECT id, organization_id, 'queued', %s FROM users WHERE id = %s "
                "RETURNING id, created_at",
                (str(body.get("prompt", "drill")), int(user_id)),
            ).fetchone()
        if row is None:
            self._send(HTTPStatus.UNAUTHORIZED, {"error": "unknown user"})
            return
        self._send(HTTPStatus.CREATED, {"id": row[0], "created_at": row[1].isoformat()})

    def _billing_webhook(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        verdict = verify(
            os.environ.get("WEBHOOK_SIGNING_SECRET", ""),
            raw,
            self.headers.get(SIGNATURE_HEADER),
            tolerance=TOLERANCE_SECONDS,
        )
        if self.webhook_protection and not verdict.ok:
            log.warning("billing webhook refused: %s", verdict.reason)
            status = HTTPStatus.BAD_REQUEST if verdict.signed else HTTPStatus.UNAUTHORIZED
            self._send(status, {"error": verdict.reason})
            return
        event = parse_event(raw)
        if event is None:
            self._send(HTTPStatus.BAD_REQUEST, {"error": "not a billing event"})
            return
        with self.backends.database() as conn, conn.transaction():
            taken = self._already_received(conn, event) if self.webhook_protection else None
            if taken is None:
                row = conn.execute(
                    "INSERT INTO billing_events (provider_event_id, idempotency_key, event_type, customer_id, "
                    "amount_minor, currency, payload, payload_sha256, signature_verified) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        event.event_id,
                        event.idempotency_key,
                        event.event_type,
                        event.customer,
                        event.amount,
                        event.currency,
                        raw.decode(),
                        hashlib.sha256(raw).hexdigest(),
                        verdict.signed,
                    ),
                ).fetchone()
        if taken is not None:
            log.warning("billing webhook refused: event %s already received (%s)", event.event_id, taken)
            self._send(HTTPStatus.CONFLICT, {"error": f"already received ({taken})"})
            return
        log.info("billing event %s recorded as %s", event.event_id, row[0] if row else None)
        self._send(HTTPStatus.OK, {"received": row[0] if row else None})

    @staticmethod
    def _already_received(conn: psycopg.Connection, event: BillingEvent) -> str | None:
        """What an earlier event shares with ``event`` (its provider event id or idempotency key), if any;
        the keys are locked to the end of the transaction, so two deliveries at once cannot both pass."""
        keys = [("provider event id", event.event_id), ("idempotency key", event.idempotency_key)]
        for _, key in keys:
            if key:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"billing:{key}",))
        row = conn.execute(
            "SELECT provider_event_id = %s FROM billing_events WHERE provider_event_id = %s "
            "OR (%s::text IS NOT NULL AND idempotency_key = %s) LIMIT 1",
            (event.event_id, event.event_id, event.idempotency_key, event.idempotency_key),
        ).fetchone()
        if row is None:
            return None
        return keys[0][0] if row[0] else keys[1][0]

    def _serve_file(self, key: str) -> None:
        root = self.backends.storage_root.resolve()
        path = (root / key).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            log.warning("storage object not found: %s", key)
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, path.read_bytes(), content_type)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Content Crew sample API (drlib sandbox)")
    parser.add_argument("--config", required=True, type=Path, help="sandbox connection.json")
    parser.add_argument(
        "--no-webhook-protection",
        action="store_true",
        help="a drill's fault: accept billing webhooks without checking signature, timestamp or replays",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.Formatter.converter = time.gmtime  # log times in UTC, as drlib's log scan reads them
    connection = json.loads(args.config.read_text(encoding="utf-8"))
    Handler.backends = Backends(connection["profile"])
    Handler.webhook_protection = not args.no_webhook_protection
    if not Handler.webhook_protection:
        log.warning("billing webhook protection is OFF: signatures, timestamps and replays are not checked")
    host, port = connection["services"]["api"]["host"], connection["services"]["api"]["port"]
    server = ThreadingHTTPServer((host, port), Handler)
    log.info("listening on http://%s:%s", host, port)
    server.serve_forever()


if __name__ == "__main__":
    main()
