from backups.services import backup_delete
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = "Borra un backup: primero su archivo, después su registro."
    allow_all_tenants = False

    def add_tenant_arguments(self, parser):
        parser.add_argument("--id", type=int, required=True, dest="backup_id")

    def handle_tenant(self, tenant, *, backup_id, **options):
        backup_delete(context=AuditContext.system("manage.py delete_backup"), backup_id=backup_id)
        self.stdout.write(self.style.SUCCESS(f"  backup {backup_id} borrado"))
