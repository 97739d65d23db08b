"""Errors of the backups module: each a stable code and a Spanish message."""
from django.utils.translation import gettext_lazy as _

from core.exceptions import ConflictError, DomainError


class StorageError(DomainError):
    """Base of every storage failure; never a bare 500."""

    status_code = 502
    code = "storage_error"
    message = _("El almacenamiento de backups respondió con un error.")


class StorageObjectMissingError(StorageError, FileNotFoundError):
    # Also what Django's Storage API says a missing file is: code written to that API (a backup
    # finding a patient file gone, a restore checking a name) works whichever backend holds the files.
    status_code = 404
    code = "backup_file_missing"
    message = _("El archivo del backup no existe en el almacenamiento.")


class StorageObjectExistsError(StorageError):
    status_code = 409
    code = "backup_file_exists"
    message = _("Ya existe un archivo con ese nombre en el almacenamiento.")


class StorageBucketMissingError(StorageError):
    status_code = 503
    code = "storage_bucket_missing"
    message = _("El bucket de backups no existe en el almacenamiento.")


class StorageUnauthorizedError(StorageError):
    status_code = 503
    code = "storage_unauthorized"
    message = _("El almacenamiento de backups rechazó las credenciales configuradas.")


class StoragePayloadTooLargeError(StorageError):
    status_code = 413
    code = "storage_payload_too_large"
    message = _("El backup supera el tamaño máximo que admite el almacenamiento.")


class StorageUnavailableError(StorageError):
    status_code = 503
    code = "storage_unavailable"
    message = _("No se pudo conectar con el almacenamiento de backups.")


class BackupNotFoundError(DomainError):
    status_code = 404
    code = "backup_not_found"
    message = _("Backup no encontrado.")


class BackupNotCompletedError(DomainError):
    status_code = 409
    code = "backup_not_completed"
    message = _("El backup no está completado: no se puede descargar ni restaurar.")


class BackupNotPendingError(ConflictError):
    code = "backup_not_pending"
    message = _("Ese backup ya se ejecutó o se está ejecutando: no se vuelve a ejecutar.")


class RestoreJobNotPendingError(ConflictError):
    code = "restore_not_pending"
    message = _("Esa restauración ya se ejecutó o se está ejecutando: una restauración nunca se repite.")


class RestoreJobNotFoundError(DomainError):
    status_code = 404
    code = "restore_not_found"
    message = _("Restauración no encontrada.")


class BackupFailedError(DomainError):
    status_code = 500
    code = "backup_failed"
    message = _("El backup falló.")


class BackupChecksumMismatchError(DomainError):
    status_code = 409
    code = "backup_checksum_mismatch"
    message = _("El archivo del backup no coincide con su checksum: está dañado.")


class BackupFileError(DomainError):
    status_code = 502
    code = "backup_file_error"
    message = _("Falló una operación con un archivo de pacientes del backup.")


class StorageNameTakenError(BackupFileError):
    """A name found free was taken before the save: the storage saved under another one, removed again."""


class FileListInvalidError(DomainError):
    status_code = 400
    code = "file_list_invalid"
    message = _("La lista de archivos del backup no se puede leer: no es una lista de esta versión o está incompleta.")


class SealedObjectDamagedError(BackupChecksumMismatchError):
    """A sealed object failed authentication: altered or damaged, never handed out (backups.storage.sealed)."""

    code = "backup_object_not_authentic"
    message = _("El archivo cifrado del backup no pasa la autenticación: está dañado o fue alterado.")


class ClinicKeyMissingError(StorageObjectMissingError):
    """No key of the clinic opens a sealed object: its keys were destroyed (or never stored)."""

    code = "backup_key_missing"
    message = _("No existe la clave de la clínica que abre este archivo del backup (fue destruida o no se guardó).")


class EncryptionNotConfiguredError(DomainError):
    status_code = 503
    code = "backup_encryption_not_configured"
    message = _("Faltan las claves de la plataforma: defina BACKUP_PLATFORM_RECIPIENTS y BACKUP_PLATFORM_IDENTITY "
                "(con un almacenamiento remoto los backups se cifran), o BACKUP_ENCRYPTION=off para no cifrarlos.")


class PlatformKeyError(DomainError):
    status_code = 503
    code = "backup_platform_key_invalid"
    message = _("BACKUP_PLATFORM_IDENTITY no abre las claves de las clínicas, o BACKUP_PLATFORM_IDENTITY o "
                "BACKUP_PLATFORM_RECIPIENTS no son claves age válidas.")


class KeysShredIncompleteError(DomainError):
    status_code = 502
    code = "backup_keys_shred_incomplete"
    message = _("No se pudieron destruir todas las claves de la clínica: no se borró nada más.")


class ShredConfirmationError(DomainError):
    status_code = 400
    code = "shred_confirmation_mismatch"
    message = _("Para destruir las claves de la clínica, escriba el nombre de su esquema como confirmación.")


class RestoreConfirmationError(DomainError):
    status_code = 400
    code = "restore_confirmation_mismatch"
    message = _("Para restaurar, escriba el nombre del esquema de la clínica en «confirm».")


class BackupNewerThanCodeError(DomainError):
    status_code = 409
    code = "backup_newer_than_code"
    message = _("El backup tiene migraciones que este código no conoce: actualice el código antes de restaurarlo.")




class PgVersionMismatchError(DomainError):
    status_code = 503
    code = "pg_dump_version_mismatch"
    message = _("No se encontró pg_dump/psql de la misma versión mayor que el servidor PostgreSQL.")


class DumpError(DomainError):
    status_code = 500
    code = "backup_dump_failed"
    message = _("pg_dump falló al generar el backup.")


class PsqlError(DomainError):
    status_code = 500
    code = "psql_failed"
    message = _("psql falló al ejecutar el script.")


class RetentionPolicyError(DomainError):
    status_code = 500
    code = "retention_policy_invalid"
    message = _("La política de retención de backups está mal configurada.")


class BackupPruneError(DomainError):
    status_code = 502
    code = "backup_prune_incomplete"
    message = _("No se pudieron borrar algunos backups; los demás se borraron.")
