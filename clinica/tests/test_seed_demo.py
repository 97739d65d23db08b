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
