"""Hostile storage archives: every member that would write or point outside the target is refused,
nothing lands outside, and the live tree is left as it was."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from drlib.exceptions import RestoreFailed
from drlib.storage.archive import UnsafeArchiveMember
from drlib.storage.restore import StorageRestoreResult, restore_local, verify_storage_backup
from tests.archives import file, hostile_archive, link, special


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """``tmp_path`` holds a 0600 secrets file, a sentinel folder and ``site/live``, the live tree;
    staging is made in ``site``, so ``../../`` from a member inside staging reaches ``tmp_path``."""
    secrets = tmp_path / "secrets.env"
    secrets.write_text("API_KEY=never-serve-me\n")
    secrets.chmod(0o600)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "sentinel.txt").write_text("untouched")
    live = tmp_path / "site" / "live"
    (live / "voiceovers").mkdir(parents=True)
    (live / "voiceovers" / "current.wav").write_bytes(b"live audio")
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple[str, bytes | str | None, int]]:
    """Every path under ``root`` but the backups: its type, content or link target, and link count."""
    seen: dict[str, tuple[str, bytes | str | None, int]] = {}
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "backups"]
        for name in dirnames + names:
            path = Path(dirpath) / name
            info = path.lstat()
            if path.is_symlink():
                seen[str(path)] = ("link", os.readlink(path), info.st_nlink)
            elif path.is_dir():
                seen[str(path)] = ("dir", None, info.st_nlink)
            else:
                seen[str(path)] = ("file", path.read_bytes(), info.st_nlink)
    return seen


HOSTILE = {
    "a hard link with a ../ target": ([link("artifacts/x", "../../secrets.env", hard=True)], "artifacts/x"),
    "a hard link whose target climbs out midway": (
        [link("artifacts/x", "voiceovers/../../../secrets.env", hard=True)],
        "artifacts/x",
    ),
    "a hard link with an absolute target": ([link("artifacts/x", "{root}/secrets.env", hard=True)], "artifacts/x"),
    "a hard link named with ../": ([link("../../stolen", "voiceovers/ok.wav", hard=True)], "../../stolen"),
    "a member named with ../": ([file("videos/../../../outside/evil.txt")], "videos/../../../outside/evil.txt"),
    "an absolute member name": ([file("{root}/outside/abs.txt")], "{root}/outside/abs.txt"),
    "a symbolic link to /etc": ([link("videos/etc", "/etc"), file("videos/etc/drlib-pwned")], "videos/etc"),
    "a chain of symbolic links each harmless alone": (
        [link("s", "."), link("s/t", ".."), file("s/t/evil")],
        "s/t",
    ),
    "a link made unsafe by a later link": ([link("b", "a/.."), link("a", "."), file("b/evil")], "'a'"),
    "a character device": ([special("videos/dev", tarfile.CHRTYPE)], "videos/dev"),
    "a fifo": ([special("videos/fifo", tarfile.FIFOTYPE)], "videos/fifo"),
    "a sparse file": ([special("videos/sparse", tarfile.GNUTYPE_SPARSE)], "videos/sparse"),
    "a file written through a symbolic link": (
        [link("videos/current", "../artifacts"), file("videos/current/evil.txt")],
        "videos/current/evil.txt",
    ),
    "a file replacing a symbolic link": (
        [link("videos/cfg", "../voiceovers/ok.wav"), file("videos/cfg")],
        "videos/cfg",
    ),
    "a hard link to a symbolic link": (
        [link("videos/s", "../voiceovers/ok.wav"), link("artifacts/h", "videos/s", hard=True)],
        "artifacts/h",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_archive_member_is_refused_and_nothing_is_written_outside(site: Path, case: str) -> None:
    raw, named = HOSTILE[case]
    members = [(_with_root(info, site), data) for info, data in raw]
    backup = hostile_archive(site / "backups", members)
    before = snapshot(site)
    with pytest.raises(RestoreFailed) as caught:
        restore_local(verify_storage_backup(backup), live_root=site / "site" / "live", confirm=True)
    assert isinstance(caught.value.__cause__, UnsafeArchiveMember)
    assert caught.value.__cause__.code == "unsafe-archive"
    assert named.format(root=site) in caught.value.message and "refusing" in caught.value.message
    assert snapshot(site) == before  # live tree, secrets, sentinel as they were; staging gone
    assert not Path("/etc/drlib-pwned").exists()


def _with_root(info: tarfile.TarInfo, root: Path) -> tarfile.TarInfo:
    info.name, info.linkname = info.name.format(root=root), info.linkname.format(root=root)
    return info


def test_links_that_stay_inside_the_tree_are_restored(site: Path) -> None:
    backup = hostile_archive(
        site / "backups",
        [link("videos/latest.wav", "../voiceovers/ok.wav"), link("artifacts/copy.wav", "voiceovers/ok.wav", hard=True)],
    )
    live = site / "site" / "live"
    result = restore_local(verify_storage_backup(backup), live_root=live, confirm=True)
    assert isinstance(result, StorageRestoreResult)
    assert (live / "videos" / "latest.wav").read_bytes() == b"abc"
    assert (live / "artifacts" / "copy.wav").stat().st_ino == (live / "voiceovers" / "ok.wav").stat().st_ino


def test_a_member_with_a_setuid_mode_is_restored_without_it(site: Path) -> None:
    info, data = file("voiceovers/run.sh")
    info.mode = 0o4777
    backup = hostile_archive(site / "backups", [(info, data)])
    live = site / "site" / "live"
    restore_local(verify_storage_backup(backup), live_root=live, confirm=True)
    assert (live / "voiceovers" / "run.sh").stat().st_mode & 0o7777 == 0o755
