"""What the backups module tells people (alertas.services): a failed backup, a backup missing
files, an overdue clinic, a failed restore drill, operations the reaper cleaned up; and what a
success makes untrue again (the alerts it resolves). Nothing here raises into the backup, drill
or reap that calls it: alertas logs what it cannot record or send."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext as _

from alertas.models import AlertKind
from alertas.services import alert_raise, alerts_resolve
from backups.errors import BackupFailedError, BackupNotPendingError
from backups.models import BackupRecord, DrillStatus
from backups.selectors import backup_summary_list
from core.errors import OperationInProgressError
from core.exceptions import DomainError
from core.models import Tenant

# Refusals, not failures: the clinic was busy, or the job had already run.
_NOT_FAILURES = (OperationInProgressError, BackupNotPendingError)


def _clinic_name(schema: str) -> str:
    tenant = getattr(connection, "tenant", None)
    if getattr(tenant, "schema_name", None) == schema and getattr(tenant, "nombre", ""):
        return tenant.nombre
    return Tenant.objects.filter(schema_name=schema).values_list("nombre", flat=True).first() or ""


def _reason(error: BaseException) -> str:
    # An unexpected error reaches here wrapped in BackupFailedError, whose own message only repeats
    # the summary's ("El backup falló: El backup falló."): name the cause's type, as the record does
    # (backup_fail); its message is not said, it may quote a path or a row.
    if isinstance(error, BackupFailedError) and error.__cause__ is not None:
        return type(error.__cause__).__name__
    return str(error.message) if isinstance(error, DomainError) else type(error).__name__


@contextmanager
def backup_failure_alerted(*, unless: Callable[[BaseException], bool] = lambda error: False) -> Iterator[None]:
    """A backup of this clinic that fails inside the block is alerted (not a 409, nor a retry to come)."""
    try:
        yield
    except _NOT_FAILURES:
        raise
    except Exception as error:
        if not unless(error):
            schema = connection.schema_name
            alert_raise(kind=AlertKind.BACKUP_FAILED, schema=schema, clinic=_clinic_name(schema),
                        summary=_("El backup falló: %(reason)s") % {"reason": _reason(error)},
                        details={"code": getattr(error, "code", "backup_failed")})
        raise


def backup_completed_alerts(backup: BackupRecord) -> None:
    """A completed backup: alerted if it misses files; what it proves resolved."""
    schema = connection.schema_name
    resolved = [AlertKind.BACKUP_FAILED, AlertKind.BACKUP_OVERDUE, AlertKind.OPERATIONS_REAPED]
    if backup.warnings:
        alert_raise(kind=AlertKind.BACKUP_FILES, schema=schema, clinic=_clinic_name(schema),
                    summary=_("El backup %(file)s no guarda todos sus archivos: %(warning)s")
                    % {"file": backup.file_name, "warning": backup.warning},
                    details={"backup_id": backup.pk, "warnings": [{"code": item["code"], "count": item["count"]}
                                                                 for item in backup.warnings]})
    else:
        resolved.append(AlertKind.BACKUP_FILES)
    alerts_resolve(schema=schema, kinds=resolved)


def drill_alerts(backup: BackupRecord) -> None:
    """A failed drill alerted; a passed one resolves the clinic's drill alerts."""
    schema = connection.schema_name
    if backup.drill_status == DrillStatus.FAILED:
        alert_raise(kind=AlertKind.DRILL_FAILED, schema=schema, clinic=_clinic_name(schema),
                    summary=_("El simulacro de restauración de %(file)s falló: %(reason)s")
                    % {"file": backup.file_name, "reason": backup.drill_error},
                    details={"backup_id": backup.pk, "code": backup.drill_error_code})
    elif backup.drill_status == DrillStatus.PASSED:
        alerts_resolve(schema=schema, kinds=[AlertKind.DRILL_FAILED])


def reaped_alert(schema: str, found: dict[str, list[str]]) -> None:
    """The reaper put right what dead operations of this clinic left: said once a day."""
    counts = {key: len(value) for key, value in found.items() if value}
    alert_raise(kind=AlertKind.OPERATIONS_REAPED, schema=schema, clinic=_clinic_name(schema),
                summary=_("El recolector limpió lo que dejaron operaciones interrumpidas: %(what)s")
                % {"what": ", ".join(f"{key} {count}" for key, count in sorted(counts.items()))},
                details={"found": counts})


def overdue_alerts() -> list[str]:
    """Every active clinic without a completed backup in BACKUP_OVERDUE_AFTER_HOURS, alerted (once a day each)."""
    overdue = []
    for summary in backup_summary_list():
        if not summary.overdue:
            continue
        # In TIME_ZONE, as the platform page shows the dates beside it (the query gives UTC).
        when = (timezone.localtime(summary.last_completed_at).strftime("%Y-%m-%d %H:%M") if summary.last_completed_at
                else _("nunca"))
        alert_raise(kind=AlertKind.BACKUP_OVERDUE, schema=summary.tenant.schema_name, clinic=summary.tenant.nombre,
                    summary=_("Sin backup completado desde %(when)s.") % {"when": when},
                    details={"last_completed_at": summary.last_completed_at.isoformat() if summary.last_completed_at else None})
        overdue.append(summary.tenant.schema_name)
    return overdue
