from backups.sealing import clinic_key_rotate
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Rota la clave de backups de la clínica: los backups nuevos se cifran con una clave nueva; los viejos "
        "siguen abriéndose con la suya (no se vuelve a cifrar nada)."
    )

    def handle_tenant(self, tenant, **options):
        key = clinic_key_rotate(context=AuditContext.system("manage.py rotate_backup_key"))
        self.stdout.write(self.style.SUCCESS(f"  {tenant.schema_name}: clave nueva {key['key_id']} ({key['recipient']})"))
