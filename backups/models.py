from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import models


class BackupRecord(models.Model):
    """One SQL backup of this clinic's schema and where its file is stored (seed 000)."""

    class Type(models.TextChoices):
        MANUAL = "manual", "Manual"
        AUTOMATIC = "automatic", "Automático"

    class Status(models.TextChoices):
        RUNNING = "running", "En curso"
        COMPLETED = "completed", "Completado"
        FAILED = "failed", "Fallido"

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
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING, db_index=True)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    keep = models.BooleanField(default=False, help_text="Nunca lo borra la política de retención.")
    integrity = models.CharField(max_length=10, choices=Integrity.choices, default=Integrity.UNVERIFIED, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "backup"
        verbose_name_plural = "backups"

    def __str__(self) -> str:
        return self.file_name

    @property
    def file_size_mb(self) -> Decimal:
        return (Decimal(self.file_size) / (1024 * 1024)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
