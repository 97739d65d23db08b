"""Errors of the JSON export and restore; the API renders them in the one error shape."""
from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import status

from core.exceptions import DomainError


class RestoreError(DomainError):
    """Base: the file was refused and nothing changed. `details` names the model, row and reason."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "restore_invalid"
    message = _("El archivo de respaldo no es válido; no se modificó ningún dato.")


class InvalidJSONError(RestoreError):
    code = "invalid_json"
    message = _("El archivo no es un JSON válido (o está truncado o dañado).")


class WrongFormatError(RestoreError):
    code = "wrong_format"
    message = _("El archivo no es un respaldo de datos de esta aplicación.")


class UnsupportedVersionError(RestoreError):
    code = "unsupported_version"
    message = _("La versión del formato del archivo no es compatible con esta aplicación.")


class OtherTenantError(RestoreError):
    code = "other_tenant"
    message = _("El archivo pertenece a otra clínica.")


class MigrationsNewerError(RestoreError):
    code = "migrations_newer"
    message = _("El archivo proviene de una versión más nueva del sistema (migraciones desconocidas).")


class UnknownModelError(RestoreError):
    code = "unknown_model"
    message = _("El archivo contiene un modelo desconocido.")


class UnknownFieldError(RestoreError):
    code = "unknown_field"
    message = _("El archivo contiene un campo desconocido.")


class MissingFieldError(RestoreError):
    code = "missing_field"
    message = _("Falta un campo obligatorio en el archivo.")


class InvalidRowError(RestoreError):
    code = "invalid_row"
    message = _("Una fila del archivo no es válida.")


class InvalidValueError(RestoreError):
    code = "invalid_value"
    message = _("Un valor del archivo no es del tipo esperado.")


class DuplicatePrimaryKeyError(RestoreError):
    code = "duplicate_pk"
    message = _("El archivo repite una clave primaria.")


class UniqueViolationError(RestoreError):
    code = "unique_violation"
    message = _("Una fila viola una restricción de unicidad.")


class ConstraintViolationError(RestoreError):
    code = "constraint_violation"
    message = _("Una fila viola una restricción de la base de datos.")


class DanglingForeignKeyError(RestoreError):
    code = "dangling_foreign_key"
    message = _("Una fila apunta a un registro que no existe.")


class UploadTooLargeError(RestoreError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "upload_too_large"
    message = _("El archivo supera el tamaño máximo permitido.")


class InflatedTooLargeError(UploadTooLargeError):
    message = _("El archivo descomprimido supera el tamaño máximo permitido.")


class CountMismatchError(RestoreError):
    code = "count_mismatch"
    message = _("El archivo no tiene las filas que declara su cabecera (está incompleto o alterado).")


class OtherTenantNotAllowedError(DomainError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "other_tenant_not_allowed"
    message = _("Sólo un administrador puede restaurar el respaldo de otra clínica.")
