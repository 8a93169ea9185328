"""Ransomware on the live storage, found against a storage backup's per-file manifest.

Four detectors, each naming the files it flags:

- **changed files**: the sha256 no longer matches the manifest's (every file is hashed);
- **high-entropy rewrites**: a changed file whose bytes are now as random as encrypted bytes while the
  backed-up copy was not (a file already high-entropy in the backup, compressed media, is only
  "changed", unless its format signature is gone); a file new since the backup that is as random as that
  and has no known format signature;
- **ransom notes**: short text that reads like one (:mod:`drlib.ransom_notes`), or a file new or changed
  since the backup named like one (``README_TO_DECRYPT.txt`` …) that is neither long nor a known media or
  document format; a backed-up, unchanged file is not a note by its name alone (``docs/how_to_restore.md``);
- **mass renames**: files gone from their backed-up name with a file of the same name plus (or instead of)
  a new extension in their place (``a.wav`` → ``a.wav.locked`` or ``a.locked``), counted per new extension:
  ``mass_rename_min`` files with one extension, or any of them as random as encrypted bytes (a file added
  beside an original still there, ``a.mp3`` next to ``a.wav``, is a rename only when it is that random).

What counts as affected (and dates the attack): encrypted files, renamed files and notes. A changed file
that stays low-entropy, or was high-entropy already, is reported as changed but is no alarm: applications
rewrite files, and a low-entropy rewrite is not encryption. The first affected time is the earliest
modification time of an affected file (S3: its LastModified). An attacker can set a file's mtime back: the
clean-backup check (notes and random files in the backup itself) is the second line.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from drlib.checks import CheckResult, Checks, check
from drlib.exceptions import BackupCorrupt, BackupNotFound
from drlib.hashing import parallel_map
from drlib.ransom_notes import NOTE_MAX_BYTES, note_name, reads_like_note
from drlib.storage.backends import LocalStorage, S3Storage, StoredFile
from drlib.storage.catalogue import StorageBackup
from drlib.storage.restore import VerifiedStorageBackup
from drlib.storage.samples import Sample, sample_backup, sample_live

FindingKind = Literal["encrypted", "renamed", "note", "changed", "missing"]
AFFECTED_KINDS: tuple[FindingKind, ...] = ("encrypted", "renamed", "note")
#: a new extension on this many files is a mass rename (fewer: only when they are also encrypted)
MASS_RENAME_MIN = 3
NAMED = 10  # how many files a check names


class BackupNotClean(BackupCorrupt):
    """A storage backup taken after the attack began, or one holding what the attack leaves."""

    code = "backup-not-clean"


@dataclass(frozen=True)
class Finding:
    """One file a detector flagged (``original``: the backed-up file a renamed one replaced)."""

    key: str
    kind: FindingKind
    detail: str
    mtime: float | None = None
    original: str | None = None
    #: renamed: the extension the file gained (``.locked``)
    extension: str | None = None

    @property
    def affected(self) -> bool:
        return self.kind in AFFECTED_KINDS

    def row(self) -> dict[str, Any]:
        modified = datetime.fromtimestamp(self.mtime, UTC).isoformat(timespec="seconds") if self.mtime else ""
        return {"file": self.key, "finding": self.kind, "modified_utc": modified, "detail": self.detail}


@dataclass(frozen=True)
class TamperScan:
    """What the detectors found in ``storage`` against the backup ``baseline``."""

    storage: str
    baseline: str
    live_files: int
    findings: tuple[Finding, ...]
    #: files new since the backup that no detector flagged
    new_files: tuple[str, ...]
    seconds: float
    #: (key, sha256) of backed-up, unchanged files named like a note whose text is not one (``docs/how_to_restore.md``)
    benign_note_names: tuple[tuple[str, str], ...] = ()

    @property
    def affected(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.affected)

    @property
    def clean(self) -> bool:
        return not self.affected

    def of_kind(self, kind: FindingKind) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def first_affected(self) -> datetime | None:
        """The earliest modification time of an affected file."""
        times = [f.mtime for f in self.affected if f.mtime is not None]
        return datetime.fromtimestamp(min(times), UTC) if times else None

    def describe(self) -> str:
        if self.clean:
            return "no encrypted file, ransom note or mass rename"
        counts = {kind: len(self.of_kind(kind)) for kind in AFFECTED_KINDS}
        return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)

    @property
    def extensions(self) -> set[str]:
        """The extensions the renamed files gained."""
        return {f.extension.lower() for f in self.of_kind("renamed") if f.extension}

    def rows(self) -> list[dict[str, Any]]:
        order: tuple[FindingKind, ...] = (*AFFECTED_KINDS, "changed", "missing")
        return [f.row() for f in sorted(self.findings, key=lambda f: order.index(f.kind))]

    def checks(self, *, prefix: str = "", warn_only: bool = False) -> Checks:
        """One check per detector, and ``no_ransomware`` over all of them; a changed file alone only warns."""

        def flagged(name: str, kind: FindingKind, what: str) -> CheckResult:
            found = self.of_kind(kind)
            return check(
                f"{prefix}{name}",
                not found,
                expected=0,
                observed=len(found),
                detail=_names([f.key for f in found]) if found else f"no {what} in {self.storage}",
                warn_only=warn_only,
            )

        changed = [f.key for f in self.findings if f.kind == "changed"]
        return Checks(
            [
                flagged("ransom_notes", "note", "ransom note"),
                flagged("high_entropy_rewrites", "encrypted", "file rewritten as random bytes"),
                flagged("mass_renames", "renamed", "file renamed to a new extension"),
                check(
                    f"{prefix}changed_files",
                    not changed,
                    expected=f"every file matches {self.baseline}",
                    observed=f"{len(changed)} changed, not encrypted",
                    detail=_names(changed) if changed else "every other file matches the backup's sha256",
                    warn_only=True,
                ),
                check(
                    f"{prefix}no_ransomware",
                    self.clean,
                    expected="nothing encrypted, renamed or left as a note",
                    observed=self.describe(),
                    detail=f"first affected {self.first_affected.isoformat(timespec='seconds')}"
                    if self.first_affected
                    else f"against {self.baseline}",
                    warn_only=warn_only,
                ),
            ]
        )


def _names(keys: list[str]) -> str:
    more = f" (+{len(keys) - NAMED} more)" if len(keys) > NAMED else ""
    return ", ".join(keys[:NAMED]) + more


def _digest_or_none(storage: LocalStorage | S3Storage, key: str) -> str | None:
    try:
        return storage.sha256(key)
    except OSError:
        return None


def _read_small(storage: LocalStorage | S3Storage, item: StoredFile) -> bytes:
    """The bytes of a file short enough to be a note (b"" when longer or unreadable)."""
    if item.size > NOTE_MAX_BYTES:
        return b""
    try:
        if isinstance(storage, S3Storage):
            body = storage.client.get_object(Bucket=storage.bucket, Key=storage.prefix + item.key)["Body"]
            with body:
                return bytes(body.read())
        return (storage.root / item.key).read_bytes()
    except OSError:
        return b""


def rename_pairs(new: list[str], backed_up: set[str]) -> dict[str, tuple[str, str]]:
    """New file -> (the backed-up file it is named after, the extension it gained): ``a.wav.locked`` or
    ``a.locked`` for ``a.wav``."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    for key in backed_up:
        folder, _, name = key.rpartition("/")
        if "." in name:
            by_stem[f"{folder}/{name.rsplit('.', 1)[0]}"].append(key)
    pairs: dict[str, tuple[str, str]] = {}
    for key in new:
        folder, _, name = key.rpartition("/")
        dots = [i for i, ch in enumerate(name) if ch == "." and i]
        appended = next(
            (key[: len(key) - len(name) + i] for i in reversed(dots) if key[: len(key) - len(name) + i] in backed_up),
            None,
        )
        if appended is not None:
            pairs[key] = (appended, key[len(appended) :])
        elif dots:
            stem, extension = name[: dots[-1]], name[dots[-1] :]
            originals = [k for k in by_stem.get(f"{folder}/{stem}", []) if k != key]
            if len(originals) == 1:
                pairs[key] = (originals[0], extension)
    return pairs


def scan_storage(
    live: LocalStorage | S3Storage,
    baseline: VerifiedStorageBackup,
    *,
    client: Any = None,
    mass_rename_min: int = MASS_RENAME_MIN,
    workers: int | None = None,
) -> TamperScan:
    """Run every detector on ``live`` against ``baseline`` (``client``: to sample a bucket snapshot)."""
    started = time.monotonic()
    files = {f.key: f for f in live.files()}
    manifest = baseline.manifest.files
    common = sorted(files.keys() & manifest.keys())
    digests = parallel_map(lambda k: _digest_or_none(live, k), common, workers=workers)
    unreadable = {k for k, d in zip(common, digests, strict=True) if d is None}
    changed = [k for k, d in zip(common, digests, strict=True) if d != manifest[k].sha256]
    new = sorted(files.keys() - manifest.keys())
    readable = [k for k in changed + new if k not in unreadable]
    live_samples = sample_live(live, ((k, files[k].size) for k in readable))
    backup_samples = sample_backup(baseline.backup, set(changed) - unreadable, client=client)
    texts = dict(zip(changed + new, parallel_map(lambda k: _read_small(live, files[k]), changed + new), strict=True))

    findings: list[Finding] = []
    named = [k for k in files if note_name(k)]
    kept = [k for k in named if k not in texts]  # backed up and unchanged: a note only if it reads like one
    kept_texts = dict(zip(kept, parallel_map(lambda k: _read_small(live, files[k]), kept), strict=True))
    notes = sorted(
        {k for k, text in (texts | kept_texts).items() if reads_like_note(text)}
        | {k for k in named if k in texts and not _media_or_large(files[k], live_samples.get(k))}
    )
    benign = tuple(sorted((k, manifest[k].sha256) for k in kept if k not in notes))
    for key in notes:
        how = "named like a ransom note" if note_name(key) else "reads like a ransom note"
        findings.append(
            Finding(key, "note", how + (" (the backup has it too)" if key in manifest else ""), files[key].mtime)
        )
    renamed = _flagged_renames(
        rename_pairs([k for k in new if k not in notes], set(manifest)), live_samples, mass_rename_min, set(files)
    )
    for key, (original, suffix, count) in renamed.items():
        where = "gone" if original not in files else "still there"
        detail = f"{original} ({where}) renamed with {suffix!r}: {count} file(s) got it"
        findings.append(Finding(key, "renamed", detail, files[key].mtime, original, suffix))
    for key in changed:
        findings.append(_changed(key, files[key], live_samples.get(key), backup_samples.get(key), unreadable))
    listed = []
    for key in new:
        if key in notes or key in renamed:
            continue
        sample = live_samples.get(key)
        if sample is not None and sample.looks_encrypted:
            findings.append(
                Finding(
                    key,
                    "encrypted",
                    f"new since the backup, as random as encrypted bytes ({sample.entropy} bits/byte), no known "
                    "format signature",
                    files[key].mtime,
                )
            )
        else:
            listed.append(key)
    explained = {original for original, _, _ in renamed.values()}
    findings += [
        Finding(key, "missing", "in the backup, gone from the live storage (not renamed)")
        for key in sorted(manifest.keys() - files.keys() - explained)
    ]
    return TamperScan(
        storage=live.description,
        baseline=baseline.backup.name,
        live_files=len(files),
        findings=tuple(findings),
        new_files=tuple(listed),
        seconds=round(time.monotonic() - started, 2),
        benign_note_names=benign,
    )


def _media_or_large(item: StoredFile, sample: Sample | None) -> bool:
    """Too long to be a note, or a known media or document format: a name alone does not make it a note."""
    return item.size > NOTE_MAX_BYTES or bool(sample and sample.signature)


def _flagged_renames(
    pairs: dict[str, tuple[str, str]], samples: dict[str, Sample], mass_rename_min: int, live: set[str]
) -> dict[str, tuple[str, str, int]]:
    """The pairs whose new extension is a mass rename: ``mass_rename_min`` files, or any of them encrypted; a
    pair whose original is still in ``live`` counts only when the new file is encrypted."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key, (original, suffix) in pairs.items():
        if original in live and not (key in samples and samples[key].looks_encrypted):
            continue  # a file added beside its original (a.wav → a.mp3, both kept) is not a rename
        groups[suffix.lower()].append(key)
    flagged: dict[str, tuple[str, str, int]] = {}
    for suffix, keys in groups.items():
        encrypted = any(samples[k].looks_encrypted for k in keys if k in samples)
        if len(keys) >= mass_rename_min or encrypted:
            flagged.update({k: (pairs[k][0], suffix, len(keys)) for k in keys})
    return flagged


def _changed(key: str, item: StoredFile, now: Sample | None, then: Sample | None, unreadable: set[str]) -> Finding:
    """A file whose sha256 changed: encrypted when its bytes became random, else only changed."""
    if key in unreadable or now is None:
        return Finding(key, "changed", "cannot be read (permissions, or it vanished while read)", item.mtime)
    before = f"{then.entropy} in the backup" if then and then.entropy is not None else "not judged in the backup"
    signature_lost = bool(then and then.signature and not now.signature)
    if now.high and (not (then and then.high) or signature_lost):
        lost = f"; its {then.signature} signature is gone" if then and signature_lost else ""
        return Finding(key, "encrypted", f"entropy {now.entropy} bits/byte, {before}{lost}", item.mtime)
    if now.entropy is None:
        why = "too short to judge its entropy"
    elif now.high:
        why = f"high-entropy, as it was in the backup ({before}): not counted as encryption"
    else:
        why = f"entropy {now.entropy} ({before}): a low-entropy rewrite is not counted as encryption"
    return Finding(key, "changed", why, item.mtime)


def clean_backup_checks(
    verified: VerifiedStorageBackup,
    *,
    extensions: set[str],
    client: Any = None,
    prefix: str = "backup_clean:",
    benign: tuple[tuple[str, str], ...] = (),
) -> tuple[VerifiedStorageBackup, Checks]:
    """Is the (verified) backup free of what the attack leaves: ransom notes, files with the attack's new
    ``extensions``, and files as random as encrypted bytes without a known format signature (every file is
    sampled)? Its integrity checks come first. ``benign``: (key, sha256) of files named like a note that the
    live scan read and found not to be one (:attr:`TamperScan.benign_note_names`): the same bytes pass here."""
    keys = sorted(verified.manifest.files)
    cleared = set(benign)
    notes = [k for k in keys if note_name(k) and (k, verified.manifest.files[k].sha256) not in cleared]
    renamed = [k for k in keys if any(k.lower().endswith(ext) for ext in extensions)]
    samples = sample_backup(verified.backup, None, client=client)
    random = sorted(k for k, s in samples.items() if s.looks_encrypted)

    def none_of(name: str, found: list[str], what: str) -> CheckResult:
        return check(
            f"{prefix}{name}",
            not found,
            expected=0,
            observed=len(found),
            detail=_names(found) if found else f"no {what} in {verified.backup.name}",
        )

    return verified, Checks(
        [
            *verified.checks,
            none_of("ransom_notes", notes, "file named like a ransom note"),
            none_of(
                "ransom_extensions", renamed, "file with " + (", ".join(sorted(extensions)) or "the attack's extension")
            ),
            none_of("random_files", random, f"file as random as encrypted bytes (of {len(samples)} sampled)"),
        ]
    )


Judge = Callable[[StorageBackup], tuple[VerifiedStorageBackup, Checks]]


def pick_clean_backup(
    pool: list[StorageBackup], *, first_affected: datetime, selection: str, judge: Judge
) -> tuple[VerifiedStorageBackup, Checks, dict[str, str]]:
    """The newest backup of ``pool`` taken before ``first_affected`` that ``judge`` finds clean (those passed
    over, with why), or the one named ``selection``: refused when taken at or after ``first_affected`` or not
    clean."""
    if selection not in ("latest", ""):
        wanted = Path(selection).name
        named = [b for b in pool if b.name == wanted]
        if not named:
            raise BackupNotFound(f"no storage backup named {wanted!r}; available: {', '.join(b.name for b in pool)}")
        if named[0].created_at >= first_affected:
            raise BackupNotClean(
                f"storage backup {wanted} was taken at {named[0].created_at.isoformat()}, after the first affected "
                f"file ({first_affected.isoformat()}): it may hold encrypted files. Pick one taken before, or "
                "leave storage_backup = 'latest'"
            )
        candidates = named
    else:
        candidates = sorted((b for b in pool if b.created_at < first_affected), key=lambda b: b.created_at)[::-1]
    rejected: dict[str, str] = {}
    for backup in candidates:
        try:
            verified, checks = judge(backup)
        except BackupCorrupt as exc:  # truncated, altered, no manifest: passed over like an unclean one
            if len(candidates) == 1 and selection not in ("latest", ""):
                raise
            rejected[backup.name] = exc.message
            continue
        if checks.passed:
            return verified, checks, rejected
        rejected[backup.name] = "; ".join(f"{c.name}: {c.detail}" for c in checks.failures)
    if selection not in ("latest", ""):
        raise BackupNotClean(f"storage backup {candidates[0].name} is not clean ({rejected[candidates[0].name]})")
    raise BackupNotFound(
        f"no clean storage backup taken before the first affected time {first_affected.isoformat()}"
        + (f" (not clean: {rejected})" if rejected else f" ({len(pool)} in the catalogue)")
        + ": look for an older copy off-site (the backups bucket's older versions)"
    )
