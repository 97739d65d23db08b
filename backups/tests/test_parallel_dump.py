"""A backup gzipped on several threads (core.parallel_gzip), end to end: sealed on its way to storage,
verified, restored row-identical, and downloaded whole over real HTTP with Content-Encoding: gzip
by clients that read a single gzip member (Chromium, curl, httpx) as well as by one that reads them all (requests)."""
from __future__ import annotations

import gzip
import hashlib
import subprocess
import zlib
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
import requests
from django.db import connection

from backups.models import BackupRecord
from backups.restore import CARRIED_MODELS, backup_restore_in_place
from backups.services import backup_create, backup_verify
from backups.storage.age_format import MAGIC
from backups.storage.objects import storage_open
from backups.tests.api_server import api_server, serving
from backups.tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from bitacora.services import AuditContext
from core.parallel_gzip import BLOCK_SIZE
from core.testing import committed_tables

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-gzip-paralelo")
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)
MARK = "gzip-paralelo "


@pytest.fixture
def many_blocks(committed_db):
    """Enough appointments (hex text, half compressible) that the clinic's SQL spans several blocks; removed afterwards."""
    def remove():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM clinica_cita WHERE motivo LIKE %s", [MARK + "%"])

    remove()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO clinica_cita (inicio, duracion_minutos, estado, motivo, paciente_id, odontologo_id)"
            " SELECT now() + g * interval '1 minute', 30, 'programada', %s || repeat(md5(g::text), 12), p.id, o.id"
            " FROM (SELECT min(id) AS id FROM clinica_paciente) p, (SELECT min(id) AS id FROM clinica_odontologo) o,"
            " generate_series(1, 8000) g",
            [MARK],
        )
        assert cursor.rowcount == 8000
    yield
    remove()


@pytest.fixture
def two_threads(settings, sealed):
    settings.BACKUP_COMPRESS_WORKERS = 2
    return settings


def _one_member(compressed: bytes) -> bytes:
    decoder = zlib.decompressobj(31)
    sql = decoder.decompress(compressed)
    assert decoder.eof and decoder.unused_data == b""  # ONE gzip member, nothing after it
    return sql


def test_a_backup_compressed_on_two_threads_is_one_member_that_verifies_and_restores_row_identical(
    committed_db, backups_dir, two_threads, many_blocks
):
    # given a backup of a clinic whose SQL spans several blocks, gzipped on two threads and sealed
    backup = backup_create(context=CONTEXT)
    at_backup_time = committed_tables("test_restore", exclude=CARRIED)
    # then the stored object is sealed, and inside it is one gzip member holding the whole SQL
    assert (backups_dir / (backup.file_path + ".age")).read_bytes().startswith(MAGIC)
    with storage_open(backup.file_path) as stored_file:
        stored = stored_file.read()
    sql = _one_member(stored)
    assert len(sql) > 3 * BLOCK_SIZE and sql.startswith(b"--\n-- PostgreSQL database dump")
    # and both checksums are those of the bytes: the stored object's, and the SQL's
    assert (backup.file_size, backup.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert (backup.sql_size, backup.sql_sha256) == (len(sql), hashlib.sha256(sql).hexdigest())
    assert backup.manifest["table_checksums"]["tables"]["clinica_cita"]["rows"] >= 8000
    assert backup_verify(context=CONTEXT, backup=backup) == BackupRecord.Integrity.OK
    # when the clinic changes and the backup is restored
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM clinica_cita WHERE id IN (SELECT id FROM clinica_cita WHERE motivo LIKE %s LIMIT 100)",
                       [MARK + "%"])
    backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    # then every table is as it was, row by row
    assert committed_tables("test_restore", exclude=CARRIED) == at_backup_time


def test_the_gzip_encoded_download_decodes_whole_in_curl_httpx_and_requests(
    committed_db, backups_dir, two_threads, many_blocks, client_for, tmp_path
):
    # given a backup gzipped on two threads, and an admin's token
    backup = backup_create(context=CONTEXT)
    with storage_open(backup.file_path) as stored_file:
        sql = gzip.decompress(stored_file.read())  # every member: what the clients below must match
    token = client_for("test_restore", "admin").tokens["access"]
    headers = {"X-Tenant-ID": "test_restore", "Authorization": f"Bearer {token}"}
    with serving(api_server()) as base:
        url = f"{base}/api/backups/history/{backup.pk}/download/"
        # when curl asks for it compressed (it decodes one gzip member, and fails on what follows)
        saved, head = tmp_path / "backup.sql", tmp_path / "headers.txt"
        curl = subprocess.run(["curl", "--silent", "--show-error", "--fail", "--compressed", "--dump-header", str(head),
                               "--output", str(saved), *[f"-H{name}: {value}" for name, value in headers.items()], url],
                              capture_output=True, text=True, timeout=120)
        # then it saved the whole SQL, sent gzip-encoded
        assert curl.returncode == 0, curl.stderr
        assert "content-encoding: gzip" in head.read_text().lower()
        assert saved.read_bytes() == sql
        # and so do httpx (which also stops after one member) and requests (urllib3)
        with httpx.Client(headers=headers, timeout=120) as client:
            answer = client.get(url)
        assert answer.headers["content-encoding"] == "gzip" and answer.content == sql
        answer = requests.get(url, headers={**headers, "Accept-Encoding": "gzip"}, timeout=120)
        assert answer.headers["Content-Encoding"] == "gzip" and answer.content == sql
        assert hashlib.sha256(answer.content).hexdigest() == backup.sql_sha256


def _chromium_missing() -> str:
    """Why Chromium cannot run here, or "" (no axios needed: the browser itself downloads)."""
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium (Debian's package: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (requirements-dev.txt)"
    return ""


@pytest.mark.skipif(bool(_chromium_missing()), reason=_chromium_missing() or "browser available")
def test_chromium_saves_the_whole_sql_of_a_download_gzipped_on_two_threads(
    committed_db, backups_dir, two_threads, many_blocks, client_for
):
    # given a backup gzipped on two threads; Chromium keeps only the first member of a gzip body, silently
    backup = backup_create(context=CONTEXT)
    token = client_for("test_restore", "admin").tokens["access"]
    from playwright.sync_api import Error as PlaywrightError, sync_playwright

    with serving(api_server()) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.set_extra_http_headers({"X-Tenant-ID": "test_restore", "Authorization": f"Bearer {token}"})
            # when the browser opens the download link
            with page.expect_download() as started:
                with suppress(PlaywrightError):  # "Download is starting": the navigation becomes the download
                    page.goto(f"{base}/api/backups/history/{backup.pk}/download/")
            download = started.value
            # then it saved the whole SQL, under the .sql name
            assert download.failure() is None
            saved = Path(download.path()).read_bytes()
        finally:
            browser.close()
    assert download.suggested_filename == backup.file_name.removesuffix(".gz")
    assert hashlib.sha256(saved).hexdigest() == backup.sql_sha256 and len(saved) == backup.sql_size
