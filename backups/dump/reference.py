"""The reference structure of a clinic at the code's migration state (steps 1–4 of
backups.dump.cached's map): built once, checked, cached."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader

from backups.dump.pg_tools import PgBinaries, PgConnectionParams, pg_dump_command, pg_dump_text
from backups.dump.catalog import catalog_rows, fingerprint
from core.faults import kill_point
from core.locks import tenant_operation_lock
from core.schemas import schema_migrate

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REFERENCE_PREFIX = "backups__ref_"
REFERENCE_SCHEMA = re.compile(r"^backups__ref_[0-9a-f]{16}$")
# pg_dump's entries a reference may have: structure (replaced by name) and per-clinic data.
STRUCTURE_TYPES = frozenset({"SCHEMA", "TABLE", "SEQUENCE", "SEQUENCE OWNED BY", "DEFAULT", "CONSTRAINT",
                             "FK CONSTRAINT", "INDEX", "TRIGGER", "COMMENT"})
DATA_TYPES = frozenset({"TABLE DATA", "SEQUENCE SET"})
_ENTRY = re.compile(r"^-- (?:Data for )?Name: (?P<name>.*); Type: (?P<type>[A-Z ]+); Schema: (?P<schema>.*); Owner: .*\n$")
_COPY = re.compile(r"^COPY (?P<target>.+) FROM stdin;\n$")
_SETVAL = re.compile(r"^SELECT pg_catalog\.setval\('(?P<sequence>(?:[^']|'')+)', (?P<value>-?\d+), (?P<called>true|false)\);\n$")
_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class UnsupportedStructure(Exception):
    """The reference cannot be used: the fast path is off for this migration state."""


@dataclass
class Entry:
    """One of pg_dump's entries: its text, and for data entries what to read."""

    kind: str
    text: str
    source: str = ""  # TABLE DATA: the COPY target; SEQUENCE SET: the sequence, as a literal's content


@dataclass
class Reference:
    key: str
    schema: str
    fingerprint: list[str]
    entries: list[Entry] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Reference":
        data = json.loads(text)
        return cls(key=data["key"], schema=data["schema"], fingerprint=data["fingerprint"],
                   entries=[Entry(**entry) for entry in data["entries"]])


def split_dump(text: str, schema: str) -> list[Entry]:
    """pg_dump's plain output as its entries (the text before the first one is the preamble)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i in range(1, len(lines) - 1) if lines[i - 1] == "--\n" and _ENTRY.match(lines[i]) and lines[i + 1] == "--\n"]
    entries = [Entry("PREAMBLE", "".join(lines[: starts[0] - 1] if starts else lines))]
    for number, start in enumerate(starts):
        end = starts[number + 1] - 1 if number + 1 < len(starts) else len(lines)
        match = _ENTRY.match(lines[start])
        kind, body = match["type"], lines[start - 1 : end]
        if kind not in STRUCTURE_TYPES | DATA_TYPES:
            raise UnsupportedStructure(f"pg_dump entry of type {kind}")
        if match["schema"] not in (schema, "-"):
            raise UnsupportedStructure(f"entry in schema {match['schema']}")
        if kind == "TABLE DATA":
            copy = next((i for i, line in enumerate(body) if _COPY.match(line)), None)
            end_of_data = body.index("\\.\n", copy) if copy is not None and "\\.\n" in body[copy:] else None
            if copy is None or end_of_data is None:
                raise UnsupportedStructure(f"table data without COPY: {match['name']}")
            # The rows themselves are left out: the cached text holds no data.
            entries.append(Entry(kind, "".join(body[: copy + 1]) + "\x00" + "".join(body[end_of_data:]),
                                 _COPY.match(body[copy])["target"]))
        elif kind == "SEQUENCE SET":
            setvals = [i for i, line in enumerate(body) if _SETVAL.match(line)]
            if len(setvals) != 1:
                raise UnsupportedStructure(f"sequence set without one setval: {match['name']}")
            found = _SETVAL.match(body[setvals[0]])
            entries.append(Entry(kind, "".join(body[: setvals[0]]) + "\x00" + "".join(body[setvals[0] + 1 :]),
                                 found["sequence"]))
        else:
            entries.append(Entry(kind, "".join(body)))
    return entries


def rename_is_exact(text: str, schema: str) -> bool:
    """Whether every occurrence of schema in text is a schema qualifier or name: `schema.` or `schema;`."""
    qualifiers = re.findall(rf"(?<![\w$\"]){re.escape(schema)}(?=[.;])", text)
    return text.count(schema) == len(qualifiers)


def name_printed_plain(cursor, schema: str) -> bool:
    """Whether pg_dump prints this schema name unquoted (fmtId: lower case and not a reserved word)."""
    if not _PLAIN_NAME.match(schema):
        return False
    (category,) = catalog_rows(cursor, "SELECT coalesce((SELECT catcode FROM pg_catalog.pg_get_keywords() WHERE word = %s), 'U')",
                        [schema])[0]
    return category == "U"


def _migration_files_digest() -> str:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    digest = hashlib.sha256(Path(__file__).read_bytes())  # how the fingerprint is read is part of it
    for (app, name), migration in sorted(loader.disk_migrations.items()):
        digest.update(f"{app}.{name}\n".encode())
        source = getattr(__import__(migration.__module__, fromlist=["_"]), "__file__", None)
        if source and os.path.exists(source):
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()


_code_digest: str | None = None
_references: dict[str, Reference | None] = {}


def reference_key(*, binaries: PgBinaries, server_version: str) -> str:
    global _code_digest
    if _code_digest is None:
        _code_digest = _migration_files_digest()
    # What pg_dump is asked for is part of it: an option added changes what the cached structure must hold.
    options = " ".join(pg_dump_command(binaries=binaries, schema=REFERENCE_PREFIX)[1:])
    return hashlib.sha256(f"{FORMAT_VERSION}\n{server_version}\n{binaries.version}\n{options}\n{_code_digest}".encode()).hexdigest()[:32]


def _cache_path(key: str) -> Path:
    return Path(settings.BACKUP_STRUCTURE_CACHE_DIR) / f"reference-{key}.json"


def _cache_read(key: str) -> Reference | None:
    try:
        reference = Reference.from_json(_cache_path(key).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return reference if reference.key == key else None


def _cache_write(reference: Reference) -> None:
    path = _cache_path(reference.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".reference-", delete=False) as handle:
            handle.write(reference.as_json())
        os.replace(handle.name, path)  # whole or absent: a reader never sees half a file
    except OSError:
        logger.warning("could not write the structure cache %s", path, exc_info=True)


def reference_schemas_left() -> list[str]:
    """Reference schemas in the database: a live build's, or a dead one's for the reaper."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname LIKE %s ORDER BY 1",
                       [REFERENCE_PREFIX.replace("_", "\\_") + "%"])
        return [name for (name,) in cursor.fetchall() if REFERENCE_SCHEMA.match(name)]


def reference_build(*, binaries: PgBinaries, params: PgConnectionParams, key: str) -> Reference:
    """A schema migrated to the code's state, fingerprinted and dumped, then dropped (steps 1-3).

    On the default connection, outside any transaction (the caller checks): pg_dump must
    see the schema, and django-tenants routes the migrations by that connection's schema.
    """
    schema = f"{REFERENCE_PREFIX}{secrets.token_hex(8)}"
    with tenant_operation_lock(schema):
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE SCHEMA "{schema}"')
            schema_migrate(schema)
            kill_point("backup.reference_migrated")
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_catalog.set_config('search_path', '', true)")
                lines = fingerprint(cursor, schema)
            text = pg_dump_text(binaries=binaries, params=params, schema=schema)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    unsupported = [line for line in lines if line.startswith("unsupported ")]
    if unsupported:
        raise UnsupportedStructure(unsupported[0])
    if not rename_is_exact(text, schema):
        raise UnsupportedStructure("the reference's name occurs in its dump other than as a qualifier")
    return Reference(key=key, schema=schema, fingerprint=lines, entries=split_dump(text, schema))


def reference_get(*, binaries: PgBinaries, params: PgConnectionParams, server_version: str) -> Reference | None:
    """The reference for the code's migration state: from memory, the cache folder, or built now (once).

    None when the fast path is off (BACKUP_STRUCTURE_CACHE) or the structure is not one it
    handles; backups are then plain pg_dump.
    """
    if not settings.BACKUP_STRUCTURE_CACHE:
        return None
    key = reference_key(binaries=binaries, server_version=server_version)
    if key in _references:
        return _references[key]
    reference = _cache_read(key)
    if reference is None:
        if connection.in_atomic_block:
            return None  # never DDL inside the caller's transaction; pg_dump this time
        try:
            reference = reference_build(binaries=binaries, params=params, key=key)
        except UnsupportedStructure as exc:
            logger.warning("backups: no cached structure for this migration state (%s); every backup uses pg_dump", exc)
            _references[key] = None
            return None
        _cache_write(reference)
    _references[key] = reference
    return reference


def references_forget() -> None:
    """Drop the in-memory references (the cache folder is kept)."""
    _references.clear()
