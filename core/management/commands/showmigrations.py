"""`manage.py showmigrations`, schema by schema: public holds the shared apps, each clinic its own.

Django's command reads one schema, public, where django-tenants records every
migration, those of clinic apps included, without their tables: `showmigrations
backups` there says "[X]" of a table that only exists in each clinic. This one
shows public for the shared apps and every clinic for the clinic apps, clinics in
the same state grouped under one heading; `--tenant X` shows one.
"""
from __future__ import annotations

from io import StringIO

from django.apps import apps
from django.conf import settings
from django.core.management.base import OutputWrapper
from django.core.management.commands import showmigrations
from django.db.migrations.loader import MigrationLoader
from django.utils.translation import gettext as _
from django_tenants.utils import get_public_schema_name, schema_context

from core.management.base import tenant_resolve
from core.selectors import tenant_clinics

GROUP_NAMES_SHOWN = 5


def _labels(app_names: list[str]) -> set[str]:
    return {config.label for config in apps.get_app_configs() if config.name in app_names}


class Command(showmigrations.Command):
    help = _("Muestra las migraciones de public (apps compartidas) y de cada clínica (apps de clínica).")

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--tenant", help=_("Sólo esta clínica (esquema o slug), o public."))

    def handle(self, *args, **options):
        requested: list[str] = options["app_label"]
        if requested:
            self._validate_app_names(None, requested)
        public = get_public_schema_name()
        migrated = MigrationLoader(None, ignore_no_migrations=True).migrated_apps
        if options["tenant"] in (None, public):
            schemas = [public]
        else:
            schemas = [tenant_resolve(options["tenant"]).schema_name]
        if options["tenant"] is None:
            schemas += list(tenant_clinics().order_by("schema_name").values_list("schema_name", flat=True))

        shared, clinic = _labels(settings.SHARED_APPS), _labels(settings.TENANT_APPS)
        groups: dict[str, list[str]] = {}
        for schema in schemas:
            own = shared if schema == public else clinic
            labels = [label for label in requested if label in own] if requested else sorted(own & migrated)
            if not labels:
                note = (_("(%(apps)s: app de clínica, sin tablas en public; sus migraciones están en cada clínica)")
                        if schema == public else _("(%(apps)s: app sólo de public)"))
                groups.setdefault(note % {"apps": ", ".join(requested)} + "\n", []).append(schema)
                continue
            groups.setdefault(self._shown(schema, {**options, "app_label": labels}), []).append(schema)

        for text, members in groups.items():
            self.stdout.write(self._heading(members), self.style.SQL_TABLE)
            self.stdout.write(text, ending="")

    def _shown(self, schema: str, options: dict) -> str:
        """Django's own listing, for one schema."""
        real, self.stdout = self.stdout, OutputWrapper(StringIO())
        try:
            with schema_context(schema):
                super().handle(**options)
            return self.stdout._out.getvalue()
        finally:
            self.stdout = real

    @staticmethod
    def _heading(schemas: list[str]) -> str:
        names = ", ".join(schemas[:GROUP_NAMES_SHOWN]) + (", …" if len(schemas) > GROUP_NAMES_SHOWN else "")
        if len(schemas) == 1:
            return f"== {names} =="
        return "== %s (%s) ==" % (names, _("%(count)s clínicas") % {"count": len(schemas)})
