from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from clinica.demo import DemoCounts, clinic_fill
from clinica.models import Paciente
from core.services import public_tenant_ensure, tenant_ensure
from usuarios.models import ROLES_ADMINISTRATIVOS, Rol, Usuario

DEMO_TENANTS = [
    # schema, slug, nombre, domain, e-mail domain (admin@clinicademo1.com is seed 000's admin)
    ("clinica_demo", "clinica-demo", "Clínica Dental Demo", "clinica-demo.localhost", "clinicademo1.com"),
    ("clinica_norte", "clinica-norte", "Clínica Dental Norte", "clinica-norte.localhost", "clinicanorte1.com"),
]
DEMO_USERS = [
    (Rol.ADMIN, "Admin", "Sistema"),
    (Rol.PROPIETARIO, "Paola", "Propietaria"),
    (Rol.ODONTOLOGO, "Óscar", "Odontólogo"),
    (Rol.RECEPCION, "Rita", "Recepción"),
]


class Command(BaseCommand):
    help = "Crea (de forma idempotente) las clínicas de demostración, sus usuarios y datos."

    def add_arguments(self, parser):
        parser.add_argument("--scale", type=float, default=1, help="Multiplica la cantidad de filas (1 ≈ 4.500 filas).")
        parser.add_argument("--password", default="demo12345", help="Contraseña de todos los usuarios de demostración.")
        parser.add_argument("--port", type=int, default=8000,
                            help="Puerto donde se servirá la demo (make demo PORT=…), para las direcciones que se muestran.")

    def handle(self, *args, scale: float, password: str, port: int, **options):
        if scale <= 0:
            raise CommandError("--scale debe ser mayor que 0.")
        public_tenant_ensure(domains=["localhost", "127.0.0.1"])
        with schema_context("public"):
            if not Usuario.objects.filter(email="operador@plataforma.local").exists():
                Usuario.objects.create_superuser("operador@plataforma.local", password, nombre="Operador", apellido="Plataforma")

        for schema_name, slug, nombre, domain, mail_domain in DEMO_TENANTS:
            tenant, created = tenant_ensure(schema_name=schema_name, slug=slug, nombre=nombre, domains=[domain])
            self.stdout.write(f"{'Creada' if created else 'Ya existía'} la clínica {nombre} ({schema_name}, {domain})")
            with schema_context(schema_name):
                usuarios = [self._ensure_user(f"{rol}@{mail_domain}", password, rol, n, a) for rol, n, a in DEMO_USERS]
                if Paciente.objects.exists():
                    self.stdout.write("  ya tiene datos: no se agregan filas")
                    continue
                expected = DemoCounts.for_scale(scale).total
                self.stdout.write(f"  generando ~{expected:,} filas…")
                clinic_fill(scale=scale, usuarios=usuarios, progress=self._progress)
        self.stdout.write(self.style.SUCCESS(f"\nListo. Contraseña de todos los usuarios de demostración: {password}"))
        for schema_name, _slug, nombre, domain, mail_domain in DEMO_TENANTS:
            users = ", ".join(f"{rol}@{mail_domain}" for rol, _n, _a in DEMO_USERS)
            self.stdout.write(f"  {nombre}: X-Tenant-ID {schema_name} (o http://{domain}:{port}) — {users}")
        self.stdout.write(f"  Admin de la plataforma: http://localhost:{port}/admin/ — operador@plataforma.local")
        self.stdout.write(
            "\nProbar la API:\n"
            f"  ACCESS=$(curl -s -X POST http://127.0.0.1:{port}/api/auth/token/ -H 'X-Tenant-ID: clinica_demo' "
            "-H 'Content-Type: application/json' "
            f"-d '{{\"email\":\"admin@clinicademo1.com\",\"password\":\"{password}\"}}' "
            "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access\"])')\n"
            f"  curl -s http://127.0.0.1:{port}/api/auth/me/ -H 'X-Tenant-ID: clinica_demo' -H \"Authorization: Bearer $ACCESS\"\n"
            f"  Documentación: http://127.0.0.1:{port}/api/docs/"
        )

    @staticmethod
    def _ensure_user(email: str, password: str, rol: str, nombre: str, apellido: str) -> Usuario:
        # The clinic's Django admin holds backups and the audit log: only the roles
        # that may manage them get in, as in the API.
        user = Usuario.objects.filter(email=email).first()
        if user is None:
            is_staff = rol in ROLES_ADMINISTRATIVOS
            user = Usuario.objects.create_user(email, password, nombre=nombre, apellido=apellido, rol=rol, is_staff=is_staff)
        elif user.is_staff != user.es_administrativo:
            # Demos seeded before this rule gave every role admin access; take it back.
            user.is_staff = user.es_administrativo
            user.save(update_fields=["is_staff"])
        return user

    def _progress(self, label: str, created: int, done: bool) -> None:
        if done or created % 100000 == 0:
            self.stdout.write(f"    {label}: {created:,}{'' if done else '…'}")
