"""A radiograph's link in a clinic's admin (core.patient_files_admin): streamed to the roles that may
see patient files, from the disk or from Supabase Storage, and never another clinic's file."""
from __future__ import annotations

import uuid
from datetime import date

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django_tenants.utils import schema_context

from backups.tests.supabase_server import FakeSupabaseStorage
from bitacora.models import Bitacora
from clinica.models import Paciente, Radiografia
from core.testing import SchemaKeepingClient
from usuarios.models import Usuario

PASSWORD = "clave-de-prueba-123"  # conftest's TEST_PASSWORD
CHANGE = "/admin/clinica/radiografia/{pk}/change/"
LINK = "/admin/clinica/radiografia/{pk}/archivo/archivo/"
PNG = b"\x89PNG\r\n\x1a\n" + b"radiografia panoramica " * 400


class ClinicAdmin(SchemaKeepingClient):
    """A browser on a clinic's own domain, logged into its admin as one of its users (given is_staff)."""

    def __init__(self, tenant, rol: str):
        super().__init__(HTTP_HOST=tenant.get_primary_domain().domain)
        email = f"{rol}@{tenant.slug}.test"
        with schema_context(tenant.schema_name):
            Usuario.objects.filter(email=email).update(is_staff=True)
        response = self.post("/admin/login/", {"username": email, "password": PASSWORD, "next": "/admin/"})
        assert response.status_code == 302, response.content[:300]


@pytest.fixture(params=["disk", "supabase"])
def media(request, settings, tmp_path):
    """The clinics' files on the local disk, or in a Supabase Storage bucket of their own (as deployed)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    if request.param == "disk":
        yield None
        return
    server = FakeSupabaseStorage(tmp_path / "supabase").start()
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "backups.supabase_storage.SupabaseStorage",
        "OPTIONS": {"url": server.url, "key": server.key, "bucket": "media"}}}
    yield server
    if storages["default"]._client is not None:
        storages["default"]._client.session.close()
    server.stop()


def radiograph(schema: str, content: bytes = PNG, name: str = "panoramica.png") -> Radiografia:
    with schema_context(schema):
        paciente = Paciente.objects.create(nombre="Ana", apellido="Pérez", documento=uuid.uuid4().hex[:12])
        return Radiografia.objects.create(paciente=paciente, tomada_en=date.today(), archivo=ContentFile(content, name=name))


@pytest.mark.parametrize("rol", ["admin", "propietario", "odontologo"])
def test_clinical_staff_open_a_radiograph_from_the_admin_streamed_and_never_cached(tenant_a, media, rol):
    # given a radiograph of clinic A, and one of its users who may see patient files, in its admin
    rx = radiograph("test_a")
    browser = ClinicAdmin(tenant_a, rol)
    # when they open its page and follow the file's link
    page = browser.get(CHANGE.format(pk=rx.pk))
    listing = browser.get("/admin/clinica/radiografia/")
    opened = browser.get(LINK.format(pk=rx.pk))
    # then both pages link to the admin's own view of the file, not to a storage URL
    assert page.status_code == 200 and f'href="{LINK.format(pk=rx.pk)}"' in page.content.decode()
    assert listing.status_code == 200 and f'href="{LINK.format(pk=rx.pk)}"' in listing.content.decode()
    # and the file comes streamed, whole, shown in the browser, private, never stored by a cache
    assert opened.status_code == 200 and opened.streaming
    assert b"".join(opened.streaming_content) == PNG
    assert opened["Content-Type"] == "image/png" and opened["Content-Disposition"].startswith("inline")
    assert {"private", "no-store"} <= {part.strip() for part in opened["Cache-Control"].split(",")}
    assert opened["Content-Security-Policy"] == "sandbox"
    if media is not None:  # (on Supabase the signed URL stayed on the server: the answer is the bytes)
        assert media.signed_urls and "token" not in opened.serialize_headers().decode()
    # and the clinic's bitácora says who opened which row's file, and nothing of its name or content
    assert _opened_entries("test_a", rx.pk) == [(f"{rol}@clinica-a.test", "ok", {"field": "archivo"})]


def _opened_entries(schema: str, pk) -> list[tuple]:
    with schema_context(schema):
        entries = Bitacora.objects.filter(action="patient_file.open", target_type="clinica.radiografia", target_id=str(pk))
        return [(entry.actor_email, entry.outcome, entry.details) for entry in entries.order_by("id")]


@pytest.mark.parametrize("rol", ["recepcion"])
def test_a_role_that_may_not_see_patient_files_gets_403_from_the_link(tenant_a, media, rol):
    # given a receptionist with admin access
    rx = radiograph("test_a")
    browser = ClinicAdmin(tenant_a, rol)
    # when they follow the link
    response = browser.get(LINK.format(pk=rx.pk))
    # then it is refused, and nothing of the file is sent; the attempt is in the bitácora
    assert response.status_code == 403 and not response.streaming
    assert _opened_entries("test_a", rx.pk) == [(f"{rol}@clinica-a.test", "error", {"field": "archivo", "code": "permission_denied"})]


def test_a_file_that_is_not_html_or_an_image_is_a_download_never_shown(tenant_a, media):
    # given a file whose name says HTML, uploaded as a radiograph
    rx = radiograph("test_a", content=b"<script>alert(1)</script>", name="informe.html")
    # when a dentist follows its link
    response = ClinicAdmin(tenant_a, "odontologo").get(LINK.format(pk=rx.pk))
    assert b"".join(response.streaming_content) == b"<script>alert(1)</script>"
    # then it comes as an opaque download, sandboxed
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")
    assert response["Content-Security-Policy"] == "sandbox"


def test_a_clinic_user_never_gets_another_clinics_file_through_the_link(tenant_a, tenant_b, media):
    # given a radiograph in each clinic, and clinic A's dentist in A's admin, who can open A's own
    own = radiograph("test_a")
    other = radiograph("test_b", content=b"la radiografia de la clinica B")
    browser = ClinicAdmin(tenant_a, "odontologo")
    opened = browser.get(LINK.format(pk=own.pk))
    assert opened.status_code == 200 and b"".join(opened.streaming_content) == PNG
    # and a row of clinic A made (by SQL, an old import) to name clinic B's file
    planted = radiograph("test_a")
    Radiografia.objects.filter(pk=planted.pk).update(archivo=other.archivo.name)
    # when the dentist follows that row's link, and presents A's session to clinic B's admin for B's row
    through_planted = browser.get(LINK.format(pk=planted.pk))
    at_b = browser.get(LINK.format(pk=other.pk), HTTP_HOST=tenant_b.get_primary_domain().domain)
    # then neither sends B's bytes: the planted name is refused as if missing, and B does not know A's session
    assert through_planted.status_code == 404 and not through_planted.streaming
    assert _opened_entries("test_a", planted.pk) == [("odontologo@clinica-a.test", "error", {"field": "archivo", "code": "not_found"})]
    assert at_b.status_code == 302 and "/admin/login/" in at_b["Location"] and not at_b.streaming


def test_the_link_keeps_the_clinics_path_on_the_shared_host(tenant_a, media):
    # given a radiograph of clinic A and its dentist in A's admin by path (/clinicas/clinica-a/admin/)
    rx = radiograph("test_a")
    with schema_context("test_a"):
        Usuario.objects.filter(email="odontologo@clinica-a.test").update(is_staff=True)
    browser, prefix = SchemaKeepingClient(), "/clinicas/clinica-a"
    browser.post(f"{prefix}/admin/login/", {"username": "odontologo@clinica-a.test", "password": PASSWORD})
    # when they open its page and follow the link there
    page = browser.get(f"{prefix}{CHANGE.format(pk=rx.pk)}")
    opened = browser.get(f"{prefix}{LINK.format(pk=rx.pk)}")
    # then the link is under the clinic's path, and streams the file
    assert f'href="{prefix}{LINK.format(pk=rx.pk)}"' in page.content.decode()
    assert opened.status_code == 200 and b"".join(opened.streaming_content) == PNG
