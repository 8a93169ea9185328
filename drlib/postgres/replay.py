"""Replaying a dump through psql as one transaction that only a clean end commits.

``pg_restore --single-transaction -f - DUMP`` writes the dump as SQL between one ``BEGIN`` and one
``COMMIT`` (and so without the ``BEGIN``/``COMMIT`` it would otherwise put around large objects). A relay
thread passes that SQL on to ``psql`` after a prologue file (``BEGIN``, then the caller's SQL: Option A's
reset); the dump's ``BEGIN`` becomes a check that the prologue's transaction is open, and its ``COMMIT``
is held back. Only once pg_restore has exited cleanly does the relay send the epilogue and the one
``COMMIT``. Anything else (an error, a timeout, an interrupt, pg_restore dying mid-stream) ends psql's
input without a ``COMMIT``, and the server rolls the whole transaction back; if drlib itself is killed,
psql and pg_restore are killed with it (Linux's parent-death signal). ``psql --single-transaction`` would
not do: it sends ``COMMIT`` when its input ends, however it ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psycopg

from drlib.exceptions import DrlibError, RestoreFailed
from drlib.postgres.connection import PgTarget
from drlib.postgres.tools import pg_program
from drlib.processes import kill_tree
from drlib.secrets import redact

#: how long to wait for the server to end an abandoned restore session (its transaction rolls back)
SESSION_END_TIMEOUT = 30.0
CHUNK = 1 << 20
#: the end of the stream held back until pg_restore has exited, so its closing COMMIT can be replaced
TAIL_KEEP = 64 << 10
#: a header longer than this has no opening BEGIN: pg_restore writes it within the first lines
HEADER_LIMIT = 1 << 20
#: how much of a tool's error output is kept for the message
ERROR_TAIL = 64 << 10


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` making the child get SIGKILL when the thread that started it dies, so a
    killed drlib never leaves psql running on (and its COMMIT, if already queued, never reaches the server)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent


class ScriptShapeError(Exception):
    """pg_restore's SQL did not open with BEGIN or close with COMMIT where it always does."""


#: put where the dump's own BEGIN was: fails unless the prologue's transaction is open, so the dump can
#: never run statement by statement (SAVEPOINT is refused outside a transaction block)
IN_TRANSACTION = b"SAVEPOINT drlib_replay_in_one_transaction;\nRELEASE SAVEPOINT drlib_replay_in_one_transaction;\n"


def restore_argv(dump: Path) -> list[str]:
    """pg_restore writing the dump as SQL for one transaction (on stdout)."""
    return [pg_program("pg_restore"), "--single-transaction", "-f", "-", str(dump)]


def psql_argv(database: str, prologue: Path) -> list[str]:
    """psql running the prologue, then its input, stopping at the first error."""
    options = ["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", database]
    return [pg_program("psql"), *options, "-f", str(prologue), "-f", "-"]


def _skippable(line: bytes, meta: bytes) -> bool:
    """Blank lines, comments and one kind of psql meta-command (``\\restrict`` / ``\\unrestrict``)."""
    text = line.strip()
    return not text or text.startswith(b"--") or text.startswith(meta)


def without_opening_begin(head: bytes) -> bytes | None:
    """``head`` with the BEGIN that opens pg_restore's script replaced by a check that the transaction is
    open; None while its first statement is incomplete."""
    start = 0
    while (end := head.find(b"\n", start)) >= 0:
        line = head[start:end]
        if line.strip() == b"BEGIN;":
            return head[:start] + IN_TRANSACTION + head[end + 1 :]
        if not _skippable(line, b"\\restrict"):
            raise ScriptShapeError(f"pg_restore's SQL does not open with BEGIN (first statement: {line[:80]!r})")
        start = end + 1
    if len(head) > HEADER_LIMIT:
        raise ScriptShapeError("pg_restore's SQL does not open with BEGIN")
    return None


def without_closing_commit(tail: bytes, *, starts_a_line: bool) -> bytes:
    """``tail`` (the end of pg_restore's script) without the COMMIT that closes it."""
    lines = tail.splitlines(keepends=True)
    index = len(lines) - 1
    while index >= 0 and _skippable(lines[index], b"\\unrestrict"):
        index -= 1
    if index < 0 or lines[index].strip() != b"COMMIT;" or (index == 0 and not starts_a_line):
        raise ScriptShapeError("pg_restore's SQL does not end with COMMIT")
    return b"".join(lines[:index] + lines[index + 1 :])


class Relay(threading.Thread):
    """Copies pg_restore's SQL into psql without its own BEGIN/COMMIT, then the epilogue and COMMIT,
    once pg_restore has exited cleanly. On any failure psql's input just ends: nothing commits."""

    def __init__(self, source: subprocess.Popen[bytes], sink: IO[bytes], epilogue: bytes) -> None:
        super().__init__(name="drlib-replay-relay", daemon=True)
        self.source = source
        self.sink = sink
        self.epilogue = epilogue
        self.error: str | None = None
        self.commit_sent = False

    def run(self) -> None:
        try:
            self._relay()
        except BrokenPipeError:
            self.error = "psql stopped reading"
        except ScriptShapeError as exc:
            self.error = str(exc)
        except Exception as exc:  # a thread must not die with a traceback; the restore reports it
            self.error = f"relaying pg_restore's SQL to psql failed ({type(exc).__name__}: {exc})"
        finally:
            with contextlib.suppress(OSError):
                self.sink.close()
            if self.source.stdout is not None:
                with contextlib.suppress(OSError):
                    self.source.stdout.close()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        fd = self.sink.fileno()
        while view:
            view = view[os.write(fd, view) :]

    def _relay(self) -> None:
        assert self.source.stdout is not None
        fd = self.source.stdout.fileno()
        held = b""
        opened = False
        starts_a_line = True
        while chunk := os.read(fd, CHUNK):
            held += chunk
            if not opened:
                stripped = without_opening_begin(held)
                if stripped is None:
                    continue
                held, opened = stripped, True
            cut, at_line = _cut(held)
            if cut:
                self._write(held[:cut])
                held, starts_a_line = held[cut:], at_line
        returncode = self.source.wait()
        if returncode != 0:
            self.error = f"pg_restore failed (exit {returncode})"
            return
        if not opened:
            raise ScriptShapeError("pg_restore wrote no SQL")
        self._write(without_closing_commit(held, starts_a_line=starts_a_line))
        self._write(self.epilogue)
        self.commit_sent = True


def _cut(held: bytes) -> tuple[int, bool]:
    """How much of ``held`` can go on (keeping at least TAIL_KEEP bytes), and whether the rest starts a line."""
    limit = len(held) - TAIL_KEEP
    if limit <= 0:
        return 0, True
    newline = held.rfind(b"\n", 0, limit)
    if newline >= 0:
        return newline + 1, True
    if len(held) > 8 * CHUNK:  # one very long line (a big value in COPY data): never the closing COMMIT
        return limit, False
    return 0, True


def epilogue(after_sql: str) -> bytes:
    """What follows the dump: the caller's last SQL, then the only COMMIT."""
    return f"\nSET client_encoding = 'UTF8';\n{after_sql}\n;\nCOMMIT;\n".encode()


def replay_dump(
    dump: Path,
    *,
    target: PgTarget,
    prologue: str,
    after_sql: str = "",
    timeout: float | None = None,
) -> float:
    """Run ``prologue`` (its first statement must be BEGIN), the dump, ``after_sql`` and COMMIT in
    ``target`` as one psql session; on any failure, timeout or interrupt stop both programs and wait
    until the server has ended the session (so its transaction is rolled back), then raise."""
    started = time.monotonic()
    env = target.tool_env()
    env["PGAPPNAME"] = f"drlib-restore-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="drlib-replay-") as folder:
        prologue_file = Path(folder, "prologue.sql")
        prologue_file.write_text(prologue, encoding="utf-8")
        restore_log, psql_log = Path(folder, "pg_restore.log"), Path(folder, "psql.log")
        with restore_log.open("wb") as restore_err, psql_log.open("wb") as psql_err:
            restore = _start(restore_argv(dump), stdout=subprocess.PIPE, stderr=restore_err, env=env)
            try:
                psql = _start(
                    psql_argv(target.name, prologue_file),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=psql_err,
                    env=env,
                )
            except BaseException:
                _stop(restore)
                raise
            assert psql.stdin is not None
            relay = Relay(restore, psql.stdin, epilogue(after_sql))
            relay.start()
            try:
                psql.wait(timeout=None if timeout is None else max(0.0, timeout - (time.monotonic() - started)))
            except BaseException as exc:
                _abandon(psql, restore, relay, target, env["PGAPPNAME"])
                reason = (
                    "timed out"
                    if isinstance(exc, subprocess.TimeoutExpired)
                    else f"was interrupted ({type(exc).__name__})"
                )
                raise RestoreFailed(f"the restore {reason}") from exc
            if psql.returncode != 0 or not relay.commit_sent:
                _abandon(psql, restore, relay, target, env["PGAPPNAME"])
                raise RestoreFailed(_why(psql.returncode, relay, restore_log, psql_log))
            relay.join()
    return time.monotonic() - started


def _start(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(argv, preexec_fn=_parent_death_signal(), **kwargs)  # type: ignore[call-overload, no-any-return]
    except OSError as exc:
        raise RestoreFailed(f"cannot run {argv[0]} ({type(exc).__name__}): check the PostgreSQL installation") from exc


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        kill_tree(process.pid, timeout=5)
    process.wait()


def _abandon(
    psql: subprocess.Popen[bytes],
    restore: subprocess.Popen[bytes],
    relay: Relay,
    target: PgTarget,
    application_name: str,
) -> None:
    """Stop psql, pg_restore and the relay, and wait until the server has ended psql's session."""
    _stop(psql)
    _stop(restore)
    relay.join(timeout=30)
    end_sessions(target, application_name)


def end_sessions(target: PgTarget, application_name: str) -> None:
    """Terminate the server sessions a stopped client left behind and wait until they are gone."""
    deadline = time.monotonic() + SESSION_END_TIMEOUT
    with contextlib.suppress(DrlibError, psycopg.Error), target.maintenance.connect() as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            ).fetchall()
            if not rows:
                return
            time.sleep(0.1)


def _why(returncode: int | None, relay: Relay, restore_log: Path, psql_log: Path) -> str:
    """Why the replay failed, in the tools' own words (the error itself, secrets masked)."""
    if relay.error and relay.error.startswith("pg_restore failed"):
        return f"{relay.error}: {tool_error(restore_log)}"
    if returncode != 0:
        what = {2: "could not connect or lost the connection", 3: "stopped at an error"}.get(returncode or 0, "failed")
        return f"psql {what} (exit {returncode}): {tool_error(psql_log)}"
    return relay.error or "the restore ended without committing"


def tool_error(log: Path) -> str:
    """The last error a tool reported (its ERROR line with DETAIL and HINT, not the query it quotes), else the
    end of its output: enough to say why, never megabytes in a message or a report."""
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - ERROR_TAIL))
        text = handle.read().decode("utf-8", errors="replace").replace(f"{log.parent}/", "")
    lines = text.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if "ERROR:" in line or "FATAL:" in line or "error:" in line]
    if errors:
        first = errors[-1]
        kept = [lines[first]]
        kept += [line for line in lines[first + 1 : first + 6] if line.startswith(("DETAIL:", "HINT:"))]
        return redact("\n".join(line[:500] for line in kept))
    return redact("\n".join(lines[-15:])[-3000:]) or "(no output)"
