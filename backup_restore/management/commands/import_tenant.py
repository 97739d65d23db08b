import json

from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from backup_restore import services
from bitacora.services import AuditContext
from core.exceptions import DomainError
from core.models import Tenant


class Command(BaseCommand):
    help = "Restaura en una clínica un archivo de GET /api/backup/ o export_tenant (.json o .json.gz), en una transacción."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Esquema o slug de la clínica.")
        parser.add_argument("file", help="Archivo .json o .json.gz.")
        parser.add_argument("--replace", action="store_true", help="Vaciar los modelos restaurables antes de cargar.")
        parser.add_argument("--dry-run", action="store_true", help="Validar y escribir, informar y deshacer todo.")
        parser.add_argument("--allow-other-tenant", action="store_true", help="Aceptar un archivo de otra clínica.")

    def handle(self, *args, tenant: str, file: str, replace: bool, dry_run: bool, allow_other_tenant: bool,
               verbosity: int, **options):
        clinic = Tenant.objects.filter(schema_name=tenant).first() or Tenant.objects.filter(slug=tenant).first()
        if clinic is None or clinic.schema_name == "public":
            raise CommandError(f"No existe la clínica {tenant!r}.")

        def progress(label: str, done: int, total) -> None:
            if verbosity >= 2 or (verbosity >= 1 and done and done % 200_000 == 0):
                self.stderr.write(f"  {label}: {done:,} filas leídas")

        try:
            with open(file, "rb") as source, schema_context(clinic.schema_name):
                result = services.tenant_data_restore(
                    context=AuditContext.system("cli"), source=source, file_name=file, replace=replace,
                    dry_run=dry_run, allow_other_tenant=allow_other_tenant, progress=progress,
                )
        except OSError as exc:
            raise CommandError(f"No se pudo leer {file}: {exc.strerror or exc}") from None
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message} {json.dumps(exc.details, ensure_ascii=False, default=str)}") from None
        self.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
