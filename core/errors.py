"""Errors of the tenancy layer (clinics, their schemas, their operation lock), and the two that
both restores (SQL and JSON) answer when PostgreSQL, not the backup, stops them."""
from django.utils.translation import gettext_lazy as _
from rest_framework import status

from core.exceptions import ConflictError, DomainError


class OperationInProgressError(ConflictError):
    code = "backup_in_progress"
    message = _("Ya hay un backup o una restauración en curso para esta clínica.")


class DrillInProgressError(ConflictError):
    code = "drill_in_progress"
    message = _("Ya hay un simulacro de restauración en curso para esta clínica.")


class InvalidTenantNameError(DomainError):
    code = "invalid_tenant_name"
    message = _("El nombre de esquema no es válido: minúsculas, números y guiones bajos, empezando por una letra.")


class TenantExistsError(ConflictError):
    code = "tenant_exists"
    message = _("Ya existe una clínica o un esquema con ese nombre.")


class RestoreBusyError(ConflictError):
    """The clinic's tables stayed locked by other work past the lock timeout (or in a deadlock): retry."""

    code = "restore_tables_busy"
    message = _("La clínica tiene operaciones en curso que impiden restaurar; inténtelo de nuevo en unos minutos.")


class RestoreFailedError(DomainError):
    """PostgreSQL failed the restore for a reason that is not the backup's: rolled back, nothing changed."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    code = "restore_failed"
    message = _("La restauración falló; los datos de la clínica no se modificaron.")
