"""Finding PostgreSQL's programs, also from the background thread a restore starts early: whatever
``pg_config`` prints, the search says where it looked and never prints a thread's traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

FIND_EARLY_THEN_USE = """
from drlib.postgres.tools import find_programs_early, pg_program
find_programs_early()
print(pg_program("pg_restore"))
"""


def test_a_pg_config_printing_bytes_that_are_not_text_is_passed_over_quietly(tmp_path: Path) -> None:
    pg_config = tmp_path / "pg_config"
    pg_config.write_text("#!/bin/sh\nprintf '\\377\\376/nowhere\\n'\n")
    pg_config.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DRLIB_PG_BINDIR"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FIND_EARLY_THEN_USE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "PATH": f"{tmp_path}:/usr/bin:/bin"},
    )
    assert done.stderr == ""  # no "Exception in thread drlib-find-pg"
    assert done.returncode == 0 and done.stdout.strip().endswith("/pg_restore")
