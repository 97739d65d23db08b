"""Schema-level operations on the clinic schemas. Only core switches schemas."""
from __future__ import annotations

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader


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


def schema_drop(schema_name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')

