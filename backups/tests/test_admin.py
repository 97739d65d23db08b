"""The clinic's Django admin for backups: the API's role rule (is_staff alone is not enough) and its services."""
import gzip
import hashlib
import io
import tarfile

import pytest

from backups.models import BackupRecord
from backups.services import backup_create
from bitacora.models import Bitacora
from bitacora.services import AuditContext
from core.testing import SchemaKeepingClient
from usuarios.models import Usuario

PASSWORD = "clave-de-prueba-123"  # conftest's TEST_PASSWORD
ADMIN = "/admin/backups/backuprecord/"


class ClinicAdminClient(SchemaKeepingClient):
    """A browser on the clinic's own domain (clinica-a.localhost), logged in through the admin's login form."""

    def __init__(self, tenant):
        super().__init__(HTTP_HOST=tenant.get_primary_domain().domain)
        self.tenant = tenant

    def admin_login(self, email: str) -> "ClinicAdminClient":
        response = self.post("/admin/login/", {"username": email, "password": PASSWORD, "next": "/admin/"})
        assert response.status_code == 302 and response["Location"] == "/admin/", response.content[:500]
        return self


@pytest.fixture
def staff_client(tenant_a):
    """staff_client("recepcion") → that clinic-A user, given admin access (is_staff), logged into the admin."""

    def make(rol: str) -> ClinicAdminClient:
        email = f"{rol}@{tenant_a.slug}.test"
        Usuario.objects.filter(email=email).update(is_staff=True)
        return ClinicAdminClient(tenant_a).admin_login(email)

    return make


@pytest.fixture
def backup(tenant_a, backups_dir) -> BackupRecord:
    return backup_create(context=AuditContext.system("prueba"), created_by=None)


@pytest.mark.parametrize("rol", ["admin", "propietario"])
def test_admin_and_owner_use_every_backup_page_of_the_admin(staff_client, backup, rol):
    # given an admin or owner logged into the clinic's admin
    client = staff_client(rol)
    # when they list, open, download, create and delete
    listing = client.get(ADMIN)
    detail = client.get(f"{ADMIN}{backup.pk}/change/")
    download = client.get(f"{ADMIN}{backup.pk}/download/")
    dump = b"".join(download.streaming_content)
    created = client.post(f"{ADMIN}create-now/")
    delete_page = client.get(f"{ADMIN}{backup.pk}/delete/")
    deleted = client.post(f"{ADMIN}{backup.pk}/delete/", {"post": "yes"})
    # then every page answers, and the actions happened
    assert listing.status_code == 200 and backup.file_name in listing.content.decode()
    assert detail.status_code == 200
    assert download.status_code == 200 and len(dump) == backup.sql_size
    assert created.status_code == 302
    assert BackupRecord.objects.filter(created_by__rol=rol, status="completed").exists()
    assert delete_page.status_code == 200
    assert deleted.status_code == 302 and not BackupRecord.objects.filter(pk=backup.pk).exists()


@pytest.mark.parametrize("rol", ["odontologo", "recepcion"])
def test_other_staff_roles_get_403_on_every_backup_page_of_the_admin(staff_client, backup, rol):
    # given a staff user (is_staff) whose role may not manage backups
    client = staff_client(rol)
    before = BackupRecord.objects.count()
    # when they try every backup page
    answers = {
        "list": client.get(ADMIN),
        "detail": client.get(f"{ADMIN}{backup.pk}/change/"),
        "edit": client.post(f"{ADMIN}{backup.pk}/change/", {"keep": "on"}),
        "download": client.get(f"{ADMIN}{backup.pk}/download/"),
        "create": client.post(f"{ADMIN}create-now/"),
        "delete_page": client.get(f"{ADMIN}{backup.pk}/delete/"),
        "delete": client.post(f"{ADMIN}{backup.pk}/delete/", {"post": "yes"}),
    }
    # then each is refused, the dump never leaves, and nothing changed
    assert {name: response.status_code for name, response in answers.items()} == {name: 403 for name in answers}
    assert not answers["download"].streaming
    assert BackupRecord.objects.count() == before
    backup.refresh_from_db()
    assert backup.keep is False
    # and the admin's index does not offer backups or the audit log
    index = client.get("/admin/").content.decode()
    assert "backuprecord" not in index and "bitacora" not in index


@pytest.mark.parametrize(("rol", "status"), [("admin", 200), ("propietario", 200), ("odontologo", 403), ("recepcion", 403)])
def test_the_audit_log_in_the_admin_follows_the_same_rule(staff_client, rol, status):
    assert staff_client(rol).get("/admin/bitacora/bitacora/").status_code == status


def test_changing_keep_in_the_admin_is_audited_like_the_api(staff_client, backup):
    # given the clinic's admin in the admin site
    client = staff_client("admin")
    # when they tick keep on the backup's change page
    response = client.post(f"{ADMIN}{backup.pk}/change/", {"keep": "on"})
    # then it is stored and audited with the actor, as a PATCH through the API is
    assert response.status_code == 302, response.content[:500]
    assert BackupRecord.objects.get(pk=backup.pk).keep is True
    # (the one that succeeded: a failed attempt on that id, audited on its own connection, may outlive its test)
    entry = Bitacora.objects.filter(action="backup.keep", target_id=str(backup.pk), outcome="ok").latest("id")
    assert entry.outcome == "ok" and entry.actor_email == "admin@clinica-a.test" and entry.details["keep"] is True


def test_the_admin_download_behaves_as_the_api(staff_client, backup):
    client = staff_client("admin")
    # when the clinic's admin downloads a backup from the admin site, as a browser does (gzip accepted)
    encoded = client.get(f"{ADMIN}{backup.pk}/download/", HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    # then the stored bytes come gzip-encoded, saved as .sql, the checksum of what is sent and of the SQL
    body = b"".join(encoded.streaming_content)
    assert encoded.status_code == 200 and encoded["Content-Encoding"] == "gzip"
    assert encoded["Content-Disposition"] == f'attachment; filename="{backup.file_name.removesuffix(".gz")}"'
    assert encoded["X-Checksum-SHA256"] == hashlib.sha256(body).hexdigest() == backup.sha256
    assert encoded["Content-Length"] == str(len(body)) == str(backup.file_size)
    assert encoded["X-SQL-SHA256"] == hashlib.sha256(gzip.decompress(body)).hexdigest() == backup.sql_sha256
    # and without gzip, the SQL itself; with ?format=gz, the stored file
    plain = client.get(f"{ADMIN}{backup.pk}/download/")
    sql = b"".join(plain.streaming_content)
    assert "Content-Encoding" not in plain and sql.startswith(b"--\n-- PostgreSQL database dump")
    assert plain["X-Checksum-SHA256"] == hashlib.sha256(sql).hexdigest() == backup.sql_sha256
    stored = client.get(f"{ADMIN}{backup.pk}/download/", {"format": "gz"})
    assert b"".join(stored.streaming_content) == body and stored["Content-Type"] == "application/gzip"


def test_the_admin_links_to_the_files_archive(staff_client, clinic_data, tenant_a, backups_dir, media_files):
    # given a backup of a clinic with radiographs (its committed ones: the dump's snapshot sees only those)
    media_files()
    backup = backup_create(context=AuditContext.system("prueba"), created_by=None)
    client = staff_client("admin")
    # when the admin opens the list and follows the files link
    listing = client.get(ADMIN).content.decode()
    url = f"{ADMIN}{backup.pk}/files/"
    archive = client.get(url)
    # then it is a tar of the backup's files
    assert url in listing
    names = tarfile.open(fileobj=io.BytesIO(b"".join(archive.streaming_content)), mode="r|").getnames()
    assert archive.status_code == 200 and len(names) == backup.files_count >= 1
