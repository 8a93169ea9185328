"""The one typed results schema: what a runbook run records (steps, checks, facts) and what a drill
writes to ``results.json``. The notebook's evidence, the drill, the HTML report and the index all
read and write these models; ``schemas/results.schema.json`` is generated from :class:`DrillResults`
(``python -m drlib.results``) and a test keeps it in step.

Old ``results.json`` files (schema 1, before ``schema_version`` existed) load unchanged: every field
added since has a default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drlib.exceptions import DrlibError

SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "results.schema.json"

CheckStatus = Literal["pass", "fail", "warn"]
#: ``not_configured``: the step needs a component (app, Redis, storage) the profile does not have
StepStatus = Literal["running", "passed", "failed", "error", "skipped", "not_configured"]
RunStatus = Literal["passed", "failed", "error", "dry_run", "refused"]
#: what wrote a report: a drill (a fault injected, then the runbook), or an operator's
#: ``drlib restore …`` / ``drlib verify …`` / ``drlib undo …`` on a stack as it is
RunKind = Literal["drill", "restore", "verify", "undo"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class CheckRecord(_Model):
    """One verification: what was expected, what was observed."""

    name: str
    status: CheckStatus
    expected: Any = None
    observed: Any = None
    detail: str = ""


class StepRecord(_Model):
    """One runbook step: when it started, how long it took, how it ended, and its checks' names."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str
    started_at: str
    seconds: float = 0.0
    status: StepStatus = "running"
    detail: str = ""
    checks: list[str] = Field(default_factory=list)


class ErrorInfo(_Model):
    """Why a run ended in ``error`` or ``refused``: the step it was in and the message."""

    step: str | None = None
    message: str
    type: str | None = None
    code: str | None = None
    traceback: str | None = None


class DataLoss(_Model):
    written_after_backup: int
    lost: int


class ExecutionInfo(_Model):
    seconds: float = 0.0
    returncode: int = 0
    timed_out: bool = False
    interrupted: str | None = None


class RunBy(_Model):
    user: str
    host: str
    pid: int | None = None


class Evidence(_Model):
    """What a notebook run recorded (the ``*.evidence.json`` files)."""

    scenario: str
    environment: str
    started_at: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepRecord] = Field(default_factory=list)
    checks: list[CheckRecord] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)


class DrillResults(_Model):
    """``results.json``: the contract other tools read (see DESIGN.md)."""

    schema_version: int = 1
    kind: RunKind = "drill"
    scenario: str
    title: str = ""
    environment: str
    started_at: str
    finished_at: str
    status: RunStatus
    rto_seconds: float | None = None
    rto_target_seconds: float | None = None
    rpo_seconds: float | None = None
    rpo_target_seconds: float | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    checks: list[CheckRecord] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    drlib_version: str
    run_by: RunBy
    fault: str | None = None
    failure_time: str | None = None
    service_restored_at: str | None = None
    backup: dict[str, Any] | None = None
    data_loss: dict[str, DataLoss] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    notebooks: list[str] = Field(default_factory=list)
    execution: ExecutionInfo = Field(default_factory=ExecutionInfo)
    stack_state: dict[str, str] = Field(default_factory=dict)
    next_steps: list[str] = Field(default_factory=list)
    lock: dict[str, Any] | None = None

    @property
    def failing_checks(self) -> list[CheckRecord]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[CheckRecord]:
        return [c for c in self.checks if c.status == "warn"]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def load(cls, path: Path) -> DrillResults:
        """Read a ``results.json`` (any schema version); a clear error when it is not one."""
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            raise ResultsUnreadable(f"{path} is not a readable drlib results.json ({type(exc).__name__})") from exc


class ResultsUnreadable(DrlibError):
    """A ``results.json`` that cannot be read as drill results."""

    code = "results-unreadable"


def results_schema() -> dict[str, Any]:
    """The JSON Schema of ``results.json``."""
    return DrillResults.model_json_schema()


def write_schema(path: Path = SCHEMA_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_schema())
