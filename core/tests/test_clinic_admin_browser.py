"""A clinic's admin by path, /clinicas/<slug>/admin/, in a real browser: Debian's headless
Chromium driven by Playwright, against gunicorn serving `make demo`'s clinics."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.tests.conftest import DEMO_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEMO, NORTE = "/clinicas/clinica-demo", "/clinicas/clinica-norte"

# Playwright's sync API keeps an event loop running in this thread while it is started,
# and Django refuses database calls there (SynchronousOnlyOperation): these tests touch
# only the demo site's database, and the browser is stopped when this module is done.
pytestmark = pytest.mark.no_test_db


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("no browser: /usr/bin/chromium is missing (Debian's `apt-get install chromium`; `make test` "
                    "installs it when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (requirements-dev.txt) is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, demo_server):
    context = browser.new_context(base_url=demo_server, accept_downloads=True, locale="es-ES")
    yield context.new_page()
    context.close()


def _log_in(page, prefix: str, email: str) -> None:
    page.goto(f"{prefix}/admin/")
    page.fill("#id_username", email)
    page.fill("#id_password", DEMO_PASSWORD)
    with page.expect_navigation():
        page.click("input[type=submit]")


def test_the_clinics_admin_logs_in_by_path_sees_creates_and_downloads_a_backup(page, demo_site):
    # given clinica-demo's admin at the clinic's path on the shared host
    page.goto(f"{DEMO}/admin/")
    assert page.url.endswith(f"{DEMO}/admin/login/?next={DEMO}/admin/")
    # when they log in, open the backups, create one and download it
    _log_in(page, DEMO, "admin@clinicademo1.com")
    assert page.url.endswith(f"{DEMO}/admin/")
    with page.expect_navigation():
        page.click(f"a[href='{DEMO}/admin/backups/backuprecord/']")
    with page.expect_navigation():
        page.click("text=Crear backup ahora")
    message = page.locator(".messagelist .success").inner_text()
    with page.expect_download() as started:
        page.locator("#result_list a:text('descargar')").first.click()
    download = started.value
    body = Path(download.path()).read_bytes()
    # then the backup was made in clinica_demo, and the browser saved exactly its SQL (sent
    # gzip-encoded, decoded by the browser) as a .sql file
    (file_name, size, sha256), = demo_site.sql(
        "SELECT file_name, sql_size, sql_sha256 FROM clinica_demo.backups_backuprecord WHERE status = 'completed' "
        "ORDER BY created_at DESC, id DESC LIMIT 1")
    assert message.startswith(f"Backup creado: {file_name}")
    assert download.suggested_filename == file_name.removesuffix(".gz")
    assert len(body) == size and hashlib.sha256(body).hexdigest() == sha256
    assert b'CREATE TABLE clinica_demo.backups_backuprecord' in body


def test_a_user_without_admin_access_cannot_log_in(page):
    # odontologo has no admin access (seed_demo gives it to admin and propietario only)
    _log_in(page, DEMO, "odontologo@clinicademo1.com")
    assert "/admin/login/" in page.url
    assert page.locator(".errornote").is_visible()


def test_a_staff_role_is_refused_the_backups(page, demo_site):
    # given a receptionist given admin access (is_staff) by mistake
    demo_site.sql("UPDATE clinica_demo.usuarios_usuario SET is_staff = true WHERE email = 'recepcion@clinicademo1.com'")
    try:
        # when they log in and go for the backups
        _log_in(page, DEMO, "recepcion@clinicademo1.com")
        index = page.content()
        listing = page.goto(f"{DEMO}/admin/backups/backuprecord/")
        download = page.request.get(f"{DEMO}/admin/backups/backuprecord/1/download/")
        create = page.request.post(f"{DEMO}/admin/backups/backuprecord/create-now/")
    finally:
        demo_site.sql("UPDATE clinica_demo.usuarios_usuario SET is_staff = false WHERE email = 'recepcion@clinicademo1.com'")
    # then the admin lets them in, but not to the backups, as the API's role rule says
    assert page.url.endswith(f"{DEMO}/admin/backups/backuprecord/")
    assert "backuprecord" not in index
    assert listing.status == 403 and download.status == 403 and create.status == 403


def test_a_session_cookie_from_one_clinics_path_is_refused_under_anothers(page, demo_server):
    # given clinica-demo's admin logged in by path
    _log_in(page, DEMO, "admin@clinicademo1.com")
    context = page.context
    cookie = next(c for c in context.cookies() if c["name"] == "sessionid.clinica-demo")
    # then the browser keeps that cookie to clinica-demo's path and sends it nowhere else
    assert cookie["path"] == f"{DEMO}/" and cookie["httpOnly"]
    assert [c["name"] for c in context.cookies(f"{demo_server}{NORTE}/admin/")] == []
    # when its value is presented under clinica-norte's path, as that clinic's cookie and as a host-wide one
    host = demo_server.split("//", 1)[1].split(":", 1)[0]
    context.add_cookies([{"name": "sessionid.clinica-norte", "value": cookie["value"], "domain": host, "path": f"{NORTE}/"},
                         {"name": "sessionid", "value": cookie["value"], "domain": host, "path": "/"}])
    page.goto(f"{NORTE}/admin/")
    # then clinica-norte asks for its own login; clinica-demo's session is untouched
    assert page.url.endswith(f"{NORTE}/admin/login/?next={NORTE}/admin/")
    page.goto(f"{DEMO}/admin/")
    assert page.url.endswith(f"{DEMO}/admin/")
    # and both clinics' admins can be logged in side by side in one browser
    _log_in(page, NORTE, "admin@clinicanorte1.com")
    assert page.url.endswith(f"{NORTE}/admin/")
    page.goto(f"{DEMO}/admin/")
    assert page.url.endswith(f"{DEMO}/admin/")
