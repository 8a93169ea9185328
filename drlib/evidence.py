"""Evidence of a runbook run: each step's timing and status, each check's outcome, and facts
(backup used, failure time, when service came back). Saved as JSON after every step, so a
run that dies half-way still leaves its evidence for the drill and the report.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from drlib.checks import CheckResult
from drlib.exceptions import DrlibError
from drlib.secrets import redact

StepStatus = Literal["passed", "failed", "error", "skipped"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class StepRecord:
    name: str
    started_at: str
    seconds: float = 0.0
    status: StepStatus = "passed"
    detail: str = ""
    checks: list[str] = field(default_factory=list)


@dataclass
class Evidence:
    """Collects steps, checks and facts for one scenario run."""

    scenario: str
    environment: str
    path: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: utcnow().isoformat())

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """Time a step; a raised exception marks it ``error`` (and is re-raised)."""
        record = StepRecord(name=name, started_at=utcnow().isoformat())
        self.steps.append(record)
        started = time.monotonic()
        try:
            yield record
        except BaseException as exc:
            record.status = "error"
            message = exc.message if isinstance(exc, DrlibError) else f"{type(exc).__name__}: {exc}"
            record.detail = redact(message)
            self.facts.setdefault(
                "error",
                {
                    "step": name,
                    "message": record.detail,
                    "type": type(exc).__name__,
                    "traceback": redact("".join(traceback.format_exception(exc))[-4000:]),
                },
            )
            raise
        finally:
            record.seconds = round(time.monotonic() - started, 3)
            self.save()

    def add_checks(self, checks: Iterable[CheckResult], *, step: StepRecord | None = None) -> None:
        for item in checks:
            self.checks.append(item)
            if step is not None:
                step.checks.append(item.name)
                if item.status == "fail" and step.status == "passed":
                    step.status = "failed"
        self.save()

    def note(self, key: str, value: Any) -> None:
        self.facts[key] = value
        self.save()

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "environment": self.environment,
            "started_at": self.started_at,
            "parameters": self.parameters,
            "steps": [asdict(s) for s in self.steps],
            "checks": [c.to_dict() for c in self.checks],
            "facts": self.facts,
        }

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(redact(json.dumps(self.to_dict(), indent=2, default=str)), encoding="utf-8")
        os.replace(tmp, self.path)


def load_evidence(path: Path) -> dict[str, Any]:
    """Evidence written by a notebook (empty when the notebook never got to write it)."""
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
