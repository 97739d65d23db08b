from django.core.management.base import CommandError

from backups.services import backup_open
from backups.storage.objects import copy_hashed
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = "Descarga el archivo de un backup a un archivo local y comprueba su sha256."
    allow_all_tenants = False

    def add_tenant_arguments(self, parser):
        parser.add_argument("--id", type=int, required=True, dest="backup_id")
        parser.add_argument("-o", "--output", required=True, help="Archivo de destino.")

    def handle_tenant(self, tenant, *, backup_id, output, **options):
        backup, stored_file = backup_open(context=AuditContext.system("manage.py download_backup"), backup_id=backup_id)
        with stored_file, open(output, "wb") as destination:
            copied = copy_hashed(stored_file, destination)
        if copied.sha256 != backup.sha256:
            raise CommandError(f"El archivo descargado no coincide con el sha256 registrado ({backup.sha256}).")
        self.stdout.write(self.style.SUCCESS(f"  {output}: {copied.size} bytes, sha256 correcto"))
