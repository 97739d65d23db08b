from django.db import connection

from backups.jobs.enqueue import backup_enqueue
from backups.models import BackupRecord
from backups.retention import backup_prune
from backups.services import backup_create
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Crea un backup SQL (pg_dump) de una clínica o de todas. Con un broker configurado, --all-tenants deja "
        "un trabajo por clínica en la cola y termina (el cron de Render usa --all-tenants --type automatic --prune)."
    )

    def add_tenant_arguments(self, parser):
        parser.add_argument("--type", dest="backup_type", choices=BackupRecord.Type.values, default=BackupRecord.Type.MANUAL)
        parser.add_argument("--prune", action="store_true", help="Después de un backup correcto, aplicar la retención.")

    @staticmethod
    def _context(backup_type: str) -> AuditContext:
        return AuditContext.system(f"manage.py create_backup ({backup_type})")

    def handle_tenant(self, tenant, *, backup_type, prune=False, **options):
        # Automatic backups have no creator; a manual one from the shell neither (no user logged in).
        context = self._context(backup_type)
        backup = backup_create(context=context, backup_type=backup_type)
        line = f"  {backup.file_path}  {backup.file_size_mb} MB  sha256={backup.sha256}"
        if backup.warnings:  # the dump is good, the backup is not whole: never plain success
            self.stdout.write(self.style.WARNING(f"{line}  ADVERTENCIAS: {backup.warning}"))
        else:
            self.stdout.write(self.style.SUCCESS(line))
        if prune:
            plan = backup_prune(context=context, apply=True)
            self.stdout.write(f"  retención: {len(plan.delete)} borrado(s), {len(plan.keep)} conservado(s)")

    def enqueue_tenant(self, tenant, *, backup_type, prune=False, **options) -> str:
        backup = backup_enqueue(context=self._context(backup_type), backup_type=backup_type, prune_after=prune)
        return f"backup {backup.pk} en cola ({backup.file_name}) en {connection.schema_name}"
