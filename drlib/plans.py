"""Dry runs: what a destructive step would do, shown instead of doing it when ``confirm`` is not given."""

from __future__ import annotations

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
