"""The schema fingerprint after the hostile review of issue #7: no false alarm after a clean restore
(ACLs equal to their owner's default, constraints cloned onto partitions renumbered by a restore) and
no missed damage (comments, column grants, rules, inheritance, aggregates, default privileges, large
objects, publications, …), each named by `verify_database`.

One database holding every such object is backed up and restored once (Option B) per module; each
damage test works on its own `CREATE DATABASE … TEMPLATE` clone of the restored copy."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from drlib.checks import Checks
from drlib.config import load_profile
from drlib.postgres.backup import Backup, backup_database
from drlib.postgres.connection import PgTarget, drop_database
from drlib.postgres.fingerprint import QUERIES, compare, read_schema
from drlib.postgres.integrity import verify_backup
from drlib.postgres.restore import RestoreResult, restore_in_place, restore_to_new_database
from drlib.postgres.verify import verify_database
from drlib.sandbox.stack import Sandbox

#: objects the fingerprint must see ({r}: a role of the test's own)
SCHEMA_SQL = """
CREATE TABLE parent (id int PRIMARY KEY, t text);
CREATE TABLE child (extra int) INHERITS (parent);
CREATE TABLE s (id int PRIMARY KEY, secret text, public_part text);
GRANT SELECT (public_part) ON s TO {r};
CREATE RULE keep AS ON DELETE TO parent DO INSTEAD NOTHING;
CREATE VIEW sv WITH (security_invoker = true) AS SELECT id FROM s;
CREATE VIEW cv AS SELECT * FROM parent WHERE id > 0 WITH CHECK OPTION;
CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER audit BEFORE INSERT ON parent FOR EACH ROW EXECUTE FUNCTION trg();
CREATE AGGREGATE mysum(int) (sfunc = int4pl, stype = int, initcond = '0');
SELECT lo_from_bytea(424242, 'large object data');
COMMENT ON TABLE parent IS 'parent';
COMMENT ON COLUMN parent.t IS 'the text';
COMMENT ON FUNCTION trg() IS 'touches nothing';
CREATE TYPE mood AS ENUM ('sad', 'ok');
REVOKE USAGE ON TYPE mood FROM PUBLIC;
CREATE TABLE ro (id int NOT NULL, x int) WITH (fillfactor = 70);
CREATE UNIQUE INDEX ro_id ON ro (id);
ALTER TABLE ro REPLICA IDENTITY USING INDEX ro_id;
ALTER TABLE ro ALTER COLUMN x SET STATISTICS 500;
CREATE SEQUENCE os OWNED BY ro.x;
CREATE FUNCTION evt() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER fp_evt ON ddl_command_start WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION evt();
CREATE PUBLICATION fp_pub FOR TABLE ro (id, x) WHERE (x > 1), s;
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE STATISTICS ro_stats (dependencies) ON id, x FROM ro;
CREATE FUNCTION same_mood(int, mood) RETURNS bool LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR === (leftarg = int, rightarg = mood, function = same_mood);
CREATE TEXT SEARCH DICTIONARY fp_dict (template = simple, stopwords = english);
CREATE TEXT SEARCH CONFIGURATION fp_ts (copy = english);
ALTER TEXT SEARCH CONFIGURATION fp_ts ALTER MAPPING FOR word WITH fp_dict;
CREATE TYPE pair AS (a int, b int);
CREATE FUNCTION pair_text(pair) RETURNS text LANGUAGE sql AS $$ SELECT 'pair' $$;
CREATE CAST (pair AS text) WITH FUNCTION pair_text(pair);
"""

#: what a restore renumbers or resets, which must raise no alarm
FALSE_ALARM_SQL = """
CREATE TABLE g (id int);
GRANT SELECT ON g TO PUBLIC;
REVOKE SELECT ON g FROM PUBLIC;
CREATE SEQUENCE gs;
GRANT USAGE ON SEQUENCE gs TO PUBLIC;
REVOKE USAGE ON SEQUENCE gs FROM PUBLIC;
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION f() TO PUBLIC;
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO PUBLIC;
REVOKE USAGE ON SCHEMA app FROM PUBLIC;
CREATE TYPE app.colour AS ENUM ('red');
GRANT USAGE ON TYPE app.colour TO {r};
REVOKE USAGE ON TYPE app.colour FROM {r};
GRANT SELECT (secret) ON s TO {r};
REVOKE SELECT (secret) ON s FROM {r};
CREATE TABLE pr (id int, k int, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
CREATE TABLE pr_1 PARTITION OF pr FOR VALUES IN (1);
CREATE TABLE pr_2 PARTITION OF pr FOR VALUES IN (2);
CREATE INDEX pr_k_idx ON pr (k);
CREATE TRIGGER pr_audit BEFORE INSERT ON pr FOR EACH ROW EXECUTE FUNCTION trg();
CREATE TABLE ch (id int, k int, FOREIGN KEY (id, k) REFERENCES pr);
ALTER TABLE pr DETACH PARTITION pr_1;
DROP TABLE pr_1;
CREATE TABLE pr_3 PARTITION OF pr FOR VALUES IN (3);
ALTER TABLE pr_3 DISABLE TRIGGER pr_audit;
"""

#: last, so that it gives no grants to the tables above
DEFAULT_PRIVILEGES_SQL = "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {r}"


@dataclass(frozen=True)
class Restored:
    original: PgTarget
    backup: Backup
    copy: PgTarget
    role: str


def run(target: PgTarget, statement: str) -> None:
    with psycopg.connect(target.conninfo(), password=target.password, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def restored(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restored]:
    server = PgTarget.from_profile(load_profile("sandbox"))
    token = secrets.token_hex(3)
    name, role = f"fpcov_{token}", f"fpcov_r_{token}"
    original = PgTarget(settings=replace(server.settings, name=name, check_set=None), password=server.password)
    copy_name = f"{name}_restored"
    run(server.maintenance, f"CREATE ROLE {role} NOLOGIN")
    run(server.maintenance, f"CREATE DATABASE {name}")
    try:
        run(original, (SCHEMA_SQL + FALSE_ALARM_SQL + DEFAULT_PRIVILEGES_SQL).format(r=role))
        backup = backup_database(target=original, backup_dir=tmp_path_factory.mktemp("fp-backups"))
        result = restore_to_new_database(
            verify_backup(backup), target=original, jobs=2, confirm=True, new_name=copy_name
        )
        assert isinstance(result, RestoreResult)
        yield Restored(original=original, backup=backup, copy=original.with_database(copy_name), role=role)
    finally:
        for database in (name, copy_name):
            drop_database(server, database)
        run(server.maintenance, f"DROP ROLE IF EXISTS {role}")


def failing(checks: Checks) -> dict[str, str]:
    return {c.name: f"{c.observed} | {c.detail}" for c in checks if c.status == "fail"}


def test_a_clean_option_b_restore_raises_no_alarm(restored: Restored) -> None:
    checks = verify_database(target=restored.copy, manifest=restored.backup.manifest)
    assert checks.passed, repr(Checks(c for c in checks if c.status != "pass"))
    assert {f"schema:{kind}" for kind in (*QUERIES, "publication")} <= {c.name for c in checks}


def test_every_new_kind_sees_its_objects(restored: Restored) -> None:
    manifest = restored.backup.manifest
    assert manifest is not None
    schema = manifest.schema
    assert schema["comment"] == {
        "public.parent": "parent",
        "public.parent.t": "the text",
        "function public.trg()": "touches nothing",
        "schema public": "standard public schema",
    }
    assert schema["rule"]["public.parent.keep"].startswith("CREATE RULE keep AS")
    assert schema["inheritance"] == {"public.child": "inherits public.parent"}
    assert schema["default_privileges"] == {
        "for role " + restored.original.settings.user + " in schema public on tables": f"{restored.role}=r/"
        + restored.original.settings.user
    }
    assert set(schema["event_trigger"]) == {"fp_evt"}
    assert "tables public.ro (id, x) where ((x > 1)), public.s" in schema["publication"]["fp_pub"]
    assert set(schema["collation"]) == {"public.ci"}
    assert schema["statistics"]["public.ro_stats"].startswith("CREATE STATISTICS public.ro_stats (dependencies)")
    assert set(schema["operator"]) == {"public.===(integer,public.mood)"}
    assert "public.fp_dict" in schema["text_search_configuration"]["public.fp_ts"]
    assert set(schema["text_search_dictionary"]) == {"public.fp_dict"}
    assert schema["cast"] == {"(public.pair AS text)": "with function public.pair_text(public.pair)"}
    assert schema["large_object"]["424242"].endswith("17 bytes, md5 " + "5aa06ab0c8697450a0027bf2d499d5cc")
    assert (
        schema["column"]["public.s.public_part"] == f"text, acl {{{restored.role}=r/{restored.original.settings.user}}}"
    )
    assert schema["column"]["public.ro.x"] == "integer STATISTICS 500"
    assert "with (fillfactor=70), replica identity using index ro_id" in schema["table"]["public.ro"]
    assert "with (security_invoker=true)" in schema["view"]["public.sv"]
    assert "with (check_option=cascaded)" in schema["view"]["public.cv"]
    assert schema["sequence"]["public.os"].endswith("owned by public.ro.x")
    assert "acl {" in schema["type"]["public.mood"]


def test_acls_equal_to_their_default_and_partition_clones_are_left_out(restored: Restored) -> None:
    """What a restore resets (a default ACL left non-NULL) or renumbers (…_fkey1) is not compared."""
    manifest = restored.backup.manifest
    assert manifest is not None
    schema = manifest.schema
    assert "public.g" not in schema["grant"] and "public.gs" not in schema["grant"]
    assert schema["schema"]["app"].endswith("acl default")
    assert ", acl default," in schema["function"]["public.f()"]
    assert "acl" not in schema["type"]["app.colour"]
    assert schema["column"]["public.s.secret"] == "text"
    assert [name for name in schema["constraint"] if name.startswith("public.ch.")] == ["public.ch.ch_id_k_fkey"]
    assert not [name for name in schema["constraint"] if name.startswith("public.pr_")]  # partition keys: clones
    # kept, because pg_dump creates them by name: indexes attached to a parent index, cloned triggers
    assert {"public.pr_2_k_idx", "public.pr_3_k_idx"} <= set(schema["index"])
    assert schema["trigger"]["public.pr_3.pr_audit"].endswith("(disabled)")
    with restored.copy.connect() as conn:  # the restore really did renumber the clones (…_fkey1 on another partition)
        clones = conn.execute(
            "SELECT conname, confrelid::regclass::text FROM pg_constraint WHERE conrelid = 'public.ch'::regclass "
            "AND conparentid <> 0 ORDER BY 1"
        ).fetchall()
    with restored.original.connect() as conn:
        before = conn.execute(
            "SELECT conname, confrelid::regclass::text FROM pg_constraint WHERE conrelid = 'public.ch'::regclass "
            "AND conparentid <> 0 ORDER BY 1"
        ).fetchall()
    assert clones != before


def test_the_restored_fingerprint_equals_the_original(restored: Restored) -> None:
    with restored.original.connect() as original, restored.copy.connect() as copy:
        settings = restored.original.settings
        assert compare(read_schema(original, settings), read_schema(copy, settings)) == []


@pytest.fixture
def damaged(restored: Restored) -> Iterator[PgTarget]:
    """A clone of the restored copy to damage."""
    name = f"fpdmg_{secrets.token_hex(3)}"
    server = restored.copy
    with server.maintenance.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(server.name))
        )
    yield server.with_database(name)
    drop_database(server, name)


#: (id, SQL that damages the database ({r}: the test's role), failing check, words it names)
DAMAGE = [
    (
        "inheritance removed",
        "ALTER TABLE child NO INHERIT parent",
        "schema:inheritance",
        "missing inheritance of public.child",
    ),
    (
        "column grant revoked",
        "REVOKE SELECT (public_part) ON s FROM {r}",
        "schema:column",
        "changed column public.s.public_part",
    ),
    ("column grant widened", "GRANT SELECT ON s TO {r}", "schema:grant", "unexpected grants on public.s"),
    (
        "default privileges revoked",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM {r}",
        "schema:default_privileges",
        "missing default privileges for role",
    ),
    ("rule dropped", "DROP RULE keep ON parent", "schema:rule", "missing rule public.parent.keep"),
    ("rule disabled", "ALTER TABLE parent DISABLE RULE keep", "schema:rule", "changed rule public.parent.keep"),
    ("security_invoker reset", "ALTER VIEW sv RESET (security_invoker)", "schema:view", "changed view public.sv"),
    (
        "check option dropped",
        "CREATE OR REPLACE VIEW cv AS SELECT * FROM parent WHERE id > 0",
        "schema:view",
        "changed view public.cv",
    ),
    (
        "trigger enabled for replicas only",
        "ALTER TABLE parent ENABLE REPLICA TRIGGER audit",
        "schema:trigger",
        "(enabled replica)",
    ),
    ("trigger enabled always", "ALTER TABLE parent ENABLE ALWAYS TRIGGER audit", "schema:trigger", "(enabled always)"),
    (
        "partition's trigger enabled again",
        "ALTER TABLE pr_3 ENABLE TRIGGER pr_audit",
        "schema:trigger",
        "changed trigger public.pr_3.pr_audit",
    ),
    (
        "aggregate redefined",
        "DROP AGGREGATE mysum(int); CREATE AGGREGATE mysum(int) (sfunc = int4mul, stype = int, initcond = '1')",
        "schema:function",
        "changed aggregate public.mysum(integer)",
    ),
    ("large object changed", "SELECT lo_put(424242, 0, 'LARGE')", "schema:large_object", "changed large object 424242"),
    ("large object removed", "SELECT lo_unlink(424242)", "schema:large_object", "missing large object 424242"),
    ("large object granted", "GRANT SELECT ON LARGE OBJECT 424242 TO {r}", "schema:large_object", "acl {"),
    (
        "table comment changed",
        "COMMENT ON TABLE parent IS 'changed'",
        "schema:comment",
        "changed comment on public.parent",
    ),
    (
        "column comment lost",
        "COMMENT ON COLUMN parent.t IS NULL",
        "schema:comment",
        "missing comment on public.parent.t",
    ),
    (
        "function comment lost",
        "COMMENT ON FUNCTION trg() IS NULL",
        "schema:comment",
        "missing comment on function public.trg()",
    ),
    ("type usage granted", "GRANT USAGE ON TYPE mood TO PUBLIC", "schema:type", "changed type public.mood"),
    ("table option changed", "ALTER TABLE ro SET (fillfactor = 80)", "schema:table", "fillfactor=80"),
    ("replica identity changed", "ALTER TABLE ro REPLICA IDENTITY FULL", "schema:table", "replica identity full"),
    (
        "statistics target reset",
        "ALTER TABLE ro ALTER COLUMN x SET STATISTICS -1",
        "schema:column",
        "changed column public.ro.x",
    ),
    ("sequence owner lost", "ALTER SEQUENCE os OWNED BY NONE", "schema:sequence", "changed sequence public.os"),
    (
        "event trigger disabled",
        "ALTER EVENT TRIGGER fp_evt DISABLE",
        "schema:event_trigger",
        "changed event trigger fp_evt",
    ),
    ("event trigger dropped", "DROP EVENT TRIGGER fp_evt", "schema:event_trigger", "missing event trigger fp_evt"),
    (
        "table left a publication",
        "ALTER PUBLICATION fp_pub DROP TABLE s",
        "schema:publication",
        "changed publication fp_pub",
    ),
    (
        "publication column list narrowed",
        "ALTER PUBLICATION fp_pub SET TABLE ro (id) WHERE (x > 1), s",
        "schema:publication",
        "changed publication fp_pub",
    ),
    ("collation dropped", "DROP COLLATION ci", "schema:collation", "missing collation public.ci"),
    (
        "statistics dropped",
        "DROP STATISTICS ro_stats",
        "schema:statistics",
        "missing statistics object public.ro_stats",
    ),
    (
        "operator dropped",
        "DROP OPERATOR === (int, mood)",
        "schema:operator",
        "missing operator public.===(integer,public.mood)",
    ),
    (
        "text search mapping changed",
        "ALTER TEXT SEARCH CONFIGURATION fp_ts ALTER MAPPING FOR word WITH simple",
        "schema:text_search_configuration",
        "changed text search configuration public.fp_ts",
    ),
    (
        "text search dictionary changed",
        "ALTER TEXT SEARCH DICTIONARY fp_dict (stopwords = russian)",
        "schema:text_search_dictionary",
        "changed text search dictionary public.fp_dict",
    ),
    ("cast dropped", "DROP CAST (pair AS text)", "schema:cast", "missing cast (public.pair AS text)"),
]


@pytest.mark.parametrize(("what", "statement", "check_name", "named"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_verify_names_the_damage(
    restored: Restored, damaged: PgTarget, what: str, statement: str, check_name: str, named: str
) -> None:
    for part in statement.format(r=restored.role).split("; "):
        run(damaged, part)
    failures = failing(verify_database(target=damaged, manifest=restored.backup.manifest))
    assert check_name in failures, f"{what}: {failures}"
    assert named in failures[check_name], f"{what}: {failures[check_name]}"


def test_option_a_restores_what_the_fingerprint_compares(restored: Restored, tmp_path: Path) -> None:
    """Option A over the damaged original (last: the module's other tests use the copy) verifies clean."""
    original = restored.original
    for statement in ("DROP RULE keep ON parent", "COMMENT ON TABLE parent IS 'changed'", "SELECT lo_unlink(424242)"):
        run(original, statement)
    assert failing(verify_database(target=original, manifest=restored.backup.manifest))
    result = restore_in_place(verify_backup(restored.backup), target=original, confirm=True)
    assert isinstance(result, RestoreResult) and result.option == "A"
    checks = verify_database(target=original, manifest=restored.backup.manifest)
    assert checks.passed, repr(Checks(c for c in checks if c.status != "pass"))
