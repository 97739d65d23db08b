from backups.models import BackupRecord
from backups.services import backup_create
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = "Crea un backup SQL (pg_dump) de una clínica o de todas (el cron de Render usa --all-tenants --type automatic)."

    def add_tenant_arguments(self, parser):
        parser.add_argument("--type", dest="backup_type", choices=BackupRecord.Type.values, default=BackupRecord.Type.MANUAL)

    def handle_tenant(self, tenant, *, backup_type, **options):
        # Automatic backups have no creator; a manual one from the shell neither (no user logged in).
        backup = backup_create(context=AuditContext.system(f"manage.py create_backup ({backup_type})"), backup_type=backup_type)
        self.stdout.write(self.style.SUCCESS(f"  {backup.file_path}  {backup.file_size_mb} MB  sha256={backup.sha256}"))
