"""One backup or restore at a time per clinic: a PostgreSQL advisory lock."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

from django.db import OperationalError, connection, transaction

from core.errors import OperationInProgressError

# Arbitrary constant: the first half of the two-int advisory-lock key, so our
# locks never collide with another application's on the same database.
_LOCK_NAMESPACE = 0x0C11


def _lock_key(schema_name: str) -> int:
    return int.from_bytes(hashlib.sha256(schema_name.encode()).digest()[:4], "big", signed=True)


def _lock_waiting(session, key: int, wait_seconds: float) -> bool:
    # A savepoint (or a transaction of its own): a lock timeout must not break the caller's transaction.
    try:
        with transaction.atomic(using=session.alias), session.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = %s", [f"{int(wait_seconds * 1000)}ms"])
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [_LOCK_NAMESPACE, key])
        return True
    except OperationalError:
        return False


@contextmanager
def tenant_operation_lock(schema_name: str | None = None, *, on=None, wait_seconds: float = 0) -> Iterator[None]:
    """Hold the clinic's operation lock, or raise OperationInProgressError (409) at once,
    or after wait_seconds when given.

    Session-level, not transaction-level: a backup holds it across a long dump
    without holding a transaction open, and a restore across its transaction.
    `on` is the connection (session) that holds it; the default one unless given.
    """
    session = on or connection
    schema_name = schema_name or session.schema_name
    key = _lock_key(schema_name)
    if wait_seconds:
        acquired = _lock_waiting(session, key, wait_seconds)
    else:
        with session.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_NAMESPACE, key])
            (acquired,) = cursor.fetchone()
    if not acquired:
        raise OperationInProgressError()
    try:
        yield
    finally:
        with session.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_NAMESPACE, key])
