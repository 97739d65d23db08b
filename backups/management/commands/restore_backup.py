from django.core.management.base import CommandError

from backups.jobs.enqueue import restore_prepare
from backups.jobs.run import restore_run
from backups.selectors import backup_get
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = "Restaura una clínica al momento de uno de sus backups SQL (reemplaza todos sus datos)."
    allow_all_tenants = False

    def add_tenant_arguments(self, parser):
        parser.add_argument("--id", type=int, required=True, dest="backup_id")
        parser.add_argument("--yes", action="store_true", help="No pedir confirmación.")
        parser.add_argument(
            "--as-new-tenant", metavar="ESQUEMA",
            help="Restaurar en una clínica nueva con este esquema, sin tocar la actual (para consultar un estado viejo).",
        )

    def handle_tenant(self, tenant, *, backup_id, yes, as_new_tenant=None, **options):
        backup = backup_get(backup_id=backup_id)
        if as_new_tenant:
            context = AuditContext.system("manage.py restore_backup --as-new-tenant")
            job = restore_prepare(context=context, backup_id=backup_id, new_schema=as_new_tenant)
            restore_run(context=context, job_id=job.pk, nombre=f"{tenant.nombre} ({backup.created_at:%Y-%m-%d %H:%M})")
            self.stdout.write(self.style.SUCCESS(
                f"  {backup.file_name} restaurado como la clínica nueva {as_new_tenant}; {tenant.schema_name} no se modificó"
            ))
            return
        if not yes:
            self.stdout.write(
                f"Se reemplazarán TODOS los datos de {tenant.nombre} ({tenant.schema_name}) por los de "
                f"{backup.file_name} ({backup.created_at:%Y-%m-%d %H:%M:%S}). El historial de backups y la bitácora se conservan."
            )
            if input(f"Escriba «{tenant.schema_name}» para confirmar: ").strip() != tenant.schema_name:
                raise CommandError("Restauración cancelada.")
        # Inline, through a restore job all the same: the API lists it, and if this process dies the reaper reports it.
        context = AuditContext.system("manage.py restore_backup")
        job = restore_prepare(context=context, backup_id=backup_id, confirm=tenant.schema_name)
        restore_run(context=context, job_id=job.pk)
        self.stdout.write(self.style.SUCCESS(f"  {tenant.schema_name} restaurada desde {backup.file_name}"))
