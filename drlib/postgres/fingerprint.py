"""The schema fingerprint: every object of a database, by kind and qualified name, with its definition
as PostgreSQL itself prints it (``pg_get_indexdef``, ``pg_get_constraintdef``, …), so a restored
database can be compared with its backup object by object ("missing index public.track_genre_id_idx").

Read in the backup's own snapshot, before ``pg_dump`` starts. Long bodies (functions, views) are kept
as a sha256; everything else verbatim, so a difference can be shown. Objects that belong to an
extension are the extension's (its version is compared instead); PostgreSQL's own schemas are left out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from drlib.config import DatabaseSettings
from drlib.postgres.catalog import NOT_EXTENSION_MEMBER, SYSTEM_SCHEMA_FILTER, in_scope

#: kind -> qualified name -> definition
SchemaFingerprint = dict[str, dict[str, str]]


def _not_ext(oid: str, catalog: str) -> str:
    """Not a member of an extension (the extension's version is compared instead)."""
    return NOT_EXTENSION_MEMBER.format(oid=oid, catalog=f"'{catalog}'")


_NOT_EXT_CLASS = _not_ext("c.oid", "pg_class")
_NOT_EXT_PROC = _not_ext("p.oid", "pg_proc")
_NOT_EXT_TYPE = _not_ext("t.oid", "pg_type")
_NOT_EXT_SCHEMA = _not_ext("n.oid", "pg_namespace")
_REL = "format('%I.%I', n.nspname, c.relname)"
_PLAIN = "n.nspname || '.' || c.relname"
#: the first oid a user object can have: below it, objects initdb made
_FIRST_USER_OID = 16384


def _sorted_acl(acl: str, kind: str, owner: str) -> str:
    """``acl`` as sorted text, NULL read as the owner's default (``acldefault``): a GRANT then REVOKE
    leaves a non-NULL ACL equal to the default, a restore leaves NULL; both print the same."""
    return f'ARRAY(SELECT x::text FROM unnest(coalesce({acl}, acldefault({kind}::"char", {owner}))) x ORDER BY 1)::text'


def _acl_text(acl: str, kind: str, owner: str) -> str:
    """``default`` when the ACL is the owner's default, else the sorted ACL."""
    normal, default = _sorted_acl(acl, kind, owner), _sorted_acl("NULL", kind, owner)
    return f"CASE WHEN {normal} = {default} THEN 'default' ELSE {normal} END"


def _acl_suffix(acl: str, kind: str, owner: str) -> str:
    """``, acl …`` when the ACL is not the owner's default, else nothing."""
    normal, default = _sorted_acl(acl, kind, owner), _sorted_acl("NULL", kind, owner)
    return f"CASE WHEN {normal} = {default} THEN '' ELSE ', acl ' || {normal} END"


def _sorted_options(options: str) -> str:
    """``, with (a=1, b=2)`` for a reloptions array, nothing when NULL."""
    listed = f"array_to_string(ARRAY(SELECT unnest({options}) ORDER BY 1), ', ')"
    return f"CASE WHEN {options} IS NULL THEN '' ELSE ', with (' || {listed} || ')' END"


_RELATION_ACL_KIND = "CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END"
_ENABLED = {"D": "disabled", "R": "enabled replica", "A": "enabled always"}


def _enabled(column: str) -> str:
    """`` (disabled)``, `` (enabled replica)``, `` (enabled always)``; nothing for the default (origin)."""
    cases = " ".join(f"WHEN '{code}' THEN ' ({word})'" for code, word in _ENABLED.items())
    return f"CASE {column} {cases} ELSE '' END"


_AGGREGATE_ROW = """concat_ws(' ', a.aggkind, a.aggnumdirectargs, a.aggtransfn::oid::regprocedure,
        a.aggfinalfn::oid::regprocedure, a.aggcombinefn::oid::regprocedure, a.aggserialfn::oid::regprocedure,
        a.aggdeserialfn::oid::regprocedure, a.aggmtransfn::oid::regprocedure, a.aggminvtransfn::oid::regprocedure,
        a.aggmfinalfn::oid::regprocedure, a.aggfinalextra, a.aggmfinalextra, a.aggfinalmodify, a.aggmfinalmodify,
        a.aggsortop::regoperator, a.aggtranstype::regtype, a.aggtransspace, a.aggmtranstype::regtype,
        a.aggmtransspace, quote_nullable(a.agginitval), quote_nullable(a.aggminitval))"""

#: kind -> query returning (qualified name, plain schema.name for include/exclude, definition)
QUERIES: dict[str, str] = {
    "schema": f"""
        SELECT format('%I', n.nspname), '*',
               'owner ' || pg_get_userbyid(n.nspowner) || ', acl ' || {_acl_text("n.nspacl", "'n'", "n.nspowner")}
          FROM pg_namespace n WHERE {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_SCHEMA}""",
    "table": f"""
        SELECT {_REL}, {_PLAIN},
               CASE c.relkind WHEN 'p' THEN 'partitioned by ' || pg_get_partkeydef(c.oid) || ', '
                              WHEN 'f' THEN 'foreign, ' ELSE '' END
               || 'owner ' || pg_get_userbyid(c.relowner)
               || CASE WHEN c.relrowsecurity THEN ', row level security' ELSE '' END
               || CASE WHEN c.relforcerowsecurity THEN ' forced' ELSE '' END
               || CASE WHEN c.relpersistence = 'u' THEN ', unlogged' ELSE '' END
               || {_sorted_options("c.reloptions")}
               || CASE c.relreplident WHEN 'n' THEN ', replica identity nothing'
                                      WHEN 'f' THEN ', replica identity full'
                                      WHEN 'i' THEN ', replica identity using index ' || coalesce((
                                          SELECT format('%I', ri.relname) FROM pg_index rx
                                            JOIN pg_class ri ON ri.oid = rx.indexrelid
                                           WHERE rx.indrelid = c.oid AND rx.indisreplident), '?')
                                      ELSE '' END
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'f') AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}""",
    "column": f"""
        SELECT {_REL} || '.' || format('%I', a.attname), {_PLAIN},
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || CASE WHEN a.attidentity = 'a' THEN ' GENERATED ALWAYS AS IDENTITY'
                       WHEN a.attidentity = 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END
               || CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ')'
                       WHEN d.adbin IS NOT NULL THEN ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid) ELSE '' END
               || CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                       THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END
               || CASE WHEN a.attstattarget >= 0 THEN ' STATISTICS ' || a.attstattarget ELSE '' END
               || CASE WHEN cardinality(a.attacl) > 0
                       THEN ', acl ' || ARRAY(SELECT x::text FROM unnest(a.attacl) x ORDER BY 1)::text ELSE '' END
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relkind IN ('r', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped
           AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}""",
    # a constraint cloned onto a partition (conparentid <> 0) is its parent's: a foreign key referencing a
    # partitioned table gets one clone per partition, renumbered (…_fkey1, …_fkey2) by every restore
    "constraint": f"""
        SELECT {_REL} || '.' || format('%I', con.conname), {_PLAIN},
               pg_get_constraintdef(con.oid) || CASE WHEN con.convalidated THEN '' ELSE ' NOT VALID' END
          FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE con.conparentid = 0 AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}
        UNION ALL
        SELECT format('%I.%I', n.nspname, t.typname) || '.' || format('%I', con.conname), n.nspname || '.' || t.typname,
               pg_get_constraintdef(con.oid)
          FROM pg_constraint con JOIN pg_type t ON t.oid = con.contypid JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_TYPE}""",
    # indexes attached to a partitioned table's index keep their names: pg_dump creates each by name
    "index": f"""
        SELECT format('%I.%I', n.nspname, i.relname), {_PLAIN}, pg_get_indexdef(x.indexrelid)
          FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}""",
    # triggers cloned onto partitions keep their parent's name: kept, so their enabled state is compared
    "trigger": f"""
        SELECT {_REL} || '.' || format('%I', tg.tgname), {_PLAIN},
               pg_get_triggerdef(tg.oid) || {_enabled("tg.tgenabled")}
          FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT tg.tgisinternal AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}""",
    "function": f"""
        SELECT p.oid::regprocedure::text, n.nspname || '.' || p.proname,
               CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window function'
                              ELSE 'function' END
               || ', owner ' || pg_get_userbyid(p.proowner) || ', acl ' || {_acl_text("p.proacl", "'f'", "p.proowner")}
               || ', body sha256 ' || encode(sha256(convert_to(
                      CASE WHEN p.prokind = 'a' THEN {_AGGREGATE_ROW} ELSE pg_get_functiondef(p.oid) END, 'UTF8')),
                  'hex')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_PROC}""",
    "view": f"""
        SELECT {_REL}, {_PLAIN},
               CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END
               || ', owner ' || pg_get_userbyid(c.relowner)
               || CASE WHEN c.relkind = 'm' AND NOT c.relispopulated THEN ', not populated' ELSE '' END
               || {_sorted_options("c.reloptions")}
               || ', definition sha256 ' || encode(sha256(convert_to(pg_get_viewdef(c.oid), 'UTF8')), 'hex')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('v', 'm') AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}""",
    "sequence": f"""
        SELECT {_REL}, {_PLAIN},
               format_type(s.seqtypid, NULL) || ' start ' || s.seqstart || ' increment ' || s.seqincrement
               || ' min ' || s.seqmin || ' max ' || s.seqmax || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END
               || ', owner ' || pg_get_userbyid(c.relowner)
               || coalesce(', owned by ' || (
                      SELECT format('%I.%I.%I', tn.nspname, tc.relname, ta.attname)
                        FROM pg_depend dep JOIN pg_class tc ON tc.oid = dep.refobjid
                        JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                        JOIN pg_attribute ta ON ta.attrelid = dep.refobjid AND ta.attnum = dep.refobjsubid
                       WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid
                         AND dep.refclassid = 'pg_class'::regclass AND dep.deptype = 'a' AND dep.refobjsubid > 0
                       LIMIT 1), '')
          FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}""",
    "partition": f"""
        SELECT {_REL}, {_PLAIN},
               'partition of ' || format('%I.%I', pn.nspname, p.relname) || ' ' || pg_get_expr(c.relpartbound, c.oid)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class p ON p.oid = i.inhparent
          JOIN pg_namespace pn ON pn.oid = p.relnamespace
         WHERE c.relispartition AND c.relkind IN ('r', 'p', 'f') AND {SYSTEM_SCHEMA_FILTER}""",
    # plain (not partition) inheritance: CREATE TABLE … INHERITS, ALTER TABLE … [NO] INHERIT
    "inheritance": f"""
        SELECT {_REL}, {_PLAIN},
               'inherits ' || string_agg(format('%I.%I', pn.nspname, p.relname), ', ' ORDER BY i.inhseqno)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class p ON p.oid = i.inhparent
          JOIN pg_namespace pn ON pn.oid = p.relnamespace
         WHERE NOT c.relispartition AND c.relkind IN ('r', 'p', 'f') AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}
         GROUP BY c.oid, n.nspname, c.relname""",
    "type": f"""
        SELECT format('%I.%I', n.nspname, t.typname), n.nspname || '.' || t.typname,
               CASE t.typtype
                 WHEN 'e' THEN 'enum (' || array_to_string(ARRAY(
                                   SELECT quote_literal(e.enumlabel) FROM pg_enum e
                                    WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder), ', ') || ')'
                 WHEN 'd' THEN 'domain over ' || format_type(t.typbasetype, t.typtypmod)
                               || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                               || coalesce(' DEFAULT ' || t.typdefault, '')
                 WHEN 'r' THEN 'range'
                 WHEN 'c' THEN 'composite (' || array_to_string(ARRAY(
                                   SELECT format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
                                     FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0
                                      AND NOT a.attisdropped ORDER BY a.attnum), ', ') || ')'
                 ELSE 'base type' END
               || ', owner ' || pg_get_userbyid(t.typowner) || {_acl_suffix("t.typacl", "'T'", "t.typowner")}
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE t.typtype IN ('e', 'd', 'r', 'b', 'c') AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_TYPE}
           AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
           AND NOT (t.typtype = 'b' AND t.typelem <> 0 AND t.typcategory = 'A')""",
    "extension": """
        SELECT format('%I', e.extname), '*', 'version ' || e.extversion || ' in schema ' || n.nspname
          FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace""",
    "policy": f"""
        SELECT {_REL} || '.' || format('%I', pol.polname), {_PLAIN},
               CASE WHEN pol.polpermissive THEN 'permissive' ELSE 'restrictive' END
               || ' for ' || CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                              WHEN 'd' THEN 'DELETE' ELSE 'ALL' END
               || ' to ' || array_to_string(ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END
                                                  FROM unnest(pol.polroles) r ORDER BY 1), ', ')
               || coalesce(' using (' || pg_get_expr(pol.polqual, pol.polrelid) || ')', '')
               || coalesce(' with check (' || pg_get_expr(pol.polwithcheck, pol.polrelid) || ')', '')
          FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {SYSTEM_SCHEMA_FILTER}""",
    # only relations whose ACL is not the owner's default: NULL and an equal non-NULL ACL are the same
    "grant": f"""
        SELECT {_REL}, {_PLAIN},
               array_to_string(ARRAY(SELECT x::text FROM unnest(c.relacl) x ORDER BY 1), ' ')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relacl IS NOT NULL AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND {_sorted_acl("c.relacl", _RELATION_ACL_KIND, "c.relowner")}
               <> {_sorted_acl("NULL", _RELATION_ACL_KIND, "c.relowner")}
           AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}""",
    # relations and their columns by name, schemas (public too: its oid is initdb's); any other object
    # as PostgreSQL describes it ("function public.f(integer)")
    "comment": f"""
        SELECT {_REL} || CASE WHEN d.objsubid = 0 THEN '' ELSE '.' || format('%I', a.attname) END, {_PLAIN},
               d.description
          FROM pg_description d JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0
         WHERE (d.objsubid = 0 OR a.attname IS NOT NULL) AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}
        UNION ALL
        SELECT 'schema ' || format('%I', n.nspname), '*', d.description
          FROM pg_description d JOIN pg_namespace n ON n.oid = d.objoid AND d.classoid = 'pg_namespace'::regclass
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_SCHEMA}
        UNION ALL
        SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), '*', d.description
          FROM pg_description d
         WHERE d.classoid NOT IN ('pg_class'::regclass, 'pg_namespace'::regclass) AND d.objoid >= {_FIRST_USER_OID}
           AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid
                              AND e.deptype = 'e')""",
    "rule": f"""
        SELECT {_REL} || '.' || format('%I', r.rulename), {_PLAIN}, pg_get_ruledef(r.oid) || {_enabled("r.ev_enabled")}
          FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE r.rulename <> '_RETURN' AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}""",
    "default_privileges": """
        SELECT 'for role ' || format('%I', pg_get_userbyid(da.defaclrole))
               || coalesce(' in schema ' || format('%I', n.nspname), '') || ' on '
               || CASE da.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                                        WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE da.defaclobjtype::text END,
               '*', array_to_string(ARRAY(SELECT x::text FROM unnest(da.defaclacl) x ORDER BY 1), ' ')
          FROM pg_default_acl da LEFT JOIN pg_namespace n ON n.oid = da.defaclnamespace""",
    "event_trigger": f"""
        SELECT format('%I', e.evtname), '*',
               'on ' || e.evtevent || ' execute ' || e.evtfoid::regprocedure::text
               || CASE WHEN e.evttags IS NULL THEN ''
                       ELSE ' when tag in (' || array_to_string(ARRAY(SELECT unnest(e.evttags) ORDER BY 1), ', ') || ')'
                  END
               || ', owner ' || pg_get_userbyid(e.evtowner) || {_enabled("e.evtenabled")}
          FROM pg_event_trigger e WHERE {_not_ext("e.oid", "pg_event_trigger")}""",
    "collation": f"""
        SELECT format('%I.%I', n.nspname, co.collname), n.nspname || '.' || co.collname,
               (to_jsonb(co) - 'oid' - 'collname' - 'collnamespace' - 'collowner' - 'collversion')::text
               || ', owner ' || pg_get_userbyid(co.collowner)
          FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_not_ext("co.oid", "pg_collation")}""",
    "statistics": f"""
        SELECT format('%I.%I', n.nspname, s.stxname), tn.nspname || '.' || tc.relname,
               pg_get_statisticsobjdef(s.oid) || coalesce(' STATISTICS ' || nullif(s.stxstattarget::int, -1), '')
               || ', owner ' || pg_get_userbyid(s.stxowner)
          FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
          JOIN pg_class tc ON tc.oid = s.stxrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_not_ext("s.oid", "pg_statistic_ext")}""",
    "operator": f"""
        SELECT o.oid::regoperator::text, n.nspname || '.' || o.oprname,
               concat_ws(', ', 'function ' || coalesce(nullif(o.oprcode::oid, 0)::regprocedure::text, '-'),
                         'restrict ' || nullif(o.oprrest::oid, 0)::regprocedure::text,
                         'join ' || nullif(o.oprjoin::oid, 0)::regprocedure::text,
                         'commutator ' || nullif(o.oprcom, 0)::regoperator::text,
                         'negator ' || nullif(o.oprnegate, 0)::regoperator::text,
                         CASE WHEN o.oprcanhash THEN 'hashes' END, CASE WHEN o.oprcanmerge THEN 'merges' END,
                         'owner ' || pg_get_userbyid(o.oprowner))
          FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_not_ext("o.oid", "pg_operator")}""",
    "text_search_configuration": f"""
        SELECT format('%I.%I', n.nspname, cfg.cfgname), n.nspname || '.' || cfg.cfgname,
               'parser ' || (SELECT format('%I.%I', pn.nspname, prs.prsname) FROM pg_ts_parser prs
                               JOIN pg_namespace pn ON pn.oid = prs.prsnamespace WHERE prs.oid = cfg.cfgparser)
               || ', owner ' || pg_get_userbyid(cfg.cfgowner) || ', mapping '
               || coalesce((SELECT string_agg(m.maptokentype || ':' || m.mapdict::regdictionary::text, ' '
                                              ORDER BY m.maptokentype, m.mapseqno)
                              FROM pg_ts_config_map m WHERE m.mapcfg = cfg.oid), '')
          FROM pg_ts_config cfg JOIN pg_namespace n ON n.oid = cfg.cfgnamespace
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_not_ext("cfg.oid", "pg_ts_config")}""",
    "text_search_dictionary": f"""
        SELECT format('%I.%I', n.nspname, dict.dictname), n.nspname || '.' || dict.dictname,
               'template ' || (SELECT format('%I.%I', tn.nspname, tmpl.tmplname) FROM pg_ts_template tmpl
                                 JOIN pg_namespace tn ON tn.oid = tmpl.tmplnamespace WHERE tmpl.oid = dict.dicttemplate)
               || coalesce(', options ' || dict.dictinitoption, '') || ', owner ' || pg_get_userbyid(dict.dictowner)
          FROM pg_ts_dict dict JOIN pg_namespace n ON n.oid = dict.dictnamespace
         WHERE {SYSTEM_SCHEMA_FILTER} AND {_not_ext("dict.oid", "pg_ts_dict")}""",
    "cast": f"""
        SELECT format('(%s AS %s)', format_type(ca.castsource, NULL), format_type(ca.casttarget, NULL)), '*',
               CASE ca.castmethod WHEN 'f' THEN 'with function ' || ca.castfunc::regprocedure::text
                                  WHEN 'i' THEN 'with inout' ELSE 'without function' END
               || CASE ca.castcontext WHEN 'i' THEN ', implicit' WHEN 'a' THEN ', assignment' ELSE '' END
          FROM pg_cast ca WHERE ca.oid >= {_FIRST_USER_OID} AND {_not_ext("ca.oid", "pg_cast")}""",
    "large_object": f"""
        SELECT l.oid::text, '*',
               'owner ' || pg_get_userbyid(l.lomowner) || {_acl_suffix("l.lomacl", "'L'", "l.lomowner")}
          FROM pg_largeobject_metadata l""",
}

#: publications (kind "publication"): which tables, columns and rows they publish; the query depends on the
#: server (column lists, row filters and schemas are PostgreSQL 15's)
_PUBLICATION_BASE = """
        SELECT format('%I', p.pubname), '*',
               concat_ws(', ', 'owner ' || pg_get_userbyid(p.pubowner), CASE WHEN p.puballtables THEN 'all tables' END,
                         'publish ' || concat_ws(',', CASE WHEN p.pubinsert THEN 'insert' END,
                                                 CASE WHEN p.pubupdate THEN 'update' END,
                                                 CASE WHEN p.pubdelete THEN 'delete' END,
                                                 CASE WHEN p.pubtruncate THEN 'truncate' END),
                         CASE WHEN p.pubviaroot THEN 'via partition root' END,
                         'tables ' || (SELECT string_agg(entry, ', ' ORDER BY entry) FROM (
                             SELECT format('%I.%I', tn.nspname, tc.relname) {table_extra} AS entry
                               FROM pg_publication_rel pr JOIN pg_class tc ON tc.oid = pr.prrelid
                               JOIN pg_namespace tn ON tn.oid = tc.relnamespace WHERE pr.prpubid = p.oid) t)
                         {schemas})
          FROM pg_publication p"""
_PUBLICATION_15 = _PUBLICATION_BASE.format(
    table_extra="""|| coalesce(' (' || (SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum)
                                    FROM pg_attribute a WHERE a.attrelid = pr.prrelid
                                     AND a.attnum = ANY (pr.prattrs)) || ')', '')
                   || coalesce(' where (' || pg_get_expr(pr.prqual, pr.prrelid) || ')', '')""",
    schemas=""", 'schemas ' || (SELECT string_agg(format('%I', sn.nspname), ', ' ORDER BY sn.nspname)
                                 FROM pg_publication_namespace ps JOIN pg_namespace sn ON sn.oid = ps.pnnspid
                                WHERE ps.pnpubid = p.oid)""",
)
_PUBLICATION_OLDER = _PUBLICATION_BASE.format(table_extra="", schemas="")
#: large objects up to this many, and this many bytes in all, get their content hashed (md5 of lo_get)
LARGE_OBJECT_HASH_COUNT = 1000
LARGE_OBJECT_HASH_BYTES = 64 * 1024**2

#: how a kind is named in a difference ("missing index …"); constraints are named by their type
KIND_WORDS = {
    "schema": "schema",
    "grant": "grants on",
    "partition": "partition",
    "type": "type",
    "comment": "comment on",
    "inheritance": "inheritance of",
    "default_privileges": "default privileges",
    "event_trigger": "event trigger",
    "statistics": "statistics object",
    "text_search_configuration": "text search configuration",
    "text_search_dictionary": "text search dictionary",
    "large_object": "large object",
}
_CONSTRAINT_WORDS = {
    "PRIMARY KEY": "primary key",
    "UNIQUE": "unique constraint",
    "CHECK": "check constraint",
    "FOREIGN KEY": "foreign key",
    "EXCLUDE": "exclusion constraint",
}


def read_schema(conn: psycopg.Connection, settings: DatabaseSettings) -> SchemaFingerprint:
    """The schema fingerprint of the database ``conn`` is connected to (in its current snapshot)."""
    fingerprint: SchemaFingerprint = {}
    conn.execute("SELECT set_config('search_path', '', false)")  # every name printed schema-qualified
    publications = _PUBLICATION_15 if conn.info.server_version >= 150000 else _PUBLICATION_OLDER
    for kind, query in {**QUERIES, "publication": publications}.items():
        objects: dict[str, str] = {}
        for name, plain, definition in conn.execute(query):
            if plain == "*" or in_scope(plain, settings):
                objects[name] = definition
        fingerprint[kind] = objects
    _add_large_object_contents(conn, fingerprint["large_object"])
    return fingerprint


def _add_large_object_contents(conn: psycopg.Connection, objects: dict[str, str]) -> None:
    """Add size and md5 to each large object's definition when that is cheap: at most
    ``LARGE_OBJECT_HASH_COUNT`` objects of ``LARGE_OBJECT_HASH_BYTES`` in all, every one readable
    by this user (its owner's privileges: a superuser reads all). Otherwise owner and ACL only."""
    if not objects or len(objects) > LARGE_OBJECT_HASH_COUNT:
        return
    readable = conn.execute(
        "SELECT count(*) FILTER (WHERE pg_has_role(lomowner, 'USAGE')), count(*) FROM pg_largeobject_metadata"
    ).fetchone()
    if readable is None or readable[0] != readable[1]:
        return
    sizes = conn.execute(  # lo_lseek64 to the end reads no data; 262144 is INV_READ
        "SELECT oid::text, lo_lseek64(lo_open(oid, 262144), 0, 2) FROM pg_largeobject_metadata"
    ).fetchall()
    if sum(int(size) for _, size in sizes) > LARGE_OBJECT_HASH_BYTES:
        return
    for oid, size, md5 in conn.execute(
        "SELECT oid::text, length(lo_get(oid)), md5(lo_get(oid)) FROM pg_largeobject_metadata"
    ):
        if oid in objects:
            objects[oid] += f", {size} bytes, md5 {md5}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Difference:
    """One object that differs between a backup and a live database."""

    kind: str
    name: str
    change: str  # missing | unexpected | changed
    expected: str | None
    observed: str | None

    def describe(self) -> str:
        word = object_word(self.kind, self.expected or self.observed or "")
        if self.change == "changed":
            return f"changed {word} {self.name}: was {self.expected!r}, now {self.observed!r}"
        return f"{self.change} {word} {self.name}"


def object_word(kind: str, definition: str) -> str:
    if kind == "constraint":
        for prefix, word in _CONSTRAINT_WORDS.items():
            if definition.startswith(prefix):
                return word
        return "constraint"
    if kind == "view" and definition.startswith("materialized"):
        return "materialized view"
    if kind == "function" and definition.startswith(("procedure", "aggregate")):
        return definition.split(",", 1)[0]
    return KIND_WORDS.get(kind, kind)


def compare(expected: Mapping[str, Mapping[str, str]], observed: Mapping[str, Mapping[str, str]]) -> list[Difference]:
    """Every object missing, unexpected or changed, kind by kind (kinds the backup lacks are skipped)."""
    differences: list[Difference] = []
    for kind, before in expected.items():
        after = observed.get(kind, {})
        for name in sorted(set(before) | set(after)):
            was, now = before.get(name), after.get(name)
            if was == now:
                continue
            change = "missing" if now is None else "unexpected" if was is None else "changed"
            differences.append(Difference(kind=kind, name=name, change=change, expected=was, observed=now))
    return differences


def read_sequence_values(conn: psycopg.Connection, settings: DatabaseSettings) -> dict[str, int | None]:
    """Each sequence's last value (None: never used), read now: sequences are not transactional."""
    rows = conn.execute(
        f"""SELECT {_REL}, {_PLAIN}, pg_sequence_last_value(c.oid)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'S' AND {SYSTEM_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}"""
    ).fetchall()
    return {name: (None if value is None else int(value)) for name, plain, value in rows if in_scope(plain, settings)}
