from __future__ import annotations

import re

from django.db import transaction
from django.utils.text import slugify
from django_tenants.utils import schema_context, schema_exists

from core.errors import InvalidTenantNameError, TenantExistsError
from core.models import Domain, Tenant


_SCHEMA_NAME = re.compile(r"[a-z][a-z0-9_]{2,62}")


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


def tenant_slug(schema_name: str) -> str:
    """clinica_demo → clinica-demo, the house style for slugs."""
    return slugify(schema_name.replace("_", "-"))


def tenant_name_check(schema_name: str) -> None:
    """A name a new clinic's schema can take: valid, and used by no clinic or schema."""
    # Stricter than PostgreSQL: lower case (unquoted names fold), and no "__", which
    # restores use for their temporary schemas.
    if not _SCHEMA_NAME.fullmatch(schema_name) or schema_name.startswith("pg_") or "__" in schema_name:
        raise InvalidTenantNameError(details={"schema_name": schema_name})
    slug = tenant_slug(schema_name)
    if schema_exists(schema_name) or Tenant.objects.filter(schema_name=schema_name).exists() or Tenant.objects.filter(slug=slug).exists():
        raise TenantExistsError(details={"schema_name": schema_name})


def tenant_register_schema(*, schema_name: str, nombre: str) -> Tenant:
    """Register a clinic for a schema that already holds its tables (a restored backup)."""
    tenant = Tenant(schema_name=schema_name, slug=tenant_slug(schema_name), nombre=nombre)
    tenant.auto_create_schema = False
    with schema_context("public"):  # django-tenants saves tenants only from the public schema
        tenant.save()
    return tenant
