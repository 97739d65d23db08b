from django.db import connection

from alertas.nights import night_job_ended, night_job_queued, night_start
from backups.jobs.enqueue import backup_enqueue
from backups.models import BackupRecord
from backups.retention import backup_prune
from backups.services import backup_create
from bitacora.services import AuditContext
from core.exceptions import DomainError
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Crea un backup SQL (pg_dump) de una clínica o de todas. Con un broker configurado, --all-tenants deja "
        "un trabajo por clínica en la cola y termina (el cron de Render usa --all-tenants --type automatic --prune). "
        "--all-tenants --type automatic es la noche: avisa a BACKUP_HEARTBEAT_URL al empezar y cuando terminó "
        "el trabajo de cada clínica."
    )
    night = None

    def add_tenant_arguments(self, parser):
        parser.add_argument("--type", dest="backup_type", choices=BackupRecord.Type.values, default=BackupRecord.Type.MANUAL)
        parser.add_argument("--prune", action="store_true", help="Después de un backup correcto, aplicar la retención.")

    @staticmethod
    def _context(backup_type: str) -> AuditContext:
        return AuditContext.system(f"manage.py create_backup ({backup_type})")

    def all_tenants(self, *, backup_type=BackupRecord.Type.MANUAL, **options):
        tenants = super().all_tenants(**options)
        if backup_type == BackupRecord.Type.AUTOMATIC:
            # The nightly run: one job per clinic expected, and the heartbeat's start (alertas.nights).
            self.night = night_start(expected=len(tenants))
        return tenants

    def _ended(self, ok: bool, backup_id: int | None = None) -> None:
        if self.night is not None:
            night_job_ended(night_id=self.night.pk, schema=connection.schema_name, ok=ok, backup_id=backup_id)

    def handle_tenant(self, tenant, *, backup_type, prune=False, **options):
        # Automatic backups have no creator; a manual one from the shell neither (no user logged in).
        context = self._context(backup_type)
        try:
            backup = backup_create(context=context, backup_type=backup_type)
        except DomainError:
            self._ended(ok=False)
            raise
        self._ended(ok=True, backup_id=backup.pk)
        line = f"  {backup.file_path}  {backup.file_size_mb} MB  sha256={backup.sha256}"
        if backup.warnings:  # the dump is good, the backup is not whole: never plain success
            self.stdout.write(self.style.WARNING(f"{line}  ADVERTENCIAS: {backup.warning}"))
        else:
            self.stdout.write(self.style.SUCCESS(line))
        if prune:
            plan = backup_prune(context=context, apply=True)
            self.stdout.write(f"  retención: {len(plan.delete)} borrado(s), {len(plan.keep)} conservado(s)")

    def enqueue_tenant(self, tenant, *, backup_type, prune=False, **options) -> str:
        try:
            backup = backup_enqueue(context=self._context(backup_type), backup_type=backup_type, prune_after=prune,
                                    night_id=self.night.pk if self.night else None)
        except DomainError:
            self._ended(ok=False)  # never queued: its job ended before it began
            raise
        if self.night is not None:
            night_job_queued(night_id=self.night.pk, schema=connection.schema_name, backup_id=backup.pk)
        return f"backup {backup.pk} en cola ({backup.file_name}) en {connection.schema_name}"
