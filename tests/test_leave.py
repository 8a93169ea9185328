"""The ``drlib`` command leaves without the interpreter's teardown (:func:`drlib.terminal.leave`), and
still exits with the right code, its whole output written, exit handlers run and threads finished."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: output buffered as by default (not PYTHONUNBUFFERED), so leave() has something to flush
BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=BUFFERED,
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [("None", 0), ("0", 0), ("3", 3), ("130", 130), ("256 + 2", 2), ("-1", 255), ("2**63", 255), ("-(2**63) - 1", 255)],
)
def test_the_exit_code_is_the_one_sys_exit_would_give(code: str, status: int) -> None:
    done = run_python(f"from drlib.terminal import leave\nprint('x' * 100_000, end='')\nleave({code})")
    assert done.returncode == status
    assert done.stdout == "x" * 100_000  # buffered output is flushed (a pipe, not a terminal)


def test_a_message_is_printed_and_exits_1() -> None:
    done = run_python("from drlib.terminal import leave\nleave('cannot go on')")
    assert (done.returncode, done.stderr.strip()) == (1, "cannot go on")


def test_exit_handlers_run_and_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    done = run_python(
        f"""
        import atexit, threading, time
        from pathlib import Path
        from drlib.terminal import leave
        atexit.register(lambda: Path({str(tmp_path / "atexit")!r}).write_text("ran"))
        def slow():
            time.sleep(0.5)
            Path({str(tmp_path / "thread")!r}).write_text("finished")
        threading.Thread(target=slow).start()
        leave(0)
        """
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "finished"


def test_output_to_a_closed_pipe_is_not_a_traceback() -> None:
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)  # `drlib … | head`, head long gone
    reader.wait(timeout=30)
    assert reader.stdin is not None
    writer = subprocess.run(
        [sys.executable, "-c", "from drlib.terminal import leave\nprint('y' * 1000)\nleave(0)"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        env=BUFFERED,
    )
    reader.stdin.close()
    assert (writer.returncode, writer.stderr) == (0, "")


def test_output_lost_on_a_full_disk_is_an_error_not_a_success() -> None:
    with open("/dev/full", "w") as full:  # `drlib … --json > report.json` on a full disk
        done = subprocess.run(
            [sys.executable, "-c", "from drlib.terminal import leave\nprint('{}')\nleave(0)"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
            env=BUFFERED,
        )
    assert done.returncode == 120  # as Python's own exit gives
    assert "No space left on device" in done.stderr


def test_the_console_command_exits_with_click_s_codes() -> None:
    drlib = Path(sys.executable).parent / "drlib"
    assert subprocess.run([str(drlib), "--version"], capture_output=True, check=False).returncode == 0
    usage = subprocess.run([str(drlib), "no-such-command"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "No such command" in usage.stderr


DRLIB = str(Path(sys.executable).parent / "drlib")


@pytest.mark.parametrize("args", [["drill", "list"], ["--help"]], ids=["a-command", "help"])
def test_a_command_whose_output_finds_a_full_disk_says_so_in_one_line_and_exits_120(args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [DRLIB, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False, env=BUFFERED
        )
    assert done.returncode == 120
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: drlib's output was not all written ([Errno 28] No space left on device): free space or write "
        "it elsewhere"
    ]


def test_a_failed_write_that_is_not_about_room_is_not_hidden() -> None:
    done = run_python(
        "from drlib.terminal import leave_after_failed_write\n"
        "leave_after_failed_write(PermissionError(13, 'Permission denied'))"
    )
    assert done.returncode == 1 and "PermissionError" in done.stderr


def test_a_closed_pipe_mid_command_exits_1_quietly() -> None:
    done = run_python(
        "from drlib.terminal import leave_after_failed_write\nleave_after_failed_write(BrokenPipeError(32, 'x'))"
    )
    assert (done.returncode, done.stderr) == (1, "")
