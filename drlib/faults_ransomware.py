"""Failure injection for the ransomware drill (the sandbox, or a drill target): a share of the storage
files encrypted in place with a keystream from ``os.urandom`` (real random bytes, as a cipher leaves them), some of them
renamed with a new extension instead, ransom notes dropped at the top of the storage and in each folder,
and optionally a ransom-note table left in the database, as the attacks on exposed PostgreSQL servers do."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

from drlib.config import Profile
from drlib.exceptions import DrillRefused
from drlib.postgres.connection import PgTarget
from drlib.storage.backends import LocalStorage, S3Storage
from drlib.storage.writeblock import writes_blocked

EXTENSION = ".locked"
NOTE_NAME = "README_TO_DECRYPT.txt"
NOTE = (
    "All your files have been encrypted.\n"
    "To recover your files and your data, send 0.5 bitcoin (BTC) to the wallet below and write to us with\n"
    "your ID. Do not try to decrypt them yourself: only our private key can. Tor browser: http://example.onion\n"
)
NOTE_TABLE = "readme_to_recover"


@dataclass(frozen=True)
class Encryption:
    """What the fault did: files encrypted in place, files encrypted under a new name, notes written."""

    encrypted: tuple[str, ...]
    renamed: tuple[str, ...]
    notes: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"{len(self.encrypted)} file(s) encrypted in place, {len(self.renamed)} encrypted and renamed to "
            f"*{EXTENSION}, {len(self.notes)} ransom note(s) {NOTE_NAME}"
        )


def _scramble(data: bytes) -> bytes:
    """XOR with a fresh random keystream: as random as any cipher's output."""
    key = os.urandom(len(data))
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(len(data), "big")


def encrypt_storage(
    profile: Profile, live: LocalStorage | S3Storage, *, share: float = 0.3, rename_share: float = 0.3
) -> Encryption:
    """Encrypt ``share`` of the live files (``rename_share`` of those under ``<name>.locked``, the original
    removed) and drop a note at the top and in every folder that had a file encrypted."""
    if not (profile.is_sandbox or profile.drill_target):
        raise DrillRefused(
            "the ransomware fault encrypts the live storage: it runs on the sandbox or a profile marked "
            f"drill_target = true (with --yes), not on profile {profile.name!r}"
        )
    keys = sorted(f.key for f in live.files())
    chosen = random.Random(len(keys)).sample(keys, k=min(len(keys), math.ceil(len(keys) * share)))
    renamed = sorted(chosen[: math.ceil(len(chosen) * rename_share)])
    in_place = sorted(chosen[len(renamed) :])
    folders = sorted({k.rsplit("/", 1)[0] + "/" if "/" in k else "" for k in chosen} | {""})
    notes = tuple(f"{folder}{NOTE_NAME}" for folder in folders)
    for key in in_place:
        _write(live, key, _scramble(_read(live, key)))
    for key in renamed:
        _write(live, key + EXTENSION, _scramble(_read(live, key)))
        _remove(live, key)
    for key in notes:
        _write(live, key, NOTE.encode())
    return Encryption(encrypted=tuple(in_place), renamed=tuple(k + EXTENSION for k in renamed), notes=notes)


def left_in(root: Path) -> bool:
    """A local storage tree a killed drill left encrypted (the fault's note at its top) or with writes blocked."""
    return (root / NOTE_NAME).exists() or writes_blocked(root)


def leave_note_table(target: PgTarget) -> str:
    """The database fault: a table holding the ransom note (nothing else is touched)."""
    with target.connect() as conn:
        conn.execute(f"CREATE TABLE public.{NOTE_TABLE} (id serial PRIMARY KEY, note text NOT NULL)")
        conn.execute(f"INSERT INTO public.{NOTE_TABLE} (note) VALUES (%s)", (NOTE,))
    return f"public.{NOTE_TABLE}"


def _read(live: LocalStorage | S3Storage, key: str) -> bytes:
    if isinstance(live, S3Storage):
        return bytes(live.client.get_object(Bucket=live.bucket, Key=live.prefix + key)["Body"].read())
    return (live.root / key).read_bytes()


def _write(live: LocalStorage | S3Storage, key: str, data: bytes) -> None:
    if isinstance(live, S3Storage):
        live.client.put_object(Bucket=live.bucket, Key=live.prefix + key, Body=data)
        return
    path = live.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("r+b" if path.exists() else "wb") as handle:  # in place: the same inode, as ransomware does
        handle.write(data)
        handle.truncate()


def _remove(live: LocalStorage | S3Storage, key: str) -> None:
    if isinstance(live, S3Storage):
        live.delete([key])
    else:
        (live.root / key).unlink()
