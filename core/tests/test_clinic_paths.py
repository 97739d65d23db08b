"""A clinic's admin by path on the shared host, /clinicas/<slug>/admin/, beside header and host routing.

The test client sends every cookie it holds to every path (a browser would not), so
these tests show that a clinic looks only at cookies named for it; the browser tests
(test_clinic_admin_browser) show the paths at work as well.
"""
import pytest
from django.urls import reverse
from django_tenants.utils import schema_context

from core import clinic_paths
from core.models import Tenant
from core.testing import SchemaKeepingClient
from usuarios.models import Usuario

PASSWORD = "clave-de-prueba-123"  # conftest's TEST_PASSWORD
A, B = "/clinicas/clinica-a", "/clinicas/clinica-b"


class Browser(SchemaKeepingClient):
    """A browser on the shared host (no clinic's domain), giving the test back its schema after each request."""

    def admin_login(self, prefix: str, email: str):
        return self.post(f"{prefix}/admin/login/", {"username": email, "password": PASSWORD, "next": f"{prefix}/admin/"})


@pytest.fixture
def staff(tenants, db):
    """Give admin access (is_staff) to users of clinics A and B, as seed_demo does for admin and owner."""

    def make(schema: str, rol: str) -> str:
        email = f"{rol}@{tenants[schema].slug}.test"
        with schema_context(schema):
            Usuario.objects.filter(email=email).update(is_staff=True)
        return email

    return make


def test_a_clinics_own_admin_logs_in_by_path_and_shows_its_backups(staff):
    # given clinic A's admin, with admin access
    email = staff("test_a", "admin")
    browser = Browser()
    # when they open /clinicas/clinica-a/admin/ and log in there
    first = browser.get(f"{A}/admin/")
    login = browser.admin_login(A, email)
    backups = browser.get(f"{A}/admin/backups/backuprecord/")
    # then the admin asked them to log in under the clinic's path, took them back there, and shows the backups
    assert first.status_code == 302 and first["Location"] == f"{A}/admin/login/?next={A}/admin/"
    assert login.status_code == 302 and login["Location"] == f"{A}/admin/"
    assert backups.status_code == 200 and f'action="{A}/admin/backups/backuprecord/create-now/"' in backups.content.decode()


def test_another_clinics_user_cannot_log_in_by_this_clinics_path(staff):
    # given clinic B's admin
    email = staff("test_b", "admin")
    # when they try clinic A's admin
    response = Browser().admin_login(A, email)
    # then they are not a user there
    assert response.status_code == 200 and "sessionid.clinica-a" not in response.cookies


def test_a_clinic_by_path_sets_cookies_named_for_it_and_scoped_to_its_path(staff):
    # when clinic A's admin logs in by path
    response = Browser().admin_login(A, staff("test_a", "admin"))
    # then the session and CSRF cookies are clinic A's own, and nothing is set for the whole host
    assert set(response.cookies) == {"sessionid.clinica-a", "csrftoken.clinica-a"}
    assert {cookie["path"] for cookie in response.cookies.values()} == {f"{A}/"}
    assert response.cookies["sessionid.clinica-a"]["httponly"]


def test_a_session_from_one_clinics_path_is_refused_under_anothers(staff):
    # given a session of clinic A's admin, and a user with the same id in clinic B
    browser = Browser()
    browser.admin_login(A, staff("test_a", "admin"))
    staff("test_b", "admin")
    session_a = browser.cookies["sessionid.clinica-a"].value
    # when that session key is presented to clinic B, under B's cookie name and as a plain session cookie
    browser.cookies["sessionid.clinica-b"] = session_a
    browser.cookies["sessionid"] = session_a
    response = browser.get(f"{B}/admin/")
    # then clinic B does not know it: log in first; and clinic A still does
    assert response.status_code == 302 and response["Location"].startswith(f"{B}/admin/login/")
    assert browser.get(f"{A}/admin/").status_code == 200


def test_the_platform_admins_session_is_not_valid_under_a_clinics_path(tenants, db):
    # given an operator logged into the public admin (a plain sessionid cookie for the host)
    with schema_context("public"):
        Usuario.objects.create_superuser("operador@plataforma.test", PASSWORD, nombre="Op", apellido="Plataforma")
    browser = Browser()
    assert browser.post("/admin/login/", {"username": "operador@plataforma.test", "password": PASSWORD,
                                          "next": "/admin/"}).status_code == 302
    # when the same browser opens a clinic's admin by path
    response = browser.get(f"{A}/admin/")
    # then it has to log in as one of that clinic's users; the platform session is untouched
    assert response.status_code == 302 and response["Location"].startswith(f"{A}/admin/login/")
    assert browser.get("/admin/").status_code == 200


def test_a_csrf_token_from_one_clinic_is_refused_by_another(staff):
    # given clinic A's login form, its CSRF cookie and token
    email = staff("test_b", "admin")
    browser = Browser(enforce_csrf_checks=True)
    form = browser.get(f"{A}/admin/login/")
    token = form.context["csrf_token"]
    # when they are posted to clinic B's login
    refused = browser.post(f"{B}/admin/login/", {"username": email, "password": PASSWORD, "csrfmiddlewaretoken": token})
    # then B has no CSRF cookie of its own for them: 403; with B's own form it works
    assert refused.status_code == 403
    own = browser.get(f"{B}/admin/login/").context["csrf_token"]
    accepted = browser.post(f"{B}/admin/login/", {"username": email, "password": PASSWORD, "csrfmiddlewaretoken": own,
                                                  "next": f"{B}/admin/"})
    assert accepted.status_code == 302 and accepted["Location"] == f"{B}/admin/"


@pytest.mark.parametrize("path", ["/clinicas/no-existe/admin/", "/clinicas/test_a/admin/"])
def test_an_unknown_clinic_path_is_a_json_404(tenants, path):
    # the slug names the clinic; a schema name is not a slug
    response = Browser().get(path)
    assert response.status_code == 404 and response.json()["code"] == "tenant_not_found"


def test_an_inactive_clinic_path_is_a_json_404(tenants):
    Tenant.objects.filter(schema_name="test_b").update(is_active=False)
    response = Browser().get(f"{B}/admin/")
    assert response.status_code == 404 and response.json()["code"] == "tenant_not_found"


def test_the_header_wins_over_the_path(client_for):
    # given clinic B's token, sent with clinic B's header to a path naming clinic A
    client = client_for("test_b", "admin")
    # when / then: the header chose B, whose URLs have no /clinicas/ prefix
    assert client.get(f"{A}/api/auth/me/").status_code == 404
    assert client.get("/api/auth/me/").json()["email"] == "admin@clinica-b.test"


def test_a_clinics_own_domain_serves_only_that_clinic(tenants):
    # a path naming clinic A, on clinic B's domain: B's URLs, which have no /clinicas/ prefix
    response = Browser(HTTP_HOST="clinica-b.localhost").get(f"{A}/admin/")
    assert response.status_code == 404


def test_the_api_by_path_takes_only_that_clinics_tokens(client_for):
    # given tokens of clinic A's and clinic B's admins (their user ids are the same)
    token_a = client_for("test_a", "admin").tokens["access"]
    token_b = client_for("test_b", "admin").tokens["access"]
    browser = Browser()
    # when each is used under clinic A's path
    own = browser.get(f"{A}/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {token_a}")
    other = browser.get(f"{A}/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {token_b}")
    # then only A's token works there
    assert own.status_code == 200 and own.json()["email"] == "admin@clinica-a.test"
    assert other.status_code == 401


def test_clinic_urlconfs_are_kept_for_the_clinics_used_lately_only(monkeypatch):
    # given room for two clinics' URLConfs
    monkeypatch.setattr(clinic_paths, "URLCONFS_KEPT", 2)
    monkeypatch.setattr(clinic_paths, "_urlconfs", clinic_paths.OrderedDict())
    # when three clinics are routed, the first one again in between
    first = clinic_paths.clinic_path_urlconf("uno")
    clinic_paths.clinic_path_urlconf("dos")
    assert clinic_paths.clinic_path_urlconf("uno") is first
    clinic_paths.clinic_path_urlconf("tres")
    # then the one used least lately was dropped, and each kept one still resolves under its prefix
    assert list(clinic_paths._urlconfs) == ["uno", "tres"]
    assert clinic_paths.clinic_path_reverse("tres", "admin:index") == "/clinicas/tres/admin/"
    assert reverse("admin:index", urlconf=clinic_paths.clinic_path_urlconf("tres")) == "/clinicas/tres/admin/"
