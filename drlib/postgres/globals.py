"""What ``pg_dump`` leaves out: the database's own properties (owner, ACL, ``ALTER DATABASE … SET``
settings, comment) and the roles the database uses (owners, grantees, policy roles and the roles
they are members of).

Both are read at backup time. The properties go into the manifest and are re-applied to a restored
database (both options). The roles are written to ``<backup>.roles.json`` next to the dump (mode 0600:
it holds password hashes when the backup user may read ``pg_authid``) and the missing ones are created
before a restore, with SQL built from typed values (never by running text from the file); the manifest
and reports only ever see role names and attributes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from drlib.exceptions import BackupCorrupt
from drlib.files import write_whole
from drlib.postgres.catalog import SYSTEM_SCHEMA_FILTER
from drlib.secrets import register_secret

ROLES_SUFFIX = ".roles.json"


DATABASE_PRIVILEGES = ("CREATE", "CONNECT", "TEMPORARY")


@dataclass(frozen=True)
class DatabaseProperties:
    """A database's own properties, as a restore must put them back."""

    owner: str
    #: privileges as (grantee or "PUBLIC", privilege, grantable), from the ACL (default ACL expanded)
    grants: list[tuple[str, str, bool]]
    #: ``ALTER DATABASE … SET`` settings, as ``name=value``
    settings: list[str]
    #: ``ALTER ROLE … IN DATABASE … SET`` settings: role -> ``name=value`` list
    role_settings: dict[str, list[str]]
    comment: str | None
    connection_limit: int
    encoding: str
    collate: str
    ctype: str
    locale_provider: str = "libc"
    icu_locale: str | None = None
    tablespace: str = "pg_default"

    def described(self) -> dict[str, str]:
        """One comparable line per property (what verify compares and reports show)."""
        grants = sorted(f"{g} {p}{' WITH GRANT OPTION' if w else ''}" for g, p, w in self.grants)
        return {
            "owner": self.owner,
            "privileges": "; ".join(grants),
            "settings": ", ".join(sorted(self.settings)) or "none",
            "role settings": "; ".join(f"{r}: {', '.join(s)}" for r, s in sorted(self.role_settings.items())) or "none",
            "comment": self.comment if self.comment is not None else "none",
            "connection limit": str(self.connection_limit),
            "encoding": self.encoding,
            "collation": f"{self.collate} / {self.ctype}",
            "locale provider": self.locale_provider + (f" ({self.icu_locale})" if self.icu_locale else ""),
            "tablespace": self.tablespace,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "grants": [list(g) for g in self.grants],
            "settings": self.settings,
            "role_settings": self.role_settings,
            "comment": self.comment,
            "connection_limit": self.connection_limit,
            "encoding": self.encoding,
            "collate": self.collate,
            "ctype": self.ctype,
            "locale_provider": self.locale_provider,
            "icu_locale": self.icu_locale,
            "tablespace": self.tablespace,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseProperties:
        values = dict(data)
        values["grants"] = [(str(g), str(p), bool(w)) for g, p, w in values["grants"]]
        unknown = [p for _, p, _ in values["grants"] if p not in DATABASE_PRIVILEGES]
        if unknown:
            raise ValueError(f"unknown database privilege {unknown[0]!r}")
        texts = [values.get(k) for k in ("owner", "encoding", "collate", "ctype", "locale_provider", "tablespace")]
        settings = [*values["settings"], *(x for v in values["role_settings"].values() for x in v)]
        if (
            not all(isinstance(t, str) for t in texts)
            or not isinstance(values["connection_limit"], int)
            or not isinstance(values.get("comment"), str | None)
            or not all(isinstance(x, str) for x in settings)
        ):
            raise ValueError("a database property has the wrong type")
        return cls(**values)


def read_database_properties(conn: psycopg.Connection) -> DatabaseProperties:
    """The properties of the database ``conn`` is connected to."""
    version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    locale = (  # the locale provider came with PostgreSQL 15
        "CASE d.datlocprovider WHEN 'i' THEN 'icu' ELSE 'libc' END, d.daticulocale"
        if version and version[0] >= 150000
        else "'libc', NULL::text"
    )
    row = conn.execute(
        f"""
        SELECT pg_get_userbyid(d.datdba),
               ARRAY(SELECT ARRAY[CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                                  a.privilege_type, a.is_grantable::text]
                       FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a ORDER BY 1),
               coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                          WHERE s.setdatabase = d.oid AND s.setrole = 0), '{{}}'),
               (SELECT coalesce(jsonb_object_agg(pg_get_userbyid(s.setrole), to_jsonb(s.setconfig)), '{{}}')
                  FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole <> 0),
               shobj_description(d.oid, 'pg_database'), d.datconnlimit,
               pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
               {locale},
               (SELECT spcname FROM pg_tablespace WHERE oid = d.dattablespace)
          FROM pg_database d WHERE d.datname = current_database()
        """
    ).fetchone()
    assert row is not None
    owner, grants, settings, role_settings, comment, limit, encoding, collate, ctype, provider, icu, space = row
    return DatabaseProperties(
        owner=owner,
        grants=[(g, p, w == "true") for g, p, w in grants],
        settings=sorted(settings),
        role_settings={role: list(values) for role, values in role_settings.items()},
        comment=comment,
        connection_limit=int(limit),
        encoding=encoding,
        collate=collate,
        ctype=ctype,
        locale_provider=provider,
        icu_locale=icu,
        tablespace=space,
    )


#: settings whose value is a list of items quoted one by one (as pg_dump's variable_is_guc_list_quote)
LIST_SETTINGS = (
    "search_path",
    "temp_tablespaces",
    "local_preload_libraries",
    "session_preload_libraries",
    "shared_preload_libraries",
    "unix_socket_directories",
)

#: Fixed code that applies the properties it decodes from a base64 JSON payload (settings already split
#: into the items to quote, by :func:`setting_items`): no value from a backup
#: is ever spliced into SQL text (the text also passes through psql in Option A, so neither quotes,
#: dollar tags nor backslash commands in a value can escape). Roles that do not exist are skipped
#: (verify then names what differs).
_APPLY_PROPERTIES = """DO $drlib$
DECLARE
  p jsonb := convert_from(decode('{payload}', 'base64'), 'UTF8')::jsonb;
  db text := current_database();
  r record; g jsonb; item record; v text;
BEGIN
  IF to_regrole(quote_ident(p->>'owner')) IS NOT NULL THEN
    EXECUTE format('ALTER DATABASE %I OWNER TO %I', db, p->>'owner');
  END IF;
  FOR r IN SELECT DISTINCT a.grantee FROM pg_database d,
           aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE d.datname = db LOOP
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM %s', db,
                   CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
  END LOOP;
  FOR g IN SELECT * FROM jsonb_array_elements(p->'grants') LOOP
    IF g->>1 NOT IN ('CREATE', 'CONNECT', 'TEMPORARY') THEN
      RAISE EXCEPTION 'unknown database privilege in the backup: %', g->>1;
    END IF;
    IF g->>0 = 'PUBLIC' OR to_regrole(quote_ident(g->>0)) IS NOT NULL THEN
      EXECUTE format('GRANT %s ON DATABASE %I TO %s%s', g->>1, db,
                     CASE WHEN g->>0 = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(g->>0) END,
                     CASE WHEN (g->>2)::boolean THEN ' WITH GRANT OPTION' ELSE '' END);
    END IF;
  END LOOP;
  EXECUTE format('ALTER DATABASE %I RESET ALL', db);
  FOR r IN SELECT pg_get_userbyid(s.setrole) AS role FROM pg_db_role_setting s JOIN pg_database d
           ON d.oid = s.setdatabase WHERE d.datname = db AND s.setrole <> 0 LOOP
    EXECUTE format('ALTER ROLE %I IN DATABASE %I RESET ALL', r.role, db);
  END LOOP;
  FOR item IN SELECT x->>0 AS role, x->>1 AS name, x->2 AS items FROM jsonb_array_elements(p->'apply_settings') x LOOP
    CONTINUE WHEN item.role IS NOT NULL AND to_regrole(quote_ident(item.role)) IS NULL;
    SELECT string_agg(quote_literal(e), ', ') INTO v FROM jsonb_array_elements_text(item.items) e;
    IF item.role IS NULL THEN
      EXECUTE format('ALTER DATABASE %I SET %I = %s', db, item.name, v);
    ELSE
      EXECUTE format('ALTER ROLE %I IN DATABASE %I SET %I = %s', item.role, db, item.name, v);
    END IF;
  END LOOP;
  EXECUTE format('COMMENT ON DATABASE %I IS %L', db, p->>'comment');
  EXECUTE format('ALTER DATABASE %I WITH CONNECTION LIMIT %s', db, (p->>'connection_limit')::int);
END $drlib$;
"""


def database_properties_sql(props: DatabaseProperties) -> str:
    """SQL that gives the current database ``props`` (owner, privileges, settings, comment, limit).

    Run while connected to the database being restored; it names it by ``current_database()``, so it
    works under a temporary name too. The values travel base64-encoded, never as SQL text."""
    settings = [[None, *setting_items(s)] for s in props.settings]
    settings += [[role, *setting_items(s)] for role, values in props.role_settings.items() for s in values]
    payload = base64.b64encode(json.dumps({**props.to_dict(), "apply_settings": settings}).encode()).decode()
    return _APPLY_PROPERTIES.replace("{payload}", payload)


def setting_items(setting: str) -> tuple[str, list[str]]:
    """A stored ``name=value`` as its name and the values to quote one by one: a list setting such as
    ``search_path`` keeps its items (``"my schema", public`` is two), any other one is one value."""
    name, _, value = setting.partition("=")
    if name.lower() not in LIST_SETTINGS:
        return name, [value]
    items = [item.strip() for item in value.split(",")]
    return name, [i[1:-1].replace('""', '"') if len(i) > 1 and i[0] == i[-1] == '"' else i for i in items]


# -- roles -------------------------------------------------------------------------------------

_ROLE_COLUMNS = """r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
       r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text, coalesce(r.rolconfig, '{}'),
       ARRAY(SELECT pg_get_userbyid(m.roleid) FROM pg_auth_members m WHERE m.member = r.oid ORDER BY 1)"""
_USED_ROLES = f"""
WITH RECURSIVE used(oid) AS (
    SELECT d.datdba FROM pg_database d WHERE d.datname = current_database()
    UNION SELECT a.grantee FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database()
    UNION SELECT s.setrole FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
           WHERE d.datname = current_database()
    UNION SELECT n.nspowner FROM pg_namespace n WHERE {SYSTEM_SCHEMA_FILTER}
    UNION SELECT a.grantee FROM pg_namespace n, aclexplode(n.nspacl) a WHERE {SYSTEM_SCHEMA_FILTER}
    UNION SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SYSTEM_SCHEMA_FILTER}
    UNION SELECT a.grantee FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
           WHERE {SYSTEM_SCHEMA_FILTER}
    UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {SYSTEM_SCHEMA_FILTER}
    UNION SELECT a.grantee FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
           WHERE {SYSTEM_SCHEMA_FILTER}
    UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {SYSTEM_SCHEMA_FILTER}
    UNION SELECT unnest(pol.polroles) FROM pg_policy pol
    UNION SELECT da.defaclrole FROM pg_default_acl da
    UNION SELECT a.grantee FROM pg_default_acl da, aclexplode(da.defaclacl) a
    UNION SELECT m.roleid FROM pg_auth_members m JOIN used u ON u.oid = m.member
)
SELECT {_ROLE_COLUMNS}
  FROM pg_roles r WHERE r.oid IN (SELECT oid FROM used WHERE oid <> 0) AND r.rolname NOT LIKE 'pg\\_%'
 ORDER BY r.rolname
"""


#: role attributes, in the order CREATE ROLE takes them
ROLE_FLAGS = ("SUPERUSER", "INHERIT", "CREATEROLE", "CREATEDB", "LOGIN", "REPLICATION", "BYPASSRLS")


@dataclass(frozen=True)
class Role:
    """A role as a restore re-creates it (the password hash lives only in the roles file)."""

    name: str
    flags: dict[str, bool]
    connection_limit: int = -1
    valid_until: str | None = None
    member_of: tuple[str, ...] = ()
    #: ``ALTER ROLE … SET`` settings (all databases), as ``name=value``
    settings: tuple[str, ...] = ()
    password_hash: str | None = field(default=None, repr=False, compare=False)

    @property
    def attributes(self) -> str:
        words = [flag if self.flags.get(flag) else f"NO{flag}" for flag in ROLE_FLAGS]
        words.append(f"CONNECTION LIMIT {self.connection_limit}")
        if self.valid_until:
            words.append(f"VALID UNTIL {self.valid_until}")
        return " ".join(words)

    def described(self) -> str:
        member = f"; member of {', '.join(self.member_of)}" if self.member_of else ""
        settings = f"; settings {', '.join(self.settings)}" if self.settings else ""
        return self.attributes + member + settings

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "flags": self.flags,
            "connection_limit": self.connection_limit,
            "valid_until": self.valid_until,
            "member_of": list(self.member_of),
            "settings": list(self.settings),
            "password_hash": self.password_hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Role:
        """A role from the roles file; anything but the expected types is refused (the file is input)."""
        flags = data["flags"]
        if not isinstance(data["name"], str) or not isinstance(flags, dict):
            raise ValueError("a role needs a name and flags")
        if set(flags) - set(ROLE_FLAGS) or not all(isinstance(v, bool) for v in flags.values()):
            raise ValueError(f"role {data['name']!r} has unknown flags")
        limit, until, password = data["connection_limit"], data["valid_until"], data["password_hash"]
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ValueError(f"role {data['name']!r}: connection_limit is not a number")
        if not isinstance(until, str | None) or not isinstance(password, str | None):
            raise ValueError(f"role {data['name']!r}: valid_until and password_hash must be text")
        members, settings = data["member_of"], data.get("settings", [])
        for listed in (members, settings):
            if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
                raise ValueError(f"role {data['name']!r}: member_of and settings must be lists of text")
        if password:
            register_secret(password)
        return cls(data["name"], dict(flags), limit, until, tuple(members), tuple(settings), password)


_FLAG_COLUMNS = (
    "rolsuper",
    "rolinherit",
    "rolcreaterole",
    "rolcreatedb",
    "rolcanlogin",
    "rolreplication",
    "rolbypassrls",
)


def _role(row: tuple[Any, ...], hashes: dict[str, str]) -> Role:
    name, *flag_values, limit, until, settings, member = row
    secret = hashes.get(name)
    if secret:
        register_secret(secret)
    return Role(
        name=name,
        flags=dict(zip(ROLE_FLAGS, (bool(v) for v in flag_values), strict=True)),
        connection_limit=int(limit),
        valid_until=until,
        settings=tuple(settings),
        member_of=tuple(member),
        password_hash=secret,
    )


def describe_roles(conn: psycopg.Connection, names: list[str]) -> list[Role]:
    """The live roles among ``names`` (no password hashes)."""
    rows = conn.execute(f"SELECT {_ROLE_COLUMNS} FROM pg_roles r WHERE r.rolname = ANY(%s)", (names,)).fetchall()
    return [_role(row, {}) for row in rows]


def read_roles(conn: psycopg.Connection) -> list[Role]:
    """The roles the current database uses, with password hashes when ``pg_authid`` is readable."""
    hashes: dict[str, str] = {}
    readable = conn.execute("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')").fetchone()
    if readable and readable[0]:
        rows = conn.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL")
        hashes = {name: secret for name, secret in rows}
    return [_role(row, hashes) for row in conn.execute(_USED_ROLES)]


def create_missing_roles(conn: psycopg.Connection, roles: list[Role]) -> list[str]:
    """Create each role that does not exist yet, then the memberships between them; existing roles
    are left as they are. Returns the names created."""
    existing = {
        r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([r.name for r in roles],))
    }
    created = []
    for role in roles:
        if role.name in existing:
            continue
        words = [flag if role.flags.get(flag) else f"NO{flag}" for flag in ROLE_FLAGS]
        statement = sql.SQL("CREATE ROLE {} WITH {} CONNECTION LIMIT {}").format(
            sql.Identifier(role.name), sql.SQL(" ".join(words)), sql.Literal(int(role.connection_limit))
        )
        if role.valid_until:
            statement += sql.SQL(" VALID UNTIL {}").format(sql.Literal(role.valid_until))
        if role.password_hash:
            statement += sql.SQL(" PASSWORD {}").format(sql.Literal(role.password_hash))
        conn.execute(statement)
        created.append(role.name)
    for role in roles:
        if role.name not in created:  # an existing role is left exactly as it is
            continue
        for parent in role.member_of:
            exists = conn.execute("SELECT to_regrole(quote_ident(%s))", (parent,)).fetchone()
            if exists and exists[0] is not None:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(parent), sql.Identifier(role.name)))
        for setting in role.settings:
            name, items = setting_items(setting)
            values = sql.SQL(", ").join(sql.Literal(item) for item in items)
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(sql.Identifier(role.name), sql.Identifier(name), values)
            )
    return created


def write_roles_file(path: Path, roles: list[Role]) -> str:
    """Write the roles (with password hashes) as JSON, mode 0600, atomically; return the text."""
    text = json.dumps({"roles": [role.to_dict() for role in roles]}, indent=2, sort_keys=True)
    write_whole(path, text, mode=0o600)
    return text


def read_roles_file(path: Path) -> list[Role]:
    """The roles of a backup (password hashes registered as secrets: never printed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Role.from_dict(item) for item in data["roles"]]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BackupCorrupt(
            f"the roles file {path} is unreadable ({type(exc).__name__}: {exc}): pick another backup, or "
            "restore without roles (restore_roles=False) and create them by hand"
        ) from exc


def backup_globals(backup_path: Path, manifest: Any) -> tuple[list[Role], DatabaseProperties | None]:
    """The roles and database properties a backup carries (none for backups taken before drlib kept them)."""
    roles: list[Role] = []
    if manifest is not None and manifest.roles_file and backup_path.with_name(manifest.roles_file).is_file():
        roles = read_roles_file(backup_path.with_name(manifest.roles_file))
    props = None
    if manifest is not None and manifest.database_properties:
        try:
            props = DatabaseProperties.from_dict(manifest.database_properties)
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupCorrupt(
                f"the database properties in the manifest of {backup_path.name} are unreadable ({exc}): "
                "pick another backup"
            ) from exc
    return roles, props


def apply_database_properties(conn: psycopg.Connection, props: DatabaseProperties) -> None:
    """Give the database ``conn`` is connected to the backup's owner, privileges, settings and comment."""
    conn.execute(database_properties_sql(props).encode())
