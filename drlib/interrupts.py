"""Signals during a drill: SIGINT, SIGTERM and SIGHUP become :class:`DrillInterrupted` in the main
thread, so a drill unwinds like a failure (children stopped, report written) instead of dying."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from drlib.exceptions import DrillInterrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Handler = Callable[[int, FrameType | None], None]


@contextmanager
def _handling(handler: Handler) -> Iterator[None]:
    """``handler`` for the handled signals while inside (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def signals_interrupt() -> Iterator[list[str]]:
    """While inside, the handled signals raise :class:`DrillInterrupted` (once: a second signal
    during the clean-up is ignored, so the report still gets written). Yields the names of the
    signals received, so a caller still knows after the library turned the interruption into an error
    of its own (a restore that cleans up, then raises ``RestoreFailed`` from it)."""
    fired: list[str] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if not fired:
            fired.append(signal.Signals(signum).name)
            raise DrillInterrupted(fired[0])

    with _handling(handler):
        yield fired


@contextmanager
def signals_deferred() -> Iterator[list[str]]:
    """While inside (writing the report), the handled signals are remembered, not acted on."""
    received: list[str] = []
    with _handling(lambda signum, frame: received.append(signal.Signals(signum).name)):
        yield received
