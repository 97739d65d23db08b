from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from backups.storage.age_format import identity_file_create

DEFAULT = Path(settings.BASE_DIR) / "var" / "keys" / "platform-identity.txt"


class Command(BaseCommand):
    help = (
        "Crea (si falta) una identidad age local de la plataforma para `make demo`, en modo 0600, y dice dónde "
        "está. Sólo para esta máquina: en producción la identidad es un secreto del entorno."
    )

    def add_arguments(self, parser):
        parser.add_argument("--path", default=None, help="Dónde escribirla (por defecto BACKUP_PLATFORM_IDENTITY_FILE, "
                                                         "var/keys/platform-identity.txt con DEBUG).")

    def handle(self, *args, path=None, **options):
        target = Path(path or settings.BACKUP_PLATFORM_IDENTITY_FILE or DEFAULT)
        made, recipients = identity_file_create(
            target, "identidad LOCAL de la plataforma para backups (make demo); producción necesita la suya")
        self.stdout.write(f"Identidad de la plataforma para los backups {'creada' if made else 'ya existente'}: "
                          f"{target} (modo 0600)")
        self.stdout.write(f"  destinatario (clave pública): {', '.join(recipients)}")
        self.stdout.write(
            "  Es sólo para esta máquina (make demo). En producción genere una propia (age-keygen), guarde la "
            "secreta fuera del servidor y cárguela en BACKUP_PLATFORM_IDENTITY y la pública en "
            "BACKUP_PLATFORM_RECIPIENTS (en Render, variables con sync: false). Sin ella no se abre ningún backup."
        )
