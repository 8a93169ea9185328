"""Evidence of a runbook run: each step's timing and status, each check's outcome, and facts
(backup used, failure time, when service came back, the state the stack is in). Saved as JSON when
a step starts and after it ends, so a run that dies half-way still says which step it was in."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drlib.checks import CheckResult
from drlib.exceptions import DrlibError
from drlib.files import write_whole
from drlib.results import CheckRecord, StepRecord
from drlib.results import Evidence as EvidenceRecord
from drlib.secrets import redact


def utcnow() -> datetime:
    return datetime.now(UTC)


def error_info(exc: BaseException, *, step: str | None) -> dict[str, Any]:
    """What the results schema records of an exception (messages redacted)."""
    message = exc.message if isinstance(exc, DrlibError) else f"{type(exc).__name__}: {exc}"
    return {
        "step": step,
        "message": redact(message),
        "type": type(exc).__name__,
        "code": exc.code if isinstance(exc, DrlibError) else None,
        "traceback": None if isinstance(exc, DrlibError) else redact("".join(traceback.format_exception(exc))[-4000:]),
    }


class Evidence:
    """Collects steps, checks and facts for one scenario run (typed: :class:`drlib.results.Evidence`)."""

    def __init__(
        self, *, scenario: str, environment: str, path: Path | None = None, parameters: dict[str, Any] | None = None
    ) -> None:
        self.path = path
        self.record = EvidenceRecord(
            scenario=scenario, environment=environment, started_at=utcnow().isoformat(), parameters=parameters or {}
        )
        self.checks: list[CheckResult] = []

    @property
    def steps(self) -> list[StepRecord]:
        return self.record.steps

    @property
    def facts(self) -> dict[str, Any]:
        return self.record.facts

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """Time a step; a raised exception marks it ``error`` (and is re-raised)."""
        record = StepRecord(name=name, started_at=utcnow().isoformat())
        self.steps.append(record)
        self.save()
        started = time.monotonic()
        try:
            yield record
            if record.status == "running":
                record.status = "passed"
        except BaseException as exc:
            record.status = "error"
            info = error_info(exc, step=name)
            record.detail = info["message"]
            self.facts.setdefault("error", info)
            raise
        finally:
            record.seconds = round(time.monotonic() - started, 3)
            self.save()

    def add_checks(self, checks: Iterable[CheckResult], *, step: StepRecord | None = None) -> None:
        for item in checks:
            self.checks.append(item)
            self.record.checks.append(CheckRecord.model_validate(item.to_dict()))
            if step is not None:
                step.checks.append(item.name)
                if item.status == "fail" and step.status in ("running", "passed"):
                    step.status = "failed"
        self.save()

    def note(self, key: str, value: Any) -> None:
        self.facts[key] = value
        self.save()

    def to_dict(self) -> dict[str, Any]:
        return self.record.model_dump(mode="json")

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(self.path, redact(self.record.model_dump_json(indent=2)))


def load_evidence(path: Path) -> EvidenceRecord | None:
    """Evidence written by a notebook (None when the notebook never got to write it)."""
    if not path.is_file():
        return None
    try:
        return EvidenceRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
