from __future__ import annotations

from django.db import transaction

from core.models import Domain, Tenant


def tenant_ensure(*, schema_name: str, slug: str, nombre: str, domains: list[str]) -> tuple[Tenant, bool]:
    """Get or create a clinic (its schema migrated) and its domains."""
    tenant = Tenant.objects.filter(schema_name=schema_name).first()
    created = tenant is None
    if created:
        # Creating the tenant runs its migrations in a new schema (auto_create_schema).
        tenant = Tenant.objects.create(schema_name=schema_name, slug=slug, nombre=nombre)
    with transaction.atomic():
        for index, domain in enumerate(domains):
            Domain.objects.get_or_create(domain=domain, defaults={"tenant": tenant, "is_primary": index == 0})
    return tenant, created


def public_tenant_ensure(*, domains: list[str]) -> Tenant:
    """The public schema's row, so that its host names reach the public admin."""
    tenant, _created = tenant_ensure(schema_name="public", slug="public", nombre="Plataforma", domains=domains)
    return tenant
