"""Schema-level operations on the clinic schemas. Only core switches schemas."""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader


# The schemas an operation creates beside a clinic's. Clinic names never contain "__"
# (core.services.tenant_name_check), so the clinic a leftover belongs to is unambiguous.
OPERATION_SCHEMA = re.compile(r"^(?P<clinic>[a-z][a-z0-9_]*?)__(?P<kind>staging|aside|old)_(?P<token>[0-9a-f]{8})$")


@dataclass(frozen=True)
class OperationSchemas:
    staging: str
    aside: str
    old: str


def operation_schemas(schema_name: str) -> OperationSchemas:
    """Fresh names for one operation's schemas on this clinic, recognisable by the reaper."""
    token = secrets.token_hex(4)
    return OperationSchemas(*(f"{schema_name}__{kind}_{token}" for kind in ("staging", "aside", "old")))


def operation_schemas_left() -> dict[str, list[str]]:
    """Every operation schema in the database, by the clinic it belongs to."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY nspname", ["%\\_\\_%"])
        names = [name for (name,) in cursor.fetchall()]
    left: dict[str, list[str]] = {}
    for name in names:
        match = OPERATION_SCHEMA.match(name)
        if match:
            left.setdefault(match["clinic"], []).append(name)
    return left


def code_migrations() -> set[tuple[str, str]]:
    """Every migration the code knows, as (app, name)."""
    return set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)


def schema_migrate(schema_name: str, targets: list[tuple[str, str]] | None = None) -> None:
    """Migrate one schema to the code's latest migrations (or to the given targets)."""
    tenant = connection.tenant
    connection.set_schema(schema_name)
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(targets or executor.loader.graph.leaf_nodes())
    finally:
        connection.set_tenant(tenant)


def quote_identifier(name: str) -> str:
    """A PostgreSQL identifier, quoted: "name", embedded quotes doubled (as PQescapeIdentifier)."""
    if "\x00" in name:
        raise ValueError("an identifier cannot contain NUL")
    return '"' + name.replace('"', '""') + '"'


def schema_drop(schema_name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')


