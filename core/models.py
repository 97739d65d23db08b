from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Tenant(TenantMixin):
    """A clinic: one PostgreSQL schema."""

    slug = models.SlugField(max_length=63, unique=True)
    nombre = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=True)

    auto_create_schema = True

    class Meta:
        verbose_name = "clínica"
        verbose_name_plural = "clínicas"

    def __str__(self) -> str:
        return f"{self.nombre} ({self.schema_name})"


class Domain(DomainMixin):
    class Meta:
        verbose_name = "dominio"
        verbose_name_plural = "dominios"
