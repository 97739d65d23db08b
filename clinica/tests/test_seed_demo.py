from io import StringIO

from django.core.management import call_command
from django_tenants.utils import schema_context

from clinica.models import Cita, Factura, Paciente, Radiografia
from core.models import Tenant
from usuarios.models import Usuario


def _counts() -> dict[str, int]:
    counts = {}
    for schema in ("clinica_demo", "clinica_norte"):
        with schema_context(schema):
            for model in (Usuario, Paciente, Cita, Factura, Radiografia):
                counts[f"{schema}.{model._meta.label}"] = model.objects.count()
    return counts


def test_seed_demo_is_idempotent(tenants):
    # given the demo seeded once (tiny scale to keep the suite fast)
    call_command("seed_demo", "--scale", "0.02", "--password", "otra-clave-123")
    first = _counts()
    # when it runs again
    call_command("seed_demo", "--scale", "0.02", "--password", "otra-clave-123")
    # then nothing was added
    assert _counts() == first
    assert Tenant.objects.filter(schema_name__in=["clinica_demo", "clinica_norte"]).count() == 2
    with schema_context("clinica_demo"):
        admin = Usuario.objects.get(email="admin@clinicademo1.com")
        assert admin.rol == "admin" and admin.check_password("otra-clave-123")
        assert Paciente.objects.filter(referido_por__isnull=False).exists()


def test_seed_demo_gives_admin_access_only_to_admin_and_owner(tenants):
    # given a demo seeded earlier, when every role was made staff
    call_command("seed_demo", "--scale", "0.02", "--password", "otra-clave-123")
    with schema_context("clinica_demo"):
        Usuario.objects.filter(email="recepcion@clinicademo1.com").update(is_staff=True)
    # when the demo is seeded (again)
    call_command("seed_demo", "--scale", "0.02", "--password", "otra-clave-123")
    # then only admin and propietario may log into the clinic's admin
    for schema, mail_domain in (("clinica_demo", "clinicademo1.com"), ("clinica_norte", "clinicanorte1.com")):
        with schema_context(schema):
            staff = {rol: Usuario.objects.get(email=f"{rol}@{mail_domain}").is_staff
                     for rol in ("admin", "propietario", "odontologo", "recepcion")}
        assert staff == {"admin": True, "propietario": True, "odontologo": False, "recepcion": False}


def test_seed_demo_prints_the_addresses_of_the_port_the_demo_is_served_on(tenants):
    # given `make demo PORT=8011`, which seeds with --port 8011
    out = StringIO()
    call_command("seed_demo", "--scale", "0.02", "--password", "otra-clave-123", "--port", "8011", stdout=out)
    # then every address it prints is on that port, none on the default 8000
    printed = out.getvalue()
    assert "http://localhost:8011/admin/" in printed and "http://127.0.0.1:8011/api/auth/token/" in printed
    assert ":8000" not in printed
