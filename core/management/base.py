"""The base of every per-clinic manage.py command: --tenant X | --all-tenants."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import get_public_schema_name, tenant_context

from core.exceptions import DomainError
from core.models import Tenant
from core.selectors import tenant_find


def tenant_resolve(name: str) -> Tenant:
    tenant = tenant_find(name)
    if tenant is None:
        raise CommandError(f"La clínica «{name}» no existe.")
    return tenant


class TenantCommand(BaseCommand):
    """Runs handle_tenant() inside each selected clinic's schema.

    With --all-tenants a failing clinic does not stop the others: each is reported
    and the command exits non-zero if any failed. Domain errors become one clear line.
    A command that defines enqueue_tenant() hands --all-tenants to the job workers
    when a broker is configured: one job per clinic, and the command exits at once.
    """

    allow_all_tenants = True
    # Django's system checks (URLconf, admin, models) guard development, not an operator's command:
    # run at every start they import every view for nothing (~0.1 s of CPU) while the operator, or
    # the nightly cron, waits. `manage.py check` still runs them, as the build and the tests do.
    requires_system_checks = []

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--tenant", help="Esquema o slug de la clínica.")
        if self.allow_all_tenants:
            group.add_argument("--all-tenants", action="store_true", help="Todas las clínicas activas.")
        self.add_tenant_arguments(parser)

    def add_tenant_arguments(self, parser) -> None:
        """Arguments of the command itself."""

    def handle_tenant(self, tenant: Tenant, **options) -> None:
        raise NotImplementedError

    enqueue_tenant = None  # (tenant, **options) -> str: start that clinic's job, say what was queued

    def all_tenants(self, **options) -> list[Tenant]:
        """What --all-tenants selects: every active clinic, by schema name (a command may narrow it)."""
        return list(Tenant.objects.exclude(schema_name=get_public_schema_name()).filter(is_active=True).order_by("schema_name"))

    def handle(self, *args, tenant=None, all_tenants=False, **options):
        if all_tenants:
            tenants = self.all_tenants(**options)
        else:
            tenants = [tenant_resolve(tenant)]
        if all_tenants and self.enqueue_tenant is not None and not settings.CELERY_TASK_ALWAYS_EAGER:
            self._enqueue(tenants, **options)
            return
        failed = []
        for index, current in enumerate(tenants, start=1):
            if len(tenants) > 1:
                self.stdout.write(f"[{index}/{len(tenants)}] {current.schema_name}")
            try:
                with tenant_context(current):
                    self.handle_tenant(current, **options)
            except DomainError as exc:
                failed.append(current.schema_name)
                if len(tenants) == 1:
                    raise CommandError(f"{current.schema_name}: {exc.message}") from exc
                self.stderr.write(f"  error en {current.schema_name}: {exc.message}")
        if failed:
            raise CommandError(f"Fallaron {len(failed)} de {len(tenants)} clínicas: {', '.join(failed)}")

    def _enqueue(self, tenants: list[Tenant], **options) -> None:
        failed = []
        for current in tenants:
            try:
                with tenant_context(current):
                    self.stdout.write(f"  {current.schema_name}: {self.enqueue_tenant(current, **options)}")
            except DomainError as exc:
                failed.append(current.schema_name)
                self.stderr.write(f"  error en {current.schema_name}: {exc.message}")
        self.stdout.write(f"{len(tenants) - len(failed)} trabajo(s) en cola para los workers.")
        if failed:
            raise CommandError(f"No se pudieron encolar {len(failed)} de {len(tenants)} clínicas: {', '.join(failed)}")
