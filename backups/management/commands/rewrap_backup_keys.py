import time

from django.core.management.base import BaseCommand, CommandError

from backups.sealing import platform_keys_rewrap
from core.exceptions import DomainError


class Command(BaseCommand):
    help = (
        "Vuelve a envolver la clave de cada clínica para los destinatarios actuales de la plataforma "
        "(BACKUP_PLATFORM_RECIPIENTS), sin volver a cifrar ningún backup: así se retira una clave vieja de la "
        "plataforma. BACKUP_PLATFORM_IDENTITY debe abrir las claves de hoy y las de los destinatarios nuevos."
    )

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--tenant", action="append", metavar="ESQUEMA",
                           help="Carpeta (esquema) de una clínica en el almacenamiento de backups; se puede repetir.")
        group.add_argument("--all-tenants", action="store_true",
                           help="Cada carpeta de clínica del almacenamiento de backups, registrada o no.")

    def handle(self, *args, tenant=None, all_tenants=False, **options):
        started = time.monotonic()
        try:
            counts = platform_keys_rewrap(clinics=None if all_tenants else tenant)
        except DomainError as exc:
            raise CommandError(str(exc.message)) from exc
        for clinic, count in counts.items():
            if count or options["verbosity"] >= 2:
                self.stdout.write(f"  {clinic}: {count} clave(s) envuelta(s) de nuevo")
        self.stdout.write(self.style.SUCCESS(
            f"{sum(counts.values())} clave(s) de {len(counts)} clínica(s) envueltas para los destinatarios actuales "
            f"en {time.monotonic() - started:.2f} s"
        ))
