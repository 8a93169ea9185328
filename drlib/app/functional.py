"""The runbook's functional application checks, shared by every scenario: the test account logs in,
a content job can be created, and a restored artifact is served with identical bytes."""

from __future__ import annotations

from drlib.app.health import check_create_job, check_login
from drlib.checks import CheckResult, check
from drlib.config import Profile
from drlib.postgres.connection import PgTarget
from drlib.storage.backends import LocalStorage, S3Storage
from drlib.storage.verify import api_serves_file_check, referenced_keys


def login_and_create_job(profile: Profile) -> list[CheckResult]:
    """Log in with the test account (its password is a secret) and create a content job."""
    app = profile.require_app()
    password = profile.secret(app.test_account_password_secret, required=False)
    if password is None:
        login = check(
            "login_test_account",
            False,
            expected="200 with a token",
            observed="not attempted",
            detail=f"set {app.test_account_password_secret} to the test account's password",
        )
        token = None
    else:
        login, token = check_login(app.base_url, email=app.test_account_email, password=password)
    return [login, check_create_job(app.base_url, token=token)]


def artifact_checks(profile: Profile, storage: LocalStorage | S3Storage) -> list[CheckResult]:
    """A file the database references is served by the API (local storage) or readable (S3)."""
    keys = referenced_keys(PgTarget.from_profile(profile))
    if not keys:
        return []
    if isinstance(storage, LocalStorage):
        return [api_serves_file_check(profile.require_app().base_url, storage, keys[0])]
    present = storage.exists(keys[0])
    return [
        check(
            "restored_object_readable",
            present,
            expected="object present",
            observed="present" if present else "missing",
            detail=keys[0],
        )
    ]
