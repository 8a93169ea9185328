"""The sample schema and seed data of the runbook's stack.

Organizations, users (one known test account), content jobs with ``created_at`` spread over
90 days, and content artifacts whose ``storage_key`` points at real files in storage.
Foreign keys link the tables as a real schema would. ``billing_events`` holds what the billing webhook
received (each event once: the seed has no duplicates), with the columns a replay's recovery marks.
Rows are generated server-side with ``generate_series`` so even the benchmark size (over 1 GB) seeds
in a minute or two.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from drlib.hashing import parallel_map

SCHEMA = """
CREATE TABLE IF NOT EXISTS organizations (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS users (
    id bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations(id),
    email text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS content_jobs (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    organization_id bigint NOT NULL REFERENCES organizations(id),
    status text NOT NULL DEFAULT 'queued',
    prompt text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS content_jobs_user_id_idx ON content_jobs(user_id);
CREATE INDEX IF NOT EXISTS content_jobs_created_at_idx ON content_jobs(created_at);
CREATE TABLE IF NOT EXISTS content_artifacts (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES content_jobs(id),
    artifact_type text NOT NULL,
    storage_key text NOT NULL,
    storage_url text NOT NULL,
    size_bytes bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS content_artifacts_job_id_idx ON content_artifacts(job_id);
"""

#: what the billing webhook endpoint writes; a duplicate is marked (duplicate_of, reversal_state), never deleted
BILLING_SCHEMA = """
CREATE TABLE IF NOT EXISTS billing_events (
    id bigserial PRIMARY KEY,
    provider_event_id text NOT NULL,
    idempotency_key text,
    event_type text NOT NULL,
    customer_id text NOT NULL,
    amount_minor bigint NOT NULL,
    currency text NOT NULL,
    payload jsonb NOT NULL,
    payload_sha256 text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    signature_verified boolean NOT NULL,
    duplicate_of bigint REFERENCES billing_events(id),
    marked_at timestamptz,
    reversal_state text CHECK (reversal_state IN ('requested', 'not_needed', 'sent'))
);
CREATE INDEX IF NOT EXISTS billing_events_provider_event_id_idx ON billing_events(provider_event_id);
CREATE INDEX IF NOT EXISTS billing_events_idempotency_key_idx ON billing_events(idempotency_key);
CREATE INDEX IF NOT EXISTS billing_events_payload_sha256_idx ON billing_events(payload_sha256);
"""
BILLING_SEED_EVENTS = 30

#: artifact_type -> (storage folder, file extension)
ARTIFACT_KINDS = {
    "voiceover_audio": ("voiceovers", "wav"),
    "video": ("videos", "mp4"),
    "script": ("artifacts", "json"),
}

TEST_ACCOUNT_EMAIL = "test@example.com"


@dataclass(frozen=True)
class SeedSize:
    organizations: int
    users: int
    jobs: int
    artifacts: int
    artifact_bytes: int
    prompt_repeat: int = 2


SIZES = {
    "small": SeedSize(organizations=5, users=50, jobs=500, artifacts=60, artifact_bytes=2048),
    "medium": SeedSize(organizations=50, users=2_000, jobs=100_000, artifacts=2_000, artifact_bytes=8192),
    "large": SeedSize(
        organizations=200,
        users=20_000,
        jobs=2_600_000,
        artifacts=3_000,
        artifact_bytes=16384,
        prompt_repeat=12,
    ),
}


def hash_password(password: str, *, salt: str | None = None, iterations: int = 100_000) -> str:
    """``pbkdf2_sha256$iterations$salt$hexdigest``."""
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iterations)).hex()
    return secrets.compare_digest(candidate, digest)


def storage_key(artifact_type: str, job_id: int, artifact_id: int) -> str:
    folder, ext = ARTIFACT_KINDS[artifact_type]
    return f"{folder}/job-{job_id}-{artifact_id}.{ext}"


def seed_database(conn: psycopg.Connection, *, size: SeedSize, test_password: str) -> None:
    """Create the schema and fill it (the database must be empty)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(SCHEMA)
        cur.execute(
            "INSERT INTO organizations (name, created_at) SELECT 'Organization ' || g, "
            "now() - interval '120 days' + g * interval '1 minute' FROM generate_series(1, %s) g",
            (size.organizations,),
        )
        cur.execute(
            "INSERT INTO users (organization_id, email, password_hash, created_at) "
            "VALUES (1, %s, %s, now() - interval '100 days')",
            (TEST_ACCOUNT_EMAIL, hash_password(test_password)),
        )
        cur.execute(
            "INSERT INTO users (organization_id, email, password_hash, created_at) "
            "SELECT 1 + (g %% %s), 'user' || g || '@example.com', '!disabled', "
            "now() - interval '100 days' + g * interval '1 second' FROM generate_series(2, %s) g",
            (size.organizations, size.users),
        )
        cur.execute(
            "INSERT INTO content_jobs (user_id, organization_id, status, prompt, created_at) "
            "SELECT u, 1 + (u %% %s), (ARRAY['queued','running','done','failed'])[1 + g %% 4], "
            "repeat(md5(g::text), %s), "
            "now() - interval '90 days' + (g::float8 / %s) * interval '89 days' "
            "FROM (SELECT g, 1 + (g::bigint * 7919) %% %s AS u FROM generate_series(1, %s) g) s",
            (size.organizations, size.prompt_repeat, size.jobs, size.users, size.jobs),
        )
        cur.execute(
            "INSERT INTO content_artifacts (job_id, artifact_type, storage_key, storage_url, "
            "size_bytes, created_at) "
            "SELECT j, t, '', '', %s, now() - interval '89 days' + (g::float8 / %s) * interval '88 days' "
            "FROM (SELECT g, 1 + (g::bigint * 104729) %% %s AS j, "
            "(ARRAY['voiceover_audio','video','script'])[1 + g %% 3] AS t "
            "FROM generate_series(1, %s) g) s",
            (size.artifact_bytes, size.artifacts, size.jobs, size.artifacts),
        )
        cur.execute(
            "UPDATE content_artifacts SET storage_key = "
            "(CASE artifact_type WHEN 'voiceover_audio' THEN 'voiceovers/' "
            "WHEN 'video' THEN 'videos/' ELSE 'artifacts/' END) || 'job-' || job_id || '-' || id || "
            "(CASE artifact_type WHEN 'voiceover_audio' THEN '.wav' WHEN 'video' THEN '.mp4' "
            "ELSE '.json' END)"
        )
        cur.execute(
            "INSERT INTO content_artifacts (job_id, artifact_type, storage_key, storage_url, size_bytes, created_at) "
            "VALUES (1, 'voiceover_audio', 'voiceovers/test.wav', '', 64, now() - interval '89 days')"
        )
        cur.execute("UPDATE content_artifacts SET storage_url = '/v1/storage/' || storage_key")
    seed_billing(conn)
    with conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("ANALYZE")


def seed_billing(conn: psycopg.Connection) -> None:
    """``billing_events`` with a month of paid invoices, each received once."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(BILLING_SCHEMA)
        cur.execute(
            "INSERT INTO billing_events (provider_event_id, idempotency_key, event_type, customer_id, amount_minor, "
            "currency, payload, payload_sha256, received_at, signature_verified) "
            "SELECT id, idem, 'invoice.paid', customer, amount, 'usd', payload, "
            "encode(sha256(convert_to(payload::text, 'UTF8')), 'hex'), received_at, true FROM ("
            "  SELECT id, idem, customer, amount, received_at, jsonb_build_object('id', id, 'object', 'event', "
            "  'type', 'invoice.paid', 'created', extract(epoch FROM received_at)::bigint, "
            "  'request', jsonb_build_object('idempotency_key', idem), 'data', jsonb_build_object('object', "
            "  jsonb_build_object('customer', customer, 'amount', amount, 'currency', 'usd'))) AS payload FROM ("
            "    SELECT 'evt_seed_' || g AS id, 'idem_seed_' || g AS idem, 'cus_seed_' || (1 + g %% 12) AS customer, "
            "    (ARRAY[999, 1999, 4999])[1 + g %% 3] AS amount, "
            "    now() - interval '30 days' + g * interval '23 hours' AS received_at "
            "    FROM generate_series(1, %s) g) e) p",
            (BILLING_SEED_EVENTS,),
        )


def write_artifact_files(conn: psycopg.Connection, storage_root: Path, *, size: SeedSize) -> int:
    """Write one real file per ``content_artifacts`` row; return how many were written."""
    written = 0
    with conn.cursor() as cur:
        cur.execute("SELECT storage_key, id FROM content_artifacts ORDER BY id")
        for key, artifact_id in cur:
            path = storage_root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            body = hashlib.sha256(str(artifact_id).encode()).digest() * (size.artifact_bytes // 32)
            path.write_bytes(body or b"\0")
            written += 1
    for folder, _ in ARTIFACT_KINDS.values():
        (storage_root / folder).mkdir(parents=True, exist_ok=True)
    (storage_root / "voiceovers" / "test.wav").write_bytes(b"RIFF" + b"\0" * 60)
    return written


def upload_tree(client: Any, bucket: str, root: Path) -> int:
    """Upload every file under ``root`` to ``bucket`` under the same keys."""
    paths = [p for p in sorted(root.rglob("*")) if p.is_file()]
    parallel_map(lambda p: client.upload_file(str(p), bucket, p.relative_to(root).as_posix()), paths)
    return len(paths)


def seed_redis(client: Any, *, sessions: int = 20, cache: int = 50) -> None:
    """Sessions, cache entries, rate-limit counters and a job queue, as the sample app keeps them."""
    pipe = client.pipeline()
    for i in range(sessions):
        pipe.setex(f"session:seed-{i}", 86400, i + 1)
    for i in range(cache):
        pipe.hset(f"cache:organization:{i + 1}", mapping={"name": f"Organization {i + 1}", "plan": "pro"})
    for i in range(10):
        pipe.set(f"ratelimit:user:{i + 1}", i)
    pipe.rpush("queue:content_jobs", *[str(i) for i in range(1, 26)])
    pipe.sadd("cache:active_organizations", *[str(i) for i in range(1, 6)])
    pipe.zadd("cache:leaderboard", {f"user:{i}": float(i) for i in range(1, 11)})
    pipe.execute()
