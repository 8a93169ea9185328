"""Finding and running the PostgreSQL client and server programs."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from functools import lru_cache
from pathlib import Path

from drlib.exceptions import ConfigError

_SEARCHED: list[str] = []


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name) or ["0"])


_FINDING = threading.Lock()


def pg_bindir() -> Path | None:
    """The folder with PostgreSQL's programs: ``$DRLIB_PG_BINDIR``, ``pg_config --bindir``,
    the newest ``/usr/lib/postgresql/*/bin``, or None to use ``PATH``. Looked for once per process."""
    with _FINDING:  # one search, also when find_programs_early() is still at it
        return _find_bindir()


def find_programs_early() -> None:
    """Start looking for the programs in a background thread (``pg_config`` is a shell script on
    Debian: 20 ms), so a command that needs them finds the answer ready after its imports."""
    threading.Thread(target=_find_quietly, name="drlib-find-pg", daemon=True).start()


def _find_quietly() -> None:
    """:func:`pg_bindir` in the early thread: an error there is the command's to report when it looks
    again, never a thread's traceback on the terminal."""
    with contextlib.suppress(Exception):
        pg_bindir()


@lru_cache(maxsize=1)
def _find_bindir() -> Path | None:
    _SEARCHED.clear()
    if os.environ.get("DRLIB_PG_BINDIR"):
        return Path(os.environ["DRLIB_PG_BINDIR"])
    _SEARCHED.append("$DRLIB_PG_BINDIR (unset)")
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(  # errors="replace": a folder that is not text is not found, not a traceback
                [pg_config, "--bindir"], capture_output=True, text=True, errors="replace", check=False, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            out = subprocess.CompletedProcess([pg_config], 1, "", "")
        candidate = Path(out.stdout.strip())
        _SEARCHED.append(f"pg_config --bindir ({candidate})")
        if out.returncode == 0 and (candidate / "pg_restore").exists():
            return candidate
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p / "x"))
    _SEARCHED.append("/usr/lib/postgresql/*/bin")
    for candidate in reversed(versions):
        if (candidate / "pg_restore").exists():
            return candidate
    return None


def pg_program(name: str) -> str:
    """Full path of a PostgreSQL program, or a :class:`ConfigError` saying where we looked."""
    bindir = pg_bindir()
    if bindir is not None and (bindir / name).exists():
        return str(bindir / name)
    found = shutil.which(name)
    if found:
        return found
    looked = ", ".join([*_SEARCHED, "PATH"])
    raise ConfigError(
        f"PostgreSQL program {name!r} not found (looked in {looked}). Install PostgreSQL "
        "(apt-get install postgresql, or conda env create -f environment.yml) or set "
        "DRLIB_PG_BINDIR to the folder holding it."
    )


def program_version(name: str) -> str:
    """``pg_dump --version`` and friends, e.g. ``pg_dump (PostgreSQL) 15.19``."""
    program = pg_program(name)
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"cannot run {program} --version ({type(exc).__name__}): check the PostgreSQL installation"
        ) from exc
    return out.stdout.strip()
