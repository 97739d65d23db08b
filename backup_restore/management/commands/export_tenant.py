import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from backup_restore import services
from bitacora.services import AuditContext
from core.exceptions import DomainError
from core.models import Tenant


class Command(BaseCommand):
    help = "Exporta todos los datos de una clínica a un archivo JSON (formato de GET /api/backup/)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Esquema o slug de la clínica.")
        parser.add_argument("-o", "--output", required=True, help="Archivo de salida (`-` para la salida estándar).")
        parser.add_argument("--gzip", action="store_true", help="Comprimir con gzip (.json.gz).")

    def handle(self, *args, tenant: str, output: str, gzip: bool, verbosity: int, **options):
        clinic = Tenant.objects.filter(schema_name=tenant).first() or Tenant.objects.filter(slug=tenant).first()
        if clinic is None or clinic.schema_name == "public":
            raise CommandError(f"No existe la clínica {tenant!r}.")
        started = time.monotonic()
        counts: dict[str, int] = {}

        def progress(label: str, done: int, total: int | None) -> None:
            counts[label] = done
            if verbosity >= 1 and (done == total or done % 200_000 < 10_000):
                self.stderr.write(f"  {label}: {done:,}/{total:,}")

        target = sys.stdout.buffer if output == "-" else None
        path = None if target else Path(output)
        partial = None if target else path.with_name(path.name + ".partial")
        try:
            with schema_context(clinic.schema_name):
                export = services.tenant_data_export(context=AuditContext.system("cli"), compress=gzip, progress=progress)
                with (target if target else open(partial, "wb")) as out:
                    try:
                        for chunk in export.chunks:
                            out.write(chunk)
                    finally:
                        export.chunks.close()
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message} {exc.details or ''}".strip()) from None
        if partial:
            partial.replace(path)  # never leave a half-written file under the final name
        if verbosity >= 1:
            total = sum(counts.values())
            self.stderr.write(self.style.SUCCESS(
                f"Exportadas {total:,} filas de {len(counts)} modelos en {time.monotonic() - started:.1f} s → {output}"
            ))
