"""Dry runs: what a destructive step would do, shown instead of doing it when ``confirm`` is not given."""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class RestorePlan:
    """What a destructive step would do; returned when ``confirm`` is not given."""

    action: str
    steps: tuple[str, ...]

    def _repr_html_(self) -> str:
        items = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in self.steps)
        return (
            f"<p><b>Dry run</b> — {html.escape(self.action)} would:</p><ol>{items}</ol>"
            "<p>Re-run with <code>confirm=True</code> to do it.</p>"
        )

    def __str__(self) -> str:
        return f"DRY RUN: {self.action} would:\n" + "\n".join(f"  {i}. {s}" for i, s in enumerate(self.steps, 1))


def timestamp_suffix(now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)):%Y%m%d%H%M%S}"


#: PostgreSQL keeps this many bytes of a name (NAMEDATALEN - 1) and silently cuts longer ones
MAX_NAME_BYTES = 63


def derived_name(base: str, suffix: str) -> str:
    """``<base>_<suffix>`` (a database made from ``base``, e.g. ``app_restored_<time>``), within
    PostgreSQL's 63 bytes. A base too long for that is cut on a character boundary and followed by a
    short hash of the whole base, so the name stays recognisable, distinct, and is the one the server keeps."""
    name = f"{base}_{suffix}"
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    tail = f"_{hashlib.sha256(base.encode()).hexdigest()[:8]}_{suffix}"
    room = MAX_NAME_BYTES - len(tail.encode())
    if room < 1:
        raise ValueError(f"the suffix {suffix!r} leaves no room for a database name")
    return base.encode()[:room].decode("utf-8", errors="ignore") + tail
