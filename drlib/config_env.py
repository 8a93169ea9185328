"""Environment overrides of a profile: ``DATABASE_URL``, ``REDIS_URL``, ``API_URL``,
``S3_ENDPOINT_URL`` and ``DRLIB_BACKUP_DIR``.

Connection URLs are parsed defensively: a malformed one is refused with one message that
names the variable and never repeats any part of it (it may hold a password). A password
found in a URL is returned to the caller (and registered with the redactor), never put
into ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from drlib.exceptions import ConfigError
from drlib.secrets import register_secret

_ENCODE_HINT = "percent-encode special characters in the password (e.g. / as %2F, # as %23)"


@dataclass(frozen=True)
class UrlOverrides:
    """Profile keys set by environment variables, and the passwords their URLs carried."""

    #: (variable name, partial profile table) in the order they apply
    tables: tuple[tuple[str, dict[str, Any]], ...] = ()
    database_password: str | None = field(default=None, repr=False)
    redis_password: str | None = field(default=None, repr=False)


def _refuse(variable: str, example: str) -> ConfigError:
    return ConfigError(
        f"{variable} is not a valid connection URL (expected the form {example}, with ':password' after the user): "
        f"{_ENCODE_HINT}, then set {variable} again"
    )


def parse_connection_url(variable: str, *, schemes: tuple[str, ...], example: str) -> tuple[SplitResult, int | None]:
    """``$variable`` split into parts, with its port; a malformed URL raises :class:`ConfigError`.

    The error never quotes the URL: an unencoded ``/``, ``#`` or ``?`` in a password moves
    part of the password into the host, port, path or fragment.
    """
    raw = os.environ[variable]
    try:
        url = urlsplit(raw)
        port = url.port
    except ValueError:
        raise _refuse(variable, example) from None
    tail = raw[len(url.scheme) + 3 + len(url.netloc) :]
    if url.scheme not in schemes or not raw.lower().startswith(f"{url.scheme}://") or not url.hostname or "@" in tail:
        raise _refuse(variable, example)
    if url.password:
        register_secret(unquote(url.password))
    return url, port


def env_overrides() -> UrlOverrides:
    """The overrides the environment asks for (empty when none of the variables is set)."""
    tables: list[tuple[str, dict[str, Any]]] = []
    db_password = redis_password = None
    if os.environ.get("DATABASE_URL"):
        url, port = parse_connection_url(
            "DATABASE_URL", schemes=("postgresql", "postgres"), example="postgresql://user@host:5432/database"
        )
        values = {
            "host": url.hostname,
            "port": port,
            "user": url.username and unquote(url.username),
            "name": unquote(url.path.lstrip("/")) or None,
        }
        tables.append(("DATABASE_URL", {"database": {k: v for k, v in values.items() if v}}))
        db_password = unquote(url.password) if url.password else None
    if os.environ.get("REDIS_URL"):
        url, port = parse_connection_url("REDIS_URL", schemes=("redis", "rediss"), example="redis://host:6379/0")
        values = {"host": url.hostname, "port": port}
        tables.append(("REDIS_URL", {"redis": {k: v for k, v in values.items() if v}}))
        redis_password = unquote(url.password) if url.password else None
    if os.environ.get("API_URL"):
        tables.append(("API_URL", {"app": {"base_url": os.environ["API_URL"]}}))
    if os.environ.get("S3_ENDPOINT_URL"):
        tables.append(("S3_ENDPOINT_URL", {"storage": {"endpoint_url": os.environ["S3_ENDPOINT_URL"]}}))
    if os.environ.get("DRLIB_BACKUP_DIR"):
        tables.append(("DRLIB_BACKUP_DIR", {"backups": {"postgres_dir": os.environ["DRLIB_BACKUP_DIR"]}}))
    return UrlOverrides(tables=tuple(tables), database_password=db_password, redis_password=redis_password)
