import sys
import time
from pathlib import Path

from backup_restore import services
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = "Exporta todos los datos de una clínica a un archivo JSON (formato de GET /api/backup/)."
    allow_all_tenants = False

    def add_tenant_arguments(self, parser):
        parser.add_argument("-o", "--output", required=True, help="Archivo de salida (`-` para la salida estándar).")
        parser.add_argument("--gzip", action="store_true", help="Comprimir con gzip (.json.gz).")

    def handle_tenant(self, tenant, *, output: str, gzip: bool, verbosity: int, **options):
        started = time.monotonic()
        counts: dict[str, int] = {}

        def progress(label: str, done: int, total: int | None) -> None:
            counts[label] = done
            if verbosity >= 1 and (done == total or done % 200_000 < 10_000):
                self.stderr.write(f"  {label}: {done:,}/{total:,}")

        target = sys.stdout.buffer if output == "-" else None
        path = None if target else Path(output)
        partial = None if target else path.with_name(path.name + ".partial")
        export = services.tenant_data_export(context=AuditContext.system("cli"), compress=gzip, progress=progress)
        with (target if target else open(partial, "wb")) as out:
            try:
                for chunk in export.chunks:
                    out.write(chunk)
            finally:
                export.chunks.close()
        if partial:
            partial.replace(path)  # never leave a half-written file under the final name
        if verbosity >= 1:
            total = sum(counts.values())
            self.stderr.write(self.style.SUCCESS(
                f"Exportadas {total:,} filas de {len(counts)} modelos en {time.monotonic() - started:.1f} s → {output}"
            ))
