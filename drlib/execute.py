"""Running a notebook headlessly with papermill, in a child process with a whole-run timeout.

papermill's own timeout is per cell; a drill needs one for the whole run that also stops the
kernel and everything it started (``pg_restore`` workers included). Every process of the run
carries the drill's marker in its environment (:data:`RUN_MARKER`), so the whole tree can be found
and stopped on a timeout, an interrupt, or by the watchdog when the drill command itself is killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drlib.evidence import load_evidence
from drlib.processes import RUN_MARKER, kill_marked, kill_tree
from drlib.results import Evidence
from drlib.secrets import redact

POLL_SECONDS = 0.2

Progress = Callable[[Evidence], None]


@dataclass(frozen=True)
class Execution:
    """How a headless notebook run ended."""

    returncode: int
    seconds: float
    timed_out: bool
    log_tail: str

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def papermill_argv(notebook: Path, output: Path, params_file: Path, *, cwd: Path, timeout: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "papermill",
        str(notebook),
        str(output),
        "-f",
        str(params_file),
        "--cwd",
        str(cwd),
        "--no-progress-bar",
        "--execution-timeout",
        str(int(timeout)),
    ]


def execute_notebook(
    *,
    notebook: Path,
    output: Path,
    parameters: dict[str, Any],
    cwd: Path,
    timeout: float,
    log: Path | None = None,
    run_id: str | None = None,
    evidence: Path | None = None,
    progress: Progress | None = None,
) -> Execution:
    """Execute ``notebook`` into ``output`` with ``parameters`` injected by papermill; while it runs,
    ``progress`` is called with the notebook's evidence each time it changes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(parameters, handle)
        params_file = Path(handle.name)
    log_path = log or output.with_suffix(".log")
    env = {**os.environ, **({RUN_MARKER: run_id} if run_id else {})}
    started = time.monotonic()
    timed_out = False
    seen = ""
    try:
        with log_path.open("w", encoding="utf-8") as log_handle:
            process = subprocess.Popen(
                papermill_argv(notebook, output, params_file, cwd=cwd, timeout=timeout),
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
            try:
                while True:
                    try:
                        returncode = process.wait(timeout=POLL_SECONDS)
                        break
                    except subprocess.TimeoutExpired:
                        if time.monotonic() - started > timeout:
                            raise
                    seen = _report_progress(evidence, progress, seen)
            except subprocess.TimeoutExpired:
                timed_out = True
                _stop(process.pid, run_id)
                returncode = process.wait()
            except BaseException:
                _stop(process.pid, run_id)
                raise
    finally:
        params_file.unlink(missing_ok=True)
        _report_progress(evidence, progress, seen)
        text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
        log_path.write_text(redact(text), encoding="utf-8")
    tail = "\n".join(redact(text).splitlines()[-20:])
    return Execution(returncode=returncode, seconds=time.monotonic() - started, timed_out=timed_out, log_tail=tail)


def _stop(pid: int, run_id: str | None) -> None:
    """papermill, its kernel and everything the kernel started (orphans included, by their marker)."""
    kill_tree(pid, timeout=10)
    if run_id:
        kill_marked(run_id, timeout=10)


def _report_progress(evidence: Path | None, progress: Progress | None, seen: str) -> str:
    if evidence is None or progress is None or not evidence.is_file():
        return seen
    try:
        text = evidence.read_text(encoding="utf-8")
    except OSError:
        return seen
    if text != seen:
        record = load_evidence(evidence)
        if record is not None:
            progress(record)
    return text
