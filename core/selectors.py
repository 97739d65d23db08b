from __future__ import annotations

from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Max
from django_tenants.utils import get_public_schema_name

from core.models import Tenant


def migration_state() -> dict[str, str]:
    """The latest applied migration per app in the current schema (names sort by number)."""
    latest = MigrationRecorder(connection).migration_qs.values("app").annotate(latest=Max("name")).order_by("app")
    return {row["app"]: row["latest"] for row in latest}


def tenant_clinics(*, active_only: bool = False):
    """Every clinic (never the public schema), by name."""
    clinics = Tenant.objects.exclude(schema_name=get_public_schema_name())
    if active_only:
        clinics = clinics.filter(is_active=True)
    return clinics.order_by("nombre", "schema_name")


def tenant_find(name: str, *, active_only: bool = False) -> Tenant | None:
    """A clinic by schema name, else by slug; never the public schema."""
    clinics = tenant_clinics(active_only=active_only)
    return clinics.filter(schema_name=name).first() or clinics.filter(slug=name).first()


def tenant_find_by_slug(slug: str, *, active_only: bool = False) -> Tenant | None:
    """A clinic by its slug only, as in `/clinicas/<slug>/`; never the public schema."""
    return tenant_clinics(active_only=active_only).filter(slug=slug).first()
