"""Storage speed: drlib against the raw tools on the same files.

Builds a storage tree (default 20,000 files, 2 GiB, incompressible like audio and video), archives
it once, then prints:

- archive restore: drlib's ``restore_local`` (streaming extract into staging, every file's sha256
  checked against the manifest, swap) against ``tar -xzf`` of the same archive (target <= 1.1);
- checksum verification: drlib's ``verify_storage`` against ``sha256sum -c`` of the same files
  (target <= 1.1);
- S3 restore throughput: ``restore_bucket`` of a snapshot back into an emptied bucket on the
  sandbox's S3-compatible endpoint (a subset of the tree, default 2,000 files; 0 skips it).

    python benchmarks/storage_benchmark.py [--files 20000] [--gib 2] [--repeat 2] [--s3-files 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from drlib.config import load_profile
from drlib.sandbox.seed import upload_tree
from drlib.sandbox.stack import Sandbox
from drlib.storage.backends import LocalStorage, S3Storage, s3_client
from drlib.storage.backup import archive_local, snapshot_bucket
from drlib.storage.restore import restore_bucket, restore_local, verify_storage_backup
from drlib.storage.verify import verify_storage
from drlib.units import format_bytes

FOLDERS = ("voiceovers", "videos", "artifacts")


def build_tree(root: Path, *, files: int, total_bytes: int) -> None:
    size = total_bytes // files
    block = os.urandom(size + 4096)
    for i in range(files):
        folder = root / FOLDERS[i % len(FOLDERS)] / f"{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        offset = i % 4096
        (folder / f"file-{i:06d}.bin").write_bytes(i.to_bytes(8, "big") + block[offset : offset + size - 8])


def timed(func) -> float:  # type: ignore[no-untyped-def]
    os.sync()  # start each run with no dirty pages left by the previous one
    started = time.monotonic()
    func()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--s3-files", type=int, default=2_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="drlib-storage-bench-", dir=os.environ.get("BENCH_DIR")))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; work folder {work}")
    try:
        tree = work / "storage"
        print(f"building {args.files} files, {args.gib} GiB ...", flush=True)
        build_tree(tree, files=args.files, total_bytes=int(args.gib * 1024**3))
        started = time.monotonic()
        backup = archive_local(root=tree, backup_dir=work / "backups")
        seconds = time.monotonic() - started
        assert backup.manifest is not None
        print(f"archive_local: {format_bytes(backup.path.stat().st_size)} in {seconds:.1f}s")
        verified = verify_storage_backup(backup)

        raw_best, ours_best = float("inf"), float("inf")
        for attempt in range(args.repeat):
            dest, live = work / f"raw-{attempt}", work / f"live-{attempt}"
            dest.mkdir()
            runs = {
                "raw": lambda d=dest: subprocess.run(["tar", "-xzf", str(backup.path), "-C", str(d)], check=True),
                "drlib": lambda lv=live: restore_local(verified, live_root=lv, confirm=True),
            }
            order = ["raw", "drlib"] if attempt % 2 == 0 else ["drlib", "raw"]  # neither always goes first
            seconds = {}
            for name in order:
                seconds[name] = timed(runs[name])
                shutil.rmtree(dest if name == "raw" else live)
            raw, ours = seconds["raw"], seconds["drlib"]
            raw_best, ours_best = min(raw_best, raw), min(ours_best, ours)
            print(f"  attempt {attempt + 1}: tar -xzf {raw:.2f}s, drlib restore_local {ours:.2f}s", flush=True)
        print(
            f"archive restore: tar -xzf {raw_best:.2f}s, drlib {ours_best:.2f}s (extract + verify every file + "
            f"swap), ratio {ours_best / raw_best:.3f}"
        )

        sums = work / "SHA256SUMS"
        sums.write_text("".join(f"{r.sha256}  {key}\n" for key, r in backup.manifest.files.items()))
        raw_best, ours_best = float("inf"), float("inf")
        for attempt in range(args.repeat):
            raw = timed(lambda: subprocess.run(["sha256sum", "--quiet", "-c", str(sums)], cwd=tree, check=True))
            ours = timed(lambda: verify_storage(LocalStorage(tree), backup.manifest))  # type: ignore[arg-type]
            raw_best, ours_best = min(raw_best, raw), min(ours_best, ours)
            print(f"  attempt {attempt + 1}: sha256sum -c {raw:.2f}s, drlib verify_storage {ours:.2f}s", flush=True)
        print(
            f"checksum verification: sha256sum -c {raw_best:.2f}s, drlib {ours_best:.2f}s, "
            f"ratio {ours_best / raw_best:.3f}"
        )

        if args.s3_files > 0:
            s3_benchmark(work, tree, files=args.s3_files)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def s3_benchmark(work: Path, tree: Path, *, files: int) -> None:
    os.environ["DRLIB_HOME"] = str(work / "home")
    box = Sandbox(work / "home" / "sandbox")
    try:
        box.up(size="small")
        profile = load_profile("sandbox")
        client = s3_client(profile)
        subset = work / "s3-subset"
        for path in sorted(p for p in tree.rglob("*") if p.is_file())[:files]:
            dest = subset / path.relative_to(tree)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, dest)
        client.create_bucket(Bucket="bench-live")
        started = time.monotonic()
        upload_tree(client, "bench-live", subset)
        upload = time.monotonic() - started
        live = S3Storage(client, "bench-live", endpoint=profile.storage.endpoint_url)
        backup = snapshot_bucket(live=live, backups_bucket="backups-bucket")
        assert backup.manifest is not None
        keys = sorted(backup.manifest.files)
        live.delete(keys)
        verified = verify_storage_backup(backup)
        started = time.monotonic()
        restore_bucket(verified, live=live, confirm=True)
        seconds = time.monotonic() - started
        size = backup.manifest.total_bytes
        print(f"S3 upload (boto3, parallel): {len(keys)} objects, {format_bytes(size)} in {upload:.1f}s")
        print(
            f"S3 restore (server-side copy): {len(keys)} objects, {format_bytes(size)} in {seconds:.1f}s = "
            f"{len(keys) / seconds:.0f} objects/s, {size / seconds / 1024**2:.1f} MiB/s"
        )
    finally:
        box.down(purge=True)


if __name__ == "__main__":
    main()
