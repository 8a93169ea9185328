"""Check results: one verification, with what was expected and what was observed."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

CheckStatus = Literal["pass", "fail", "warn"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; ``status`` is ``pass``, ``fail`` or ``warn``."""

    name: str
    status: CheckStatus
    expected: Any
    observed: Any
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def check(
    name: str, ok: bool, *, expected: Any, observed: Any, detail: str = "", warn_only: bool = False
) -> CheckResult:
    """``pass`` when ``ok``; otherwise ``fail`` (or ``warn`` when ``warn_only``)."""
    status: CheckStatus = "pass" if ok else ("warn" if warn_only else "fail")
    return CheckResult(name=name, status=status, expected=expected, observed=observed, detail=detail)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return str(value)


class Checks(tuple[CheckResult, ...]):
    """A group of checks that displays as a table in a notebook."""

    def __new__(cls, items: Iterable[CheckResult] = ()) -> Checks:
        return super().__new__(cls, tuple(items))

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self if c.status == "fail"]

    def _repr_html_(self) -> str:
        return checks_table_html(self)

    def __repr__(self) -> str:
        width = max((len(c.name) for c in self), default=10)
        return "\n".join(
            f"{c.status.upper():<4}  {c.name:<{width}}  expected={c.expected!s}  observed={c.observed!s}"
            + (f"  ({c.detail})" if c.detail else "")
            for c in self
        )


STATUS_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "warn": "#9a6700"}


def checks_table_html(checks: Iterable[CheckResult]) -> str:
    """An HTML table of checks (used by notebooks and reports alike)."""
    rows = []
    for c in checks:
        colour = STATUS_COLOURS[c.status]
        rows.append(
            f"<tr><td>{html.escape(c.name)}</td>"
            f"<td style='color:{colour};font-weight:bold'>{c.status.upper()}</td>"
            f"<td>{html.escape(str(c.expected))}</td><td>{html.escape(str(c.observed))}</td>"
            f"<td>{html.escape(c.detail)}</td></tr>"
        )
    return (
        "<table class='checks'><thead><tr><th>check</th><th>status</th><th>expected</th>"
        "<th>observed</th><th>detail</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
