"""Writing the audit log. Services call `record`; nothing else writes entries."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import connection, connections

from bitacora.models import Bitacora, Outcome

logger = logging.getLogger(__name__)

# A second connection to the same database (settings.DATABASES["audit"]): an entry
# written there commits on its own, so it survives the rollback of the
# operation it records (a failed restore, say).
AUDIT_DATABASE = "audit"


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
            ip=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )

    @classmethod
    def system(cls, label: str) -> "AuditContext":
        """An operation nobody clicked: a cron job, a manage.py command."""
        return cls(actor_email=label)


def record(
    *,
    context: AuditContext,
    action: str,
    outcome: str = Outcome.OK,
    target_type: str = "",
    target_id: Any = "",
    details: dict | None = None,
) -> Bitacora:
    """Append one entry to the current clinic's audit log, committed immediately."""
    audit_connection = connections[AUDIT_DATABASE]
    audit_connection.set_tenant(connection.tenant)
    entry = Bitacora.objects.using(AUDIT_DATABASE).create(
        actor_id=context.actor_id,
        actor_email=context.actor_email,
        action=action,
        outcome=outcome,
        target_type=target_type,
        target_id="" if target_id is None else str(target_id),
        details=details or {},
        ip=context.ip,
        user_agent=context.user_agent,
    )
    logger.info("bitacora %s %s %s actor=%s", connection.schema_name, action, outcome, context.actor_email or "-")
    return entry
