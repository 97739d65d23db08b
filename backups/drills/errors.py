"""Why a restore drill failed, each a stable code and a Spanish message (backups.drills' map)."""
from django.utils.translation import gettext_lazy as _

from core.exceptions import ConflictError, DomainError, NotFoundError


class DrillNoBackupError(NotFoundError):
    code = "drill_no_backup"
    message = _("La clínica no tiene ningún backup completado que ensayar.")


class DrillRowsMismatchError(DomainError):
    """The replay restored other rows than the backup wrote: a table missing, rows more or less, a value changed."""

    status_code = 500
    code = "drill_rows_mismatch"
    message = _("El simulacro restauró filas distintas de las que el backup registró al escribirlas.")


class DrillMigrationError(DomainError):
    status_code = 500
    code = "drill_migration_failed"
    message = _("El backup se restauró, pero no se pudo migrar a la versión actual del código.")


class DrillFilesError(DomainError):
    status_code = 500
    code = "drill_files_damaged"
    message = _("Archivos del backup ausentes o dañados en el almacenamiento.")


class DrillPreemptedError(ConflictError):
    """A restore of the clinic stopped the drill's replay (core.locks): neither a pass nor a failure."""

    code = "drill_preempted"
    message = _("Una restauración de la clínica interrumpió el simulacro; se repetirá más adelante.")


class DrillFailedError(DomainError):
    """The drill failed otherwise: a dump that is not gzip, the database gone (the class and phase are in details)."""

    status_code = 500
    code = "drill_failed"
    message = _("El simulacro falló por un error inesperado (el tipo y la fase están en su informe).")
