"""Secrets: where they come from, and keeping them out of everything drlib prints or writes.

Secrets are read from the environment or from a ``KEY=VALUE`` secrets file (mode 0600).
Every secret value drlib reads is registered with the redactor; :func:`redact` replaces
registered values and anything that looks like a password in a URL or a ``key=value``
pair with ``****``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

MASK = "****"

_known: set[str] = set()

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_KEY_VALUE = re.compile(
    r"(?i)\b(?P<key>password|passwd|pgpassword|secret|secret_access_key|token|requirepass)"
    r"(?P<sep>\s*=\s*|['\"]\s*:\s*)(?P<q>['\"]?)(?P<value>[^\s'\",;&]+)"
)

#: what a text holds, lower-cased, wherever _KEY_VALUE could match: one of these (its keys' stems)...
_KEY_STEMS = ("passw", "secret", "token", "requirepass")
#: ...or a character that case-insensitive matching takes for a key's letter but ``str.lower()`` does not
#: turn into it (dotted and dotless i, long s, Kelvin sign)
_ODD_CASE = ("\u0130", "\u0131", "\u017f", "\u212a")

SECRET_NAME_HINTS = ("password", "passwd", "secret", "token", "api_key", "access_key", "private_key", "credential")


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`redact` masks it wherever it appears."""
    if value and len(value) >= 4:
        _known.add(value)


def known_secrets() -> frozenset[str]:
    """The secret values registered in this process."""
    return frozenset(_known)


def redact(text: str) -> str:
    """Mask registered secrets, URL passwords and ``password=...`` pairs in ``text``."""
    if not text:
        return text
    for value in sorted(_known, key=len, reverse=True):
        text = text.replace(value, MASK)
    if "://" in text:  # the patterns are slow on a large text (a run's evidence): looked for only if they can match
        text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    lowered = text.lower()
    if any(stem in lowered for stem in _KEY_STEMS) or any(odd in text for odd in _ODD_CASE):
        text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}{m['q']}{MASK}", text)
    return text


class SecretValues(Mapping[str, str]):
    """Secret name -> value, kept in memory; its repr and str show the names only.

    Not a ``dict``: ``dataclasses.asdict`` copies it whole, so JSON written with
    ``default=str`` shows ``SecretValues(names=[...])`` and never a value.
    """

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})
        for value in self._values.values():
            register_secret(value)

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SecretValues(names={sorted(self._values)})"

    __str__ = __repr__

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretValues:
        return self

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.is_instance_schema(cls)


def looks_like_secret_name(name: str) -> bool:
    """True when a parameter (or column) name suggests it carries a secret: ``api_key``, ``apiKey`` and
    ``API-KEY`` alike."""
    lowered = name.lower()
    squashed = "".join(ch for ch in lowered if ch.isalnum())
    return any(hint in lowered or hint.replace("_", "") in squashed for hint in SECRET_NAME_HINTS)


def read_secrets_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines (``#`` comments allowed); each value is registered."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        values[key.strip()] = value
        register_secret(value)
    return values


def write_secrets_file(path: Path, values: dict[str, str]) -> None:
    """Write ``values`` as a 0600 ``KEY=VALUE`` file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# drlib secrets: never commit, never print\n")
        for key, value in values.items():
            handle.write(f"{key}={value}\n")
    for value in values.values():
        register_secret(value)


def lookup_secret(name: str, *, secrets_file: Path | None = None) -> str | None:
    """A secret from the environment first, then from the secrets file."""
    value = os.environ.get(name)
    if value is None and secrets_file is not None:
        value = read_secrets_file(secrets_file).get(name)
    register_secret(value)
    return value


def scan_for_secrets(root: Path, secrets: frozenset[str] | None = None) -> list[Path]:
    """Files under ``root`` whose text contains any known secret."""
    values = [s for s in (secrets if secrets is not None else known_secrets()) if s]
    leaking: list[Path] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(value.encode() in data for value in values):
            leaking.append(path)
    return leaking
