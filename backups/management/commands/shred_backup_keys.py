from django.core.management.base import CommandError

from backups.sealing import clinic_keys_shred
from bitacora.services import AuditContext
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = (
        "Destruye las claves de backups de la clínica (borrado criptográfico): ninguno de sus backups ni de sus "
        "archivos se puede volver a abrir, aunque quede una copia. Después borra sus objetos y registros de backup "
        "y dice qué quedó. Irreversible."
    )
    allow_all_tenants = False

    def add_tenant_arguments(self, parser):
        parser.add_argument("--confirm", metavar="ESQUEMA", default=None,
                            help="El esquema de la clínica, como confirmación (si no, se pregunta).")

    def handle_tenant(self, tenant, *, confirm=None, **options):
        if confirm is None:
            self.stdout.write(
                f"Se destruirán las claves de backups de {tenant.nombre} ({tenant.schema_name}): ninguno de sus "
                "backups ni de sus archivos de pacientes se podrá volver a abrir. No se puede deshacer."
            )
            confirm = input(f"Escriba «{tenant.schema_name}» para confirmar: ").strip()
            if confirm != tenant.schema_name:
                raise CommandError("Destrucción cancelada: no se tocó nada.")
        report = clinic_keys_shred(context=AuditContext.system("manage.py shred_backup_keys"), confirm=confirm)
        self.stdout.write(self.style.SUCCESS(
            f"  {tenant.schema_name}: {report.keys_deleted} clave(s) destruidas; {report.objects_deleted} objeto(s) y "
            f"{report.records_deleted} registro(s) de backup borrados"
        ))
        for name in report.left_sealed:
            self.stderr.write(f"  quedó {name} (cifrado: ya no se puede abrir; bórrelo a mano)")
        for name in report.left_plain:
            self.stderr.write(f"  quedó {name} (SIN CIFRAR, de antes del cifrado: bórrelo a mano)")
        if report.left_plain or report.left_sealed:
            raise CommandError(
                f"Claves destruidas, pero quedaron {len(report.left_sealed)} objeto(s) cifrados y "
                f"{len(report.left_plain)} sin cifrar; vuelva a correr el comando para reintentar borrarlos."
            )
