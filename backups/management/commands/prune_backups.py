from dataclasses import asdict

from backups.retention import backup_prune
from backups.selectors import backup_list
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Aplica la política de retención (BACKUP_RETENTION): sin --apply sólo muestra qué borraría "
        "y qué conserva y por qué; con --apply borra archivo y registro (auditado)."
    )

    def enqueue_tenant(self, tenant, *, apply, **options) -> str:
        if not apply:  # a dry run is read here and now, where its output is wanted
            self.handle_tenant(tenant, apply=False, **options)
            return "simulación mostrada arriba"
        from backups.tasks import prune_task  # Celery loads only where a job is sent (core.celery)

        prune_task.delay(asdict(AuditContext.system("manage.py prune_backups")))
        return "retención en cola"

    def add_tenant_arguments(self, parser):
        parser.add_argument("--apply", action="store_true", help="Borrar de verdad (por defecto, simulación).")

    def handle_tenant(self, tenant, *, apply, **options):
        # Read before pruning: with --apply the records are gone afterwards.
        backups = {backup.pk: backup for backup in backup_list()}
        plan = backup_prune(context=AuditContext.system("manage.py prune_backups"), apply=apply)
        verb = "borrado" if apply else "se borraría"
        for backup_id in plan.delete:
            self.stdout.write(f"  {verb:<12} {self._describe(backups.get(backup_id), backup_id)}")
        for backup_id, reason in plan.keep.items():
            self.stdout.write(f"  {'se conserva':<12} {self._describe(backups.get(backup_id), backup_id)}  ({reason})")
        summary = f"  {len(plan.delete)} {'borrado(s)' if apply else 'a borrar'}, {len(plan.keep)} conservado(s)"
        if apply:
            self.stdout.write(self.style.SUCCESS(summary))
        else:
            self.stdout.write(summary + "  (simulación: use --apply para borrar)")

    @staticmethod
    def _describe(backup, backup_id: int) -> str:
        if backup is None:  # created between the listing and the plan
            return f"{backup_id:>6}"
        return f"{backup.pk:>6}  {backup.created_at:%Y-%m-%d %H:%M:%S}  {backup.status:<9}  {backup.file_name}"
