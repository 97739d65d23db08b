"""The forms of GET …/download/ (issue 11) and the files archive GET …/files/."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from backups.services import backup_create
from backups.views import DownloadForm, download_form
from bitacora.models import Bitacora
from bitacora.services import AuditContext

CONTEXT = AuditContext.system("prueba-descarga")
SQL_START = b"--\n-- PostgreSQL database dump"


@pytest.fixture
def backup(tenant_a, backups_dir, media_files):
    media_files()  # every radiograph of clinic A has its file
    return backup_create(context=CONTEXT)


@pytest.fixture
def admin(client_for):
    return client_for("test_a", "admin")


def _url(backup) -> str:
    return f"/api/backups/history/{backup.pk}/download/"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_with_gzip_accepted_the_stored_bytes_come_gzip_encoded_and_decode_to_the_sql(admin, backup, backups_dir):
    stored = (backups_dir / backup.file_path).read_bytes()
    # when a browser-like client asks (it accepts gzip)
    response = admin.get(_url(backup), HTTP_ACCEPT_ENCODING="gzip, deflate, br, zstd")
    body = b"".join(response.streaming_content)
    # then the body on the wire is the stored object, encoded; decoded it is gunzip of the stored object
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert body == stored and response["Content-Length"] == str(len(body))
    assert gzip.decompress(body) == gzip.decompress(stored)
    assert response["Content-Disposition"] == f'attachment; filename="{backup.file_name.removesuffix(".gz")}"'
    # and each checksum header matches its body: what was sent, and the SQL once decoded
    assert response["X-Checksum-SHA256"] == _sha256(body)
    assert response["X-SQL-SHA256"] == _sha256(gzip.decompress(body)) == backup.sql_sha256
    assert "Accept-Encoding" in response["Vary"]


@pytest.mark.parametrize("accept_encoding", [None, "identity", "gzip;q=0, deflate", "br"])
def test_without_gzip_the_body_is_the_sql_decompressed_on_the_fly(admin, backup, backups_dir, accept_encoding):
    stored = (backups_dir / backup.file_path).read_bytes()
    headers = {"HTTP_ACCEPT_ENCODING": accept_encoding} if accept_encoding is not None else {}
    response = admin.get(_url(backup), **headers)
    assert response.streaming
    body = b"".join(response.streaming_content)
    assert "Content-Encoding" not in response
    assert body.startswith(SQL_START) and body == gzip.decompress(stored)
    assert response["Content-Length"] == str(len(body)) == str(backup.sql_size)
    assert response["X-Checksum-SHA256"] == response["X-SQL-SHA256"] == _sha256(body)
    assert response["Content-Disposition"].endswith('.sql"')


@pytest.mark.parametrize("request_kwargs", [
    {"data": {"format": "gz"}},
    {"HTTP_ACCEPT": "application/gzip"},
    {"data": {"format": "gz"}, "HTTP_ACCEPT_ENCODING": "gzip"},  # the explicit choice wins: no Content-Encoding
])
def test_the_explicit_gz_form_is_the_stored_object_byte_for_byte(admin, backup, backups_dir, request_kwargs):
    stored = (backups_dir / backup.file_path).read_bytes()
    response = admin.get(_url(backup), **request_kwargs)
    body = b"".join(response.streaming_content)
    assert response.status_code == 200, body[:300]
    assert body == stored and "Content-Encoding" not in response
    assert response["Content-Type"] == "application/gzip"
    assert response["Content-Length"] == str(len(stored))
    assert response["X-Checksum-SHA256"] == _sha256(body) == backup.sha256
    assert response["X-SQL-SHA256"] == _sha256(gzip.decompress(body))
    assert response["Content-Disposition"] == f'attachment; filename="{backup.file_name}"'


def test_errors_of_the_explicit_form_stay_json(admin, tenant_a):
    response = admin.get("/api/backups/history/999999999/download/", {"format": "gz"}, HTTP_ACCEPT="application/gzip")
    assert response.status_code == 404 and response.json()["code"] == "backup_not_found"


@pytest.mark.parametrize(("accept", "accept_encoding", "expected"), [
    ("application/json, text/plain, */*", "gzip, deflate", DownloadForm.ENCODED),  # axios in a browser
    ("*/*", "", DownloadForm.SQL),
    ("application/gzip;q=0, */*", "identity", DownloadForm.SQL),
    ("application/x-gzip", "gzip", DownloadForm.GZ),
    ("*/*", "*", DownloadForm.ENCODED),
    ("*/*", "*, gzip;q=0", DownloadForm.SQL),
])
def test_download_form_follows_accept_and_accept_encoding(rf, accept, accept_encoding, expected):
    request = rf.get("/", HTTP_ACCEPT=accept, HTTP_ACCEPT_ENCODING=accept_encoding)
    assert download_form(request) is expected


def test_the_files_archive_streams_every_file_with_its_bytes(admin, backup, media_dir):
    # when the backup's files are downloaded
    response = admin.get(f"/api/backups/history/{backup.pk}/files/")
    assert response.status_code == 200 and response.streaming
    body = b"".join(response.streaming_content)
    # then it is a tar of exactly the backup's files, each with its bytes, of the announced length
    assert response["Content-Type"] == "application/x-tar"
    assert response["Content-Length"] == str(len(body))
    with tarfile.open(fileobj=io.BytesIO(body), mode="r|") as archive:
        contents = {member.name: archive.extractfile(member).read() for member in archive}
    expected = dict(backup.files.exclude(sha256="").values_list("path", "sha256"))
    assert {path: _sha256(data) for path, data in contents.items()} == expected
    assert all(contents[path] == (media_dir / path).read_bytes() for path in contents)
    assert Bitacora.objects.filter(action="backup.download_files", target_id=str(backup.pk), outcome="ok").exists()


def test_a_damaged_file_object_ends_the_archive_with_an_audited_error(admin, backup, backups_dir):
    # given one file object of the backup damaged in storage
    from backups.files.media import file_object_key

    damaged = backups_dir / file_object_key("test_a", backup.files.exclude(sha256="").order_by("path").first().sha256)
    damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
    # when the archive is downloaded, then the stream stops there, and the audit log says why
    response = admin.get(f"/api/backups/history/{backup.pk}/files/")
    with pytest.raises(Exception, match="checksum"):
        b"".join(response.streaming_content)
    entry = Bitacora.objects.filter(action="backup.files", target_id=str(backup.pk)).latest("id")
    assert entry.outcome == "error" and entry.details["code"] == "backup_checksum_mismatch"


def test_the_json_export_keeps_file_names_only(admin, backup):
    # given a clinic with radiographs whose files are in its backups
    body = b"".join(admin.get("/api/backup/").streaming_content)
    export = json.loads(body)
    section = next(block for block in export["data"] if block["model"] == "clinica.radiografia")
    archivo = section["fields"].index("archivo")
    # then its radiographs carry their file names, not their bytes
    names = [row[archivo] for row in section["rows"]]
    assert names and all(isinstance(name, str) and name.startswith("test_a/radiografias/") for name in names)
    assert len(body) < 100 * 1024 * 1024
