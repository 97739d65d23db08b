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
# A restore drill's scratch schema is `drill`: the drill lock guards it, not the operation lock.
OPERATION_SCHEMA = re.compile(r"^(?P<clinic>[a-z][a-z0-9_]*?)__(?P<kind>staging|aside|old|drill)_(?P<token>[0-9a-f]{8})$")
DRILL_KIND = "drill"


@dataclass(frozen=True)
class OperationSchemas:
    staging: str
    aside: str
    old: str


def operation_schemas(schema_name: str) -> OperationSchemas:
    """Fresh names for one operation's schemas on this clinic, recognisable by the reaper."""
    token = secrets.token_hex(4)
    return OperationSchemas(*(f"{schema_name}__{kind}_{token}" for kind in ("staging", "aside", "old")))


def drill_schemas(schema_name: str) -> OperationSchemas:
    """Fresh names for one restore drill on this clinic: its scratch schema is the `staging` one
    of the replay (named `…__drill_<hex>`); `aside` exists only inside the replay's transaction."""
    token = secrets.token_hex(4)
    return OperationSchemas(staging=f"{schema_name}__{DRILL_KIND}_{token}", aside=f"{schema_name}__aside_{token}",
                            old=f"{schema_name}__old_{token}")


def schema_is_drill(name: str) -> bool:
    match = OPERATION_SCHEMA.match(name)
    return bool(match) and match["kind"] == DRILL_KIND


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


def schema_pending_migrations(schema_name: str) -> list[str]:
    """The migrations the code would still apply to one schema, in order, as `app.name`: after a
    failed migrate the first is the one that failed (each migration commits on its own)."""
    tenant = connection.tenant
    connection.set_schema(schema_name)
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        return [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]
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


