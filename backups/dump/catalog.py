"""A clinic schema's structure as sorted lines of text (step 6 of backups.dump.cached's map),
read by its namespace: the cost is the clinic's, not the database's."""
from __future__ import annotations

import logging
import re
from typing import Any



logger = logging.getLogger(__name__)

PLACEHOLDER = "\x00"  # no catalog text can hold a NUL


def _placeheld(text: str, schema: str) -> str:
    """Every qualifier `schema.` in text made the placeholder."""
    return re.sub(rf"(?<![\w$\"]){re.escape(schema)}(?=\.)", PLACEHOLDER, text)


def catalog_rows(cursor, sql: str, params: list | tuple = ()) -> list[tuple]:
    cursor.execute(sql, params)
    return cursor.fetchall()


def _text(value: Any) -> str:
    return "∅" if value is None else str(value)


def fingerprint(cursor, schema: str) -> list[str]:
    """The schema's structure as sorted lines of text, its own name made a placeholder.

    Read through the namespace's members (pg_depend) and then by each relation's oid:
    index lookups only, whatever the number of other schemas. The session's search_path
    must be empty, so that the catalog's text names every schema it refers to.
    """
    found = catalog_rows(cursor, "SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema])
    if not found:
        return ["missing schema"]
    (namespace,) = found[0]
    members = catalog_rows(cursor, """
        SELECT d.classid = 'pg_catalog.pg_class'::regclass AND c.relkind IN ('r', 'S'), d.objid, c.relkind,
               pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
        FROM pg_catalog.pg_depend d
        LEFT JOIN pg_catalog.pg_class c ON d.classid = 'pg_catalog.pg_class'::regclass AND c.oid = d.objid
        WHERE d.refclassid = 'pg_catalog.pg_namespace'::regclass AND d.refobjid = %s AND d.deptype = 'n'
    """, [namespace])
    lines = [f"unsupported {description}" for supported, _oid, _kind, description in members if not supported]
    tables = [oid for supported, oid, kind, _d in members if supported and kind == "r"]
    sequences = [oid for supported, oid, kind, _d in members if supported and kind == "S"]
    label: dict[tuple[str, int], str] = {("pg_namespace", namespace): "schema"}
    name_of: dict[int, str] = {}
    for oid, name, persistence, am, tablespace, options, replident, rls, force_rls, partition, oftype in catalog_rows(cursor, """
        SELECT c.oid, c.relname, c.relpersistence, am.amname, ts.spcname, c.reloptions::text, c.relreplident,
               c.relrowsecurity, c.relforcerowsecurity, c.relispartition, c.reloftype::pg_catalog.regtype::text
        FROM pg_catalog.pg_class c
        LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
        LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace
        WHERE c.oid = ANY(%s::oid[])
    """, [tables]):
        name_of[oid] = name
        label[("pg_class", oid)] = f"table {name}"
        lines.append(f"table {name} persistence={persistence} am={_text(am)} tablespace={_text(tablespace)} "
                     f"options={_text(options)} replident={replident} rls={rls}/{force_rls} partition={partition} "
                     f"of={_text(oftype)}")
    reading = (cursor, tables, sequences, name_of, label, lines)
    _read_columns(*reading)
    _read_constraints_and_indexes(*reading)
    _read_triggers_rules_policies(*reading)
    _read_sequences(*reading)
    _read_comments_and_labels(*reading)
    return sorted(_placeheld(line, schema) for line in lines)


def _read_columns(cursor, tables: list[int], sequences: list[int], name_of: dict[int, str], label: dict, lines: list[str]) -> None:
    for child, parent, position in catalog_rows(cursor, """
        SELECT inhrelid, inhparent::pg_catalog.regclass::text, inhseqno FROM pg_catalog.pg_inherits WHERE inhrelid = ANY(%s::oid[])
    """, [tables]):
        lines.append(f"inherits {name_of[child]} {position} {parent}")
    for row in catalog_rows(cursor, """
        SELECT a.attrelid, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
               CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::pg_catalog.regcollation::text END,
               a.attstorage, a.attcompression, a.attstattarget,
               -- This server stamps every column with a pg_attver option that pg_dump leaves out.
               ARRAY(SELECT o FROM pg_catalog.unnest(a.attoptions) o WHERE o NOT LIKE 'pg\\_attver=%%')::text,
               a.attfdwoptions::text,
               a.attislocal, a.attinhcount
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum
    """, [tables]):
        relid, attnum, name, *rest = row
        label[("pg_class", relid, attnum)] = f"column {name_of[relid]}.{name}"  # type: ignore[index]
        lines.append(f"column {name_of[relid]} {name} " + " ".join(_text(value) for value in rest))
    # Column positions, as the columns' order (not their attnum: a dropped column leaves a gap pg_dump ignores).
    for relid, names in catalog_rows(cursor, """
        SELECT attrelid, string_agg(attname, ',' ORDER BY attnum) FROM pg_catalog.pg_attribute
        WHERE attrelid = ANY(%s::oid[]) AND attnum > 0 AND NOT attisdropped GROUP BY attrelid
    """, [tables]):
        lines.append(f"columns {name_of[relid]} {names}")


def _read_constraints_and_indexes(cursor, tables: list[int], sequences: list[int], name_of: dict[int, str], label: dict, lines: list[str]) -> None:
    for relid, oid, name, kind, definition, local, inherited, noinherit in catalog_rows(cursor, """
        SELECT conrelid, oid, conname, contype, pg_catalog.pg_get_constraintdef(oid), conislocal, coninhcount, connoinherit
        FROM pg_catalog.pg_constraint WHERE conrelid = ANY(%s::oid[])
    """, [tables]):
        label[("pg_constraint", oid)] = f"constraint {name_of[relid]}.{name}"
        lines.append(f"constraint {name_of[relid]} {name} {kind} {definition} local={local}/{inherited}/{noinherit}")
    for relid, oid, name, definition, clustered, replident, valid, tablespace, targets in catalog_rows(cursor, """
        SELECT i.indrelid, i.indexrelid, c.relname, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisclustered,
               i.indisreplident, i.indisvalid, ts.spcname,
               (SELECT string_agg(coalesce(a.attstattarget::text, '-'), ',' ORDER BY a.attnum)
                FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indexrelid)
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
        LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace
        WHERE i.indrelid = ANY(%s::oid[])
    """, [tables]):
        label[("pg_class", oid)] = f"index {name}"
        lines.append(f"index {name_of[relid]} {name} {definition} clustered={clustered} replident={replident} "
                     f"valid={valid} tablespace={_text(tablespace)} stattargets={targets}")


def _read_triggers_rules_policies(cursor, tables: list[int], sequences: list[int], name_of: dict[int, str], label: dict, lines: list[str]) -> None:
    for relid, oid, name, definition, enabled in catalog_rows(cursor, """
        SELECT tgrelid, oid, tgname, pg_catalog.pg_get_triggerdef(oid), tgenabled
        FROM pg_catalog.pg_trigger WHERE tgrelid = ANY(%s::oid[]) AND NOT tgisinternal
    """, [tables]):
        label[("pg_trigger", oid)] = f"trigger {name_of[relid]}.{name}"
        lines.append(f"trigger {name_of[relid]} {name} {definition} enabled={enabled}")
    for relid, oid, name, definition in catalog_rows(cursor, """
        SELECT ev_class, oid, rulename, pg_catalog.pg_get_ruledef(oid) FROM pg_catalog.pg_rewrite WHERE ev_class = ANY(%s::oid[])
    """, [tables]):
        label[("pg_rewrite", oid)] = f"rule {name_of[relid]}.{name}"
        lines.append(f"rule {name_of[relid]} {name} {definition}")
    for relid, oid, name, command, permissive, roles, using, check in catalog_rows(cursor, """
        SELECT polrelid, oid, polname, polcmd, polpermissive, polroles::pg_catalog.regrole[]::text,
               pg_catalog.pg_get_expr(polqual, polrelid), pg_catalog.pg_get_expr(polwithcheck, polrelid)
        FROM pg_catalog.pg_policy WHERE polrelid = ANY(%s::oid[])
    """, [tables]):
        label[("pg_policy", oid)] = f"policy {name_of[relid]}.{name}"
        lines.append(f"policy {name_of[relid]} {name} {command} {permissive} {roles} {_text(using)} {_text(check)}")


def _read_sequences(cursor, tables: list[int], sequences: list[int], name_of: dict[int, str], label: dict, lines: list[str]) -> None:
    for oid, name, persistence, *parameters, owner in catalog_rows(cursor, """
        SELECT c.oid, c.relname, c.relpersistence, pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
               s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
               (SELECT string_agg(d.refobjid::pg_catalog.regclass::text || '.' || a.attname::text || ':' || d.deptype::text, ',')
                FROM pg_catalog.pg_depend d
                JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i'))
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
        WHERE c.oid = ANY(%s::oid[])
    """, [sequences]):
        label[("pg_class", oid)] = f"sequence {name}"
        lines.append(f"sequence {name} persistence={persistence} " + " ".join(_text(value) for value in parameters)
                     + f" owner={_text(owner)}")


def _read_comments_and_labels(cursor, tables: list[int], sequences: list[int], name_of: dict[int, str], label: dict, lines: list[str]) -> None:
    # Comments and security labels on any of the above (pg_dump writes both).
    described = sorted({key[1] for key in label})
    for catalog in ("pg_description", "pg_seclabel"):
        extra = ", provider" if catalog == "pg_seclabel" else ", ''"
        text = "label" if catalog == "pg_seclabel" else "description"
        for oid, classname, subid, provider, value in catalog_rows(cursor, f"""
            SELECT objoid, classoid::pg_catalog.regclass::text, objsubid{extra}, {text}
            FROM pg_catalog.{catalog} WHERE objoid = ANY(%s::oid[])
        """, [described]):
            key = (classname, oid, subid) if subid else (classname, oid)
            lines.append(f"{catalog} {label.get(key, f'{classname} {oid} {subid}')} {provider} {value}")


def table_names(cursor, schema: str) -> list[str]:
    """The schema's tables, qualified and quoted, by its namespace's members (an index lookup)."""
    return [name for (name,) in catalog_rows(cursor, """
        SELECT pg_catalog.format('%%I.%%I', n.nspname, c.relname)
        FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_namespace'::regclass AND d.refobjid = n.oid
                                   AND d.deptype = 'n' AND d.classid = 'pg_catalog.pg_class'::regclass
        JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relkind IN ('r', 'p')
        WHERE n.nspname = %s ORDER BY 1
    """, [schema])]
