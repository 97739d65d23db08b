from django.db import models
from django.utils import timezone


class Outcome(models.TextChoices):
    OK = "ok", "Correcto"
    ERROR = "error", "Error"


class BitacoraQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("La bitácora es de sólo inserción: sus entradas no se modifican.")

    def delete(self):
        raise TypeError("La bitácora es de sólo inserción: sus entradas no se borran.")


class Bitacora(models.Model):
    """One audited operation. Append-only; the actor is a snapshot, not a foreign key,
    so that entries outlive the users (and the restores) they describe."""

    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_email = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.OK)
    details = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = BitacoraQuerySet.as_manager()

    class Meta:
        verbose_name = "entrada de bitácora"
        verbose_name_plural = "bitácora"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.outcome} {self.actor_email}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise TypeError("La bitácora es de sólo inserción: sus entradas no se modifican.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("La bitácora es de sólo inserción: sus entradas no se borran.")
