from django.utils.translation import gettext as _

from backups.drills.plan import drills_due
from backups.drills.run import drill_run
from backups.drills.schedule import drill_enqueue
from backups.models import DrillStatus
from bitacora.services import AuditContext
from core.exceptions import DomainError
from core.management.base import TenantCommand

CONTEXT = AuditContext.system("manage.py drill_backup")


class Command(TenantCommand):
    help = (
        "Simulacro de restauración: restaura el último backup completado de la clínica (o --id) en un esquema "
        "temporal, compara cada tabla con lo que el backup registró, lo migra si es de migraciones más viejas, "
        "relee sus archivos y anota el resultado y el tiempo; la clínica no se toca. Con --all-tenants --due, sólo "
        "las clínicas a las que les toca esta noche (cada BACKUP_DRILL_EVERY_DAYS días). Un simulacro fallido "
        "termina con código ≠ 0."
    )

    def add_tenant_arguments(self, parser):
        parser.add_argument("--id", type=int, dest="backup_id", help="El backup a ensayar (por defecto el último completado).")
        parser.add_argument("--due", action="store_true", help="Con --all-tenants: sólo las clínicas a las que les toca hoy.")

    def all_tenants(self, *, due=False, **options):
        return drills_due() if due else super().all_tenants(**options)

    def handle_tenant(self, tenant, *, backup_id=None, **options):
        backup = drill_run(context=CONTEXT, backup_id=backup_id)
        line = f"  {backup.file_name}: {backup.get_drill_status_display()}, {backup.drill_seconds} s"
        if backup.drill_status == DrillStatus.PASSED:
            self.stdout.write(self.style.SUCCESS(line))
        elif backup.drill_status == DrillStatus.INTERRUPTED:
            self.stdout.write(self.style.WARNING(f"{line}: {backup.drill_error}"))
        else:
            raise DomainError(_("Simulacro fallido (%(code)s): %(reason)s") % {"code": backup.drill_error_code,
                                                                                 "reason": backup.drill_error})

    def enqueue_tenant(self, tenant, *, backup_id=None, **options) -> str:
        drill_enqueue(context=CONTEXT, backup_id=backup_id)
        return "simulacro en cola"
