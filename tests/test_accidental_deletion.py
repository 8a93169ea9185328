"""Accidental deletion undone selectively: deleted rows found by primary key against a scratch copy of
the backup (with the rows that depended on them), shown with secrets masked, put back in foreign-key
order in one transaction, rows written since kept; deleted files copied back, never over a file that
exists; the command and the drill, which fails when the undo does not bring everything back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from drlib.cli import main
from drlib.exceptions import BackupCorrupt, ConfirmationRequired, ParameterError
from drlib.lock import acquire, stack_key
from drlib.postgres.backup import backup_database
from drlib.postgres.connection import PgTarget
from drlib.postgres.integrity import verify_backup
from drlib.postgres.restore import restore_to_new_database
from drlib.postgres.undelete import MASK, UndeleteFailed, find_deleted, reinsert, survey_deleted
from drlib.processes import RUN_MARKER
from drlib.results import DrillResults
from drlib.scenarios.accidental_deletion import _plan_lines, rows_kept_check, split_list
from drlib.storage.backends import LocalStorage
from drlib.storage.backup import archive_local
from drlib.storage.catalogue import list_storage_backups, select_storage_backup
from drlib.storage.manifest import manifest_path_for
from drlib.storage.restore import verify_storage_backup
from drlib.storage.undelete import files_back_check, find_missing_files, normalise_paths, restore_missing_files
from tests import test_cli_restore
from tests.scratchdb import Made

SHOP = (
    "CREATE TABLE customers (id int PRIMARY KEY, email text UNIQUE NOT NULL, password_hash text)",
    "CREATE TABLE orders (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id int NOT NULL "
    "REFERENCES customers (id), total numeric(10, 2), total_cents int GENERATED ALWAYS AS ((total * 100)::int) STORED)",
    "CREATE TABLE lines (order_id int REFERENCES orders (id), n int, item text, PRIMARY KEY (order_id, n))",
    "CREATE TABLE notes (id serial PRIMARY KEY, body text)",  # no key to customers: never touched
    "INSERT INTO customers SELECT g, 'c' || g || '@example.com', 'hash-' || g FROM generate_series(1, 20) g",
    "INSERT INTO orders (customer_id, total) SELECT 1 + g % 20, g FROM generate_series(1, 60) g",
    "INSERT INTO lines SELECT o.id, k, 'item ' || k FROM orders o, generate_series(1, 3) k",
    "INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 5) g",
)


def run(db: PgTarget, *statements: str) -> None:
    with db.connect() as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def count(db: PgTarget, query: str) -> int:
    with db.connect() as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else -1


@pytest.fixture
def shop(make_db: Made, tmp_path: Path) -> tuple[PgTarget, PgTarget]:
    """(live, scratch): a shop database backed up, then customer 3 deleted with their orders and order
    lines, and new rows written after the backup; the scratch database restored from the backup."""
    live = make_db(*SHOP)
    verified = verify_backup(backup_database(target=live, backup_dir=tmp_path))
    run(
        live,
        "INSERT INTO customers VALUES (21, 'new@example.com', 'x')",  # written after the backup
        "INSERT INTO orders (customer_id, total) VALUES (21, 5)",
        "DELETE FROM lines WHERE order_id IN (SELECT id FROM orders WHERE customer_id = 3)",
        "DELETE FROM orders WHERE customer_id = 3",
        "DELETE FROM customers WHERE id = 3",
    )
    scratch = restore_to_new_database(verified, target=live, jobs=2, confirm=True, new_name=f"{live.name}_scratch")
    assert not isinstance(scratch, type(None))
    return live, live.with_database(f"{live.name}_scratch")


def test_the_deleted_rows_and_their_dependants_are_found_parents_first_with_secrets_masked(
    shop: tuple[PgTarget, PgTarget],
) -> None:
    live, scratch = shop
    plan = find_deleted(live=live, scratch=scratch, table="customers", keys=["3"])
    assert [(t.table.qualified, t.count) for t in plan.tables] == [
        ("public.customers", 1),
        ("public.orders", 3),
        ("public.lines", 9),
    ]
    assert plan.tables[0].keys == ("3",) and plan.tables[0].sample[0]["password_hash"] == MASK
    assert plan.tables[1].via == "public.orders.orders_customer_id_fkey"
    alone = find_deleted(live=live, scratch=scratch, table="customers", keys=["3"], dependants=False)
    assert [t.table.qualified for t in alone.tables] == ["public.customers"]


def test_keys_still_live_or_never_backed_up_are_named(shop: tuple[PgTarget, PgTarget]) -> None:
    live, scratch = shop
    plan = find_deleted(live=live, scratch=scratch, table="customers", keys=["3", "4", "99"])
    assert plan.tables[0].count == 1
    assert plan.not_missing == {"4": "still in the live database", "99": "not in the backup"}


def test_rows_deleted_under_a_parent_that_is_still_there_are_found_by_its_key(
    shop: tuple[PgTarget, PgTarget],
) -> None:
    live, scratch = shop
    run(live, "DELETE FROM lines WHERE order_id IN (SELECT id FROM orders WHERE customer_id = 4)")
    plan = find_deleted(live=live, scratch=scratch, table="customers", keys=["4"])
    assert [(t.table.qualified, t.count) for t in plan.tables] == [("public.lines", 9)]
    assert plan.not_missing == {"4": "still in the live database"}


def test_putting_them_back_keeps_every_row_written_since(shop: tuple[PgTarget, PgTarget]) -> None:
    live, scratch = shop
    plan = find_deleted(live=live, scratch=scratch, table="customers", keys=["3"])
    with pytest.raises(ConfirmationRequired):
        reinsert(plan, live=live, scratch=scratch, table="customers", keys=["3"])
    done = reinsert(plan, live=live, scratch=scratch, table="customers", keys=["3"], confirm=True)
    assert done.inserted == {"public.customers": 1, "public.orders": 3, "public.lines": 9}
    assert count(live, "SELECT count(*) FROM customers WHERE id IN (3, 21)") == 2  # back, and the new one kept
    assert count(live, "SELECT count(*) FROM orders WHERE customer_id = 21") == 1
    assert count(live, "SELECT count(*) FROM orders o JOIN lines l ON l.order_id = o.id WHERE customer_id = 3") == 9
    assert count(live, "SELECT count(*) FROM orders WHERE customer_id = 3 AND total_cents = total * 100") == 3
    assert find_deleted(live=live, scratch=scratch, table="customers", keys=["3"]).total == 0
    assert survey_deleted(live=live, scratch=scratch) == {
        "public.customers": 0,
        "public.lines": 0,
        "public.notes": 0,
        "public.orders": 0,
    }


def test_a_row_written_since_that_the_undo_removes_fails_the_kept_check(shop: tuple[PgTarget, PgTarget]) -> None:
    live, scratch = shop
    # the fault: a live trigger that deletes the order written after the backup when orders are inserted
    run(
        live,
        "CREATE FUNCTION drop_new() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN DELETE FROM orders WHERE customer_id = 21; RETURN NULL; END $$",
        "CREATE TRIGGER drop_new AFTER INSERT ON orders FOR EACH STATEMENT EXECUTE FUNCTION drop_new()",
    )
    plan = find_deleted(live=live, scratch=scratch, table="customers", keys=["3"])
    done = reinsert(plan, live=live, scratch=scratch, table="customers", keys=["3"], confirm=True)
    kept = rows_kept_check(done)
    assert kept.status == "fail" and "public.orders" in str(kept.observed), kept
    assert done.inserted["public.orders"] == 3  # what was copied, not what the counts say


def test_a_value_taken_since_rolls_everything_back_and_says_which(shop: tuple[PgTarget, PgTarget]) -> None:
    live, scratch = shop
    plan = find_deleted(live=live, scratch=scratch, table="customers", keys=["3"])
    run(live, "INSERT INTO customers VALUES (30, 'c3@example.com', 'y')")  # the deleted user's email, reused
    with pytest.raises(Exception, match=r"customers_email_key.*Nothing was inserted") as info:
        reinsert(plan, live=live, scratch=scratch, table="customers", keys=["3"], confirm=True)
    assert "c3@example.com" not in str(info.value) or "Key (email)" in str(info.value)
    assert count(live, "SELECT count(*) FROM orders WHERE customer_id = 3") == 0


def test_a_plan_the_live_database_no_longer_matches_is_refused(shop: tuple[PgTarget, PgTarget]) -> None:
    live, scratch = shop
    plan = find_deleted(live=live, scratch=scratch, table="customers")
    run(live, "INSERT INTO customers VALUES (3, 'c3@example.com', 'put back by hand')")
    with pytest.raises(UndeleteFailed, match="changed since the plan"):
        reinsert(plan, live=live, scratch=scratch, table="customers", confirm=True)
    assert count(live, "SELECT count(*) FROM orders WHERE customer_id = 3") == 0


def test_tables_without_a_key_and_unknown_tables_are_refused(shop: tuple[PgTarget, PgTarget]) -> None:
    live, scratch = shop
    run(live, "CREATE TABLE loose (a int)")
    run(scratch, "CREATE TABLE loose (a int)")
    with pytest.raises(UndeleteFailed, match="no primary key"):
        find_deleted(live=live, scratch=scratch, table="loose")
    with pytest.raises(ParameterError, match="not in the backup"):
        find_deleted(live=live, scratch=scratch, table="nope; DROP TABLE customers")
    assert count(live, "SELECT count(*) FROM customers") == 20


def test_a_two_column_key_is_given_as_pairs(shop: tuple[PgTarget, PgTarget]) -> None:
    live, scratch = shop
    order = count(scratch, "SELECT min(id) FROM orders WHERE customer_id = 3")
    plan = find_deleted(live=live, scratch=scratch, table="lines", keys=[f"{order},2"])
    assert [(t.table.qualified, t.count) for t in plan.tables] == [("public.lines", 1)]
    with pytest.raises(ParameterError, match="2-column key"):
        find_deleted(live=live, scratch=scratch, table="lines", keys=["7"])


TREE = (
    "CREATE TABLE teams (id int PRIMARY KEY)",
    # a tree of rows (boss), and a table the discovery reaches before emp that references emp
    'CREATE TABLE emp (id int PRIMARY KEY, team int REFERENCES teams ON DELETE CASCADE, "apiKey" text, '
    "boss int REFERENCES emp ON DELETE CASCADE)",
    "CREATE TABLE a_badge (id int PRIMARY KEY, team int REFERENCES teams ON DELETE CASCADE, "
    "emp int REFERENCES emp ON DELETE CASCADE)",
    "CREATE TABLE sessions (token text PRIMARY KEY, emp int REFERENCES emp ON DELETE CASCADE)",
    # a cycle: emp -> sessions -> emp (a deferrable key: put back in either order, checked at commit)
    "ALTER TABLE emp ADD last_session text REFERENCES sessions DEFERRABLE",
    "CREATE TABLE shifts (at timestamptz PRIMARY KEY)",
    # not deleted with their author: only unlinked
    "CREATE TABLE docs (id int PRIMARY KEY, author int REFERENCES emp ON DELETE SET NULL)",
    "INSERT INTO teams VALUES (1), (2)",
    "INSERT INTO emp VALUES (1, 1, 'k1', NULL), (2, 2, 'k2', 1), (3, 2, 'k3', 2), (4, 2, 'k4', NULL)",
    "INSERT INTO a_badge VALUES (10, 1, 1)",
    "INSERT INTO sessions VALUES ('s3cr3t-session-token', 1)",
    "UPDATE emp SET last_session = 's3cr3t-session-token' WHERE id = 1",
    "INSERT INTO docs VALUES (1, 1), (2, 3), (3, NULL), (4, 4)",
    "INSERT INTO shifts VALUES ('2024-01-02 03:04:05+00'), ('2024-01-03 03:04:05+00')",
)


def test_a_tree_of_rows_comes_back_whole_parents_first_with_secret_keys_masked(make_db: Made, tmp_path: Path) -> None:
    live = make_db(*TREE)
    verified = verify_backup(backup_database(target=live, backup_dir=tmp_path))
    run(live, "DELETE FROM teams WHERE id = 1", "DELETE FROM shifts WHERE at < '2024-01-03'")
    restore_to_new_database(verified, target=live, jobs=1, confirm=True, new_name=f"{live.name}_scratch")
    scratch = live.with_database(f"{live.name}_scratch")
    plan = find_deleted(live=live, scratch=scratch, table="teams", keys=["1"])
    found = {t.table.qualified: t for t in plan.tables}
    assert found["public.emp"].keys == ("1", "2", "3")  # 2 and 3 went with their boss, in another team
    assert [t.table.qualified for t in plan.tables].index("public.a_badge") > 1  # after emp, which it references
    assert found["public.sessions"].keys == (MASK,) and found["public.emp"].sample[0]["apiKey"] == MASK
    assert "s3cr3t" not in "\n".join(_plan_lines(plan))
    assert plan.relinks == {"public.docs.docs_author_fkey": 2}  # docs 1 and 2 lost their author
    run(live, "UPDATE docs SET author = 4 WHERE id = 2")  # linked again by hand since: left as it is
    with pytest.raises(UndeleteFailed, match="changed since the plan"):
        reinsert(plan, live=live, scratch=scratch, table="teams", keys=["1"], confirm=True)
    plan = find_deleted(live=live, scratch=scratch, table="teams", keys=["1"])
    done = reinsert(plan, live=live, scratch=scratch, table="teams", keys=["1"], confirm=True)
    assert done.inserted == {"public.teams": 1, "public.emp": 3, "public.a_badge": 1, "public.sessions": 1}
    assert done.relinked == {"public.docs.docs_author_fkey": 1}
    assert count(live, "SELECT count(*) FROM docs WHERE (id, author) IN ((1, 1), (2, 4)) AND author IS NOT NULL") == 2
    assert find_deleted(live=live, scratch=scratch, table="teams", keys=["1"]).describe() == "no deleted rows"
    shifts = find_deleted(live=live, scratch=scratch, table="shifts")
    assert find_deleted(live=live, scratch=scratch, table="shifts", keys=shifts.tables[0].keys).total == 1  # as shown
    # the same number of rows missing, but not the rows shown: refused
    run(live, "INSERT INTO shifts VALUES ('2024-01-02 03:04:05+00')", "DELETE FROM shifts WHERE at > '2024-01-02'")
    with pytest.raises(UndeleteFailed, match="not the same rows"):
        reinsert(shifts, live=live, scratch=scratch, table="shifts", confirm=True)


def test_a_table_reached_along_two_keys_gets_the_rows_of_both(make_db: Made, tmp_path: Path) -> None:
    live = make_db(
        "CREATE TABLE customers (id int PRIMARY KEY)",
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers)",
        # a payment hangs from an order, from a customer (credit), or both
        "CREATE TABLE payments (id int PRIMARY KEY, customer_id int REFERENCES customers, "
        "order_id int REFERENCES orders)",
        "INSERT INTO customers VALUES (1), (2)",
        "INSERT INTO orders VALUES (10, 1), (20, 2)",
        "INSERT INTO payments VALUES (100, 1, NULL), (101, NULL, 10), (102, 1, 10), (200, 2, 20), (201, NULL, 20)",
    )
    verified = verify_backup(backup_database(target=live, backup_dir=tmp_path))
    run(
        live,
        "DELETE FROM payments WHERE customer_id = 1 OR order_id = 10",
        "DELETE FROM orders WHERE customer_id = 1",
        "DELETE FROM customers WHERE id = 1",
    )
    restore_to_new_database(verified, target=live, jobs=1, confirm=True, new_name=f"{live.name}_scratch")
    scratch = live.with_database(f"{live.name}_scratch")
    plan = find_deleted(live=live, scratch=scratch, table="customers", keys=["1"])
    found = {t.table.qualified: t.keys for t in plan.tables}
    assert found["public.payments"] == ("100", "101", "102"), found  # 101 only through its order
    reinsert(plan, live=live, scratch=scratch, table="customers", keys=["1"], confirm=True)
    assert count(live, "SELECT count(*) FROM payments") == 5


# -- files -----------------------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> tuple[LocalStorage, Path]:
    root = tmp_path / "storage"
    for folder in ("voiceovers", "videos"):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            (root / folder / f"{i}.bin").write_bytes(f"{folder}-{i}".encode() * 100)
    backups = tmp_path / "backups"
    archive_local(root=root, backup_dir=backups)
    return LocalStorage(root), backups


def test_deleted_files_come_back_and_existing_ones_are_left_alone(tree: tuple[LocalStorage, Path]) -> None:
    live, backups = tree
    verified = verify_storage_backup(select_storage_backup(list_storage_backups(backup_dir=backups)))
    (live.root / "voiceovers" / "1.bin").unlink()
    shutil.rmtree(live.root / "videos")
    (live.root / "voiceovers" / "2.bin").write_bytes(b"changed since, and kept")
    missing = find_missing_files(verified, live=live, paths=["voiceovers", "videos/0.bin", "music"])
    assert missing.keys == ("videos/0.bin", "voiceovers/1.bin") and missing.unknown == ("music",)
    plan = restore_missing_files(verified, missing, live=live)
    assert "restore videos/0.bin" in str(plan)
    assert not (live.root / "videos").exists()
    (live.root / "videos").mkdir()
    (live.root / "videos" / "0.bin").write_bytes(b"came back meanwhile")
    done = restore_missing_files(verified, missing, live=live, confirm=True)
    assert not isinstance(done, type(plan)) and done.restored == ("voiceovers/1.bin",)  # type: ignore[union-attr]
    assert done.skipped == ("videos/0.bin",)  # type: ignore[union-attr]
    assert (live.root / "voiceovers" / "1.bin").read_bytes() == b"voiceovers-1" * 100
    assert (live.root / "videos" / "0.bin").read_bytes() == b"came back meanwhile"
    assert (live.root / "voiceovers" / "2.bin").read_bytes() == b"changed since, and kept"
    assert not any(p.name.startswith(".drlib") for p in live.root.parent.iterdir())
    assert files_back_check(verified, missing, live=live).status == "fail"  # videos/0.bin is not the backup's
    (live.root / "videos" / "0.bin").write_bytes(b"videos-0" * 100)
    assert files_back_check(verified, missing, live=live).status == "pass"
    (live.root / "voiceovers" / "1.bin").unlink()
    assert files_back_check(verified, missing, live=live).observed == ["voiceovers/1.bin"]


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b"])
def test_paths_outside_the_storage_root_are_refused(path: str) -> None:
    with pytest.raises(ParameterError, match="relative to the storage root"):
        normalise_paths([path])


def test_a_manifest_that_lists_a_file_outside_the_root_or_one_the_backup_lacks_is_refused(
    tree: tuple[LocalStorage, Path],
) -> None:
    live, backups = tree
    backup = select_storage_backup(list_storage_backups(backup_dir=backups))
    manifest = manifest_path_for(backup.path)
    data = json.loads(manifest.read_text())
    record = data["files"]["videos/0.bin"]
    data["files"]["videos/ghost.bin"] = record  # not in the archive
    manifest.write_text(json.dumps(data))
    verified = verify_storage_backup(select_storage_backup(list_storage_backups(backup_dir=backups)))
    missing = find_missing_files(verified, live=live, paths=["videos"])
    with pytest.raises(BackupCorrupt, match=r"ghost\.bin .* missing or fails its checksum"):
        restore_missing_files(verified, missing, live=live, confirm=True)
    data["files"]["videos/../../escaped.bin"] = record
    manifest.write_text(json.dumps(data))
    verified = verify_storage_backup(select_storage_backup(list_storage_backups(backup_dir=backups)))
    with pytest.raises(BackupCorrupt, match="outside the storage root"):
        find_missing_files(verified, live=live, paths=["videos"])
    assert not (live.root.parent / "escaped.bin").exists()


def test_keys_and_paths_holding_commas_or_semicolons_reach_the_runbook_whole() -> None:
    assert split_list(json.dumps(["x;y", "a,b.wav"])) == ("x;y", "a,b.wav")  # what drlib undo passes
    assert split_list("1,2;3,4") == ("1,2", "3,4") and split_list("[old].wav") == ("[old].wav",)
    assert normalise_paths(["./voiceovers/./a.wav"]) == ("voiceovers/a.wav",)


# -- the command and the drill ----------------------------------------------------------------------
def drlib(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def reports() -> set[Path]:
    return set(Path(os.environ["DRLIB_REPORTS"]).glob("*/*-*"))


def test_undo_deletion_shows_then_brings_back_a_user_with_their_jobs_artifacts_and_files(
    backup: object, target: PgTarget, sandbox: object, profile: object
) -> None:
    with target.connect() as conn:
        user, artifacts = conn.execute(
            "SELECT j.user_id, count(a.id) FROM content_jobs j "
            "JOIN content_artifacts a ON a.job_id = j.id GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        jobs = conn.execute("SELECT count(*) FROM content_jobs WHERE user_id = %s", (user,)).fetchone()[0]  # type: ignore[index]
        files = [
            r[0]
            for r in conn.execute(
                "SELECT storage_key FROM content_artifacts a JOIN content_jobs j ON j.id = a.job_id "
                "WHERE j.user_id = %s",
                (user,),
            )
        ]
    root = Path(profile.require_storage().path)  # type: ignore[attr-defined]
    archive_local(root=root, backup_dir=profile.backups.storage_dir)  # type: ignore[attr-defined]
    with target.connect() as conn, conn.transaction():
        conn.execute(
            "DELETE FROM content_artifacts WHERE job_id IN (SELECT id FROM content_jobs WHERE user_id = %s)", (user,)
        )
        conn.execute("DELETE FROM content_jobs WHERE user_id = %s", (user,))
        conn.execute("DELETE FROM users WHERE id = %s", (user,))
    for key in files:
        (root / key).unlink()
    before = reports()
    dry = drlib("undo", "deletion", "--table", "users", "--key", str(user))
    assert dry.exit_code == 0, dry.output
    assert f"1 row(s) of public.users; {jobs} row(s) of public.content_jobs" in dry.output, dry.output
    assert count(target, f"SELECT count(*) FROM users WHERE id = {user}") == 0  # a dry run put nothing back
    assert not any(p.name.endswith(".scratch") for p in root.iterdir())
    done = drlib("undo", "deletion", "--table", "users", "--key", str(user), "--confirm", "--json")
    assert done.exit_code == 0, done.output
    results = DrillResults.model_validate(json.loads(done.stdout[done.stdout.index("{") :]))
    assert results.kind == "undo" and results.status == "passed"
    names = {c.name: c.status for c in results.checks}
    assert names["deleted_rows_back"] == "pass" and names["deleted_files_back"] == "pass"
    assert names["rows_written_since_kept"] == "pass"
    assert (
        count(
            target,
            f"SELECT count(*) FROM content_artifacts a JOIN content_jobs j ON j.id = a.job_id WHERE j.user_id = {user}",
        )
        == artifacts
    )
    assert all((root / key).is_file() for key in files)
    with target.maintenance.connect() as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname LIKE '%scratch%'").fetchall()
    assert len(reports() - before) == 2


def test_undo_files_refuses_paths_outside_the_storage_root_in_one_line(sandbox: object) -> None:
    named = drlib("undo", "files", "voiceovers,old.wav")  # one file, not the folder voiceovers and old.wav
    assert "observed ['voiceovers,old.wav']" in named.output, named.output
    result = drlib("undo", "files", "../../etc/passwd")
    assert result.exit_code == 3
    errors = [line for line in result.output.splitlines() if line.startswith("error [")]
    assert len(errors) == 1 and errors[0].startswith("error [parameter]"), result.output


@pytest.mark.slow
def test_the_drill_fails_when_the_undo_leaves_the_dependants_behind(healthy_sandbox: object, target: PgTarget) -> None:
    users = count(target, "SELECT count(*) FROM users")
    result = CliRunner().invoke(main, ["drill", "run", "accidental_deletion", "-p", "dependants", "false"])
    assert result.exit_code != 0, result.output
    assert "deleted_rows_back" in result.output, result.output
    assert count(target, "SELECT count(*) FROM users") >= users  # the user came back, only the jobs did not
    repair = drlib("undo", "deletion", "--table", "content_jobs", "--confirm")  # and now the jobs and artifacts
    assert repair.exit_code == 0, repair.output
    with target.maintenance.connect() as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname LIKE '%scratch%'").fetchall()


# -- the undo command refuses and unwinds like a restore -----------------------------------------------
def test_undo_is_refused_while_a_drill_holds_the_stack_and_for_a_misspelt_parameter(
    healthy_sandbox: object, target: PgTarget
) -> None:
    before, folders = test_cli_restore.counts(target), reports()
    held = acquire(stack_key(None), scenario="redis_loss")
    try:
        locked = drlib("undo", "deletion", "--table", "users", "--key", "1", "--confirm")
    finally:
        held.release()
    assert locked.exit_code == 3 and "error [locked]" in locked.output and "scenario redis_loss" in locked.output
    assert test_cli_restore.results_of(test_cli_restore.new_report(folders)).status == "refused"
    typo = drlib("undo", "deletion", "--table", "users", "--key", "1", "-p", "dependents", "false")
    assert typo.exit_code == 3 and typo.output.startswith("error [parameter]: ") and "dependants" in typo.output
    assert test_cli_restore.counts(target) == before


@pytest.mark.slow
def test_a_signal_mid_undo_drops_the_scratch_copy_and_leaves_the_live_database_as_it_was(
    healthy_sandbox: object, backup: object, target: PgTarget, tmp_path: Path
) -> None:
    bindir, waiting = test_cli_restore.slow_pg_restore(tmp_path)
    before, dbs, folders = test_cli_restore.counts(target), test_cli_restore.databases(target), reports()
    env = {k: v for k, v in os.environ.items() if k != RUN_MARKER}
    process = subprocess.Popen(
        [sys.executable, "-m", "drlib.cli", "undo", "deletion", "--table", "users", "--key", "1", "--confirm"],
        cwd=test_cli_restore.REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1", "DRLIB_PG_BINDIR": str(bindir)},
    )
    try:
        test_cli_restore.wait_for(waiting.exists)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "error [interrupted]: interrupted by SIGTERM during step restore_scratch" in output, output
    assert test_cli_restore.counts(target) == before and test_cli_restore.databases(target) == dbs
    results = test_cli_restore.results_of(test_cli_restore.new_report(folders))
    assert results.status == "error" and results.error is not None and results.error.step == "restore_scratch"


def scratch_databases(target: PgTarget) -> list[str]:
    with target.maintenance.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%scratch%'")]


def one_error_line(result: Result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error [")]
    assert result.exit_code == 3 and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_a_misspelt_table_or_empty_key_is_refused_before_the_scratch_copy_and_a_later_failure_drops_it(
    healthy_sandbox: object, target: PgTarget
) -> None:
    typo = drlib("undo", "deletion", "--table", "userz", "--confirm")
    assert "not in the live database" in one_error_line(typo) and "restore_scratch" not in typo.output
    empty = drlib("undo", "deletion", "--table", "users", "--key", "", "--confirm")  # `--key "$ID"`, ID unset
    assert one_error_line(empty).startswith("error [parameter]")
    run(target, "CREATE TABLE hostile_new (id int PRIMARY KEY)")  # made after every backup
    try:
        late = drlib("undo", "deletion", "--table", "hostile_new")  # refused in Step 3, after the scratch copy
    finally:
        run(target, "DROP TABLE hostile_new")
    assert "not in the backup" in one_error_line(late) and "dropped after the failure" in late.output, late.output
    assert scratch_databases(target) == []
