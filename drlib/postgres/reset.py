"""Resetting a live database to the state of a fresh ``CREATE DATABASE … TEMPLATE template0``, inside the
restore's own transaction, so that Option A can replay a whole dump over it (``pg_restore --clean``
cannot: it fails on partitioned tables, and it leaves behind whatever the dump does not name).

:func:`reset_script` is a psql script. Each ``\\gexec`` query reads the live catalogue *in the
transaction* and runs the drops it lists: event triggers, extensions (but plpgsql), publications,
foreign data wrappers and servers, every non-system schema (``public`` too, recreated with the
server's defaults), large objects, casts, transforms, languages and access methods of the database's
own, and default privileges put back to the built-in ones. A guard then fails the transaction if any
object of the database's own is left, so the reset can never silently leave something behind.

:func:`check_resettable` refuses, before anything is written, what the reset cannot remove.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from drlib.exceptions import RestoreFailed
from drlib.postgres.connection import PgTarget, sql_errors

#: objects with a lower oid were made by initdb (PostgreSQL's FirstNormalObjectId)
FIRST_USER_OID = 16384

#: the public schema became owned by pg_database_owner, without CREATE for PUBLIC, in PostgreSQL 15
PG_DATABASE_OWNER_VERSION = 150000

#: how long Option A's session waits for a lock another session holds before it gives up (and rolls back)
LOCK_TIMEOUT_SECONDS = 60

USE_OPTION_B = "Nothing was changed. Use Option B (restore into a new database, verify, swap)"


class CannotReset(RestoreFailed):
    """The live database holds something Option A's reset cannot remove; refused before any write."""

    code = "restore-refused"


@dataclass(frozen=True)
class LiveDatabase:
    """What the reset needs to know about the live server, read before the first write."""

    server_version_num: int
    superuser: bool


def _user_schema(column: str) -> str:
    """SQL: the schema named by ``column`` (a name) is the database's own, not a system or temporary one."""
    return f"{column} NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND {column} !~ '^pg_(toast_)?temp_'"


def _not_from_extension(catalog: str, oid: str) -> str:
    """SQL: the object is not a member of an extension (those go with their extension)."""
    return (
        "NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = "
        f"'pg_catalog.{catalog}'::pg_catalog.regclass AND d.objid = {oid} AND d.deptype = 'e')"
    )


#: catalogues whose objects live in a schema: (catalogue, its namespace column)
NAMESPACED = (
    ("pg_class", "relnamespace"),
    ("pg_type", "typnamespace"),
    ("pg_proc", "pronamespace"),
    ("pg_collation", "collnamespace"),
    ("pg_conversion", "connamespace"),
    ("pg_operator", "oprnamespace"),
    ("pg_opclass", "opcnamespace"),
    ("pg_opfamily", "opfnamespace"),
    ("pg_ts_config", "cfgnamespace"),
    ("pg_ts_dict", "dictnamespace"),
    ("pg_ts_parser", "prsnamespace"),
    ("pg_ts_template", "tmplnamespace"),
    ("pg_statistic_ext", "stxnamespace"),
)

#: catalogues of objects outside any schema that belong to one database
SCHEMALESS = (
    "pg_namespace",
    "pg_extension",
    "pg_event_trigger",
    "pg_publication",
    "pg_foreign_data_wrapper",
    "pg_foreign_server",
    "pg_largeobject_metadata",
    "pg_cast",
    "pg_transform",
    "pg_language",
    "pg_am",
    "pg_default_acl",
)


def _objects_in_system_schemas() -> str:
    """SQL listing ``(classid, objid)`` of objects users made inside pg_catalog or information_schema."""
    parts = [
        f"SELECT 'pg_catalog.{catalog}'::pg_catalog.regclass, o.oid FROM pg_catalog.{catalog} o "
        f"JOIN pg_catalog.pg_namespace n ON n.oid = o.{column} "
        f"WHERE n.nspname IN ('pg_catalog', 'information_schema') AND o.oid >= {FIRST_USER_OID} "
        f"AND {_not_from_extension(catalog, 'o.oid')}"
        for catalog, column in NAMESPACED
    ]
    return " UNION ALL ".join(parts)


def _leftovers() -> str:
    """SQL listing ``(classid, objid)`` of every object of the database's own that a fresh database
    would not have (plpgsql and the recreated public schema excepted)."""
    parts = [
        f"SELECT 'pg_catalog.{catalog}'::pg_catalog.regclass, o.oid FROM pg_catalog.{catalog} o "
        f"JOIN pg_catalog.pg_namespace n ON n.oid = o.{column} "
        f"WHERE o.oid >= {FIRST_USER_OID} AND n.nspname <> 'pg_toast' AND n.nspname !~ '^pg_(toast_)?temp_'"
        for catalog, column in NAMESPACED
    ]
    parts += [
        f"SELECT 'pg_catalog.{catalog}'::pg_catalog.regclass, o.oid FROM pg_catalog.{catalog} o "
        f"WHERE o.oid >= {FIRST_USER_OID}"
        + (" AND o.nspname !~ '^pg_(toast_)?temp_'" if catalog == "pg_namespace" else "")  # other sessions'
        for catalog in SCHEMALESS
    ]
    parts.append(  # pg_user_mapping itself is for superusers only (it holds passwords)
        "SELECT 'pg_catalog.pg_user_mapping'::pg_catalog.regclass, u.umid FROM pg_catalog.pg_user_mappings u "
        f"WHERE u.umid >= {FIRST_USER_OID}"
    )
    parts.append(
        "SELECT 'pg_catalog.pg_subscription'::pg_catalog.regclass, s.oid FROM pg_catalog.pg_subscription s "
        "JOIN pg_catalog.pg_database d ON d.oid = s.subdbid WHERE d.datname = pg_catalog.current_database()"
    )
    union = " UNION ALL ".join(parts)
    plpgsql = (
        "SELECT FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid "
        "WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e' "
        "AND x.extname = 'plpgsql' AND d.classid = o.classid AND d.objid = o.objid"
    )
    return (
        f"SELECT o.classid, o.objid FROM ({union}) AS o(classid, objid) WHERE NOT EXISTS ({plpgsql}) "
        "AND NOT (o.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND o.objid = "
        "(SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'plpgsql')) "
        "AND NOT (o.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND o.objid = "
        "(SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public'))"
    )


_DEFAULT_ACL_KINDS = (
    "(VALUES ('r', 'TABLES'), ('S', 'SEQUENCES'), ('f', 'FUNCTIONS'), ('T', 'TYPES'), ('n', 'SCHEMAS'))"
)

#: default privileges not tied to a schema (those go with their schema), as rows (role, kind, acl)
_GLOBAL_DEFAULT_ACLS = f"""SELECT r.rolname, k.kind, d.defaclobjtype, d.defaclacl FROM pg_catalog.pg_default_acl d
    JOIN pg_catalog.pg_roles r ON r.oid = d.defaclrole
    JOIN {_DEFAULT_ACL_KINDS} AS k(objtype, kind) ON k.objtype = d.defaclobjtype::text
    WHERE d.defaclnamespace = 0"""

#: revoke every grant of each, then grant what the built-in default is: the entry then disappears
_RESET_DEFAULT_PRIVILEGES = f"""
SELECT s.statement FROM (
    SELECT DISTINCT 1 AS step, pg_catalog.format(
        'ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE ALL ON %s FROM %s CASCADE', d.rolname, d.kind,
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(g.rolname) END) AS statement
    FROM ({_GLOBAL_DEFAULT_ACLS}) AS d
    CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) AS a
    LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
    UNION ALL
    SELECT 2, pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT ALL ON %s TO %I', d.rolname, d.kind,
        d.rolname)
    FROM ({_GLOBAL_DEFAULT_ACLS}) AS d
    UNION ALL
    SELECT 3, pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT %s ON %s TO PUBLIC', d.rolname,
        CASE d.defaclobjtype WHEN 'f' THEN 'EXECUTE' ELSE 'USAGE' END, d.kind)
    FROM ({_GLOBAL_DEFAULT_ACLS}) AS d WHERE d.defaclobjtype IN ('f', 'T')
) AS s ORDER BY s.step, s.statement \\gexec
"""


def _public_schema(server_version_num: int) -> str:
    """Recreate ``public`` as initdb makes it on this server version."""
    if server_version_num >= PG_DATABASE_OWNER_VERSION:
        owner = "CREATE SCHEMA public AUTHORIZATION pg_database_owner;\nGRANT USAGE ON SCHEMA public TO PUBLIC;\n"
    else:
        owner = (
            "SELECT pg_catalog.format('CREATE SCHEMA public AUTHORIZATION %I', rolname) "
            "FROM pg_catalog.pg_roles WHERE oid = 10 \\gexec\n"
            "GRANT CREATE, USAGE ON SCHEMA public TO PUBLIC;\n"
        )
    return owner + "COMMENT ON SCHEMA public IS 'standard public schema';\n"


def reset_script(server_version_num: int) -> str:
    """The psql script that empties the database (run it inside the restore's transaction)."""
    gexec = " \\gexec\n"
    return (
        "-- drlib Option A: reset the database to a fresh CREATE DATABASE ... TEMPLATE template0\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n"
        "SELECT pg_catalog.format('DROP EVENT TRIGGER IF EXISTS %I CASCADE', evtname) FROM pg_catalog.pg_event_trigger "
        f"WHERE {_not_from_extension('pg_event_trigger', 'oid')} ORDER BY oid"
        + gexec
        + "SELECT pg_catalog.format('DROP EXTENSION IF EXISTS %I CASCADE', extname) FROM pg_catalog.pg_extension "
        "WHERE extname <> 'plpgsql' ORDER BY oid DESC"
        + gexec
        + "SELECT pg_catalog.format('DROP PUBLICATION IF EXISTS %I', pubname) FROM pg_catalog.pg_publication"
        + gexec
        + "SELECT pg_catalog.format('DROP SERVER IF EXISTS %I CASCADE', srvname) FROM pg_catalog.pg_foreign_server "
        f"WHERE {_not_from_extension('pg_foreign_server', 'oid')}"
        + gexec
        + "SELECT pg_catalog.format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', fdwname) "
        f"FROM pg_catalog.pg_foreign_data_wrapper WHERE {_not_from_extension('pg_foreign_data_wrapper', 'oid')}"
        + gexec
        + "SELECT pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', nspname) FROM pg_catalog.pg_namespace "
        f"WHERE {_user_schema('nspname')} ORDER BY nspname = 'public', oid"
        + gexec
        + _public_schema(server_version_num)
        + "SELECT pg_catalog.count(pg_catalog.lo_unlink(oid)) FROM pg_catalog.pg_largeobject_metadata;\n"
        "SELECT pg_catalog.format('DROP CAST IF EXISTS (%s AS %s) CASCADE', castsource::pg_catalog.regtype, "
        f"casttarget::pg_catalog.regtype) FROM pg_catalog.pg_cast WHERE oid >= {FIRST_USER_OID} "
        f"AND {_not_from_extension('pg_cast', 'oid')}"
        + gexec
        + "SELECT pg_catalog.format('DROP TRANSFORM IF EXISTS FOR %s LANGUAGE %I CASCADE', "
        "t.trftype::pg_catalog.regtype, l.lanname) FROM pg_catalog.pg_transform t "
        f"JOIN pg_catalog.pg_language l ON l.oid = t.trflang WHERE t.oid >= {FIRST_USER_OID} "
        f"AND {_not_from_extension('pg_transform', 't.oid')}"
        + gexec
        + "SELECT pg_catalog.format('DROP LANGUAGE IF EXISTS %I CASCADE', lanname) FROM pg_catalog.pg_language "
        f"WHERE oid >= {FIRST_USER_OID} AND {_not_from_extension('pg_language', 'oid')}"
        + gexec
        + "SELECT pg_catalog.format('DROP ACCESS METHOD IF EXISTS %I CASCADE', amname) FROM pg_catalog.pg_am "
        f"WHERE oid >= {FIRST_USER_OID} AND {_not_from_extension('pg_am', 'oid')}"
        + gexec
        + _RESET_DEFAULT_PRIVILEGES
        + "CREATE EXTENSION IF NOT EXISTS plpgsql;\n"
        + guard_sql()
    )


def option_a_prologue(live: LiveDatabase, before_sql: str) -> str:
    """What psql runs before the dump: session settings, BEGIN, the caller's SQL, then the reset."""
    return (
        "SET client_encoding = 'UTF8';\nSET statement_timeout = 0;\n"
        f"{lock_timeout_sql()}SET idle_in_transaction_session_timeout = 0;\nSET client_min_messages = warning;\n"
        f"BEGIN;\n{before_sql}\n;\n{reset_script(live.server_version_num)}"
    )


def lock_timeout_sql() -> str:
    """Never wait forever for another session's lock (pg_restore's SQL sets ``lock_timeout = 0``: say it
    again after the dump)."""
    return f"SET lock_timeout = '{int(LOCK_TIMEOUT_SECONDS * 1000)}ms';\n"


def drop_empty_public_sql() -> str:
    """SQL that drops the ``public`` schema a new database starts with, unless something was put in it
    (for a backup whose database had no ``public``: dropping it is common hardening)."""
    return (
        "DO $drlib_public$\nBEGIN\n    DROP SCHEMA IF EXISTS public RESTRICT;\n"
        "EXCEPTION WHEN dependent_objects_still_exist THEN NULL;\nEND\n$drlib_public$;\n"
    )


def guard_sql() -> str:
    """A statement that fails (so the transaction rolls back) if anything of the database's own is left."""
    return (
        "DO $drlib_reset$\nDECLARE left_over text;\nBEGIN\n"
        "    SELECT pg_catalog.string_agg(pg_catalog.pg_describe_object(o.classid, o.objid, 0), ', ') "
        f"INTO left_over FROM ({_leftovers()}) AS o;\n"
        "    IF left_over IS NOT NULL THEN\n"
        "        RAISE EXCEPTION 'drlib could not reset the database: % would remain', left_over;\n"
        "    END IF;\n"
        "END\n$drlib_reset$;\n"
    )


_OWNED = """
SELECT pg_catalog.format('schema %I', nspname), nspowner FROM pg_catalog.pg_namespace WHERE {user_schema}
UNION ALL SELECT pg_catalog.format('extension %I', extname), extowner FROM pg_catalog.pg_extension
    WHERE extname <> 'plpgsql'
UNION ALL SELECT pg_catalog.format('event trigger %I', evtname), evtowner FROM pg_catalog.pg_event_trigger
UNION ALL SELECT pg_catalog.format('publication %I', pubname), pubowner FROM pg_catalog.pg_publication
UNION ALL SELECT pg_catalog.format('foreign data wrapper %I', fdwname), fdwowner FROM pg_catalog.pg_foreign_data_wrapper
UNION ALL SELECT pg_catalog.format('server %I', srvname), srvowner FROM pg_catalog.pg_foreign_server
UNION ALL SELECT pg_catalog.format('large object %s', oid), lomowner FROM pg_catalog.pg_largeobject_metadata
UNION ALL SELECT pg_catalog.format('language %I', lanname), lanowner FROM pg_catalog.pg_language
    WHERE oid >= {first}
UNION ALL SELECT pg_catalog.format('default privileges of %I', r.rolname), d.defaclrole
    FROM pg_catalog.pg_default_acl d JOIN pg_catalog.pg_roles r ON r.oid = d.defaclrole WHERE d.defaclnamespace = 0
UNION ALL SELECT pg_catalog.format('access method %I', amname), 10 FROM pg_catalog.pg_am WHERE oid >= {first}
UNION ALL SELECT pg_catalog.format('cast (%s AS %s)', castsource::pg_catalog.regtype, casttarget::pg_catalog.regtype),
    s.typowner FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_type s ON s.oid = c.castsource
    WHERE c.oid >= {first} AND NOT pg_catalog.pg_has_role(
        (SELECT typowner FROM pg_catalog.pg_type WHERE oid = c.casttarget), 'MEMBER')
"""


def check_resettable(target: PgTarget) -> LiveDatabase:
    """Refuse, before any write, a live database that Option A's reset could not bring back to a fresh one."""
    with sql_errors(target, doing=f"inspecting {target.name} before Option A"), target.connect() as conn:
        row = conn.execute(
            "SELECT pg_catalog.current_setting('server_version_num')::int, rolsuper FROM pg_catalog.pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert row is not None
        live = LiveDatabase(server_version_num=int(row[0]), superuser=bool(row[1]))
        problems = _unresettable(conn, live)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise CannotReset(f"Option A cannot reset {target.name} to an empty database: {shown}. {USE_OPTION_B}.")
    return live


def _unresettable(conn: psycopg.Connection, live: LiveDatabase) -> list[str]:
    problems = [
        f"{row[0]} was created inside a system schema (drop it by hand)"
        for row in conn.execute(
            "SELECT i.type || ' ' || i.identity FROM "
            f"({_objects_in_system_schemas()}) AS o(classid, objid), "
            "LATERAL pg_catalog.pg_identify_object(o.classid, o.objid, 0) AS i ORDER BY 1"
        )
    ]
    problems += [
        f"subscription {row[0]} (DROP SUBSCRIPTION cannot run inside the restore's transaction)"
        for row in conn.execute(
            "SELECT s.subname FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d ON d.oid = s.subdbid "
            "WHERE d.datname = pg_catalog.current_database() ORDER BY 1"
        )
    ]
    if live.superuser:
        return problems
    owned = _OWNED.format(user_schema=_user_schema("nspname"), first=FIRST_USER_OID)
    user = conn.execute("SELECT current_user").fetchone()
    who = user[0] if user else "the profile's user"
    problems += [
        f"{row[0]} is owned by {row[1]}, and {who} is neither that role nor a superuser"
        for row in conn.execute(
            f"SELECT o.what, pg_catalog.pg_get_userbyid(o.owner) FROM ({owned}) AS o(what, owner) "
            "WHERE NOT pg_catalog.pg_has_role(o.owner, 'MEMBER') ORDER BY 1"
        )
    ]
    if live.server_version_num < PG_DATABASE_OWNER_VERSION:
        problems.append(f"recreating the public schema as initdb does needs a superuser before PostgreSQL 15 ({who})")
    else:
        owner = conn.execute("SELECT pg_catalog.pg_has_role('pg_database_owner', 'MEMBER')").fetchone()
        if not owner or not owner[0]:
            problems.append(f"{who} does not own the database, so it cannot recreate the public schema")
    return problems
