"""Errors of the tenancy layer (clinics, their schemas, their operation lock)."""
from django.utils.translation import gettext_lazy as _

from core.exceptions import ConflictError, DomainError


class OperationInProgressError(ConflictError):
    code = "backup_in_progress"
    message = _("Ya hay un backup o una restauración en curso para esta clínica.")


class InvalidTenantNameError(DomainError):
    code = "invalid_tenant_name"
    message = _("El nombre de esquema no es válido: minúsculas, números y guiones bajos, empezando por una letra.")


class TenantExistsError(ConflictError):
    code = "tenant_exists"
    message = _("Ya existe una clínica o un esquema con ese nombre.")
