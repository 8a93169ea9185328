"""Hashing at disk speed: large buffers, and a thread pool (hashlib releases the GIL)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

CHUNK = 1024 * 1024
T = TypeVar("T")
R = TypeVar("R")


def sha256_stream(stream: BinaryIO, *, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    while True:
        n = stream.readinto(buffer)  # type: ignore[attr-defined]
        if not n:
            break
        digest.update(view[:n])
    return digest.hexdigest()


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with path.open("rb", buffering=0) as handle:
        return sha256_stream(handle, chunk=4 * CHUNK)


def default_workers() -> int:
    return max(2, min(16, (os.cpu_count() or 2) * 2))


def parallel_map(func: Callable[[T], R], items: Iterable[T], *, workers: int | None = None) -> list[R]:
    """``[func(item) for item in items]`` on a thread pool, in order."""
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        return list(pool.map(func, items))


def copy_hashing(source: Path, dest: Path) -> str:
    """Copy ``source`` to ``dest`` (with its mode and times) and return its sha256, in one read."""
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, dest.open("wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    shutil.copystat(source, dest)
    return digest.hexdigest()
