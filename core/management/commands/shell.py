"""`manage.py shell [--tenant X]`: Django's shell, in the public schema or inside one clinic.

Seed 000's guide opens `python manage.py shell` and queries BackupRecord, whose table
exists only in each clinic's schema, so in public it fails with `relation … does not
exist`; its test-record snippet looks up a clinic's user, who is not in public. Here:
1. `--tenant clinica_demo` (schema or slug) runs the shell inside that clinic
   (django-tenants' tenant_context): the seed's snippets read and write there;
2. an interactive shell starts with a banner saying which schema it is in, and how to
   open a clinic's;
3. in public, a query on a clinic's table, or a clinic's object not found (a user of
   the clinic, say), fails with that same advice, at the prompt or in a piped script.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.management.commands import shell
from django.db import ProgrammingError, connection
from django.utils.translation import gettext as _
from django_tenants.utils import get_public_schema_name, tenant_context

from core.management.base import tenant_resolve
from core.selectors import tenant_clinics

CLINICS_SHOWN = 10
UNDEFINED_TABLE = "42P01"


class ClinicDataInPublicError(ProgrammingError):
    """A clinic's data asked for in the public schema's shell."""


def _advice(problem: str) -> str:
    names = list(tenant_clinics(active_only=True).values_list("schema_name", flat=True)[:CLINICS_SHOWN + 1])
    clinics = ", ".join(names[:CLINICS_SHOWN]) + (", …" if len(names) > CLINICS_SHOWN else "")
    return _("%(problem)s Salga con exit() y abra el shell de una clínica: python manage.py shell --tenant %(example)s "
             "(clínicas: %(clinics)s).") % {"problem": problem, "example": names[0] if names else "<clínica>",
                                              "clinics": clinics or _("ninguna todavía")}


def _clinic_apps() -> set[str]:
    """Apps whose rows live in each clinic's schema (usuarios too: public has only the platform's users)."""
    return set(settings.TENANT_APPS)


def _clinic_only_tables() -> set[str]:
    clinic_only = _clinic_apps() - set(settings.SHARED_APPS)
    return {model._meta.db_table for model in apps.get_models(include_auto_created=True)
            if model._meta.app_config.name in clinic_only}


def _missing_object_advice(exc: BaseException) -> str | None:
    model = next((model for model in apps.get_models() if type(exc) is model.DoesNotExist), None)
    if model is None or model._meta.app_config.name not in _clinic_apps():
        return None
    return _advice(_("Ningún %(model)s coincide en el esquema public (la plataforma), que sólo tiene los de la "
                     "plataforma; los de cada clínica están en su esquema.") % {"model": model._meta.verbose_name})


class _ClinicTableAdvice:
    """execute_wrapper: a clinic's table missing in public becomes advice on how to open that clinic."""

    def __init__(self):
        self.tables = _clinic_only_tables()

    def __call__(self, execute, sql, params, many, context):
        try:
            return execute(sql, params, many, context)
        except ProgrammingError as exc:
            table = next((name for name in sorted(self.tables) if f'"{name}"' in sql), None)
            if (getattr(exc.__cause__, "pgcode", None) != UNDEFINED_TABLE or table is None
                    or connection.schema_name != get_public_schema_name()):
                raise
            raise ClinicDataInPublicError(_advice(
                _("«%(table)s» es una tabla de cada clínica y este shell está en el esquema public (la plataforma).")
                % {"table": table})) from None


@contextmanager
def _advice_after_tracebacks():
    """At the prompt, a clinic's object not found in public gets the advice under its traceback."""
    def hook(exc_type, exc, traceback):
        sys.__excepthook__(exc_type, exc, traceback)
        advice = _missing_object_advice(exc)
        if advice:
            sys.stderr.write(f"{advice}\n")

    previous, sys.excepthook = sys.excepthook, hook
    try:
        yield
    finally:
        sys.excepthook = previous


class Command(shell.Command):
    help = _("Shell de Python con Django, en el esquema public o, con --tenant, dentro de una clínica.")

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--tenant", help=_("Esquema o slug de la clínica en la que abrir el shell."))

    def handle(self, **options):
        if options["tenant"]:
            tenant = tenant_resolve(options["tenant"])
            with tenant_context(tenant):
                self._banner(options, _("Shell en la clínica «%(nombre)s» (esquema %(schema)s): los modelos leen y "
                                        "escriben en ella.") % {"nombre": tenant.nombre, "schema": tenant.schema_name})
                return super().handle(**options)
        self._banner(options, _advice(_("Shell en el esquema public (la plataforma: clínicas, dominios, operadores); los "
                                        "datos de cada clínica (backups, bitácora, pacientes, usuarios) están en su "
                                        "propio esquema.")))
        with connection.execute_wrapper(_ClinicTableAdvice()), _advice_after_tracebacks():
            try:
                return super().handle(**options)
            except ObjectDoesNotExist as exc:  # `shell -c` or a piped script
                advice = _missing_object_advice(exc)
                if advice is None:
                    raise
                raise ClinicDataInPublicError(advice) from exc

    def _banner(self, options: dict, text: str) -> None:
        # Only for a person at a terminal: `shell -c …` and piped scripts keep their output clean.
        if not options["command"] and sys.stdin.isatty():
            self.stdout.write(text, self.style.WARNING)
