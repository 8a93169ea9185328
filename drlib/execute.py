"""Running a notebook headlessly with papermill, in a child process with a whole-run timeout.

papermill's own timeout is per cell; a drill needs one for the whole run that also stops the
kernel and everything it started (``pg_restore`` workers included). The child process tree
is killed when the timeout passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drlib.processes import kill_tree
from drlib.secrets import redact


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


def execute_notebook(
    *, notebook: Path, output: Path, parameters: dict[str, Any], cwd: Path, timeout: float, log: Path | None = None
) -> Execution:
    """Execute ``notebook`` into ``output`` with ``parameters`` injected by papermill."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(parameters, handle)
        params_file = Path(handle.name)
    log_path = log or output.with_suffix(".log")
    argv = [
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
    started = time.monotonic()
    timed_out = False
    try:
        with log_path.open("w", encoding="utf-8") as log_handle:
            process = subprocess.Popen(argv, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_tree(process.pid, timeout=10)
                returncode = process.wait()
            except BaseException:
                kill_tree(process.pid, timeout=10)
                raise
    finally:
        params_file.unlink(missing_ok=True)
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
    log_path.write_text(redact(text), encoding="utf-8")
    tail = "\n".join(redact(text).splitlines()[-20:])
    return Execution(returncode=returncode, seconds=time.monotonic() - started, timed_out=timed_out, log_tail=tail)
