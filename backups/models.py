from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import models
from django.utils.translation import gettext, gettext_noop

# What a completed operation could not do with a clinic's files, as a list of
# {"code": one of these, "count": n, ...}; the operation itself is good.
WARNING_MESSAGES = {
    "files_refused": gettext_noop("Archivos rechazados (su nombre no está en la carpeta de la clínica): %(count)d"),
    "files_missing": gettext_noop("Archivos que las filas nombran y no se encontraron: %(count)d"),
}


def warnings_summary(warnings: list[dict]) -> str:
    """One line for people: what each warning counts, in the request's language."""
    return "; ".join(gettext(WARNING_MESSAGES[item["code"]]) % {"count": item["count"]}
                     for item in warnings if item.get("code") in WARNING_MESSAGES)


class DrillStatus(models.TextChoices):
    NONE = "", "Sin simulacro"
    RUNNING = "running", "En curso"
    PASSED = "passed", "Correcto"
    FAILED = "failed", "Fallido"
    # Stopped before it could say anything: its process died (the reaper says so), or a
    # restore of the clinic preempted it. Neither proves nor disproves the backup.
    INTERRUPTED = "interrupted", "Interrumpido"


class BackupRecord(models.Model):
    """One SQL backup of this clinic's schema and where its file is stored (seed 000)."""

    class Type(models.TextChoices):
        MANUAL = "manual", "Manual"
        AUTOMATIC = "automatic", "Automático"

    class Status(models.TextChoices):
        PENDING = "pending", "En cola"
        RUNNING = "running", "En curso"
        COMPLETED = "completed", "Completado"
        FAILED = "failed", "Fallido"

    ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING)

    class Integrity(models.TextChoices):
        UNVERIFIED = "", "Sin verificar"
        OK = "ok", "Correcto"
        MISMATCH = "mismatch", "Checksum distinto"
        MISSING = "missing", "Archivo ausente"

    file_name = models.CharField(max_length=255)
    file_path = models.TextField()
    file_size = models.BigIntegerField(default=0)
    backup_type = models.CharField(max_length=10, choices=Type.choices, default=Type.MANUAL)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="backups"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The pipeline always sets the status itself. A record made by hand (seed 000's "create
    # a test record" in the shell) describes a file that exists: were it `running`, it
    # would hold the clinic busy (409) until the reaper failed it as interrupted.
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETED, db_index=True)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    progress_bytes = models.BigIntegerField(default=0, help_text="Bytes comprimidos escritos hasta ahora por un backup en curso.")
    finished_at = models.DateTimeField(null=True, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    keep = models.BooleanField(default=False, help_text="Nunca lo borra la política de retención.")
    integrity = models.CharField(max_length=10, choices=Integrity.choices, default=Integrity.UNVERIFIED, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    # The SQL inside the .sql.gz, hashed while pg_dump streams: the checksum of the
    # decompressed download. Null on backups made before it was recorded.
    sql_sha256 = models.CharField(max_length=64, blank=True)
    sql_size = models.BigIntegerField(null=True, blank=True)
    files_count = models.PositiveIntegerField(default=0, help_text="Archivos de pacientes (radiografías…) que guarda el backup.")
    files_size = models.BigIntegerField(default=0, help_text="Tamaño total de esos archivos, en bytes.")
    warnings = models.JSONField(default=list, blank=True,
                                help_text="Lo que no pudo hacer con los archivos de la clínica (rechazados, no encontrados).")
    # The last restore drill of this backup (backups.drills): replayed into a scratch schema,
    # its rows compared with what the dump recorded, migrated forward, its files re-read.
    # Defaults in the database too: rows written in SQL (benchmarks, hand-made records) need not name them.
    drill_status = models.CharField(max_length=12, choices=DrillStatus.choices, default=DrillStatus.NONE,
                                    db_default=DrillStatus.NONE, blank=True)
    drill_started_at = models.DateTimeField(null=True, blank=True)
    drill_finished_at = models.DateTimeField(null=True, blank=True)
    drill_seconds = models.FloatField(null=True, blank=True,
                                      help_text="Tiempo de restauración medido por el simulacro (copia, réplica y migración), en segundos.")
    drill_error_code = models.CharField(max_length=64, blank=True, default="", db_default="")
    drill_error = models.TextField(blank=True, default="", db_default="")
    drill_report = models.JSONField(default=dict, db_default={}, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "backup"
        verbose_name_plural = "backups"

    def __str__(self) -> str:
        return self.file_name

    @property
    def warning(self) -> str:
        return warnings_summary(self.warnings)

    warning.fget.short_description = "advertencias"

    @property
    def file_size_mb(self) -> Decimal:
        return (Decimal(self.file_size) / (1024 * 1024)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class BackupFile(models.Model):
    """One file a backup holds: the path its rows name, and the content it had (by sha256).

    The content lives once per clinic in the backups storage, under a name made of its
    sha256 (backups.files.media.file_object_key), however many backups name it. A blank
    sha256 means the file was already missing from the media storage at backup time.
    """

    backup = models.ForeignKey(BackupRecord, on_delete=models.CASCADE, related_name="files")
    path = models.TextField()
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    size = models.BigIntegerField(default=0)
    # The media storage's modification time at backup time: with the size, it lets the
    # next backup reuse the sha256 without reading an unchanged file again.
    modified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "archivo de backup"
        verbose_name_plural = "archivos de backup"
        constraints = [models.UniqueConstraint(fields=["backup", "path"], name="backupfile_unique_path")]
        indexes = [models.Index(fields=["path"], name="backupfile_path_idx")]

    def __str__(self) -> str:
        return self.path

    @property
    def missing(self) -> bool:
        return not self.sha256


class RestoreJob(models.Model):
    """One SQL restore of this clinic, in place or into a new clinic: what a front end polls.

    The swap carries these rows into the restored schema (like the backup history), and
    marks the job `swapped` in the same transaction, so whoever finds the job afterwards
    knows whether the clinic was restored, even if the process died right after.
    """

    class Kind(models.TextChoices):
        IN_PLACE = "in_place", "En la clínica"
        NEW_TENANT = "new_tenant", "En una clínica nueva"

    class Status(models.TextChoices):
        PENDING = "pending", "En cola"
        RUNNING = "running", "En curso"
        COMPLETED = "completed", "Completada"
        FAILED = "failed", "Fallida"

    class Phase(models.TextChoices):
        QUEUED = "queued", "En cola"
        COPY = "copy", "Copiando el backup"
        REPLAY = "replay", "Reproduciendo el dump"
        MIGRATE = "migrate", "Migrando"
        FILES = "files", "Reponiendo archivos"
        SWAP = "swap", "Intercambiando esquemas"
        SWAPPED = "swapped", "Intercambiada"
        DONE = "done", "Terminada"

    ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING)

    backup = models.ForeignKey(BackupRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="restores")
    backup_file_name = models.CharField(max_length=255)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.IN_PLACE)
    new_schema = models.CharField(max_length=63, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.QUEUED)
    progress_bytes = models.BigIntegerField(default=0, help_text="Bytes del dump reproducidos hasta ahora.")
    total_bytes = models.BigIntegerField(default=0, help_text="Tamaño del dump sin comprimir, si se conoce.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    warnings = models.JSONField(default=list, blank=True,
                                help_text="Lo que no pudo hacer con los archivos de la clínica (rechazados, no encontrados).")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "restauración"
        verbose_name_plural = "restauraciones"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} desde {self.backup_file_name} ({self.status})"

    @property
    def warning(self) -> str:
        return warnings_summary(self.warnings)


class RestoreFile(models.Model):
    """A media name a restore's file phase is about to create, recorded before it is written.

    Like a BackupFile before its upload: a restore that dies or fails still names every
    file it may have created, and backups.files.cleanup removes those no live row names.
    """

    job = models.ForeignKey(RestoreJob, on_delete=models.CASCADE, related_name="files")
    path = models.TextField()

    class Meta:
        verbose_name = "archivo creado por una restauración"
        verbose_name_plural = "archivos creados por restauraciones"

    def __str__(self) -> str:
        return self.path


# A clinic's backup history: which backups exist, the files each holds, the restores. It
# describes objects in the backups storage (and media files a restore is creating) as they are now, not the clinic's data as of
# a backup: dumps leave its rows out (backups.dump.pg_tools), an in-place restore keeps the
# live ones, and a clinic restored as new starts with none. A dump holding them would
# bring back, after `gunzip | psql`, its own record still `running`, which the reaper
# fails, deleting the very dump just replayed; and each dump would hold the file lists
# of every earlier backup, growing with the number of backups kept.
BACKUP_HISTORY_MODELS = (RestoreFile, RestoreJob, BackupFile, BackupRecord)
