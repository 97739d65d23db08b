"""Seed 000's `backupsService.downloadBackup`, run by real headless Chromium from another origin.

The page is served from one local port and the API from another (a cross-origin
call with the JWT and X-Tenant-ID headers, as the React front end makes it). It
loads real axios (npm ci --prefix backups/tests/browser) and runs the seed's code
verbatim: axios `responseType: 'blob'`, a Blob, an <a download="backup_<id>.sql">.
The file the browser saves must be the SQL, byte for byte.

Skipped, saying why, where Debian's chromium, Playwright for Python or axios is
missing (`apt-get install chromium`, requirements-dev.txt, `npm ci`).
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
from pathlib import Path

import pytest

from backups.services import backup_create
from backups.tests.api_server import api_server, serving
from bitacora.services import AuditContext

pytestmark = pytest.mark.committed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
BROWSER_DIR = Path(__file__).resolve().parent / "browser"
AXIOS = BROWSER_DIR / "node_modules" / "axios" / "dist" / "axios.min.js"

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Backups</title>
<script src="/axios.min.js"></script>
<script>
// src/services/api.js of the front end: the API on its own origin, the clinic and the token in headers.
const api = axios.create({baseURL: API_URL, headers: {"X-Tenant-ID": TENANT, "Authorization": "Bearer " + TOKEN}});

// src/services/backupsService.js, seed 000, verbatim.
const backupsService = {
  downloadBackup: async (id) => {
    const response = await api.get(`/api/backups/history/${id}/download/`, {
      responseType: 'blob'
    });

    // Crear link de descarga
    const url = window.URL.createObjectURL(new Blob([response.data]));
    const link = document.createElement('a');
    link.href = url;
    link.setAttribute('download', `backup_${id}.sql`);
    document.body.appendChild(link);
    link.click();
    link.remove();
  },
};
</script>
"""


def _browser_missing() -> str:
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium (Debian's package: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (requirements-dev.txt)"
    if not AXIOS.exists():
        return "axios is not installed: npm ci --prefix backups/tests/browser"
    return ""


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.skipif(bool(_browser_missing()), reason=_browser_missing() or "browser available")
def test_the_seed_front_end_saves_the_sql_from_another_origin(committed_db, backups_dir, media_files, client_for, settings,
                                                             tmp_path):
    # given a backup, an admin's token, and the front end's page on another origin
    media_files(count=1)
    backup = backup_create(context=AuditContext.system("prueba-navegador"))
    token = client_for("test_restore", "admin").tokens["access"]
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(AXIOS, site / "axios.min.js")
    page_server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFileHandler, directory=str(site)))
    from playwright.sync_api import sync_playwright

    with serving(api_server()) as api_url, serving(page_server) as page_url:
        settings.CORS_ALLOWED_ORIGINS = [page_url]
        (site / "index.html").write_text(
            PAGE.replace("API_URL", f'"{api_url}"').replace("TENANT", '"test_restore"').replace("TOKEN", f'"{token}"'))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(accept_downloads=True)
                answers = []
                page.on("response", lambda response: "/download/" in response.url and answers.append(
                    (response.request.method, response.status, response.headers.get("content-encoding"))))
                page.goto(f"{page_url}/index.html")
                # when the admin clicks «Descargar» (the seed's handleDownload)
                with page.expect_download() as download_info:
                    page.evaluate("id => backupsService.downloadBackup(id)", backup.pk)
                download = download_info.value
                saved = Path(download.path()).read_bytes()
                suggested = download.suggested_filename
            finally:
                browser.close()
    # then the API sent the stored gzip as Content-Encoding (after the CORS preflight), and the
    # browser saved backup_<id>.sql holding the SQL itself, exactly
    assert ("GET", 200, "gzip") in answers, answers
    assert suggested == f"backup_{backup.pk}.sql"
    assert saved.startswith(b"--\n-- PostgreSQL database dump")
    assert hashlib.sha256(saved).hexdigest() == backup.sql_sha256
    assert len(saved) == backup.sql_size
