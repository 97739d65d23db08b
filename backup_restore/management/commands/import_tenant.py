import json

from django.core.management.base import CommandError

from backup_restore import services
from bitacora.services import AuditContext
from core.exceptions import DomainError
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = "Restaura en una clínica un archivo de GET /api/backup/ o export_tenant (.json o .json.gz), en una transacción."
    allow_all_tenants = False

    def add_tenant_arguments(self, parser):
        parser.add_argument("file", help="Archivo .json o .json.gz.")
        parser.add_argument("--replace", action="store_true", help="Vaciar los modelos restaurables antes de cargar.")
        parser.add_argument("--dry-run", action="store_true", help="Validar y escribir, informar y deshacer todo.")
        parser.add_argument("--allow-other-tenant", action="store_true", help="Aceptar un archivo de otra clínica.")

    def handle_tenant(self, tenant, *, file: str, replace: bool, dry_run: bool, allow_other_tenant: bool,
                      verbosity: int, **options):
        told: dict[str, int] = {}

        def progress(label: str, done: int, total) -> None:
            # The restore reports whenever it can, not at round numbers: each 200,000 rows crossed.
            if verbosity >= 2 or (verbosity >= 1 and done // 200_000 > told.get(label, 0) // 200_000):
                told[label] = done
                self.stderr.write(f"  {label}: {done:,} filas leídas")

        try:
            with open(file, "rb") as source:
                result = services.tenant_data_restore(
                    context=AuditContext.system("cli"), source=source, file_name=file, replace=replace,
                    dry_run=dry_run, allow_other_tenant=allow_other_tenant, progress=progress,
                )
        except OSError as exc:
            raise CommandError(f"No se pudo leer {file}: {exc.strerror or exc}") from None
        except DomainError as exc:
            # The model, row and reason are what an operator needs to fix the file.
            raise CommandError(f"{exc.code}: {exc.message} {json.dumps(exc.details, ensure_ascii=False, default=str)}") from None
        self.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
