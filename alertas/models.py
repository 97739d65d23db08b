"""Alerts that reach a person, and the nights the heartbeat reports: platform-wide, so in the
public schema (a shared app). A clinic's alerts are also in its own audit log."""
from django.db import models
from django.utils import timezone


class AlertKind(models.TextChoices):
    BACKUP_FAILED = "backup_failed", "Backup fallido"
    BACKUP_FILES = "backup_files", "Backup sin todos sus archivos"
    BACKUP_OVERDUE = "backup_overdue", "Clínica sin backup reciente"
    DRILL_FAILED = "drill_failed", "Simulacro de restauración fallido"
    OPERATIONS_REAPED = "operations_reaped", "Operaciones interrumpidas limpiadas"


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Por enviar"
    SENT = "sent", "Enviado"
    OFF = "off", "Canal sin configurar"
    GIVEN_UP = "given_up", "Abandonado tras los reintentos"


class AlertMessage(models.Model):
    """One message to people: an email to BACKUP_ALERT_EMAILS and one JSON POST to the webhook.
    It carries one alert (the first of its kind that day) or a digest of several."""

    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    digest = models.BooleanField(default=False)
    subject = models.CharField(max_length=255)
    body = models.TextField()
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    email_state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    webhook_state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "mensaje de alertas"
        verbose_name_plural = "mensajes de alertas"

    def __str__(self) -> str:
        return self.subject


class Alert(models.Model):
    """Something a person must know about one clinic: once per kind, clinic and day."""

    class Delivery(models.TextChoices):
        AT_ONCE = "at_once", "Enviada al momento"
        DIGEST = "digest", "En un resumen"

    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    schema = models.CharField(max_length=63, db_index=True)
    clinic = models.CharField(max_length=200, blank=True, help_text="El nombre de la clínica cuando saltó la alerta.")
    day = models.DateField(help_text="Día (TIME_ZONE) de la alerta: una por tipo, clínica y día.")
    summary = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    delivery = models.CharField(max_length=10, choices=Delivery.choices)
    message = models.ForeignKey(AlertMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    repeats = models.PositiveIntegerField(default=0, help_text="Veces que volvió a saltar ese día sin enviarse de nuevo.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True, help_text="Cuándo dejó de ser cierta (un backup o simulacro correcto).")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "alerta"
        verbose_name_plural = "alertas"
        constraints = [models.UniqueConstraint(fields=["kind", "schema", "day"], name="alert_once_a_day")]
        indexes = [models.Index(fields=["kind", "day", "delivery"], name="alert_kind_day_idx"),
                   models.Index(fields=["schema"], condition=models.Q(resolved_at=None), name="alert_open_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.clinic or self.schema} ({self.day})"


class NightRun(models.Model):
    """One night's automatic backups, as the cron queued them: what the heartbeat reports."""

    class Outcome(models.TextChoices):
        RUNNING = "", "En curso"
        OK = "ok", "Todas correctas"
        FAIL = "fail", "Alguna falló"

    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    expected = models.PositiveIntegerField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=4, choices=Outcome.choices, default=Outcome.RUNNING, blank=True)
    failed = models.PositiveIntegerField(default=0)
    # A heartbeat ping that could not be sent ("start", "", "fail"), retried by alerts_flush.
    ping_pending = models.CharField(max_length=8, blank=True, default="")

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = "noche de backups"
        verbose_name_plural = "noches de backups"


class NightRunJob(models.Model):
    """One clinic's backup job of a night; `ended_at` once it ended, however it did."""

    night = models.ForeignKey(NightRun, on_delete=models.CASCADE, related_name="jobs")
    schema = models.CharField(max_length=63)
    backup_id = models.BigIntegerField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["night", "schema"], name="night_job_once")]
        indexes = [models.Index(fields=["schema", "backup_id"], name="night_job_backup_idx")]
