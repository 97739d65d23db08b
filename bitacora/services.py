"""Writing the audit log. Services call `record`; nothing else writes entries."""
from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.utils import timezone

from bitacora.models import Bitacora, Outcome
from core.client_address import client_address
from core.exceptions import details_bounded, error_parts

logger = logging.getLogger(__name__)
_audit_connections = threading.local()


@dataclass(frozen=True)
class AuditContext:
    """Who did it and from where; built by a view, a command or a cron job."""

    actor_id: int | None = None
    actor_email: str = ""
    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def for_user(cls, user, *, ip: str | None = None, user_agent: str = "") -> "AuditContext":
        if user is None or not getattr(user, "is_authenticated", False):
            return cls(ip=ip, user_agent=user_agent[:512])
        return cls(actor_id=user.pk, actor_email=user.email, ip=ip, user_agent=user_agent[:512])

    @classmethod
    def from_request(cls, request) -> "AuditContext":
        return cls.for_user(
            getattr(request, "user", None),
            ip=client_address(request),  # behind a proxy the peer is the proxy: the client is in X-Forwarded-For
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )

    @classmethod
    def system(cls, label: str) -> "AuditContext":
        """An operation nobody clicked: a cron job, a manage.py command."""
        return cls(actor_email=label)


def _audit_connection(schema: str | None = None):
    """A second connection per thread, in autocommit, outside any transaction of the caller.

    An entry written on it commits at once, so it survives the rollback of the
    operation it records (a failed restore, say). It is a copy of the default
    connection rather than a DATABASES alias, so that nothing (including the test
    runner's per-test transactions) wraps it in a transaction of its own.
    """
    audit = getattr(_audit_connections, "connection", None)
    if audit is None or audit.settings_dict["NAME"] != connection.settings_dict["NAME"]:
        audit = connection.copy(alias="audit")
        _audit_connections.connection = audit
    audit.close_if_unusable_or_obsolete()
    if schema is None:
        audit.set_tenant(connection.tenant)
    else:
        audit.set_schema(schema)
    return audit


def record(
    *,
    context: AuditContext,
    action: str,
    outcome: str = Outcome.OK,
    target_type: str = "",
    target_id: Any = "",
    details: dict | None = None,
    schema: str | None = None,
) -> Bitacora:
    """Append one entry to the current clinic's audit log (or that of `schema`), committed immediately.

    `details` is kept bounded (core.exceptions.details_bounded): the table is
    append-only, and details may echo whatever a client sent.
    """
    entry = Bitacora(
        actor_id=context.actor_id,
        actor_email=context.actor_email,
        action=str(action),  # an app's StrEnum member is stored as its plain value
        outcome=outcome,
        target_type=target_type,
        # The column holds 64 characters; a longer id would fail the INSERT, and with it the operation.
        target_id="" if target_id is None else str(target_id)[:64],
        details=details_bounded(details),
        ip=context.ip,
        user_agent=context.user_agent,
        created_at=timezone.now(),
    )
    columns = ["actor_id", "actor_email", "action", "outcome", "target_type", "target_id", "details", "ip", "user_agent", "created_at"]
    values = [getattr(entry, column) for column in columns]
    values[columns.index("details")] = json.dumps(entry.details, cls=DjangoJSONEncoder)
    with _audit_connection(schema).cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Bitacora._meta.db_table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))}) RETURNING id",
            values,
        )
        (entry.pk,) = cursor.fetchone()
    logger.info("bitacora %s %s %s actor=%s", schema or connection.schema_name, action, outcome, context.actor_email or "-")
    return entry


def failure_details(exc: BaseException) -> dict[str, Any]:
    """What an audit entry keeps of a failure.

    An error the API answers on purpose (a DomainError, DRF's validation, permission
    or parse errors) keeps the code, message and details its answer carries; of any
    other exception only its class, since its text may carry connection strings or paths.
    """
    parts = error_parts(exc)
    if parts is not None:
        return {"code": parts.code, "message": str(parts.message), **({"error": parts.details} if parts.details else {})}
    return {"code": "server_error", "exception": type(exc).__name__}


def record_failure(
    *, context: AuditContext, action: str, error: BaseException, target_type: str = "", target_id: Any = "",
    details: dict | None = None,
) -> Bitacora:
    """Append an `error` entry for a failed operation, keeping what failure_details allows."""
    return record(
        context=context, action=action, outcome=Outcome.ERROR, target_type=target_type, target_id=target_id,
        details={**(details or {}), **failure_details(error)},
    )


@contextmanager
def audit_failure(
    *, context: AuditContext, action: str, target_type: str = "", target_id: Any = "", details: dict | None = None
) -> Iterator[None]:
    """Record an `error` entry for whatever escapes the block, then let it propagate."""
    try:
        yield
    except Exception as exc:
        record_failure(context=context, action=action, error=exc, target_type=target_type, target_id=target_id, details=details)
        raise
