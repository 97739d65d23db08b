"""The platform's page of every clinic's backups, in the public admin: superusers only."""
import re
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation
from django.utils.formats import localize
from django_tenants.utils import schema_context

from backups import selectors
from backups.models import BackupRecord
from backups.selectors import backup_is_overdue, backup_summary_list
from backups.services import backup_create
from bitacora.models import Bitacora
from bitacora.services import AuditContext
from core.models import Tenant
from core.schemas import quote_identifier
from core.testing import SchemaKeepingClient, operation_lock_held_elsewhere
from usuarios.models import Usuario

PASSWORD = "clave-de-prueba-123"
PAGE = "/admin/plataforma/backups/"


class PlatformClient(SchemaKeepingClient):
    """A browser on the platform's host (no clinic's domain), logged into the public admin."""

    def admin_login(self, email: str) -> "PlatformClient":
        response = self.post("/admin/login/", {"username": email, "password": PASSWORD, "next": "/admin/"})
        assert response.status_code == 302, response.content[:300]
        return self


@pytest.fixture
def operator(tenants, db) -> PlatformClient:
    with schema_context("public"):
        Usuario.objects.create_superuser("operador@plataforma.test", PASSWORD, nombre="Op", apellido="Plataforma")
    return PlatformClient().admin_login("operador@plataforma.test")


def _real_backups(schema: str) -> dict:
    """What the page should say of one clinic, read from its own BackupRecord table."""
    with schema_context(schema):
        completed = BackupRecord.objects.filter(status="completed").order_by("-created_at", "-id")
        failed = BackupRecord.objects.filter(status="failed").order_by("-created_at", "-id").first()
        last = completed.first()
        return {
            "completed_count": completed.count(),
            "total_size": sum(completed.values_list("file_size", flat=True)),
            "last_completed_at": last and last.created_at,
            "last_completed_size": last and last.file_size,
            "last_failed_at": failed and (failed.finished_at or failed.created_at),
            "last_failure": failed.error if failed else "",
        }


def test_the_page_shows_each_active_clinics_real_backups(operator, tenant_a, backups_dir):
    # given real backups in clinic A (two completed by pg_dump, one failed) and one in clinic B
    first = backup_create(context=AuditContext.system("prueba"), created_by=None)
    latest = backup_create(context=AuditContext.system("prueba"), created_by=None)
    BackupRecord.objects.create(file_name="backup_test_a_fallido.sql.gz", file_path="test_a/manual/x", status="failed",
                                error="pg_dump terminó con código 1", finished_at=timezone.now())
    with schema_context("test_b"):
        backup_b = backup_create(context=AuditContext.system("prueba"), created_by=None)
    # when the operator opens the platform's page
    response = operator.get(PAGE)
    # then every active clinic is there, and its numbers are those of its own table
    assert response.status_code == 200
    summaries = {row["summary"].tenant.schema_name: row["summary"] for row in response.context["rows"]}
    active = set(Tenant.objects.filter(is_active=True).exclude(schema_name="public").values_list("schema_name", flat=True))
    assert set(summaries) == active >= {"test_a", "test_b"}
    for schema, summary in summaries.items():
        shown = {field: getattr(summary, field) for field in _real_backups(schema)}
        assert shown == _real_backups(schema), schema
    a, b = summaries["test_a"], summaries["test_b"]
    assert a.completed_count >= 2 and a.last_completed_at == latest.created_at and a.last_completed_size == latest.file_size
    assert a.total_size >= first.file_size + latest.file_size
    assert a.last_failure == "pg_dump terminó con código 1" and not a.overdue
    assert b.last_completed_at == backup_b.created_at
    # and the page shows them, with a link to the clinic's own admin by path
    html = unescape(response.content.decode())
    with translation.override("es"):  # the page's language: "0,05 MB"
        sizes = [f"{localize(a.total_size_mb)} MB", f"{localize(latest.file_size_mb)} MB"]
    assert "pg_dump terminó con código 1" in html and all(size in html for size in sizes)
    assert 'href="/clinicas/clinica-a/admin/backups/backuprecord/"' in html


def test_a_clinic_is_overdue_when_its_last_completed_backup_is_older_than_the_window(operator, tenant_a, backups_dir, settings):
    # given a 26-hour window, clinic A's only completed backup 27 hours old, and a fresh one in clinic B
    settings.BACKUP_OVERDUE_AFTER = timedelta(hours=26)
    BackupRecord.objects.filter(status="completed").update(created_at=timezone.now() - timedelta(days=30))
    old = backup_create(context=AuditContext.system("prueba"), created_by=None)
    BackupRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=27))
    with schema_context("test_b"):
        backup_create(context=AuditContext.system("prueba"), created_by=None)
    # when the page is read
    rows = operator.get(PAGE).context["rows"]
    summaries = {row["summary"].tenant.schema_name: row["summary"] for row in rows}
    # then A is overdue, B is not, and overdue clinics come first, among those someone must look at
    assert summaries["test_a"].overdue and not summaries["test_b"].overdue
    assert all(row["failing"] for row in rows if row["summary"].overdue)
    flags = [row["failing"] for row in rows]
    assert flags == sorted(flags, reverse=True)


@pytest.mark.parametrize(("last_completed", "clinic_age", "overdue"), [
    (timedelta(hours=1), timedelta(days=90), False),
    (timedelta(hours=25, minutes=59), timedelta(days=90), False),
    (timedelta(hours=26, minutes=1), timedelta(days=90), True),
    (None, timedelta(hours=2), False),  # a new clinic: its first nightly backup is not due yet
    (None, timedelta(days=2), True),
])
def test_overdue_against_the_nightly_window(last_completed, clinic_age, overdue):
    now = timezone.now()
    assert backup_is_overdue(last_completed_at=last_completed and now - last_completed, clinic_created_at=now - clinic_age,
                             now=now, after=timedelta(hours=26)) is overdue


def test_a_clinic_without_a_backups_table_is_listed_as_such(operator, tenants):
    # given an active clinic whose schema was never created (no migrations ran)
    ghost = Tenant(schema_name="sin_migrar", slug="sin-migrar", nombre="Sin migrar")
    ghost.auto_create_schema = False
    ghost.save()
    # when the page is read
    response = operator.get(PAGE)
    # then the clinic is there, marked, and the others still read
    summary = next(row["summary"] for row in response.context["rows"] if row["summary"].tenant.schema_name == "sin_migrar")
    assert summary.has_table is False and summary.completed_count == 0
    assert "sin tabla de backups" in response.content.decode()


def test_the_selector_reads_every_clinic_in_a_fixed_number_of_queries(tenants, monkeypatch):
    # given three active clinics at least
    clinics = Tenant.objects.filter(is_active=True).exclude(schema_name="public").count()

    def queries(batch: int) -> int:
        monkeypatch.setattr(selectors, "SUMMARY_BATCH", batch)
        with CaptureQueriesContext(connection) as captured:
            backup_summary_list()
        return sum(not query["sql"].startswith("SET search_path") for query in captured)

    # then: the clinics, which have the table, and one UNION ALL per batch; never one per clinic
    assert queries(50) == 3
    assert queries(1) == 2 + clinics


def test_identifiers_are_quoted_for_postgresql():
    assert quote_identifier("clinica_demo") == '"clinica_demo"'
    assert quote_identifier('x"; DROP SCHEMA public; --') == '"x""; DROP SCHEMA public; --"'


def test_back_up_now_makes_a_backup_of_that_clinic_through_the_jobs(operator, backups_dir):
    # given clinic B's backups before
    with schema_context("test_b"):
        before = set(BackupRecord.objects.values_list("pk", flat=True))
    # when the operator presses "Backup ahora" on clinic B's row
    response = operator.post(f"{PAGE}test_b/backup/")
    # then clinic B has a new completed backup, by nobody of the clinic, audited with the operator's e-mail
    assert response.status_code == 302 and response["Location"] == PAGE
    with schema_context("test_b"):
        new = BackupRecord.objects.exclude(pk__in=before).get()
        entry = Bitacora.objects.get(action="backup.create", target_id=str(new.pk))
    assert new.status == "completed" and new.created_by is None and new.backup_type == "manual"
    assert entry.outcome == "ok" and entry.actor_email == "operador@plataforma.test" and entry.actor_id is None
    page = operator.get(PAGE).content.decode()
    assert f"Clínica B: backup creado, {new.file_name}" in unescape(page)


def test_back_up_now_on_a_busy_clinic_says_why_it_could_not(operator, backups_dir):
    # given a backup of clinic B already running: its record, and its live process holding the clinic's lock
    with schema_context("test_b"):
        BackupRecord.objects.create(file_name="en_curso.sql.gz", file_path="test_b/manual/en_curso.sql.gz", status="running")
    # when the operator asks for another
    with operation_lock_held_elsewhere("test_b"):
        response = operator.post(f"{PAGE}test_b/backup/", follow=True)
    # then the page says so
    assert "Clínica B: no se pudo crear el backup: Ya hay un backup o una restauración en curso" in unescape(response.content.decode())


def test_back_up_now_takes_only_post_and_known_clinics(operator):
    assert operator.get(f"{PAGE}test_b/backup/").status_code == 405
    assert operator.post(f"{PAGE}no_existe/backup/").status_code == 404


def test_a_staff_user_who_is_not_a_superuser_gets_403(tenants, db, backups_dir):
    # given a platform user with admin access but no superuser rights
    with schema_context("public"):
        Usuario.objects.create_user("soporte@plataforma.test", PASSWORD, nombre="So", apellido="Porte", is_staff=True)
    client = PlatformClient().admin_login("soporte@plataforma.test")
    # when they open the page or press "Backup ahora"
    page = client.get(PAGE)
    backup_now = client.post(f"{PAGE}test_b/backup/")
    # then both are refused, and no backup was made
    assert page.status_code == 403 and backup_now.status_code == 403
    with schema_context("test_b"):
        assert not BackupRecord.objects.filter(file_path__startswith="test_b/manual/", created_at__gte=timezone.now() - timedelta(minutes=1)).exists()


def test_without_logging_in_the_page_asks_for_the_admin_login(tenants):
    response = PlatformClient().get(PAGE)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_clinics_list_of_the_public_admin_links_to_the_page(operator):
    assert f'href="{PAGE}"' in operator.get("/admin/core/tenant/").content.decode()


@pytest.mark.committed
def test_the_page_shows_each_clinics_last_drill_restore_time_and_open_alerts_failing_first(committed_operator, backups_dir):
    from alertas.services import alert_raise
    from backups.drills.run import drill_run

    # given clinic R's latest backup drilled (committed: the drill replays it in psql), and clinic B with an open alert
    drilled = drill_run(context=AuditContext.system("prueba"), backup_id=backup_create(context=AuditContext.system("prueba")).pk)
    assert drilled.drill_status == "passed"
    alert = alert_raise(kind="backup_failed", schema="test_b", clinic="Clínica B", summary="El backup falló: almacenamiento caído")
    try:
        # when the operator opens the page
        response = committed_operator.get(PAGE)
    finally:
        alert.delete()
    rows = response.context["rows"]
    # then the clinics someone must look at come first, B among them, with its alert
    failing = [row["failing"] for row in rows]
    assert failing == sorted(failing, reverse=True)
    b = next(row for row in rows if row["summary"].tenant.schema_name == "test_b")
    assert b["failing"] and "El backup falló: almacenamiento caído" in [alert.summary for alert in b["alerts"]]
    # and R shows its last drill and the restore time it measured
    r = next(row for row in rows if row["summary"].tenant.schema_name == "test_restore")["summary"]
    assert (r.last_drill_status, r.last_drill_seconds) == ("passed", drilled.drill_seconds)
    html = unescape(response.content.decode())
    _r_class, r_row = re.search(r'<tr class="([^"]*)" data-schema="test_restore">(.*?)</tr>', html, re.S).groups()
    with translation.override("es"):  # the page's language: "0,2 s"
        assert "correcto" in r_row and f"{localize(round(drilled.drill_seconds, 1))} s" in r_row
    b_class, b_row = re.search(r'<tr class="([^"]*)" data-schema="test_b">(.*?)</tr>', html, re.S).groups()
    assert "failing" in b_class.split() and "almacenamiento caído" in b_row
