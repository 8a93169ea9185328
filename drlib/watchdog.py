"""The drill watchdog: a small process that outlives a ``kill -9`` of the drill command.

It watches the drill's process; if that dies without finishing its report, the watchdog stops every
process of the drill (found by the run marker in their environment: papermill, the kernel,
``pg_restore``…), writes the report folder with status ``error`` from what the run recorded so far,
and only then lets go of the drill lock, which it holds through an inherited file descriptor.

Run as ``python -m drlib.watchdog --pid PID --create-time T --run-id ID --folder DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from drlib.processes import kill_marked, start_time, without_marker

POLL_SECONDS = 0.1


def same_process_alive(pid: int, create_time: float) -> bool:
    """``pid`` is alive and is the run's process: started at ``create_time`` (seconds since boot, which a
    clock adjustment does not move: a wall-clock create time would, and the run's restore be killed)."""
    try:
        process = psutil.Process(pid)
        return bool(process.status() != psutil.STATUS_ZOMBIE and abs(start_time(process) - create_time) < 0.01)
    except psutil.NoSuchProcess:
        return False


def wait_for_exit(pid: int, create_time: float) -> None:
    """Return once the run's process is gone: asleep on a pidfd (Linux), else looking every 0.1 s."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or the process is already gone
        pidfd = None
    try:
        if pidfd is not None and same_process_alive(pid, create_time):  # after the open: the fd is the run's
            select.select([pidfd], [], [])  # readable when it exits
            return
        while same_process_alive(pid, create_time):
            time.sleep(POLL_SECONDS)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def start_watchdog(*, run_id: str, folder: Path, lock_fd: int | None) -> subprocess.Popen[bytes]:
    """Start the watchdog of this process (in its own session: a Ctrl-C at the terminal is the drill's)."""
    me = psutil.Process()
    argv = [
        sys.executable,
        "-m",
        "drlib.watchdog",
        "--pid",
        str(me.pid),
        "--create-time",
        repr(start_time(me)),
        "--run-id",
        run_id,
        "--folder",
        str(folder),
    ]
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "watchdog.log").open("ab"),
        start_new_session=True,
        pass_fds=(lock_fd,) if lock_fd is not None else (),
        env=without_marker(None),
    )


def stop_watchdog(process: subprocess.Popen[bytes]) -> None:
    """The drill finished its report: the watchdog exits without doing anything."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGUSR1)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Finished(Exception):
    """SIGUSR1: the run wrote its own report (raised from the handler, so a sleep ends at once)."""


def _finished(signum: int, frame: object) -> None:
    raise _Finished


def watch(*, pid: int, create_time: float, run_id: str, folder: Path) -> int:
    try:
        signal.signal(signal.SIGUSR1, _finished)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        wait_for_exit(pid, create_time)
    except _Finished:
        os._exit(0)  # at once (nothing to flush or finalise): the run waits for it to free the lock it shares
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the run is gone: nothing can finish it now
    stopped = kill_marked(run_id)
    from drlib.report import MANIFEST_NAME  # here, not at start: the watchdog starts beside every run

    if not (folder / MANIFEST_NAME).is_file():  # written last: without it the report was cut short
        from drlib.drill_record import write_abandoned_report

        write_abandoned_report(
            folder,
            reason=f"the drill command (pid {pid}) was killed; the watchdog stopped its {stopped} remaining "
            "process(es) and wrote this report from what the run had recorded",
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drlib.watchdog")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--create-time", type=float, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args(argv)
    return watch(pid=args.pid, create_time=args.create_time, run_id=args.run_id, folder=args.folder)


if __name__ == "__main__":
    sys.exit(main())
