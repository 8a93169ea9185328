"""What the ``drlib`` command prints and how it exits, shared by ``drlib drill run`` and ``drlib
restore|verify``: the exit codes, a :class:`DrlibError` as one line, each runbook step as it starts and
ends, and a finished run's summary (status, failing checks, objectives, the stack's state, the report)."""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from drlib.exceptions import DrlibError

if TYPE_CHECKING:  # kept out of the command's start-up: every drlib command imports this module
    from drlib.results import DrillResults, Evidence

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a check failed, or a step raised something that is not a DrlibError
EXIT_DRLIB_ERROR = 3  # refused, or a DrlibError (bad input, unreachable server, …)

F = TypeVar("F", bound=Callable[..., Any])
#: prints one line; takes click.secho's style keywords (fg, bold)
Say = Callable[..., None]


def parameter_option(help_text: str) -> Callable[[F], F]:
    """``-p NAME VALUE``, repeatable: a runbook parameter (drills, restores and verifications alike)."""
    option: Callable[[F], F] = click.option(
        "-p", "--parameter", "parameters", type=(str, str), multiple=True, metavar="NAME VALUE", help=help_text
    )
    return option


def error_line(code: str | None, message: str) -> str:
    """``error [code]: message``, the way every drlib error reaches the terminal."""
    return f"error [{code or 'drlib-error'}]: {message}"


def handles_errors(func: F) -> F:
    """Print a :class:`DrlibError` as one line (with its code) and exit 3."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DrlibError as exc:
            click.secho(error_line(exc.code, exc.message), fg="red", err=True)
            sys.exit(EXIT_DRLIB_ERROR)

    return wrapper  # type: ignore[return-value]


def step_printer(say: Say, prefix: str = "") -> Callable[[Evidence], None]:
    """Print each step of ``evidence`` when it starts (``... name``) and when it ends (status, seconds)."""
    shown: dict[int, str] = {}

    def show(evidence: Evidence) -> None:
        for index, item in enumerate(evidence.steps):
            if shown.get(index) == item.status:
                continue
            shown[index] = item.status
            if item.status == "running":
                say(f"  ... {prefix}{item.name}")
            else:
                status = item.status.upper().replace("_", " ")
                say(f"  {status:<7} {prefix}{item.name} ({item.seconds:.1f} s)")

    return show


def status_label(results: DrillResults, name: str) -> tuple[str, str]:
    """``PASSED: name`` (or FAILED, DRY RUN …) and its colour."""
    colour = {"passed": "green", "dry_run": "cyan", "refused": "yellow"}.get(results.status, "red")
    label = "DRY RUN (nothing changed)" if results.status == "dry_run" else results.status.upper()
    return f"{label}: {name}", colour


def show_results(results: DrillResults, folder: Path, say: Say, *, name: str, show_error: bool = True) -> None:
    """A finished run on the terminal: its status, why it stopped, failing checks, objectives, the
    stack's state, what to do next and where the report is."""
    from drlib.drill_record import results_summary

    label, colour = status_label(results, name)
    say(label, fg=colour, bold=True)
    if show_error and results.error and results.status == "refused":
        say(error_line(results.error.code or "refused", results.error.message), fg="red")
    elif show_error and results.error:
        say(f"  {results.error.step or 'drill'} raised: {results.error.message}", fg="red")
    for item in results.failing_checks:
        say(
            f"  FAIL {item.name}: expected {item.expected}, observed {item.observed}"
            + (f" ({item.detail})" if item.detail else ""),
            fg="red",
        )
    if results.status != "refused":
        for line in results_summary(results):
            say(f"  {line}")
    for component, state in results.stack_state.items():
        say(f"  state: {component}: {state}")
    for line in results.next_steps:
        say(f"  next: {line}", fg="yellow")
    say(f"  report: {folder / 'report.html'}")


def exit_code(results: DrillResults) -> int:
    """128 + N when interrupted by signal N; 3 refused; 1 a check failed (a dry run's checks count too)
    or a step raised; 0 otherwise."""
    interrupted = results.execution.interrupted
    if interrupted and interrupted.startswith("SIG"):
        return 128 + int(getattr(signal, interrupted))
    if results.status == "refused":
        return EXIT_DRLIB_ERROR
    if results.status in ("failed", "error") or results.failing_checks:
        return EXIT_CHECK_FAILED
    return EXIT_OK


#: the exit status Python gives when the output could not be written at exit
EXIT_OUTPUT_LOST = 120
#: a write that found no room (a full disk or quota, a file too large) or no working device
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
#: a C ``long`` (64-bit Linux): a larger exit code is -1 to ``sys.exit`` (255), not its low byte
_LONG = range(-(2**63), 2**63)


def leave(code: object) -> NoReturn:
    """End the process as ``sys.exit(code)`` would (``None`` is 0, an int itself, anything else printed
    and 1), but once the exit handlers ran and the output is flushed, without the interpreter's
    teardown: freeing every module and a last garbage collection take about 40 ms, which a command's
    user waits for and nothing needs. With another thread still running, a normal exit (it is joined)."""
    if code is None or isinstance(code, int):
        status = (code if code in _LONG else -1) if code else 0
    else:
        print(code, file=sys.stderr)
        status = 1
    if threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()  # what a normal exit runs first: logging's flush, temporary folders
    if not _flushed():
        status = EXIT_OUTPUT_LOST
    os._exit(status & 0xFF)


def leave_after_failed_write(exc: OSError) -> NoReturn:
    """A write that nothing caught failed: its reader gone (1, quietly, as click exits on a closed pipe) or
    no room (:data:`EXIT_OUTPUT_LOST`, one line on stderr instead of a traceback). Any other error is
    re-raised: it is not the output's."""
    if isinstance(exc, BrokenPipeError):
        leave(1)  # as click exits on a closed pipe
    if exc.errno not in _NO_ROOM:
        raise exc
    _say_lost(exc)
    leave(EXIT_OUTPUT_LOST)


def _flushed() -> bool:
    """Flush stdout and stderr; False when output was lost (a full disk, an I/O error: said on stderr), not
    when the reader of a pipe is gone (``| head``: no traceback, no message)."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except BrokenPipeError:
            continue
        except OSError as exc:
            flushed = False
            _say_lost(exc)
        except Exception:  # a stream replaced by something odd: no traceback (as Python's own exit)
            continue
    return flushed


_lost_said: list[bool] = []


def _say_lost(exc: OSError) -> None:
    """One line on the original stderr (if it can still be written) about output that was lost; said once."""
    stderr = sys.__stderr__
    if stderr is not None and not _lost_said:
        _lost_said.append(True)
        with contextlib.suppress(Exception):
            stderr.write(f"error: drlib's output was not all written ({exc}): free space or write it elsewhere\n")
            stderr.flush()
