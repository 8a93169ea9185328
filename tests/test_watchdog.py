"""The watchdog's wait for the run's process: it returns when that process ends, and at once for a
process that is not the run's (the same pid, started at another time)."""

from __future__ import annotations

import subprocess
import threading
import time

import psutil

from drlib.processes import start_time
from drlib.watchdog import wait_for_exit


def test_the_wait_ends_when_the_run_s_process_ends() -> None:
    child = subprocess.Popen(["sleep", "0.5"])
    started = time.monotonic()
    waiter = threading.Thread(target=wait_for_exit, args=(child.pid, start_time(psutil.Process(child.pid))))
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive()  # still waiting while the process runs
    waiter.join(timeout=30)
    assert not waiter.is_alive() and time.monotonic() - started < 10
    child.wait()


def test_a_process_with_the_run_s_pid_but_another_start_is_not_waited_for() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = time.monotonic()
        wait_for_exit(child.pid, start_time(psutil.Process(child.pid)) - 100)
        assert time.monotonic() - started < 5
    finally:
        child.kill()
        child.wait()
