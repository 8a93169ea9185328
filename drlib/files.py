"""Writing a file whole: whoever reads it (another run, the watchdog after a crash, a browser) finds the
old text or the new one, never half of it."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_whole(path: Path, text: str, *, mode: int = 0o666) -> None:
    """Write ``text`` to a file of its own beside ``path`` (created with ``mode``, less the umask), then
    put it in ``path``'s place in one rename."""
    part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(part, path)
