"""The clinic's locks, PostgreSQL advisory locks keyed by its schema name.

- The operation lock: one backup or restore at a time per clinic.
- The drill lock: one restore drill at a time per clinic (backups.drills). A drill does not
  hold the operation lock, so a clinic's own backups and restores never wait for one.
- The replay lock: a drill's replay renames the live schema aside inside its transaction
  (backups.dump.replay), and so would a restore's, which would then wait for the drill's
  whole replay. The drill's psql session takes this lock shared, without waiting, in its
  transaction (`drill_replay_guard_sql`); a restore takes it exclusively with
  `drill_replays_stopped`, terminating any drill replay that holds it: the restore waits
  milliseconds, and the drill is rolled back and reports itself preempted.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from typing import Iterator

from django.db import OperationalError, connection, transaction

from core.errors import DrillInProgressError, OperationInProgressError, RestoreBusyError

# Arbitrary constants: the first half of the two-int advisory-lock key, so our locks
# never collide with another application's on the same database, nor with each other.
_LOCK_NAMESPACE = 0x0C11
_DRILL_NAMESPACE = 0x0C12
_REPLAY_NAMESPACE = 0x0C13
_PREEMPT_POLL_SECONDS = 0.05


def _lock_key(schema_name: str) -> int:
    return int.from_bytes(hashlib.sha256(schema_name.encode()).digest()[:4], "big", signed=True)


def _lock_waiting(session, namespace: int, key: int, wait_seconds: float) -> bool:
    # A savepoint (or a transaction of its own): a lock timeout must not break the caller's transaction.
    try:
        with transaction.atomic(using=session.alias), session.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = %s", [f"{int(wait_seconds * 1000)}ms"])
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [namespace, key])
        return True
    except OperationalError:
        return False


def _lock_try(session, namespace: int, key: int) -> bool:
    with session.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])
        return cursor.fetchone()[0]


def _unlock(session, namespace: int, key: int) -> None:
    with session.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, key])


@contextmanager
def tenant_operation_lock(schema_name: str | None = None, *, on=None, wait_seconds: float = 0) -> Iterator[None]:
    """Hold the clinic's operation lock, or raise OperationInProgressError (409) at once,
    or after wait_seconds when given.

    Session-level, not transaction-level: a backup holds it across a long dump
    without holding a transaction open, and a restore across its transaction.
    `on` is the connection (session) that holds it; the default one unless given.
    """
    session = on or connection
    key = _lock_key(schema_name or session.schema_name)
    acquired = (_lock_waiting(session, _LOCK_NAMESPACE, key, wait_seconds) if wait_seconds
                else _lock_try(session, _LOCK_NAMESPACE, key))
    if not acquired:
        raise OperationInProgressError()
    try:
        yield
    finally:
        _unlock(session, _LOCK_NAMESPACE, key)


@contextmanager
def tenant_drill_lock(schema_name: str, *, on=None) -> Iterator[None]:
    """Hold the clinic's drill lock, or raise DrillInProgressError (409) at once. Session-level,
    like the operation lock: it dies with the drill's process, and the reaper knows then."""
    session = on or connection
    key = _lock_key(schema_name)
    if not _lock_try(session, _DRILL_NAMESPACE, key):
        raise DrillInProgressError()
    try:
        yield
    finally:
        _unlock(session, _DRILL_NAMESPACE, key)


def drill_replay_guard_sql(schema_name: str) -> str:
    """The statement a drill's replay runs first in its transaction: the replay lock, shared and
    at once, or an error (lock_not_available) because a restore of the clinic holds it."""
    return (
        "DO $guard$ BEGIN\n"
        f"  IF NOT pg_try_advisory_xact_lock_shared({_REPLAY_NAMESPACE}, {_lock_key(schema_name)}) THEN\n"
        "    RAISE EXCEPTION 'a restore of this clinic is running' USING ERRCODE = 'lock_not_available';\n"
        "  END IF;\n"
        "END $guard$;\n"
    )


@contextmanager
def drill_replays_stopped(schema_name: str, *, wait_seconds: float = 5) -> Iterator[None]:
    """Hold the clinic's replay lock for a restore: any drill replay holding it is terminated
    first (its transaction rolls back, the live schema's name with it). RestoreBusyError if the
    lock is still held after wait_seconds, which a drill's session alone never makes happen."""
    key = _lock_key(schema_name)
    deadline = time.monotonic() + wait_seconds
    with connection.cursor() as cursor:
        while True:
            # pg_locks shows an advisory lock on two int4 as classid, objid (the second as an oid).
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND objid = %s AND objsubid = 2 AND pid <> pg_backend_pid()",
                [_REPLAY_NAMESPACE, key & 0xFFFFFFFF],
            )
            if _lock_try(connection, _REPLAY_NAMESPACE, key):
                break
            if time.monotonic() >= deadline:
                raise RestoreBusyError()
            time.sleep(_PREEMPT_POLL_SECONDS)
    try:
        yield
    finally:
        _unlock(connection, _REPLAY_NAMESPACE, key)
