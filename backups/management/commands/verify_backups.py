from dataclasses import asdict

from backups.errors import BackupChecksumMismatchError
from backups.models import BackupRecord
from backups.selectors import backup_list
from backups.services import backup_verify
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Relee cada backup completado, compara su sha256 y marca los dañados o ausentes. Con un broker "
        "configurado, --all-tenants deja un trabajo por clínica en la cola."
    )

    def enqueue_tenant(self, tenant, **options) -> str:
        from backups.tasks import verify_task  # Celery loads only where a job is sent (core.celery)

        verify_task.delay(asdict(AuditContext.system("manage.py verify_backups")))
        return "verificación en cola"

    def handle_tenant(self, tenant, **options):
        context = AuditContext.system("manage.py verify_backups")
        backups = list(backup_list(status=BackupRecord.Status.COMPLETED))
        bad = []
        for index, backup in enumerate(backups, start=1):
            integrity = backup_verify(context=context, backup=backup)
            line = f"  ({index}/{len(backups)}) {backup.file_name}: {integrity}"
            if integrity == BackupRecord.Integrity.OK:
                self.stdout.write(line)
            else:
                bad.append(backup.file_name)
                self.stderr.write(line)
        if bad:
            raise BackupChecksumMismatchError(f"{len(bad)} backup(s) dañado(s) o ausente(s): {', '.join(bad)}")
        self.stdout.write(self.style.SUCCESS(f"  {len(backups)} backup(s) verificados"))
