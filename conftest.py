"""Shared test fixtures: two clinics created once per session, users per role in each.

Tenants and users are committed once (with --reuse-db they survive between runs);
each test runs in a transaction that is rolled back, with one clinic active.
"""
from __future__ import annotations

import pytest
import pytest_django.fixtures
from django.db import connection
from django_tenants.utils import schema_context

from core.models import Domain, Tenant
from core.schemas import schema_migrate
from core.testing import SchemaKeepingClient
from usuarios.models import Rol, Usuario

TEST_PASSWORD = "clave-de-prueba-123"
TENANTS = {
    "test_a": ("clinica-a", "Clínica A", "clinica-a.localhost"),
    "test_b": ("clinica-b", "Clínica B", "clinica-b.localhost"),
    # For tests that must commit (a schema swap cannot happen inside the test's transaction).
    "test_restore": ("clinica-r", "Clínica R", "clinica-r.localhost"),
}
ROLES = [Rol.ADMIN, Rol.PROPIETARIO, Rol.ODONTOLOGO, Rol.RECEPCION]


_databases_for_setup = pytest_django.fixtures._get_databases_for_setup


def _databases_for_setup_with_committed(items):
    # pytest-django sets up the test database only for tests marked django_db (or asking for
    # `db`); a run of `committed` tests alone would otherwise work on the development
    # database itself, under its real name.
    aliases, serialized = _databases_for_setup(items)
    if any(item.get_closest_marker("committed") for item in items):
        aliases = {*aliases, "default"}
    return aliases, serialized


pytest_django.fixtures._get_databases_for_setup = _databases_for_setup_with_committed


def pytest_collection_modifyitems(items):
    # Every test may touch a clinic's schema; each runs in a rolled-back transaction,
    # except those marked `committed` (see the committed_db fixture) or `no_test_db`.
    for item in items:
        if not any(item.get_closest_marker(name) for name in ("django_db", "committed", "no_test_db")):
            item.add_marker(pytest.mark.django_db)


def _ensure_tenant(schema_name: str) -> Tenant:
    slug, nombre, domain = TENANTS[schema_name]
    tenant = Tenant.objects.filter(schema_name=schema_name).first()
    if tenant is None:
        tenant = Tenant.objects.create(schema_name=schema_name, slug=slug, nombre=nombre)
        Domain.objects.create(tenant=tenant, domain=domain, is_primary=True)
    else:
        # --reuse-db keeps schemas from earlier runs: bring them to the code's migrations.
        schema_migrate(schema_name)
    with schema_context(schema_name):
        # Created in the same order in both clinics so that user ids collide,
        # which is exactly what makes cross-tenant tokens dangerous.
        for rol in ROLES:
            email = f"{rol}@{slug}.test"
            if not Usuario.objects.filter(email=email).exists():
                Usuario.objects.create_user(email, TEST_PASSWORD, nombre=rol.label, apellido=nombre, rol=rol)
    return tenant


@pytest.fixture(scope="session")
def tenants(django_db_setup, django_db_blocker) -> dict[str, Tenant]:
    assert connection.settings_dict["NAME"].startswith("test_"), "the tests must never touch a real database"
    with django_db_blocker.unblock():
        if not Tenant.objects.filter(schema_name="public").exists():
            Tenant.objects.create(schema_name="public", slug="public", nombre="Plataforma")
        tenants = {name: _ensure_tenant(name) for name in TENANTS}
        _reap_earlier_runs()
        _structure_reference()
        return tenants


def _structure_reference() -> None:
    """The SQL backups' cached structure, built here, outside any test's transaction (a
    backup inside one never builds it): backups in tests take the same path as in production."""
    from backups.dump.reference import reference_get
    from backups.services import _server_version, database_params, pg_binaries

    reference_get(binaries=pg_binaries(), params=database_params(), server_version=_server_version())


def _reap_earlier_runs() -> None:
    """--reuse-db keeps what an interrupted earlier run committed: a job still queued or
    running would make every later backup of that clinic a 409. Reap it all, queued jobs too."""
    from datetime import timedelta

    from django.test import override_settings

    from backups.jobs.reaper import reap

    with override_settings(JOB_PENDING_MAX_AGE=timedelta(0)):
        reap()


@pytest.fixture(scope="session")
def clinic_data(tenants, django_db_blocker) -> None:
    """Committed clinic rows in test_a (a few hundred), for tests that read from outside
    the test transaction: pg_dump and psql see only committed data."""
    from clinica.demo import clinic_fill
    from clinica.models import Paciente

    with django_db_blocker.unblock(), schema_context("test_a"):
        if not Paciente.objects.exists():
            clinic_fill(scale=0.1, usuarios=Usuario.objects.all())


@pytest.fixture
def committed_db(tenants, clinic_data, django_db_blocker):
    """Database access in autocommit, outside any test transaction, for tests marked
    `committed`: what they write stays, so they work in the test_restore clinic and
    assert relative to the state they find."""
    from clinica.demo import clinic_fill
    from clinica.models import Paciente

    with django_db_blocker.unblock():
        with schema_context("test_restore"):
            if not Paciente.objects.exists():
                clinic_fill(scale=0.05, usuarios=Usuario.objects.all())
        connection.set_tenant(tenants["test_restore"])
        try:
            yield tenants["test_restore"]
        finally:
            connection.set_schema_to_public()


@pytest.fixture
def tenant_a(tenants, db):
    connection.set_tenant(tenants["test_a"])
    yield tenants["test_a"]
    connection.set_schema_to_public()


@pytest.fixture
def tenant_b(tenants, db):
    return tenants["test_b"]


class TenantClient(SchemaKeepingClient):
    """A test client that talks to one clinic, optionally as one user."""

    def __init__(self, tenant: Tenant, **defaults):
        super().__init__(HTTP_X_TENANT_ID=tenant.schema_name, **defaults)
        self.tenant = tenant

    def login_as(self, rol: str) -> "TenantClient":
        response = self.post(
            "/api/auth/token/",
            {"email": f"{rol}@{self.tenant.slug}.test", "password": TEST_PASSWORD},
            content_type="application/json",
        )
        assert response.status_code == 200, response.content
        self.tokens = response.json()
        self.defaults["HTTP_AUTHORIZATION"] = f"Bearer {self.tokens['access']}"
        return self


@pytest.fixture
def client_for(tenants):
    """client_for("test_a", "admin") → a client logged in as that clinic's admin."""

    def make(schema_name: str, rol: str | None = None) -> TenantClient:
        client = TenantClient(tenants[schema_name])
        return client.login_as(rol) if rol else client

    return make


# -- alerts that reach a person (alertas): a real SMTP server and an HTTP receiver


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts."""
    from alertas.tests.receivers import SmtpServer

    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def receiver():
    """An HTTP server on 127.0.0.1 recording every request: the webhook's and the heartbeat's."""
    from alertas.tests.receivers import HttpReceiver

    server = HttpReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def alert_channels(settings, tenants, smtp_server, receiver, django_db_blocker):
    """Alerts by email through the real SMTP server (not Django's locmem outbox) and by webhook, the
    heartbeat at the receiver, and none raised before: alerts are once a day, and tests share the day."""
    from alertas.models import Alert, AlertMessage, NightRun

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.BACKUP_ALERT_EMAILS = ["guardia@plataforma.test"]
    settings.BACKUP_ALERT_WEBHOOK_URL = f"{receiver.url}/hooks/backups"
    settings.BACKUP_HEARTBEAT_URL = f"{receiver.url}/ping/noche"
    with django_db_blocker.unblock():
        for model in (Alert, AlertMessage, NightRun):
            model.objects.all().delete()
    return smtp_server, receiver
