"""The staging schema put in the live one's place (step 5 of backups.restore's map): in one
short transaction with a lock timeout, lock the live tables, carry into staging the rows
a restore must not roll back, then swap the names. Other sessions see the old clinic or
the new one, never a mix."""
from __future__ import annotations

from typing import Callable, Sequence

from django.conf import settings
from django.db import connection, transaction

from core.faults import kill_point


def _columns(schema: str, tables: Sequence[str]) -> dict[str, list[str]]:
    """Each table's columns in order, in one query on the catalogs: information_schema.columns
    costs milliseconds of planning per table, and the swap asks while it holds the clinic's locks."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped GROUP BY c.relname",
            [schema, list(tables)],
        )
        return dict(cursor.fetchall())


def schema_swap(
    *, schema: str, staging: str, old: str, carried_tables: Sequence[str], before_swap: Callable[[object], None] | None = None
) -> None:
    """Carry `carried_tables`' rows from `schema` into `staging`, then make `staging` the live
    schema and the live one `old`; `before_swap` runs on the cursor, in the same transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = %s", [settings.BACKUP_RESTORE_LOCK_TIMEOUT])
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema])
        live_tables = [name for (name,) in cursor.fetchall()]
        # Wait for in-flight transactions on the live tables and hold new ones until the
        # swap commits; blocked queries then look the names up again and find the new schema.
        if live_tables:
            qualified = ", ".join(f'"{schema}"."{table}"' for table in live_tables)
            cursor.execute(f"LOCK TABLE {qualified} IN ACCESS EXCLUSIVE MODE")
        live_columns = _columns(schema, carried_tables)
        for table in carried_tables:
            columns = ", ".join(f'"{column}"' for column in live_columns.get(table, []))
            cursor.execute(f'DELETE FROM "{staging}"."{table}"')
            cursor.execute(f'INSERT INTO "{staging}"."{table}" ({columns}) SELECT {columns} FROM "{schema}"."{table}"')
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE((SELECT max(id) FROM \"{staging}\".\"{table}\"), 0) + 1, false)",
                [f'"{staging}"."{table}"'],
            )
        if before_swap is not None:
            before_swap(cursor)
        kill_point("restore.swap_before_commit")
        cursor.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{old}"')
        cursor.execute(f'ALTER SCHEMA "{staging}" RENAME TO "{schema}"')
